"""The roadmap as a study: every step trained with several seeds, the paper's recipe for each, means
with 95% intervals, and each step's change from the one it builds on (paired by seed).

    convnext roadmap --train --regime small --data scenes             # every step and branch, 3 seeds
    convnext roadmap --train --regime small --data scenes --quick     # steps 0 and the last, 3 seeds

Step 0 trains with the classic ResNet recipe and every later step with the modernised one
(`recipes.ROADMAP_RECIPES`). Each (step, seed) is one run directory, `STEP/seed-K`: a finished one is
read back, an interrupted one resumed, so the study continues where it stopped. One progress bar counts
the study's epochs and says the time left.
"""
import json
import math
import signal
import time
from dataclasses import dataclass, replace
from pathlib import Path

from tqdm import tqdm

from ..checkpoints.files import MODEL_CONFIG_FILE
from ..models.roadmap import Step
from . import reporting
from .loop import Interrupted, RunConfig, resume, stop_requests, train
from .recipes import RECIPES, ROADMAP_RECIPES, ClassifyRecipe
from .roadmap_runs import step_row
from .tasks import Classification

STUDY_COLUMNS = ["name", "change", "recipe", "params", "gmacs", "infer_img_s", "run_minutes", "seeds", "top1_mean", "top1_std", "top1_ci95",
                 "delta", "delta_ci95", "base", "from_first", "from_first_ci95", "paper_top1", "paper_delta",
                 "top1_per_seed", "machines"]


@dataclass(frozen=True)
class Preset:
    """How much of the study to run: which steps (None: all), seeds, training images and epochs."""
    seeds: int = 3
    steps: tuple[str, ...] | None = None
    train_images: int = 16_000
    epochs: int = 5
    batch_size: int | None = None  # None: the recipe's


PRESETS = {
    "full": Preset(),
    # Step 0 against the last step, 3 seeds (their difference paired by seed gets a usable interval),
    # half the images and 4 epochs: about 20 minutes on 2 cores.
    "quick": Preset(seeds=3, steps=("00", "13"), train_images=8_000, epochs=4),
}


def recipe_name(step: Step, recipe: str | None = None) -> str:
    """The recipe a step trains with: `recipe` (a preset of `recipes.RECIPES`) for every step if given,
    else "classic" for step 0 (the ResNet as published) and "modern" from step 1 on
    (`recipes.ROADMAP_RECIPES`), whichever steps the study holds."""
    return recipe or ("classic" if step.name.split("_")[2] == "00" else "modern")


def recipe_for(step: Step, preset: Preset, recipe: str | None = None) -> ClassifyRecipe:
    """The step's recipe (`recipe_name`) at the preset's epochs and batch."""
    name = recipe_name(step, recipe)
    chosen = ROADMAP_RECIPES[name] if name in ROADMAP_RECIPES else RECIPES[name]
    return chosen.update(model=step.name, epochs=preset.epochs, batch_size=preset.batch_size)


def bases(steps: list[Step]) -> dict[str, str | None]:
    """The step each step's change is measured from: the main-line step before it (a kernel branch is
    measured from the step its row changes)."""
    out, main = {}, None
    for step in steps:
        out[step.name] = main
        if not step.name.endswith(("_kernel5", "_kernel9", "_kernel11")):
            main = step.name
    return out


def t_quantile(samples: int) -> float:
    """t(0.975, n-1): the 95% two-sided quantile for a mean of `samples` values."""
    from scipy.stats import t

    return float(t.ppf(0.975, samples - 1)) if samples > 1 else math.nan


