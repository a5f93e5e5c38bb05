"""Our training step with each pointwise kernel, eager and compiled, against timm's, in one process.

    python scripts/training_step.py --device cuda --amp bf16 --batch-size 128 --json step.json
    python scripts/training_step.py --model convnext_test --input-size 64 --rounds 1 --iters 1   # seconds

`convnext bench` times our eager step with the kernels `autotune` measured; this script asks what that
choice is worth: the same step with the pointwise layers forced to the GEMM (cuBLAS, BLAS) or to the
1x1 convolution (cuDNN, oneDNN) everywhere; or, with --compile, `torch.compile` of ours and of timm
(what `convnext train --compile` runs). Always against timm's eager step, in one process, contenders
interleaved round by round; medians are reported.
The step is bench's: forward under autocast, logsumexp loss, backward, AdamW.
"""
import argparse
import contextlib
import json
import statistics

import torch

from convnext.deploy.bench import training_step
from convnext.deploy.timing import timed
from convnext.deploy.peers import PEERS
from convnext.accelerate import Autotuner, accelerate
from convnext.runtime.hardware import describe
from convnext.models.registry import create_model


def contenders(model_name: str, compile: bool, device: torch.device, tuner: Autotuner) -> dict:
    """name -> (model, the kernel choice forced while it runs). Compiled models get a process of their
    own (with timm eager as the yardstick): on an H100 our eager steps ran 10-15% slower in a process
    that had also compiled models, timm's did not (docs/performance.md)."""
    ours = create_model(model_name)
    timm = PEERS["timm"](ours)
    found = {} if timm is None else {"timm": (timm, None)}
    if compile:
        found["ours, compiled"] = (torch.compile(accelerate(ours, tuner)), None)
        if timm is not None:
            found["timm, compiled"] = (torch.compile(PEERS["timm"](ours)), None)
    else:
        found.update({"ours, measured kernels": (accelerate(ours, tuner), None),
                      "ours, pointwise as GEMMs": (accelerate(create_model(model_name), tuner), "linear"),
                      "ours, pointwise as 1x1 convs": (accelerate(create_model(model_name), tuner), "conv"),
                      "ours, reference": (create_model(model_name), None)})
    for name, (model, forced) in found.items():
        found[name] = (model.to(device, memory_format=torch.channels_last).train(), forced)
    return found


def profile(step, device: torch.device, steps: int = 3) -> str:
    """torch.profiler's table of `steps` calls, the most time-consuming kernels first."""
    from torch.profiler import ProfilerActivity

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    step()
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=sort, row_limit=30, max_name_column_width=70)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="convnext_tiny")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", choices=["bf16"], default=None)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--json")
    parser.add_argument("--profile", metavar="FILE", help="also write torch.profiler's kernel table of each eager step")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    dtype = torch.bfloat16 if args.amp else None
    tuner = Autotuner()  # our accelerated contenders' kernel choices
    found = contenders(args.model, args.compile, device, tuner)
    x = torch.randn(args.batch_size, 3, args.input_size, args.input_size, device=device)
    x = x.contiguous(memory_format=torch.channels_last)
    optimizers = {name: torch.optim.AdamW(model.parameters()) for name, (model, _) in found.items()}

    def step(name: str) -> None:
        model, forced = found[name]
        with tuner.forced(pointwise=forced) if forced else contextlib.nullcontext():
            training_step(model, optimizers[name], x, dtype)

    seconds = {name: [] for name in found}
    names = list(found)
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            seconds[name].append(timed(lambda: step(name), args.iters, device))
        print(f"round {r + 1}/{args.rounds} done", flush=True)
    rate = {name: args.batch_size / statistics.median(times) for name, times in seconds.items()}
    baseline = rate.get("timm") or next(iter(rate.values()))
    print(f"{args.model}, batch {args.batch_size}, {args.input_size}², {describe(device)}, amp {args.amp or 'off'}")
    print(f"{'training step':<30} {'img/s':>9} {'x timm':>7}")
    for name, value in rate.items():
        print(f"{name:<30} {value:9.1f} {value / baseline:7.2f}")
    if args.profile:
        with open(args.profile, "w") as f:
            for name in [name for name in ("ours, measured kernels", "ours, compiled", "timm") if name in found]:
                f.write(f"== {name}: 3 steps ==\n{profile(lambda: step(name), device)}\n\n")
        print(f"wrote {args.profile}")
    report = {"model": args.model, "batch": args.batch_size, "input_size": args.input_size,
              "device": describe(device), "amp": args.amp, "torch": torch.__version__, "rounds": args.rounds,
              "iters": args.iters, "train_img_s": rate, "kernels": tuner.state_dict(),
              "kernel_summary": tuner.summary()}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == "__main__":
    main()
