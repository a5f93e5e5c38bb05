"""FCMAE pre-training step against the same encoder's supervised training step, side by side in one
process (docs/pretraining.md): img/s of forward + backward + AdamW, medians of interleaved rounds.

    python scripts/fcmae_throughput.py [--model convnextv2_atto] [--size 224] [--batch 16]
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import convnext
from convnext.runtime.hardware import describe


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="convnextv2_atto")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, args.size, args.size)
    labels = torch.randint(0, 1000, (args.batch,))
    mae = convnext.FCMAE(args.model).train()
    classifier = convnext.create_model(args.model).train()
    optimizers = {name: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], fused=True)
                  for name, m in (("fcmae", mae), ("supervised", classifier))}
    steps = {"fcmae": lambda: mae(x)[0], "supervised": lambda: F.cross_entropy(classifier(x), labels)}

    def step(name):
        loss = steps[name]()
        optimizers[name].zero_grad(set_to_none=True)
        loss.backward()
        optimizers[name].step()

    for name in steps:
        step(name)  # warm-up: oneDNN primitives, kernel choices
    times = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name in steps:
            start = time.perf_counter()
            step(name)
            times[name].append(time.perf_counter() - start)
    print(describe(), f"{args.model}, batch {args.batch}, {args.size}²")
    rates = {name: args.batch / statistics.median(t) for name, t in times.items()}
    for name, rate in rates.items():
        print(f"{name:<11} {rate:7.2f} img/s  ({rate / rates['supervised']:.2f}x supervised)")


if __name__ == "__main__":
    main()
