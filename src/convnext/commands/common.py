"""Arguments and helpers the eval, predict, serve and export commands share."""
import argparse
import sys
from pathlib import Path

import torch

from ..accelerate import accelerate
from ..accelerate import describe as acceleration
from ..checkpoints.hub import create_model
from ..checkpoints.weights import load_pretrained, load_weights
from ..deploy.backends import BACKENDS
from ..deploy.export import load_exported
from ..deploy.formats import format_of_file
from ..runtime.precision import AMP_DTYPES

ALIASES = {"torch": "pytorch"}  # the backend's name before 0.3


def add_model_arguments(parser: argparse.ArgumentParser, accelerated: bool = True) -> None:
    parser.add_argument("--weights", help="weights file or folder in any format, or a training run directory")
    parser.add_argument("--model", help="model name, with --pretrained (or to pin the variant of --weights)")
    parser.add_argument("--pretrained", nargs="?", const=True, help="published weights for --model [TAG]")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, ...")
    if accelerated:
        add_accelerate_argument(parser)


def add_accelerate_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--accelerate", action=argparse.BooleanOptionalAction, default=True,
                        help="run the blocks on the kernels measured on this machine (convnext.accelerate: the "
                             "same function); --no-accelerate runs the reference modules as written")


def accelerated(model: torch.nn.Module, args: argparse.Namespace) -> torch.nn.Module:
    """The model accelerated unless --no-accelerate; `announce` says which once the work begins."""
    notes: list[str] = []
    if getattr(args, "accelerate", False):
        accelerate(model, say=notes.append)
    engine = getattr(args, "backend", "pytorch")
    how = acceleration(model) if engine == "pytorch" else f"exported to {engine}"
    args.header = "; ".join([f"{getattr(model, 'model_name', None) or type(model).__name__}, {how}", *notes])
    return model


def announce(args: argparse.Namespace) -> None:
    """The command's header line on stderr: the model and whether it runs accelerated (after the checks
    that can refuse the input, so that a refusal stays one line)."""
    if getattr(args, "header", None):
        print(f"convnext {args.command}: {args.header}", file=sys.stderr)


def add_amp_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--amp", choices=tuple(AMP_DTYPES),
                        help="mixed precision autocast: bf16 on CUDA and on CPUs with AVX512-BF16 or AMX "
                             "(elsewhere it says so and runs float32); fp16 on CUDA")


def add_backend_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=BACKENDS, default="pytorch", type=lambda name: ALIASES.get(name, name),
                        help="run the model with PyTorch, or exported once to ONNX Runtime or OpenVINO (float32, CPU; "
                             "an exported .onnx or OpenVINO .xml given as --weights runs on its own engine)")


def load_model(args: argparse.Namespace) -> torch.nn.Module:
    if args.weights:
        model = load_weights(args.model, args.weights) if args.model else load_pretrained(args.weights)  # one read
    elif args.model and args.pretrained:
        model = create_model(args.model, pretrained=args.pretrained)
    else:
        raise ValueError("give --weights PATH, or --model NAME --pretrained")
    return accelerated(model.to(args.device).eval(), args)


def load_runnable(args: argparse.Namespace) -> torch.nn.Module:
    """What eval, predict and serve run: the model (`load_model`), or an exported file (.onnx, OpenVINO
    .xml, ExecuTorch .pte, LiteRT .tflite; INT8 ones included) with its sidecar, on its own engine."""
    if not (args.weights and format_of_file(args.weights)):
        return load_model(args)
    if getattr(args, "amp", None):
        raise ValueError("--amp is for the pytorch backend; an exported file runs in the precision it was exported in")
    return load_exported(args.weights, args.backend)
