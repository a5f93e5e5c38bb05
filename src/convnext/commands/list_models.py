"""List every registered model with its parameters and GMACs.

    convnext list
    convnext list 'convnextv2_*' --input-size 384
"""
import argparse
import json

from ..models.counting import model_table
from ..models.registry import list_models
from ..runtime.ranges import INPUT_SIZE


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pattern", nargs="?", default="*", help="glob over model names (default: all)")
    parser.add_argument("--input-size", type=INPUT_SIZE.parse, default=224, help="square input side for GMACs (default 224)")
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")


def run(args: argparse.Namespace) -> int:
    names = list_models(args.pattern)
    if not names:
        raise ValueError(f"no model matches {args.pattern!r}")
    rows = model_table(names, args.input_size)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    width = max(len(r["name"]) for r in rows)
    print(f"{'model':<{width}}  {'params':>13}  {f'GMACs@{args.input_size}':>10}")
    for r in rows:
        print(f"{r['name']:<{width}}  {r['params']:>13,}  {r['gmacs']:>10.2f}")
    return 0
