"""A quick look at whether a roadmap step learns the built-in scenes: a plain loop (AdamW, linear warm-up
and cosine, no augmentation, smoothing 0.1, batch 64), the training loss every 100 steps and the test
top-1 on the first 2,000 test images. The calibration rows of docs/roadmap.md come from it.

    python scripts/roadmap_probe.py 13 --lr 2e-3 --steps 400          # ConvNeXt-atto (the last step)
    python scripts/roadmap_probe.py 0 --lr 2e-3 --steps 400 --threads 1

A network that has learned nothing has training loss ln 24 = 3.18.
"""
import argparse
import math
import time

import torch

from convnext.models.registry import create_model
from convnext.training.roadmap_runs import select
from convnext.training.scenes import CLASSES, scenes

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet's, as the trainer uses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", help="a step of the small regime (number or name)")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--train-images", type=int, default=16_000)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    name = select("small", args.step)[0].name
    model = create_model(name, num_classes=len(CLASSES))
    train_x, train_y, test_x, test_y = scenes(args.train_images)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) * 255 for v in (MEAN, STD))
    decayed = [p for p in model.parameters() if p.ndim > 1]
    others = [p for p in model.parameters() if p.ndim <= 1]
    optimizer = torch.optim.AdamW([{"params": decayed, "weight_decay": 0.05}, {"params": others, "weight_decay": 0}],
                                  lr=args.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1, (s + 1) / args.warmup)
                                                 * 0.5 * (1 + math.cos(math.pi * s / args.steps)))
    order = torch.randperm(len(train_y), generator=torch.Generator().manual_seed(0))
    losses, started = [], time.time()
    for step in range(args.steps):
        start = step * 64 % (len(order) - 63)
        batch = order[start:start + 64]
        loss = torch.nn.functional.cross_entropy(model((train_x[batch].float() - mean) / std), train_y[batch],
                                                 label_smoothing=0.1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if (step + 1) % 100 == 0:
            print(f"step {step + 1}: training loss {sum(losses[-100:]) / 100:.3f} ({time.time() - started:.0f}s)")
    model.eval()
    with torch.no_grad():
        right = sum((model((test_x[i:i + 250].float() - mean) / std).argmax(1) == test_y[i:i + 250]).sum().item()
                    for i in range(0, 2000, 250))
    print(f"{name}, lr {args.lr:g}, {args.steps} steps: test top-1 {100 * right / 2000:.1f}% (2,000 test images)")


if __name__ == "__main__":
    main()
