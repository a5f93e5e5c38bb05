"""Classify images: top-k classes with probabilities, as a table or JSON.

    convnext predict --weights runs/convnext_atto-20260101-120000 digit.png
    convnext predict --model convnext_tiny --pretrained photos/ 'more/*.jpg' --top-k 3 --json
    convnext predict --weights runs/convnext_atto-20260101-120000 --amp bf16 digits/
    convnext predict --weights model.onnx --backend onnxruntime photos/
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

from ..checkpoints.atomic import atomic_file
from ..checkpoints.preprocessing import IMAGENET_MEAN, IMAGENET_STD
from ..checkpoints.preprocessing import eval_transform
from ..deploy.gradcam import Cams, grad_cam, overlay
from ..models.hardware import amp_dtype
from ..training.data import IMAGE_EXTENSIONS
from ..training.ranges import COUNT
from .common import add_amp_argument, add_model_arguments, load_model


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    add_amp_argument(parser)
    parser.add_argument("inputs", nargs="+", help="image files, folders (searched recursively) or globs")
    parser.add_argument("--top-k", type=COUNT.parse, default=5)
    parser.add_argument("--batch-size", type=COUNT.parse, default=16)
    parser.add_argument("--backend", choices=("torch", "onnxruntime"), default="torch",
                        help="onnxruntime runs an exported .onnx (its .json sidecar gives classes and sizes)")
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


class TorchPredictor:
    def __init__(self, args):
        self.model = load_model(args)
        self.device = args.device
        self.autocast = amp_dtype(args.amp, args.device)
        config = getattr(self.model, "data_config", None) or {}
        self.in_chans, self.class_names = self.model.in_chans, getattr(self.model, "class_names", None)
        self.mean, self.std = config.get("mean", IMAGENET_MEAN), config.get("std", IMAGENET_STD)
        self.transform = eval_transform(config.get("input_size", 224), self.mean, self.std,
                                        config.get("crop_pct", 0.875))

    @torch.no_grad()
    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        device_type = torch.device(self.device).type
        with torch.autocast(device_type, dtype=self.autocast, enabled=self.autocast is not None):
            logits = self.model(batch.to(self.device))
        return logits.float().softmax(dim=1).cpu()

    def cams(self, batch: torch.Tensor, stage: int) -> tuple[Cams, torch.Tensor]:
        """Grad-CAM maps for the top-1 classes, and the crops in [0, 1] to draw them over."""
        crops = batch * torch.tensor(self.std).view(1, -1, 1, 1) + torch.tensor(self.mean).view(1, -1, 1, 1)
        return grad_cam(self.model, batch.to(self.device), stage=stage), crops


def predictor(args):
    if args.backend == "onnxruntime" and args.amp:
        raise ValueError("--amp is for the torch backend; an ONNX file runs in the precision it was exported in")
    if args.backend == "onnxruntime" and args.cam:
        raise ValueError("--cam needs the torch backend (Grad-CAM takes gradients)")
    if args.backend == "onnxruntime":
        from ..deploy.export import OnnxPredictor

        if not args.weights:
            raise ValueError("--backend onnxruntime needs --weights FILE.onnx")
        return OnnxPredictor(args.weights)
    return TorchPredictor(args)


def run(args: argparse.Namespace) -> int:
    predict = predictor(args)
    paths, images = read_images(expand(args.inputs), "L" if predict.in_chans == 1 else "RGB")
    if not paths:
        raise ValueError("no readable images among the inputs")
    results = []
    for start in range(0, len(images), args.batch_size):
        batch = torch.stack([predict.transform(image) for image in images[start : start + args.batch_size]])
        probabilities = predict(batch)
        top = probabilities.topk(min(args.top_k, probabilities.shape[1]), dim=1)
        for path, values, indices in zip(paths[start:], top.values.tolist(), top.indices.tolist()):
            names = [predict.class_names[i] if predict.class_names else str(i) for i in indices]
            results.append({"path": str(path), "top": [{"class": n, "index": i, "probability": v}
                                                       for n, i, v in zip(names, indices, values)]})
        if args.cam:
            cams, crops = predict.cams(batch, args.cam_stage)
            for offset, (cam, crop) in enumerate(zip(cams.maps, crops)):
                result = results[start + offset]
                destination = Path(args.cam) / f"{Path(result['path']).stem}.cam.png"
                with atomic_file(destination) as tmp:
                    overlay(crop, cam.cpu()).save(tmp, format="PNG")
                result["cam"] = {"class_index": cams.classes[offset], "empty": cams.empty[offset],
                                 "grid": cam.tolist(), "file": str(destination)}
    if args.json:
        print(json.dumps(results))
        return 0
    width = max(len(r["path"]) for r in results)
    for r in results:
        cells = "  ".join(f"{t['class']} {100 * t['probability']:5.1f}%" for t in r["top"])
        print(f"{r['path']:<{width}}  {cells}")
    return 0
