"""Hurt every kind of training run at random moments and check that it ends as if nothing had happened.

    python scripts/fault_points.py                  # 5 faults per kind of run, in a scratch folder
    python scripts/fault_points.py --faults 20 --seed 7 --kinds train "detect train"

For each kind (`train`, `pretrain`, `detect train`, `segment train`) on a tiny model and a few steps: a
run starts and stops at its first checkpoint (kernels are measured until then, so both runs below
share them); a copy of it finishes undisturbed (the reference); the original is resumed again and
again under `faulty_run.py`, each time hurt once: SIGKILL at a random optimizer step, at a random
moment, or halfway through writing a checkpoint, and SIGTERM or SIGINT at a random step (those must
save, print the resume command and exit 0); last, SIGKILL after the last checkpoint and before the
final files. A copy of the start is also run with --max-steps, killed before its final files and
resumed with the same --max-steps, against the same run uninterrupted. Then it is resumed to the end, and its weights, EMA and
metrics must equal the reference's bit for bit, and no temporary file may be left. The suite runs
this with the default faults (tests/test_faults.py); docs/faults.md reports a longer run.
"""
import argparse
import json
import os
import random
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

FAULTY_RUN = Path(__file__).with_name("faulty_run.py")
TINY_DENSE = ["--model", "convnext_test", "--batch-size", "4", "--head-width", "32", "--input-size", "64",
              "--epochs", "3", "--save-every", "2"]


def arguments(kind: str, scratch: Path) -> list[str]:
    """A short run of each kind: a few steps an epoch, three epochs, a checkpoint every two steps (and
    for `train` every part of the recipe whose state a resume must restore: accumulation, mixup and
    cutmix, RandAugment, erasing, drop path, clipping, EMA)."""
    if kind == "train":
        return ["train", "--model", "convnext_test", "--batch-size", "8", "--subset", "96", "--epochs", "3",
                "--save-every", "2", "--accum-steps", "2", "--ema-decay", "0.9", "--mixup", "0.8", "--cutmix", "1.0",
                "--randaugment", "9", "--reprob", "0.25", "--hflip", "0.5", "--drop-path", "0.1", "--clip-grad", "1.0"]
    if kind == "pretrain":
        return ["pretrain", "--model", "convnextv2_test", "--input-size", "64", "--batch-size", "16",
                "--subset", "96", "--epochs", "3", "--save-every", "2"]
    data = scratch / "shapes"
    if not data.exists():
        from convnext.training.dense.shapes import write_shapes

        write_shapes(data, size=64, seed=1, splits={"train": 16, "val": 4})
    return [*kind.split(), "--data", str(data), *TINY_DENSE]


FAULTS = ("kill at step", "kill in checkpoint", "term at step", "int at step", "kill at a moment")
LAST = "kill before the final files"  # after every other fault: the run goes to its end, then dies


@dataclass
class Outcome:
    kind: str
    faults: list[str] = field(default_factory=list)  # what was done, in order, and what it met
    problems: list[str] = field(default_factory=list)

    @property
    def held(self) -> bool:
        return not self.problems


THREADS = 1  # per process: two kinds run side by side on two cores without oversubscribing them


