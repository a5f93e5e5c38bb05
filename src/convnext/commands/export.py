"""Export weights to a file another runtime runs (ONNX, OpenVINO, ExecuTorch, LiteRT, Core ML, TorchScript,
ExportedProgram), and check it against eager PyTorch.

    convnext export --weights runs/my-run --format onnx --output model.onnx --dynamic-batch
    convnext export --model convnext_tiny --pretrained --format torchscript --output tiny.pt
    convnext export --weights w.safetensors --format onnx --output w.onnx --optimize   # exact folds first
    convnext export --weights runs/my-run --format onnx --int8 --calibration-data ~/photos --output m.int8.onnx
    convnext export --weights runs/my-run --format openvino --int8 --calibration-data ~/photos --output m.int8.xml
    convnext export --weights runs/my-run --format executorch --output model.pte       # phones: XNNPACK
    convnext export --weights runs/my-run --format executorch --int8 --calibration-data ~/photos --output m.int8.pte
    convnext export --weights runs/my-run --format tflite --int8 --output m.int8.tflite  # INT8 weights
    convnext export --weights runs/my-run --format coreml --output model.mlpackage
"""
import argparse
from pathlib import Path

import torch

from ..deploy.export import export, export_int8, int8_format
from ..deploy.formats import FORMATS, format_named
from ..deploy.inference import optimize_for_inference
from ..runtime.ranges import COUNT
from .common import add_model_arguments, load_model


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser, accelerated=False)  # exporters record the reference graph
    parser.add_argument("--format", required=True, help=f"one of {', '.join(FORMATS)}")
    parser.add_argument("--output", required=True, help="file to write (a .mlpackage is a folder)")
    parser.add_argument("--dynamic-batch", action="store_true", help="any batch size (checked at 1 and 3)")
    parser.add_argument("--optimize", action="store_true", help="fold norms and layer scale before exporting")
    parser.add_argument("--int8", action="store_true",
                        help="post-training INT8: --format onnx by ONNX Runtime (static QDQ), openvino by NNCF, "
                             "executorch by PT2E for XNNPACK (all calibrated on --calibration-data), tflite as "
                             "INT8 weights (no calibration)")
    parser.add_argument("--calibration-data", help='images to calibrate INT8 on: "digits" or "scenes" (their training images), '
                             'a folder (its train/ subfolder if it has one), hf:NAME[:SPLIT] or shards')
    parser.add_argument("--calibration-images", type=COUNT.parse, default=300, help="how many of them (default 300)")


def run(args: argparse.Namespace) -> int:
    fmt = int8_format(args.format) if args.int8 else format_named(args.format)
    if Path(args.output).is_dir() and fmt.suffix != ".mlpackage":
        raise ValueError(f"--output {args.output} is a folder; give the file to write")
    if args.int8 and fmt.int8_calibrated and not args.calibration_data:
        raise ValueError(f"--format {fmt.name} --int8 is calibrated on your images: give --calibration-data")
    fmt.require()  # before the weights are read: a missing engine is one line
    model = load_model(args)
    if args.int8:
        return write_int8(model, args)
    exported = optimize_for_inference(model, channels_last=False) if args.optimize else model
    for attribute in ("model_name", "class_names", "data_config", "in_chans", "num_classes"):
        setattr(exported, attribute, getattr(model, attribute, None))
    notes: list[str] = []
    checks = export(exported, args.output, args.format, args.dynamic_batch, notes)
    for note in notes:
        print(f"{args.format}: {note}")
    for batch, diff in checks:
        print(f"check: batch {batch}: max |{args.format} - eager| = {diff:.2e} (tolerance {fmt.tolerance:g}) ok")
    print(f"wrote {args.output} and {args.output}.json")
    return 0


def write_int8(model, args: argparse.Namespace) -> int:
    """The model quantized to INT8 and written atomically with its sidecar; its agreement with float32
    on the calibration images is printed (INT8 is not exact: docs/performance.md has its accuracy)."""
    from torch.utils.data import DataLoader

    from ..training.data import build_eval_data

    fmt = format_named(args.format)
    if fmt.name in ("onnx", "openvino"):
        from ..deploy.quantize import require_quantizer

        require_quantizer("openvino" if fmt.name == "openvino" else "onnxruntime")
    # Calibration images come from the training split: not the images the model is evaluated on.
    data = build_eval_data(args.calibration_data, model, split="train") if args.calibration_data else None
    batches, count = [], 0
    if data is not None:
        count = min(args.calibration_images, len(data.dataset))
        chosen = torch.randperm(len(data.dataset), generator=torch.Generator().manual_seed(0))[:count].tolist()  # all classes
        batches = [images for images, _ in DataLoader(torch.utils.data.Subset(data.dataset, chosen), 32)]
    output = Path(args.output)
    notes = export_int8(model, output, fmt.name, batches)
    for note in notes:
        print(f"{fmt.name}: {note}")
    if batches and fmt.run:
        run = fmt.run(output)
        with torch.no_grad():
            pairs = [(run(b).float(), model(b).float()) for b in batches]
        difference = max((a - b).abs().max().item() for a, b in pairs)
        agree = sum((a.argmax(1) == b.argmax(1)).sum().item() for a, b in pairs) / count
        print(f"{'calibrated on' if fmt.int8_calibrated else 'compared on'} {count} images of "
              f"{args.calibration_data}: top-1 as float32 on {100 * agree:.1f}% of them, "
              f"largest logit difference {difference:.3g}")
    print(f"wrote {output} and {output}.json")
    return 0
