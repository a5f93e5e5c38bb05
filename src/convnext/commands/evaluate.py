"""Evaluate weights on a dataset: top-1, top-5, loss, per-class accuracy, confusion matrix.

    convnext eval --weights runs/convnext_atto-20260101-120000
    convnext eval --weights model.safetensors --data ~/flowers --json
    convnext eval --model convnext_tiny --pretrained --data /imagenet --amp bf16
"""
import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ..deploy.backends import on_backend
from ..deploy.compiled import Compiled
from ..runtime.atomic import write_text
from ..runtime.precision import amp_dtype
from ..training.data import build_eval_data
from ..training.evaluation import evaluate
from ..runtime.ranges import COUNT, INPUT_SIZE, NON_NEGATIVE_INT, SHARE
from ..training.reporting import plot_confusion
from .common import add_amp_argument, add_backend_argument, add_model_arguments, announce, load_runnable
from .train import add_source_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    add_amp_argument(parser)
    add_backend_argument(parser)
    parser.add_argument("--data", default="digits", help='"digits" (its test split), an ImageFolder path, '
                        "hf:NAME[:SPLIT] (a datasets data set) or WebDataset shards DIR/x-{0..9}.tar")
    add_source_arguments(parser)
    parser.add_argument("--batch-size", type=COUNT.parse, default=64)
    parser.add_argument("--workers", type=NON_NEGATIVE_INT.parse, default=0)
    parser.add_argument("--input-size", type=INPUT_SIZE.parse, help="default: the size the weights were trained at")
    parser.add_argument("--crop-pct", type=SHARE.parse, default=None, help="eval crop share (default: the weights' own, else 0.875)")
    parser.add_argument("--output-dir", help="where metrics.json and confusion.png go (default runs/eval-<time>)")
    parser.add_argument("--json", action="store_true", help="last line of stdout: a JSON summary")


def run(args: argparse.Namespace) -> int:
    start = time.time()
    model = load_runnable(args)
    if args.backend != "pytorch" and not isinstance(model, Compiled):
        if args.amp:
            raise ValueError(f"--backend {args.backend} runs float32: drop --amp")
        model = on_backend(model.cpu(), args.backend, args.input_size)
    if args.input_size and args.input_size < getattr(model, "min_input_size", 32):
        raise ValueError(f"--input-size must be ≥ {model.min_input_size} for this model, got {args.input_size}")
    data = build_eval_data(args.data, model, args.input_size, args.crop_pct, (args.image_column, args.label_column))
    loader = DataLoader(data.dataset, args.batch_size, num_workers=args.workers)
    metrics = evaluate(model, loader, model.num_classes, context=_context(args.device),
                       autocast_dtype=amp_dtype(args.amp, args.device))
    out = Path(args.output_dir or f"runs/eval-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    names = data.class_names
    plot_confusion([row[: len(names)] for row in metrics["confusion"][: len(names)]], names, out / "confusion.png")
    summary = {"test_top1": metrics["top1"], "test_top5": metrics["top5"], "test_loss": metrics["loss"],
               "images": metrics["count"], "epochs": _trained_epochs(args.weights), "wall_s": time.time() - start,
               "run_dir": str(out), "per_class": dict(zip(names, metrics["per_class"]))}
    write_text(out / "metrics.json", json.dumps(summary, indent=2))
    announce(args)  # once the results are in and written: a failure before stays one line
    say = (lambda text: print(text, file=sys.stderr)) if args.json else print
    for name, accuracy in summary["per_class"].items():
        say(f"  {name:<20} {100 * accuracy:6.2f}%")
    say(f"top-1 {100 * metrics['top1']:.2f}%  top-5 {100 * metrics['top5']:.2f}%  loss {metrics['loss']:.4f}  "
        f"on {metrics['count']} images; written to {out}")
    if args.json:
        print(json.dumps(summary))
    return 0


def _context(device: str):
    from ..training.distributed import Context

    return Context(device=torch.device(device))


def _trained_epochs(weights: str | None) -> int | None:
    """Epochs behind the weights when they come from a training run, else None."""
    summary = Path(weights or "") / "summary.json"
    return json.loads(summary.read_text()).get("epochs") if weights and summary.is_file() else None