def _run(argv: list[str], fault: list[str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    command = [sys.executable, str(FAULTY_RUN), *fault, "--", *argv] if fault else [sys.executable, "-m", "convnext.cli", *argv]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": str(THREADS)})


def _run_here(argv: list[str]) -> int:
    """A run in this process (no start-up to pay), its output dropped."""
    import contextlib
    import io

    from convnext.cli import main
    from convnext.runtime.process import process_settings

    # as many threads as the hurt processes: the same thread count computes the same bits
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
            process_settings(threads=THREADS):
        return main(argv)


def _finished(run_dir: Path, steps: int) -> bool:
    summary = run_dir / "summary.json"
    return summary.is_file() and json.loads(summary.read_text())["steps"] == steps


def _fault(name: str, rng: random.Random) -> list[str]:
    if name == "kill before the final files":
        return ["--before-final"]
    if name == "kill in checkpoint":
        return ["--in-checkpoint", str(rng.randint(1, 2))]
    if name == "kill at a moment":
        return ["--after", f"{rng.uniform(1.0, 5.0):.2f}"]  # start-up included: a moment of set-up, steps or writing
    signal = {"kill": "KILL", "term": "TERM", "int": "INT"}[name.split()[0]]
    return ["--at-step", str(rng.randint(1, 3)), "--signal", signal]


def weights_and_metrics(run_dir: Path) -> dict:
    """What a finished run leaves that must not depend on its interruptions."""
    import torch

    from convnext.training import run_state
    from convnext.training.reporting import read_metrics

    state = run_state.load_latest(run_dir, say=lambda _: None)
    metrics = run_dir / "metrics.csv"  # none where --max-steps stopped the run inside its first epoch
    rows = [{k: v for k, v in row.items() if k != "epoch_s"} for row in read_metrics(metrics)] if metrics.is_file() else []
    summary = json.loads((run_dir / "summary.json").read_text())
    tensors = {f"model/{k}": v for k, v in state["model"].items()}
    if state.get("ema"):
        tensors.update({f"ema/{k}": v for k, v in state["ema"].items() if isinstance(v, torch.Tensor)})
    return {"tensors": tensors, "rows": rows, "steps": summary["steps"]}


def compare(reference: dict, run: dict) -> list[str]:
    import torch

    problems = [f"{key} differs" for key, value in reference["tensors"].items()
                if key not in run["tensors"] or not torch.equal(value, run["tensors"][key])]
    if reference["rows"] != run["rows"]:
        problems.append(f"metrics.csv differs: {reference['rows']} vs {run['rows']}")
    if reference["steps"] != run["steps"]:
        problems.append(f"{run['steps']} steps instead of {reference['steps']}")
    return problems


def _folders(kind: str, scratch: Path) -> tuple[Path, Path]:
    name = kind.replace(" ", "-")
    return scratch / f"{name}-run", scratch / f"{name}-reference"


def start_and_reference(kind: str, scratch: Path) -> str | None:
    """Two steps of a run, stopped at its first checkpoint, and a copy of it finished undisturbed
    (in this process: no start-up to pay); what went wrong, or None."""
    run_dir, reference_dir = _folders(kind, scratch)
    if _run_here([*arguments(kind, scratch), "--output-dir", str(run_dir), "--max-steps", "2"]) != 0:
        return "the first two steps failed"
    shutil.copytree(run_dir, reference_dir)
    if _run_here([*kind.split(), "--resume", str(reference_dir)]) != 0:
        return "the reference run failed"
    return None


def hurt_and_resume(kind: str, scratch: Path, faults: int, seed: int) -> Outcome:
    """One kind of run, started by `start_and_reference`, through `faults` faults (see the module's
    docstring); each fault is one process."""
    rng = random.Random(f"{seed}-{kind}")
    outcome = Outcome(kind)
    run_dir, reference_dir = _folders(kind, scratch)
    command = f"convnext {kind}"
    steps = json.loads((reference_dir / "summary.json").read_text())["steps"]

    names = [FAULTS[i % len(FAULTS)] for i in range(faults)]
    rng.shuffle(names)
    for name in [*names, LAST]:
        if _finished(run_dir, steps):
            outcome.faults.append(f"{name}: not tried, the run had finished")
            continue
        fault = _fault(name, rng)
        result = _run([*kind.split(), "--resume", str(run_dir)], fault)
        said = f"Resume with: {command} --resume {run_dir}"
        if name.startswith(("term", "int")):
            if result.returncode != 0 or (said not in result.stderr and not _finished(run_dir, steps)):
                outcome.problems.append(f"{' '.join(fault)}: exit {result.returncode}, {result.stderr[-300:]!r}")
        elif result.returncode not in (0, -9):
            outcome.problems.append(f"{' '.join(fault)}: exit {result.returncode}, {result.stderr[-300:]!r}")
        met = "finished first" if result.returncode == 0 and _finished(run_dir, steps) else f"exit {result.returncode}"
        outcome.faults.append(f"{name} ({' '.join(fault)}): {met}")

    for _ in range(2):  # a run that a fault stopped at its very end may need one more resume
        if not _finished(run_dir, steps):
            final = _run([*kind.split(), "--resume", str(run_dir)])
            if final.returncode != 0:
                outcome.problems.append(f"the last resume failed: {final.stderr[-500:]}")
                return outcome
    strays = [str(p) for p in run_dir.rglob("*.tmp")]
    if strays:
        outcome.problems.append(f"temporaries left: {strays}")
    outcome.problems += compare(weights_and_metrics(reference_dir), weights_and_metrics(run_dir))
    return outcome


MAX_STEPS = 3  # one step past the start's checkpoint: the run stops mid-way


def copy_of_start(kind: str, scratch: Path, name: str) -> Path:
    """Another copy of the run as `start_and_reference` left it (its first checkpoint, its kernels)."""
    run_dir, _ = _folders(kind, scratch)
    copy = scratch / f"{kind.replace(' ', '-')}-{name}"
    shutil.copytree(run_dir, copy)
    return copy


def max_steps_reference(kind: str, scratch: Path) -> str | None:
    """A copy of the start finished with --max-steps, undisturbed (in this process); what went wrong, or None."""
    reference = copy_of_start(kind, scratch, "max-reference")
    copy_of_start(kind, scratch, "max-hurt")
    if _run_here([*kind.split(), "--resume", str(reference), "--max-steps", str(MAX_STEPS)]) != 0:
        return "the --max-steps reference run failed"
    return None


def killed_before_the_end_of_max_steps(kind: str, scratch: Path) -> Outcome:
    """The other copy with --max-steps, killed after its last checkpoint and before its final files,
    then resumed with the same --max-steps: it takes no further step and ends as the reference."""
    outcome = Outcome(f"{kind} --max-steps {MAX_STEPS}")
    name = kind.replace(" ", "-")
    reference, hurt = scratch / f"{name}-max-reference", scratch / f"{name}-max-hurt"
    limit = ["--max-steps", str(MAX_STEPS)]
    killed = _run([*kind.split(), "--resume", str(hurt), *limit], ["--before-final"])
    outcome.faults.append(f"kill before the final files (--before-final): exit {killed.returncode}")
    if killed.returncode != -9 or _finished(hurt, MAX_STEPS):  # (the start's own summary says 2 steps)
        outcome.problems.append(f"not killed before its final files: exit {killed.returncode}, {killed.stderr[-300:]!r}")
    resumed = _run([*kind.split(), "--resume", str(hurt), *limit])
    if resumed.returncode != 0:
        outcome.problems.append(f"the resume failed: {resumed.stderr[-500:]}")
        return outcome
    outcome.problems += compare(weights_and_metrics(reference), weights_and_metrics(hurt))
    return outcome


def study(kinds: list[str], scratch: Path, faults: int = 5, seed: int = 0, parallel: int = 2) -> list[Outcome]:
    """Every kind: started and referenced here (in-process runs stay on the main thread, which alone
    takes signal handlers), then hurt `parallel` kinds at a time (each kind's processes one after
    another), and once more with --max-steps killed before its final files."""
    failed = {kind: problem for kind in kinds if (problem := start_and_reference(kind, scratch)
                                                 or max_steps_reference(kind, scratch))}
    started = [k for k in kinds if k not in failed]
    with ThreadPoolExecutor(parallel) as pool:
        limited = list(pool.map(lambda kind: killed_before_the_end_of_max_steps(kind, scratch), started))
        outcomes = pool.map(lambda kind: hurt_and_resume(kind, scratch, faults, seed), started)
    return [Outcome(kind, problems=[problem]) for kind, problem in failed.items()] + list(outcomes) + limited


KINDS = ["train", "pretrain", "detect train", "segment train"]


def main() -> int:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faults", type=int, default=5, help="faults per kind of run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kinds", nargs="+", default=KINDS, choices=KINDS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        outcomes = study(args.kinds, Path(scratch), args.faults, args.seed)
    for outcome in outcomes:
        tried = sum("not tried" not in f for f in outcome.faults)
        print(f"{outcome.kind}: {tried} faults tried, {'held' if outcome.held else 'FAILED'}")
        for line in outcome.faults + outcome.problems:
            print(f"  {line}")
    return 0 if all(o.held for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
