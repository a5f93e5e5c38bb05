"""Export weights to ONNX, TorchScript or an ExportedProgram, and check the file against eager PyTorch.

    convnext export --weights runs/my-run --format onnx --output model.onnx --dynamic-batch
    convnext export --model convnext_tiny --pretrained --format torchscript --output tiny.pt
    convnext export --weights w.safetensors --format onnx --output w.onnx --optimize   # exact folds first
"""
import argparse
from pathlib import Path

from ..deploy.export import FORMATS, export
from ..deploy.inference import optimize_for_inference
from .common import add_model_arguments, load_model


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--format", required=True, help=f"one of {', '.join(FORMATS)}")
    parser.add_argument("--output", required=True, help="file to write")
    parser.add_argument("--dynamic-batch", action="store_true", help="any batch size (checked at 1 and 3)")
    parser.add_argument("--optimize", action="store_true", help="fold norms and layer scale before exporting")


def run(args: argparse.Namespace) -> int:
    if args.format not in FORMATS:
        raise ValueError(f"unknown export format {args.format!r}; choose from {', '.join(FORMATS)}")
    if Path(args.output).is_dir():
        raise ValueError(f"--output {args.output} is a folder; give the file to write")
    model = load_model(args)
    exported = optimize_for_inference(model, channels_last=False) if args.optimize else model
    for attribute in ("model_name", "class_names", "data_config", "in_chans", "num_classes"):
        setattr(exported, attribute, getattr(model, attribute, None))
    checks = export(exported, args.output, args.format, args.dynamic_batch)
    for batch, diff in checks:
        print(f"check: batch {batch}: max |{args.format} - eager| = {diff:.2e} (tolerance 1e-4) ok")
    print(f"wrote {args.output} and {args.output}.json")
    return 0
