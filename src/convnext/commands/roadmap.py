"""The ResNet -> ConvNeXt roadmap: every step's size and cost beside the paper's, or train the steps.

    convnext roadmap                                  # R50 -> ConvNeXt-T table
    convnext roadmap --regime r200 --json             # R200 -> ConvNeXt-B, as JSON
    convnext roadmap --train --epochs 10 --steps 0,2,3,13
    convnext roadmap --train --data ~/flowers --output-dir runs/roadmap-flowers

Training uses one recipe for every step (default: `roadmap`, the small-data preset at lr 1e-3) and
writes roadmap.csv and roadmap.png; rerunning skips finished steps and resumes an interrupted one.
"""
import argparse
import json
from pathlib import Path

from ..runtime.ranges import COUNT, NON_NEGATIVE_INT
from ..training.recipes import RECIPES
from ..training.roadmap_runs import REGIMES, plot, select, step_row, train_steps, write_csv
from ..training.loop import RunConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--regime", choices=list(REGIMES), default="r50")
    parser.add_argument("--steps", help="comma-separated step numbers or names (default: all)")
    parser.add_argument("--json", action="store_true", help="print the table as JSON")
    parser.add_argument("--train", action="store_true", help="train the chosen steps")
    parser.add_argument("--data", default="digits")
    parser.add_argument("--recipe", choices=list(RECIPES), default="roadmap",
                        help="one recipe for every step (default: roadmap, the small preset at lr 1e-3)")
    parser.add_argument("--epochs", type=COUNT.parse)
    parser.add_argument("--batch-size", type=COUNT.parse)
    parser.add_argument("--subset", type=COUNT.parse, help="at most N train and N val images (quick runs)")
    parser.add_argument("--max-steps", type=COUNT.parse, help="optimizer steps per roadmap step (smoke runs)")
    parser.add_argument("--output-dir", default="runs/roadmap")
    parser.add_argument("--seed", type=NON_NEGATIVE_INT.parse, default=0)
    parser.add_argument("--workers", type=NON_NEGATIVE_INT.parse, default=0)
    parser.add_argument("--device")


def run(args: argparse.Namespace) -> int:
    steps = select(args.regime, args.steps)
    if not args.train:
        rows = [step_row(s) for s in steps]
        if args.json:
            print(json.dumps(rows, indent=1))
        else:
            _print_table(rows)
        return 0
    recipe = RECIPES[args.recipe].update(epochs=args.epochs, batch_size=args.batch_size)
    run_config = RunConfig(data=args.data, seed=args.seed, workers=args.workers, device=args.device,
                           subset=args.subset, max_steps=args.max_steps)
    output_dir = Path(args.output_dir)
    rows = train_steps(steps, recipe, run_config, output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_csv(rows, output_dir / "roadmap.csv")
    plot(rows, output_dir / "roadmap.png", args.data if args.data == "digits" else Path(args.data).name)
    _print_table(rows)
    print(f"wrote {output_dir / 'roadmap.csv'} and {output_dir / 'roadmap.png'}")
    if args.json:
        print(json.dumps(rows))
    return 0


def _print_table(rows: list[dict]) -> None:
    trained = "top1" in rows[0]
    width = max(len(r["name"]) for r in rows)
    header = f"{'step':<{width}}  {'params':>12}  {'GMACs':>6}  {'paper top-1':>11}  {'paper GFLOPs':>12}"
    print(header + ("  ours top-1" if trained else "") + "  change")
    for r in rows:
        ours = f"  {100 * r['top1']:9.2f}%" if trained else ""
        print(f"{r['name']:<{width}}  {r['params']:>12,}  {r['gmacs']:6.2f}  {r['paper_top1']:>11.1f}  "
              f"{r['paper_gflops']:>12.2f}{ours}  {r['change']}")
