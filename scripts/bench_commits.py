"""`convnext bench` of two commits, run alternately on this machine, and our lead over the fastest peer
in each: the ratio is what a change must keep, as absolute times here move from run to run.

    python scripts/bench_commits.py --before 62fb3a3 --after HEAD --rounds 2 --json docs/bench/cpu-zen4-accelerate-commits.json
    python scripts/bench_commits.py --before HEAD~1 --after HEAD --rounds 1 -- --model convnext_test --input-size 64

Each commit is checked out once into a temporary worktree and run from there (its own source, this
environment's packages), fp32 and, where the CPU has it, bf16 autocast; the order of the two commits
alternates round by round. Printed and written: per commit and precision, the median over rounds of
each of our contenders' inference and training-step speed as a multiple of the fastest peer's in the
same run (our fast model was "convnext eager" before `convnext.accelerate`, "convnext accelerated" after).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OURS_FAST = ("convnext eager", "convnext accelerated")  # the same contender's name before and after


def checkout(rev: str, into: Path) -> Path:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(into), rev], check=True,
                   capture_output=True)
    return into


def bench(tree: Path, args: list[str], out: Path) -> dict:
    subprocess.run([sys.executable, "-m", "convnext.cli", "bench", *args, "--json", str(out)], check=True,
                   env={**os.environ, "PYTHONPATH": str(tree / "src")}, cwd=tree, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def ratios(report: dict) -> dict[str, dict[str, float]]:
    rows = {r["name"]: r for r in report["results"]}
    return {name: {k: rows[name][k] for k in ("infer_vs_best_peer", "train_vs_best_peer") if k in rows[name]}
            for name in rows if rows[name]["ours"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True)
    parser.add_argument("--after", default="HEAD")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--json")
    parser.add_argument("bench_args", nargs="*", help="after --: passed to convnext bench")
    args = parser.parse_args(argv)
    common = args.bench_args or ["--model", "convnext_tiny", "--batch-size", "16", "--no-memory", "--backend", "pytorch"]
    runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-commits-") as scratch:
        trees = {rev: checkout(rev, Path(scratch) / f"tree{i}") for i, rev in enumerate((args.before, args.after))}
        try:
            for r in range(args.rounds):
                order = list(trees) if r % 2 == 0 else list(trees)[::-1]
                for precision in args.precisions.split(","):
                    for rev in order:
                        extra = ["--amp", "bf16"] if precision == "bf16" else []
                        report = bench(trees[rev], common + extra, Path(scratch) / "report.json")
                        runs.append({"rev": rev, "precision": precision if report["amp"] or precision == "fp32"
                                     else "fp32 (no bf16 hardware)", "round": r, "device": report["device"],
                                     "ratios": ratios(report),
                                     "img_s": {x["name"]: {k: x[k] for k in ("infer_img_s", "train_img_s") if k in x}
                                               for x in report["results"]}})
                        print(f"round {r + 1}: {rev} {precision} done", flush=True)
        finally:
            for tree in trees.values():
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], capture_output=True)
    summary = {}
    for run in runs:
        for name, values in run["ratios"].items():
            for key, value in values.items():
                summary.setdefault((run["rev"], run["precision"], name, key), []).append(value)
    print(f"{runs[0]['device']}; median over {args.rounds} round(s); x = speed / fastest peer's in the same run")
    for (rev, precision, name, key), values in sorted(summary.items()):
        print(f"{rev:>10} {precision:<6} {name:<34} {key:<20} {statistics.median(values):5.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"command": " ".join(sys.argv), "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
