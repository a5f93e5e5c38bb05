"""Train or fine-tune a ConvNeXt (default: ConvNeXt-atto on the built-in digits, a few minutes on a CPU).

    convnext train
    convnext train --data ~/flowers --model convnext_tiny --pretrained --recipe finetune --epochs 10
    convnext train --data /imagenet --recipe in1k --model convnext_tiny --amp bf16 --channels-last
    convnext train --resume runs/convnext_atto-20260101-120000
    torchrun --nproc_per_node=8 -m convnext.cli train --data /imagenet --recipe in1k --output-dir runs/t
    torchrun --nnodes=2 --node_rank=0 --rdzv_backend=c10d --rdzv_endpoint=HOST:29400 --nproc_per_node=8 \\
        -m convnext.cli train --data /imagenet --recipe in1k --output-dir runs/t

Recipes: in1k (paper Table 5), finetune (paper Table 6), small (default). Any recipe field can be
overridden by its flag; --lr is the rate at --lr-base-batch, scaled to the effective batch.
"""
import argparse
import json
import re
import sys
import types
import typing
from dataclasses import fields

from ..checkpoints.files import Checkpoint, open_checkpoint
from ..checkpoints.weights import model_name_of
from ..runtime.ranges import COUNT, NON_NEGATIVE_INT, Range
from ..training.loop import RunConfig, resume, train
from ..training.recipes import RECIPES, Recipe
from ..training.tasks import Classification, Task
from .common import add_accelerate_argument, add_amp_argument


HELD_OUT = Range(float, low=0, high=1, low_open=True, high_open=True)


def _optional(parse):
    def parse_or_none(text: str):
        return None if text.lower() in ("none", "off") else parse(text)
    return parse_or_none


def _field_type(f):
    """A recipe field's argparse type: its range's parser; `float | None` fields also accept "none"."""
    annotation = f.type
    optional = isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union
    kind = next(a for a in typing.get_args(annotation) if a is not type(None)) if optional else annotation
    parse = f.metadata["range"].parse if "range" in f.metadata else kind
    return _optional(parse) if optional else parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_training_arguments(parser, RECIPES, default="small")
    add_source_arguments(parser)


def add_training_arguments(parser: argparse.ArgumentParser, recipes: dict[str, Recipe], default: str) -> None:
    """The flags of a training command: the run's, then its task's recipe fields (and no other task's)."""
    shown = [default, next(name for name in recipes if name != default)]  # presets quoted in each field's help
    recipe_class = type(recipes[default])
    parser.add_argument("--recipe", choices=list(recipes), default=default, help=f"preset (default: {default})")
    parser.add_argument("--data", default="digits", help='"digits" (built-in), an ImageFolder path, hf:NAME[:SPLIT] '
                        "(a datasets data set: Hub name or save_to_disk folder) or WebDataset shards DIR/x-{0..9}.tar")
    parser.add_argument("--output-dir", help="run directory (default: runs/<model>-<timestamp>)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue a run with its saved config")
    parser.add_argument("--seed", type=NON_NEGATIVE_INT.parse, default=0)
    parser.add_argument("--workers", type=NON_NEGATIVE_INT.parse, default=0, help="data-loading processes")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    add_amp_argument(parser)
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False, help="torch.compile")
    add_accelerate_argument(parser)
    parser.add_argument("--grad-checkpointing", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=False,
                        help="PyTorch's deterministic algorithms and the default kernels, measuring nothing: two fresh "
                             "runs equal bit for bit on any machine of a kind (default: on this machine, once a run "
                             "here has measured its kernels; a resumed run equals the uninterrupted one either way)")
    parser.add_argument("--save-every", type=COUNT.parse, help="also checkpoint every N optimizer steps")
    parser.add_argument("--keep-checkpoints", type=COUNT.parse, default=2, help="newest checkpoints kept (plus the best)")
    parser.add_argument("--val-every", type=COUNT.parse, default=1, metavar="EPOCHS",
                        help="validate every N epochs (always after the last)")
    parser.add_argument("--val-split", type=HELD_OUT.parse, help="share held out when --data has no train/val folders")
    parser.add_argument("--on-bad-image", choices=("error", "skip"), default="error")
    parser.add_argument("--weights", help="start from this checkpoint (any format); the head is re-initialised")
    parser.add_argument("--pretrained", nargs="?", const="default", help="start from published weights [TAG]")
    parser.add_argument("--subset", type=COUNT.parse, help="use at most N train and N val images (quick runs)")
    parser.add_argument("--max-steps", type=COUNT.parse, help="stop after N optimizer steps (smoke runs)")
    parser.add_argument("--json", action="store_true", help="last line of stdout: a JSON summary")
    recipe_flags = parser.add_argument_group("recipe fields (override the preset)")
    for f in fields(recipe_class):
        recipe_flags.add_argument(f"--{f.name.replace('_', '-')}", dest=f"recipe_{f.name}", type=_field_type(f),
                                  default=argparse.SUPPRESS, metavar=f.name.split("_")[-1].upper(),
                                  help=f"{f.metadata['help']} (preset: " + ", ".join(
                                      f"{getattr(recipes[name], f.name)} {name}" for name in shown) + ")")


