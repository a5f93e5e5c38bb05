"""Benchmark our model (the reference, accelerated, optimized) against timm, torchvision and transformers on the same weights.

    convnext bench                                   # ConvNeXt-T, batch 16, 224², CPU
    convnext bench --compile --json bench.json --plot bench.png
    convnext bench --amp bf16                        # CPUs with AVX512-BF16 or AMX; the peers under autocast
    convnext bench --device cuda --amp bf16 --batch-size 128
    convnext bench --backend openvino --int8         # our model on OpenVINO too, float32 and INT8
    convnext bench --model convnext_atto --batch-size 1 --backend executorch --int8 --no-train   # on-device
    convnext bench --model convnext_test --input-size 64 --rounds 1 --iters 1 --no-memory   # seconds

Reports inference img/s, batch-1 latency, training-step img/s (forward + backward + AdamW), peak
training memory, ratios to the fastest peer and the share of a measured matmul peak in the run's
precision, under a line naming the machine (CPU model, threads, AVX-512 / AVX512-BF16 / AMX).
"""
import argparse

import torch

from ..deploy import bench
from ..deploy.backends import BACKENDS
from ..deploy.peers import PEERS
from ..models.registry import create_model
from ..runtime.ranges import COUNT, INPUT_SIZE
from .common import add_amp_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="convnext_tiny")
    parser.add_argument("--batch-size", type=COUNT.parse, default=16)
    parser.add_argument("--input-size", type=INPUT_SIZE.parse, default=224)
    parser.add_argument("--device", default="cpu")
    add_amp_argument(parser)
    parser.add_argument("--peers", default=",".join(PEERS), help="comma-separated; 'none' for ours only")
    parser.add_argument("--rounds", type=COUNT.parse, default=3)
    parser.add_argument("--iters", type=COUNT.parse, default=2, help="timed calls per measurement")
    parser.add_argument("--train", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--memory", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                        help="also time torch.compile (Inductor, frozen weights)")
    parser.add_argument("--backend", action="append", choices=BACKENDS,
                        help="an engine to time our model on besides PyTorch (CPU; repeat for more; default: "
                             "onnxruntime and openvino, where installed; executorch and litert run batch-1 programs "
                             "image by image); --backend pytorch: PyTorch alone")
    parser.add_argument("--no-onnx", action="store_true", help=argparse.SUPPRESS)  # before --backend: pytorch alone
    parser.add_argument("--grad-checkpointing", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--int8", action=argparse.BooleanOptionalAction, default=False,
                        help="also time our model quantized to INT8 on the engines chosen (CPU)")
    parser.add_argument("--accelerate", action=argparse.BooleanOptionalAction, default=True,
                        help="time our model accelerated (convnext.accelerate) and optimized too, not only the reference")
    parser.add_argument("--json", metavar="FILE", help="write the report as JSON")
    parser.add_argument("--plot", metavar="FILE", help="write a bar chart PNG")


def engines(args: argparse.Namespace) -> tuple[str, ...]:
    chosen = ["pytorch"] if args.no_onnx else args.backend or bench.BenchConfig.engines
    return tuple(name for name in chosen if name != "pytorch")


def run(args: argparse.Namespace) -> int:
    peers = [] if args.peers == "none" else [p for p in args.peers.split(",") if p]
    unknown = set(peers) - set(PEERS)
    if unknown:
        raise ValueError(f"unknown peer(s) {', '.join(sorted(unknown))}; choose from {', '.join(PEERS)}")
    if args.int8 and not engines(args):
        raise ValueError("--int8 times our model quantized on the engines: with --backend pytorch "
                         "alone there is nothing to run it on (add --backend onnxruntime or openvino)")
    with torch.device("meta"):
        smallest = create_model(args.model).min_input_size
    if args.input_size < smallest:
        raise ValueError(f"--input-size must be ≥ {smallest} for {args.model}, got {args.input_size}")
    config = bench.BenchConfig(model=args.model, batch=args.batch_size, size=args.input_size, device=args.device,
                               peers=tuple(peers), rounds=args.rounds, iters=args.iters, train=args.train,
                               memory=args.memory, compile=args.compile, engines=engines(args),
                               grad_checkpointing=args.grad_checkpointing, amp=args.amp, int8=args.int8,
                               accelerate=args.accelerate)
    report = bench.run(config)
    print(bench.table(report))
    if args.json:
        bench.save(report, args.json)
        print(f"wrote {args.json}")
    if args.plot:
        bench.plot(report, args.plot)
        print(f"wrote {args.plot}")
    return 0
