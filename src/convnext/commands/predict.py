"""Classify images: top-k classes with probabilities, as a table or JSON.

    convnext predict --weights runs/convnext_atto-20260101-120000 digit.png
    convnext predict --model convnext_tiny --pretrained photos/ 'more/*.jpg' --top-k 3 --json
    convnext predict --weights runs/convnext_atto-20260101-120000 --amp bf16 digits/
    convnext predict --weights model.onnx photos/                  # an exported file on its own engine
    convnext predict --weights runs/my-run --backend openvino photos/
    convnext predict --weights runs/convnext_atto-20260101-120000 digits/ --cam heatmaps/   # + Grad-CAM overlays

A file that is not a readable image is reported on stderr and skipped.
"""
import argparse
import glob
import json
import sys
from pathlib import Path

import torch
from PIL import Image

from ..runtime.atomic import atomic_file
from ..deploy.gradcam import overlay
from ..deploy.predictor import Predictor, rank
from ..training.data import IMAGE_EXTENSIONS
from ..runtime.ranges import COUNT
from .common import add_amp_argument, add_backend_argument, add_model_arguments, announce, load_runnable


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    add_amp_argument(parser)
    parser.add_argument("inputs", nargs="+", help="image files, folders (searched recursively) or globs")
    parser.add_argument("--top-k", type=COUNT.parse, default=5)
    parser.add_argument("--batch-size", type=COUNT.parse, default=16)
    add_backend_argument(parser)
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    parser.add_argument("--cam", metavar="DIR", help="also write Grad-CAM overlays (top-1 class) to DIR/<name>.cam.png")
    parser.add_argument("--cam-stage", type=int, default=-1,
                        help="the stage whose output the map is taken from (default: the last; an earlier one "
                             "for small inputs whose last map is 1x1)")


def expand(inputs: list[str]) -> list[Path]:
    """Files named, found under folders, or matched by globs, in a stable order."""
    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            paths += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        elif path.exists():
            paths.append(path)
        else:
            matches = sorted(Path(p) for p in glob.glob(item, recursive=True) if Path(p).is_file())
            if not matches:
                print(f"skipped {item}: no such file", file=sys.stderr)
            paths += matches
    return paths


def read_images(paths: list[Path], mode: str) -> tuple[list[Path], list[Image.Image]]:
    kept, images = [], []
    for path in paths:
        try:
            with Image.open(path) as image:
                images.append(image.convert(mode))
            kept.append(path)
        except Exception as error:  # PIL raises many types for non-images
            print(f"skipped {path}: not a readable image ({type(error).__name__})", file=sys.stderr)
    return kept, images


def predictor(args):
    if args.backend != "pytorch" and args.cam:
        raise ValueError("--cam needs the pytorch backend (Grad-CAM takes gradients)")
    return Predictor(load_runnable(args), args.device, args.amp, args.backend)


def run(args: argparse.Namespace) -> int:
    predict = predictor(args)
    paths, images = read_images(expand(args.inputs), "L" if predict.in_chans == 1 else "RGB")
    if not paths:
        raise ValueError("no readable images among the inputs")
    results = []
    for start in range(0, len(images), args.batch_size):
        batch = torch.stack([predict.transform(image) for image in images[start : start + args.batch_size]])
        for path, top in zip(paths[start:], rank(predict(batch), args.top_k, predict.class_names)):
            results.append({"path": str(path), "top": top})
        if args.cam:
            cams, crops = predict.cams(batch, args.cam_stage)
            for offset, (cam, crop) in enumerate(zip(cams.maps, crops)):
                result = results[start + offset]
                destination = Path(args.cam) / f"{Path(result['path']).stem}.cam.png"
                with atomic_file(destination) as tmp:
                    overlay(crop, cam).save(tmp, format="PNG")
                result["cam"] = {"class_index": cams.classes[offset], "empty": cams.empty[offset],
                                 "grid": cam.tolist(), "file": str(destination)}
    announce(args)  # once the results are in (heat maps written): a failure before stays one line
    if args.json:
        print(json.dumps(results))
        return 0
    width = max(len(r["path"]) for r in results)
    for r in results:
        cells = "  ".join(f"{t['class']} {100 * t['probability']:5.1f}%" for t in r["top"])
        print(f"{r['path']:<{width}}  {cells}")
    return 0