def _as_flags(message: str, recipe_class: type[Recipe]) -> str:
    """"warmup_epochs must be ≤ epochs" -> "--warmup-epochs must be ≤ --epochs": the names the user typed."""
    names = {f.name for f in fields(recipe_class)}
    return re.sub(r"\w+", lambda m: f"--{m[0].replace('_', '-')}" if m[0] in names else m[0], message)


def recipe_from(args: argparse.Namespace, recipes: dict[str, Recipe]) -> Recipe:
    overrides = {k[len("recipe_"):]: v for k, v in vars(args).items() if k.startswith("recipe_")}
    try:
        return recipes[args.recipe].update(**overrides)
    except ValueError as error:  # a combination of fields (warm-up longer than the run): name the flags
        raise ValueError(_as_flags(str(error), type(recipes[args.recipe]))) from None


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """How to read a `datasets` data set (--data hf:NAME[:SPLIT]) when its columns are not found alone."""
    parser.add_argument("--image-column", help="--data hf:...: the image column (default: the first Image feature)")
    parser.add_argument("--label-column", help="--data hf:...: the label column (default: the first ClassLabel)")


def run_config(args: argparse.Namespace) -> RunConfig:
    return RunConfig(data=args.data, output_dir=args.output_dir, seed=args.seed, workers=args.workers,
                     device=args.device, amp=args.amp, channels_last=args.channels_last, compile=args.compile,
                     accelerate=args.accelerate,
                     grad_checkpointing=args.grad_checkpointing, deterministic=args.deterministic,
                     save_every=args.save_every, keep_checkpoints=args.keep_checkpoints, val_every=args.val_every,
                     val_split=args.val_split, on_bad_image=args.on_bad_image, weights=args.weights,
                     pretrained=args.pretrained, subset=args.subset, max_steps=args.max_steps,
                     image_column=getattr(args, "image_column", None), label_column=getattr(args, "label_column", None))


def train_or_resume(args: argparse.Namespace, task: type[Task], recipe: Recipe | None, say,
                    starting: Checkpoint | None = None) -> dict:
    """Resume the run `--resume` names (as the same task), or train a new one with `recipe` (from
    `starting`, the --weights already read, if the command read them)."""
    if args.resume:
        return resume(task, args.resume, say=say, max_steps=args.max_steps)
    return train(task, recipe, run_config(args), say=say, starting=starting)


def run(args: argparse.Namespace) -> int:
    say = (lambda text: print(text, file=sys.stderr)) if args.json else print
    recipe, starting = None, None
    if not args.resume:
        recipe = recipe_from(args, RECIPES)
        if not hasattr(args, "recipe_model") and args.weights:  # fine-tuning: the model the weights hold
            starting = open_checkpoint(args.weights)  # read once: the name here, then data and weights
            recipe = recipe.update(model=model_name_of(starting))
            say(f"--weights {args.weights} holds {recipe.model}: training that model")
        elif not hasattr(args, "recipe_model") and args.recipe != "small":
            recipe = recipe.update(model="convnext_tiny")
    summary = train_or_resume(args, Classification, recipe, say, starting)
    say(f"test top-1 {100 * summary['test_top1']:.2f}%  top-5 {100 * summary['test_top5']:.2f}%  "
        f"after {summary['epochs']} epochs in {summary['wall_s']:.0f}s; run written to {summary['run_dir']}")
    if args.json:
        print(json.dumps(summary))
    return 0
