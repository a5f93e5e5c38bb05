"""The accuracy cost of bfloat16 on the built-in digits, for docs/performance.md.

    python scripts/bf16_cost.py runs/fp32-demo [runs/bf16-demo]

For a run trained in float32: test-split top-1 in float32, under bf16 autocast, and as an
`optimize_for_inference(dtype=torch.bfloat16)` model, with the largest logit difference from float32 and
how many predictions change. For a second run trained with `--amp bf16`: its own top-1 the same ways.
"""
import json
import sys

import torch
from torch.utils.data import DataLoader

import convnext
from convnext.runtime.hardware import describe
from convnext.training.data import build_eval_data


@torch.no_grad()
def logits_and_labels(model, loader, autocast: bool) -> tuple[torch.Tensor, torch.Tensor]:
    outputs, labels = [], []
    for images, targets in loader:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            outputs.append(model(images).float())
        labels.append(targets)
    return torch.cat(outputs), torch.cat(labels)


def measure(run: str) -> dict:
    model = convnext.load_pretrained(run).eval()
    loader = DataLoader(build_eval_data("digits", model).dataset, batch_size=64)
    reference, labels = logits_and_labels(model, loader, autocast=False)
    row = {"run": run, "fp32_top1": (reference.argmax(1) == labels).float().mean().item()}
    variants = {"autocast": (model, True),
                "optimized_bf16": (convnext.optimize_for_inference(model, dtype=torch.bfloat16), False)}
    for name, (variant, autocast) in variants.items():
        logits, _ = logits_and_labels(variant, loader, autocast)
        row[f"{name}_top1"] = (logits.argmax(1) == labels).float().mean().item()
        row[f"{name}_max_logit_diff"] = (logits - reference).abs().max().item()
        row[f"{name}_changed_predictions"] = int((logits.argmax(1) != reference.argmax(1)).sum())
    row["logit_range"] = reference.abs().max().item()
    return row


if __name__ == "__main__":
    torch.manual_seed(0)
    print(describe())
    for run in sys.argv[1:]:
        print(json.dumps(measure(run)))
