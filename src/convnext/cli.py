"""The `convnext` command line: one sub-command per job, each in its own module.

    convnext list                              # every model with params and GMACs at 224²
    convnext convert SRC DST --to timm         # any checkpoint format to any other
    convnext train                             # train on the built-in digits (see --help)
    convnext roadmap [--train]                 # the ResNet-50 -> ConvNeXt-T path, step by step
"""
import argparse
import importlib
import os
import re
import sys

# sub-command -> module that defines `add_arguments(parser)` and `run(args) -> int`
COMMANDS = {
    "list": "convnext.commands.list_models",
    "convert": "convnext.commands.convert",
    "train": "convnext.commands.train",
    "pretrain": "convnext.commands.pretrain",
    "eval": "convnext.commands.evaluate",
    "predict": "convnext.commands.predict",
    "roadmap": "convnext.commands.roadmap",
    "export": "convnext.commands.export",
    "bench": "convnext.commands.bench",
    "serve": "convnext.commands.serve",
    "detect": "convnext.commands.detect",
    "segment": "convnext.commands.segment",
}


class CLIError(Exception):
    """An error the user can fix: printed as one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """argparse with the project's error form: one `convnext CMD: error: ...` line, exit status 2."""

    def error(self, message: str):
        # "argument --epochs: must be ≥ 1, got -1" reads better as "--epochs must be ≥ 1, got -1"
        message = re.sub(r"^argument ([^:]+): (must be )", r"\1 \2", message)
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="convnext", description="ConvNeXt models: train, evaluate, convert, export.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        command = sub.add_parser(name, help=module.__doc__.strip().splitlines()[0],
                                 description=module.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(command)
        command.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .training.loop import Interrupted

    args = build_parser().parse_args(argv)
    try:
        return args.run(args) or 0
    except Interrupted as stopped:  # saved on request: a clean stop, not a failure
        print(f"convnext {args.command}: {stopped}", file=sys.stderr)
        return 0
    except (CLIError, ValueError, TypeError, OSError, RuntimeError, KeyError) as error:
        if os.environ.get("CONVNEXT_DEBUG"):
            raise
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"convnext {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"convnext {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
