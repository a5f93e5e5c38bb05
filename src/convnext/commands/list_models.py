"""List every registered model with its parameters and GMACs, or the weights known for each.

    convnext list
    convnext list 'convnextv2_*' --input-size 384
    convnext list convnext_atto --pretrained     # official tags and Hub names, input size, top-1
"""
import argparse
import json
from dataclasses import asdict

from ..checkpoints.hub import known_weights
from ..models.counting import model_table
from ..models.registry import list_models
from ..runtime.ranges import INPUT_SIZE


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pattern", nargs="?", default="*", help="glob over model names (default: all)")
    parser.add_argument("--input-size", type=INPUT_SIZE.parse, default=224, help="square input side for GMACs (default 224)")
    parser.add_argument("--pretrained", action="store_true",
                        help="list the weights known for each model: tags for --pretrained and Hub names")
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")


def print_pretrained(names: list[str], as_json: bool) -> None:
    rows = [{"model": name, **asdict(known)} for name in names for known in known_weights(name)]
    if as_json:
        print(json.dumps(rows, indent=1))
        return
    if not rows:
        raise ValueError(f"no published weights for {', '.join(names[:5])}")
    width = max(len("model"), *(len(r["model"]) for r in rows)), max(len("tag (--pretrained)"), *(len(r["tag"]) for r in rows))
    print(f"{'model':<{width[0]}}  {'tag (--pretrained)':<{width[1]}}  {'size':>4}  {'classes':>7}  {'top-1':>5}  source")
    for r in rows:
        top1 = f"{r['top1']:.1f}" if r["top1"] else "-"
        print(f"{r['model']:<{width[0]}}  {r['tag']:<{width[1]}}  {r['input_size']:>4}  {r['num_classes']:>7}  "
              f"{top1:>5}  {r['source']}")


def run(args: argparse.Namespace) -> int:
    names = list_models(args.pattern)
    if not names:
        raise ValueError(f"no model matches {args.pattern!r}")
    if args.pretrained:
        print_pretrained(names, args.json)
        return 0
    rows = model_table(names, args.input_size)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    width = max(len(r["name"]) for r in rows)
    print(f"{'model':<{width}}  {'params':>13}  {f'GMACs@{args.input_size}':>10}")
    for r in rows:
        print(f"{r['name']:<{width}}  {r['params']:>13,}  {r['gmacs']:>10.2f}")
    return 0
