"""Rerunning the roadmap: the step table (ours next to the paper's) and training chosen steps on a dataset.

    convnext roadmap                              # the table
    convnext roadmap --train --epochs 10          # every R50 step on the built-in digits, then a chart
"""
import json
from dataclasses import replace
from pathlib import Path

import torch

from ..models.counting import count_macs, count_params
from ..models.registry import create_model
from ..models.roadmap import R50, R200, Step
from . import reporting
from .recipes import Recipe
from .loop import RunConfig, resume, train
from .tasks import Classification

REGIMES = {"r50": R50, "r200": R200}
CSV_COLUMNS = ["name", "change", "params", "gmacs", "paper_top1", "paper_gflops", "top1", "top5", "epochs",
               "wall_s", "run_dir"]


def step_row(step: Step) -> dict:
    with torch.device("meta"):
        model = create_model(step.name)
    return {"name": step.name, "change": step.change, "params": count_params(model),
            "gmacs": count_macs(model, 224) / 1e9, "paper_top1": step.paper_top1, "paper_gflops": step.paper_gmacs}


def select(regime: str, wanted: str | None) -> list[Step]:
    """Steps by number ("2", "08"), suffix ("gelu", "kernel9") or full name; all when `wanted` is None."""
    steps = REGIMES[regime]
    if not wanted:
        return list(steps)
    chosen = []
    for token in (t.strip() for t in wanted.split(",") if t.strip()):
        number = f"{int(token):02d}" if token.isdigit() else None
        matches = [s for s in steps if s.name == token or s.name.endswith(f"_{token}")
                   or (number and s.name.split("_")[2] == number and not _is_branch(s))]
        if not matches:
            raise ValueError(f"no {regime} roadmap step {token!r}; see `convnext roadmap`")
        chosen += [m for m in matches if m not in chosen]
    return chosen


def _is_branch(step: Step) -> bool:
    return any(step.name.endswith(k) for k in ("_kernel5", "_kernel9", "_kernel11"))


def train_steps(steps: list[Step], recipe: Recipe, run: RunConfig, output_dir: Path, say=print) -> list[dict]:
    """Train each step with the same recipe, one after another; a finished step is not retrained."""
    rows = []
    for i, step in enumerate(steps, 1):
        run_dir = output_dir / step.name
        summary_file = run_dir / "summary.json"
        say(f"[{i}/{len(steps)}] {step.name}: {step.change}")
        if summary_file.is_file():
            summary = json.loads(summary_file.read_text())
            say(f"  already trained: top-1 {100 * summary['test_top1']:.2f}% (delete {run_dir} to retrain)")
        elif (run_dir / "config.json").is_file():
            summary = resume(Classification, run_dir, say=lambda text: say(f"  {text}"), max_steps=run.max_steps)
        else:
            step_run = replace(run, output_dir=str(run_dir))
            summary = train(Classification, replace(recipe, model=step.name), step_run, say=lambda text: say(f"  {text}"))
        rows.append({**step_row(step), "top1": summary["test_top1"], "top5": summary["test_top5"],
                     "epochs": summary["epochs"], "wall_s": round(summary["wall_s"], 1), "run_dir": str(run_dir)})
    return rows


def write_csv(rows: list[dict], path: Path) -> None:
    reporting.write_csv(rows, CSV_COLUMNS, path)


def plot(rows: list[dict], path: Path, data_name: str) -> None:
    """In the spirit of the paper's Figure 2: per step, our accuracy beside the paper's, and the GMACs."""
    from .reporting import plt, save_figure

    names = [r["name"].split("_", 2)[2] for r in rows]
    y = range(len(rows))[::-1]
    figure, (acc, macs) = plt.subplots(1, 2, figsize=(11, 0.45 * len(rows) + 2.4), sharey=True)
    acc.barh([v + 0.2 for v in y], [100 * r["top1"] for r in rows], 0.4, label=f"ours ({data_name})", color="tab:blue")
    acc.barh([v - 0.2 for v in y], [r["paper_top1"] for r in rows], 0.4, label="paper (ImageNet-1K)", color="tab:gray")
    acc.set(yticks=list(y), yticklabels=names, xlabel="top-1 accuracy (%)", title="Accuracy")
    low = min(min(100 * r["top1"] for r in rows), min(r["paper_top1"] for r in rows))
    acc.set_xlim(max(0, low - 5), 100)
    acc.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, fontsize=8)
    macs.barh([v + 0.2 for v in y], [r["gmacs"] for r in rows], 0.4, label="ours (counted)", color="tab:orange")
    macs.barh([v - 0.2 for v in y], [r["paper_gflops"] for r in rows], 0.4, label="paper", color="tab:gray")
    macs.set(xlabel="GMACs at 224²", title="Compute")
    macs.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, fontsize=8)
    figure.tight_layout()
    save_figure(figure, path)