def interval(values: list[float]) -> tuple[float, float, float]:
    """(mean, sample std, half-width of the 95% interval of the mean)."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else math.nan
    return mean, std, t_quantile(n) * std / math.sqrt(n) if n > 1 else math.nan


def inference_speed(step: Step, size: int, classes: int, channels: int = 3, batch: int = 64,
                    channels_last: bool = False) -> float:
    """Images per second of the step's network in eval mode (random weights, float32, this machine), in
    the memory format its runs trained in."""
    import torch

    from ..models.registry import create_model

    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = create_model(step.name, num_classes=classes, in_chans=channels).eval().to(memory_format=memory_format)
    x = torch.randn(batch, channels, size, size).contiguous(memory_format=memory_format)
    with torch.no_grad():
        model(x)
        started, runs = time.perf_counter(), 0
        while time.perf_counter() - started < 1.0 or runs < 2:
            model(x)
            runs += 1
    return batch * runs / (time.perf_counter() - started)


def run_study(steps: list[Step], preset: Preset, run: RunConfig, output_dir: Path,
              recipe: str | None = None) -> list[dict]:
    """Train every (step, seed) not yet finished and return one row per step (see STUDY_COLUMNS); with
    `recipe` (a preset's name), that one for every step instead of the classic and modern ones."""
    total = len(steps) * preset.seeds * preset.epochs
    results: dict[str, dict[int, float]] = {}  # step -> seed -> test top-1
    minutes: dict[str, list[float]] = {}  # step -> each run's time (training and its evaluations)
    machines: dict[str, set[str]] = {}  # step -> the machines its runs' epochs were timed on
    # A stop request between runs (or during a run's last evaluation) ends the study before the next run.
    with stop_requests() as stop, tqdm(total=total, desc="roadmap study", unit="epoch", smoothing=0.05) as bar:
        # Seed by seed: a study stopped early already has every step once, then twice.
        for seed in range(run.seed, run.seed + preset.seeds):
            for step in steps:
                if stop:
                    raise Interrupted(f"stopped by {signal.Signals(stop[0]).name} between runs; the finished runs "
                                      f"are kept, and the same command goes on from there", stop[0])
                bar.set_postfix(seed=seed, step=step.name.split("_", 2)[2], refresh=False)
                run_dir = output_dir / step.name / f"seed-{seed}"
                results.setdefault(step.name, {})[seed] = _trained(step, run_dir, preset, replace(run, seed=seed),
                                                                   recipe, bar)
                # Summed over epochs, so that a run resumed across sessions counts all of its time.
                # A run stopped by --max-steps before its first epoch ended has no epochs recorded.
                metrics = run_dir / reporting.METRICS_FILE
                epochs = reporting.read_metrics(metrics) if metrics.is_file() else []
                minutes.setdefault(step.name, []).append(sum(float(e["epoch_s"]) for e in epochs) / 60)
                machines.setdefault(step.name, set()).update(e["machine"] for e in epochs if e.get("machine"))

    rows, base_of = [], bases(steps)
    # The data's classes and size, from the first run's readable config: a study kept without its weights
    # files (the record of a finished study is its runs' configs, summaries and metrics) still tabulates.
    trained = json.loads((output_dir / steps[0].name / f"seed-{run.seed}" / MODEL_CONFIG_FILE).read_text())
    classes, channels = trained["overrides"]["num_classes"], trained["overrides"]["in_chans"]
    size = trained["input_size"]
    for step in steps:
        per_seed = results[step.name]
        mean, std, half = interval([100 * v for v in per_seed.values()])
        speed = inference_speed(step, size, classes, channels, channels_last=run.channels_last)
        row = {**step_row(step, size, classes), "recipe": recipe_name(step, recipe), "infer_img_s": round(speed, 1),
               "run_minutes": round(sum(minutes[step.name]) / len(minutes[step.name]), 2),
               "seeds": len(per_seed), "top1_mean": round(mean, 2), "top1_std": round(std, 2),
               "top1_ci95": round(half, 2), "base": base_of[step.name] or "",
               "top1_per_seed": " ".join(f"{100 * per_seed[s]:.2f}" for s in sorted(per_seed)),
               "machines": "; ".join(sorted(machines[step.name]))}
        base = base_of[step.name]
        if base in results:
            delta, delta_half = paired_change(per_seed, results[base])
            paper = next(s for s in steps if s.name == base).paper_top1
            row.update(delta=delta, delta_ci95=delta_half, paper_delta=round(step.paper_top1 - paper, 1))
        if step is not steps[0]:  # the whole way so far
            row["from_first"], row["from_first_ci95"] = paired_change(per_seed, results[steps[0].name])
        rows.append(row)
    return rows


def paired_change(top1: dict[int, float], base_top1: dict[int, float]) -> tuple[float, float]:
    """(mean change in points, 95% half-width) from `base_top1`, paired by seed: a seed's shared noise
    (its data order, its initialisation's luck) cancels."""
    shared = sorted(set(top1) & set(base_top1))
    delta, _, half = interval([100 * (top1[s] - base_top1[s]) for s in shared])
    return round(delta, 2), round(half, 2)


def _trained(step: Step, run_dir: Path, preset: Preset, run: RunConfig, recipe: str | None,
             bar: tqdm) -> float:
    """The test top-1 of one (step, seed) run: read back when finished, else resumed or trained."""
    summary_file = run_dir / "summary.json"
    if summary_file.is_file():
        bar.update(preset.epochs)
    else:
        def progress(text: str) -> None:  # the loop says one line an epoch
            if text.startswith("epoch "):
                bar.update(1)

        if (run_dir / "config.json").is_file():
            metrics = run_dir / reporting.METRICS_FILE
            bar.update(len(reporting.read_metrics(metrics)) if metrics.is_file() else 0)
            resume(Classification, run_dir, say=progress, max_steps=run.max_steps)
        else:
            # Validated once, after the last epoch: the table needs the final score alone, and two passes
            # (model and EMA) over the 5,000 test images were about a sixth of each epoch.
            train(Classification, recipe_for(step, preset, recipe),
                  replace(run, output_dir=str(run_dir), val_every=preset.epochs), say=progress)
    return json.loads(summary_file.read_text())["test_top1"]


def write_study_csv(rows: list[dict], path: Path) -> None:
    reporting.write_csv(rows, STUDY_COLUMNS, path)


def plot_study(rows: list[dict], path: Path, data_name: str) -> None:
    """Figure 2's layout with error bars: per step our mean top-1 ± its 95% interval beside the paper's,
    and each step's change from the one it builds on, ours (± interval) against the paper's."""
    from .reporting import plt, save_figure

    names = [r["name"].split("_", 2)[2] for r in rows]
    y = list(range(len(rows)))[::-1]
    figure, (acc, delta) = plt.subplots(1, 2, figsize=(12, 0.45 * len(rows) + 2.4), sharey=True, layout="constrained")
    errors = [0 if math.isnan(r["top1_ci95"]) else r["top1_ci95"] for r in rows]
    acc.barh([v + 0.2 for v in y], [r["top1_mean"] for r in rows], 0.4, xerr=errors, capsize=3,
             label=f"ours ({data_name}): mean ± 95% interval; changes paired by seed", color="tab:blue")
    acc.barh([v - 0.2 for v in y], [r["paper_top1"] for r in rows], 0.4, label="paper (ImageNet-1K)", color="tab:gray")
    acc.set(yticks=y, yticklabels=names, xlabel="top-1 accuracy (%)", title="Accuracy")
    low = min(min(r["top1_mean"] - e for r, e in zip(rows, errors)), min(r["paper_top1"] for r in rows))
    acc.set_xlim(max(0, low - 5), 100)
    ours = [r.get("delta", 0) or 0 for r in rows]
    ours_err = [0 if math.isnan(r.get("delta_ci95", math.nan) or math.nan) else r["delta_ci95"] for r in rows]
    delta.barh([v + 0.2 for v in y], ours, 0.4, xerr=ours_err, capsize=3, color="tab:blue")
    delta.barh([v - 0.2 for v in y], [r.get("paper_delta", 0) or 0 for r in rows], 0.4, color="tab:gray")
    delta.axvline(0, color="black", linewidth=0.8)
    delta.set(xlabel="change from the step it builds on (points)", title="Each step's change")
    figure.legend(loc="outside lower center", ncol=2, fontsize=8)  # one legend for both panels, below them
    save_figure(figure, path)
