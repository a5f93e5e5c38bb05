"""The ResNet -> ConvNeXt roadmap: every step's size and cost beside the paper's, or the study that trains them.

    convnext roadmap                                  # R50 -> ConvNeXt-T table
    convnext roadmap --regime r200 --json             # R200 -> ConvNeXt-B, as JSON
    convnext roadmap --train --regime small --data scenes            # every step and branch, 3 seeds
    convnext roadmap --train --regime small --data scenes --quick    # steps 0 and 13, 3 seeds (~20 min)
    convnext roadmap --train --data digits --recipe roadmap --epochs 10 --seeds 1   # the smoke run

Training is a study (training/roadmap_study.py): each step once per seed, step 0 with the classic ResNet
recipe and the later steps with the modernised one (or one --recipe for all), written to
OUTPUT/STEP/seed-K; roadmap.csv has per step the mean top-1, its std and 95% interval and the change
from the step it builds on (paired by seed), roadmap.png the chart with error bars. Rerunning skips
finished runs and resumes an interrupted one.
"""
import argparse
import json
from dataclasses import replace
from pathlib import Path

from ..runtime.ranges import COUNT, NON_NEGATIVE_INT
from .common import add_accelerate_argument
from ..training.loop import RunConfig
from ..training.recipes import RECIPES
from ..training.roadmap_runs import REGIMES, select, step_row
from ..training.roadmap_study import PRESETS, plot_study, run_study, write_study_csv


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--regime", choices=list(REGIMES), default="r50",
                        help="r50 (-> ConvNeXt-T), r200 (-> ConvNeXt-B), small (-> ConvNeXt-atto, for 2 CPU cores)")
    parser.add_argument("--steps", help="comma-separated step numbers or names (default: all)")
    parser.add_argument("--json", action="store_true", help="print the table as JSON")
    parser.add_argument("--train", action="store_true", help="train the chosen steps: the study")
    parser.add_argument("--data", default="digits", help='"scenes" (built in, 64², 24 classes), "digits", a folder, ...')
    parser.add_argument("--quick", action="store_true", help="the quick preset: steps 0 and 13, 3 seeds, "
                                                             "8,000 images, 4 epochs")
    parser.add_argument("--seeds", type=COUNT.parse, help="runs per step (default 3)")
    parser.add_argument("--train-images", type=COUNT.parse, help="scenes training images (default 16,000)")
    parser.add_argument("--recipe", choices=list(RECIPES),
                        help="one recipe for every step (default: the classic one for step 0, the modern one after)")
    parser.add_argument("--epochs", type=COUNT.parse)
    parser.add_argument("--batch-size", type=COUNT.parse)
    parser.add_argument("--subset", type=COUNT.parse, help="at most N train and N val images (quick runs)")
    parser.add_argument("--max-steps", type=COUNT.parse, help="optimizer steps per run (smoke runs)")
    parser.add_argument("--output-dir", default="runs/roadmap")
    parser.add_argument("--seed", type=NON_NEGATIVE_INT.parse, default=0, help="the first seed")
    parser.add_argument("--workers", type=NON_NEGATIVE_INT.parse, default=0)
    parser.add_argument("--device")
    add_accelerate_argument(parser)
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                        help="channels-last tensors (default: on, as the steps before LayerNorm train 1.3-2x "
                             "faster so on CPUs)")


def run(args: argparse.Namespace) -> int:
    preset = PRESETS["quick" if args.quick else "full"]
    steps = select(args.regime, args.steps or (",".join(preset.steps) if preset.steps else None))
    if not args.train:
        rows = [step_row(s) for s in steps]
        if args.json:
            print(json.dumps(rows, indent=1))
        else:
            _print_table(rows)
        return 0
    preset = replace(preset, **{k: v for k, v in (("seeds", args.seeds), ("epochs", args.epochs),
                                                 ("train_images", args.train_images), ("batch_size", args.batch_size))
                                if v is not None})
    data = f"scenes:{preset.train_images}" if args.data == "scenes" else args.data
    run_config = RunConfig(data=data, seed=args.seed, workers=args.workers, device=args.device,
                           channels_last=args.channels_last, subset=args.subset, max_steps=args.max_steps,
                           accelerate=args.accelerate)
    if args.recipe and args.epochs is None:
        preset = replace(preset, epochs=RECIPES[args.recipe].epochs)
    output_dir = Path(args.output_dir)
    rows = run_study(steps, preset, run_config, output_dir, args.recipe)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_study_csv(rows, output_dir / "roadmap.csv")
    plot_study(rows, output_dir / "roadmap.png", args.data if args.data in ("digits", "scenes") else Path(args.data).name)
    _print_study(rows)
    print(f"wrote {output_dir / 'roadmap.csv'} and {output_dir / 'roadmap.png'}")
    if args.json:
        print(json.dumps(rows))
    return 0


def _print_table(rows: list[dict]) -> None:
    width = max(len(r["name"]) for r in rows)
    print(f"{'step':<{width}}  {'params':>12}  {'GMACs':>6}  {'paper top-1':>11}  {'paper GFLOPs':>12}  change")
    for r in rows:
        print(f"{r['name']:<{width}}  {r['params']:>12,}  {r['gmacs']:6.2f}  {r['paper_top1']:>11.1f}  "
              f"{r['paper_gflops']:>12.2f}  {r['change']}")


def _print_study(rows: list[dict]) -> None:
    width = max(len(r["name"]) for r in rows)
    print(f"{'step':<{width}}  {'params':>10}  {'GMACs':>6}  {'img/s':>6}  {'top-1 (95% CI)':>16}  "
          f"{'change (95% CI)':>16}  {'from step 0':>16}  {'paper':>6}")
    for r in rows:
        change, whole = (f"{r[k]:+.2f} ± {r[k + '_ci95']:.2f}" if k in r else "" for k in ("delta", "from_first"))
        print(f"{r['name']:<{width}}  {r['params']:>10,}  {r['gmacs']:6.3f}  {r['infer_img_s']:6.0f}  "
              f"{r['top1_mean']:7.2f} ± {r['top1_ci95']:5.2f}  {change:>16}  {whole:>16}  {r['paper_top1']:6.1f}")
