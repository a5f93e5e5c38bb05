"""Export weights to ONNX, TorchScript or an ExportedProgram, and check the file against eager PyTorch.

    convnext export --weights runs/my-run --format onnx --output model.onnx --dynamic-batch
    convnext export --model convnext_tiny --pretrained --format torchscript --output tiny.pt
    convnext export --weights w.safetensors --format onnx --output w.onnx --optimize   # exact folds first
    convnext export --weights runs/my-run --format onnx --int8 --calibration-data ~/photos --output m.int8.onnx
    convnext export --weights runs/my-run --format openvino --int8 --calibration-data ~/photos --output m.int8.xml
"""
import argparse
from pathlib import Path

import torch

from ..deploy.export import FORMATS, export
from ..deploy.inference import optimize_for_inference
from ..runtime.ranges import COUNT
from .common import add_model_arguments, load_model


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser, accelerated=False)  # exporters record the reference graph
    parser.add_argument("--format", required=True, help=f"one of {', '.join(FORMATS)}")
    parser.add_argument("--output", required=True, help="file to write")
    parser.add_argument("--dynamic-batch", action="store_true", help="any batch size (checked at 1 and 3)")
    parser.add_argument("--optimize", action="store_true", help="fold norms and layer scale before exporting")
    parser.add_argument("--int8", action="store_true",
                        help="post-training INT8 quantization, calibrated on --calibration-data: --format onnx by "
                             "ONNX Runtime (static QDQ), --format openvino by NNCF")
    parser.add_argument("--calibration-data", help='images to calibrate INT8 on: "digits" or "scenes" (their training images), '
                             'a folder (its train/ subfolder if it has one), hf:NAME[:SPLIT] or shards')
    parser.add_argument("--calibration-images", type=COUNT.parse, default=300, help="how many of them (default 300)")


def run(args: argparse.Namespace) -> int:
    if args.format not in FORMATS:
        raise ValueError(f"unknown export format {args.format!r}; choose from {', '.join(FORMATS)}")
    if Path(args.output).is_dir():
        raise ValueError(f"--output {args.output} is a folder; give the file to write")
    model = load_model(args)
    if args.int8:
        return export_int8(model, args)
    exported = optimize_for_inference(model, channels_last=False) if args.optimize else model
    for attribute in ("model_name", "class_names", "data_config", "in_chans", "num_classes"):
        setattr(exported, attribute, getattr(model, attribute, None))
    checks = export(exported, args.output, args.format, args.dynamic_batch)
    for batch, diff in checks:
        print(f"check: batch {batch}: max |{args.format} - eager| = {diff:.2e} (tolerance 1e-4) ok")
    print(f"wrote {args.output} and {args.output}.json")
    return 0


def export_int8(model, args: argparse.Namespace) -> int:
    """The model quantized to INT8 and written atomically with its sidecar; its agreement with float32
    on the calibration images is printed (INT8 is not exact: docs/performance.md has its accuracy)."""
    import json

    from torch.utils.data import DataLoader

    from ..checkpoints.preprocessing import data_config
    from ..deploy.export import exported_file, load_runner, sidecar
    from ..deploy.quantize import quantize, require_quantizer
    from ..runtime.atomic import atomic_file
    from ..training.data import build_eval_data

    if args.format not in ("onnx", "openvino") or not args.calibration_data:
        raise ValueError("--int8 writes an ONNX file (--format onnx) or an OpenVINO IR (--format openvino), "
                         "calibrated on --calibration-data")
    engine = "openvino" if args.format == "openvino" else "onnxruntime"
    require_quantizer(engine)
    data = build_eval_data(args.calibration_data, model, split="train")  # not the images it is evaluated on
    count = min(args.calibration_images, len(data.dataset))
    chosen = torch.randperm(len(data.dataset), generator=torch.Generator().manual_seed(0))[:count].tolist()  # all classes
    batches = [images for images, _ in DataLoader(torch.utils.data.Subset(data.dataset, chosen), 32)]
    output = Path(args.output)
    with exported_file(output, args.format) as written:
        quantize(model.cpu(), batches, written, data_config(model)["input_size"], engine)
        run = load_runner(written, args.format)
        with torch.no_grad():
            pairs = [(run(b).float(), model(b).float()) for b in batches]
    difference = max((a - b).abs().max().item() for a, b in pairs)
    agree = sum((a.argmax(1) == b.argmax(1)).sum().item() for a, b in pairs) / count
    with atomic_file(output.with_name(output.name + ".json")) as tmp:
        tmp.write_text(json.dumps({**sidecar(model), "int8": True}, indent=2))
    print(f"calibrated on {count} images of {args.calibration_data}: top-1 as float32 on {100 * agree:.1f}% of them, "
          f"largest logit difference {difference:.3g}")
    print(f"wrote {output} and {output}.json")
    return 0
