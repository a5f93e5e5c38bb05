"""What `convnext detect` and `convnext segment` share: the train/eval/predict sub-commands, with the
flags and run directories of `convnext train`. Each command describes its task once (`DenseCommand`);
nothing here switches on its name."""
import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from PIL import Image

from ..checkpoints.dense import load_dense
from ..runtime.atomic import atomic_file
from ..runtime.ranges import COUNT
from ..training.dense.shapes import BUILT_IN, data_root
from ..training.recipes import Recipe, with_official_drop_path
from ..training.tasks import Task
from . import train as train_command
from .common import accelerated, add_accelerate_argument, announce
from .predict import expand


@dataclass(frozen=True)
class DenseCommand:
    """One dense task as its command runs it."""
    task: type[Task]
    recipes: dict[str, Recipe]
    headline: Callable[[dict], str]  # the summary's scores in one line
    evaluate: Callable  # (model, val_dir, batch_size, device) -> (scores, lines)
    predictor: Callable  # (model, args) -> a deploy.dense_predictor predictor
    draw: Callable  # (picture, prediction, class names) -> a uint8 (3, H, W) picture
    add_predict_arguments: Callable[[argparse.ArgumentParser], None] = lambda parser: None


def add_arguments(parser: argparse.ArgumentParser, command: DenseCommand) -> None:
    steps = parser.add_subparsers(dest="step", required=True)
    train = steps.add_parser("train", help="train on a dataset (default: the built-in shapes)")
    train_command.add_training_arguments(train, command.recipes, default="shapes")
    train.set_defaults(data=BUILT_IN)
    train.add_argument("--on-bad-sample", dest="on_bad_image", choices=("error", "skip"),
                       help="a bad annotation or mask: stop naming it (default), or count and skip it")
    evaluate = steps.add_parser("eval", help="score weights on a dataset's val split")
    evaluate.add_argument("--weights", required=True, help="a run directory or a weights file")
    evaluate.add_argument("--data", default=BUILT_IN, help=f'ROOT with val/ in it, or "{BUILT_IN}" (built-in)')
    evaluate.add_argument("--batch-size", type=COUNT.parse, default=4)
    evaluate.add_argument("--device", default="cpu")
    evaluate.add_argument("--json", action="store_true")
    add_accelerate_argument(evaluate)
    predict = steps.add_parser("predict", help="draw predictions over images, and print them")
    predict.add_argument("--weights", required=True, help="a run directory or a weights file")
    predict.add_argument("inputs", nargs="+", help="image files, folders or globs")
    predict.add_argument("--output", required=True, help="folder for the drawn images")
    predict.add_argument("--device", default="cpu")
    predict.add_argument("--json", action="store_true", help="print a JSON list")
    add_accelerate_argument(predict)
    command.add_predict_arguments(predict)


def run(args: argparse.Namespace, command: DenseCommand) -> int:
    return {"train": run_train, "eval": run_eval, "predict": run_predict}[args.step](args, command)


def run_train(args, command: DenseCommand) -> int:
    say = (lambda text: print(text, file=sys.stderr)) if args.json else print
    recipe = None
    if not args.resume:
        recipe = train_command.recipe_from(args, command.recipes)
        if not hasattr(args, "recipe_drop_path"):  # the official rate for the model's size
            recipe = with_official_drop_path(recipe)
    summary = train_command.train_or_resume(args, command.task, recipe, say)
    say(f"{command.headline(summary)} after {summary['epochs']} epochs in {summary['wall_s']:.0f}s; "
        f"run written to {summary['run_dir']}")
    if args.json:
        print(json.dumps(summary))
    return 0


def run_eval(args, command: DenseCommand) -> int:
    model = accelerated(load_dense(args.weights).to(args.device), args)
    result, lines = command.evaluate(model, data_root(args.data) / "val", args.batch_size, args.device)
    announce(args)
    print(json.dumps(result) if args.json else "\n".join(lines))
    return 0


def run_predict(args, command: DenseCommand) -> int:
    predictor = command.predictor(accelerated(load_dense(args.weights), args), args)
    results, output, kind = [], Path(args.output), command.task.name
    for path in expand(args.inputs):
        try:
            picture = predictor.read(path)
        except Exception as error:  # PIL raises many types for non-images
            print(f"skipped {path}: not a readable image ({type(error).__name__})", file=sys.stderr)
            continue
        prediction, row = predictor.predict(picture)
        drawn = command.draw(picture, prediction, predictor.class_names, args)
        destination = output / f"{path.stem}.{kind}.png"
        with atomic_file(destination) as tmp:
            Image.fromarray(drawn.permute(1, 2, 0).numpy()).save(tmp, format="PNG")  # (3, H, W) -> (H, W, 3)
        results.append({"path": str(path), **row, "drawn": str(destination)})
    if not results:
        raise ValueError("no readable images among the inputs")
    announce(args)
    if args.json:
        print(json.dumps(results))
    else:
        for r in results:
            found = r.get("detections", r.get("classes"))
            print(f"{r['path']}: {json.dumps(found)[:200]} -> {r['drawn']}")
    return 0
