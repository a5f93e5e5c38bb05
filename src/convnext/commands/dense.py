"""What `convnext detect` and `convnext segment` share: the train/eval/predict sub-commands, with the
flags and run directories of `convnext train`."""
import argparse
import json
import sys
from pathlib import Path

import torch

from ..runtime.atomic import atomic_file
from ..checkpoints.dense import load_dense
from ..models.detection import DETECTION_DROP_PATH, SEGMENTATION_DROP_PATH, size_of
from ..training.dense.trainer import BUILT_IN, data_root, resume_dense, train_dense
from ..runtime.ranges import COUNT, PROBABILITY
from . import train as train_command
from .predict import expand

SUMMARY = {  # task -> (its scores, one line)
    "detect": lambda s: (f"box AP {100 * s['box_AP']:.1f}  AP50 {100 * s['box_AP50']:.1f}  "
                         f"mask AP {100 * s['mask_AP']:.1f}"),
    "segment": lambda s: f"mIoU {100 * s['mIoU']:.1f}  mAcc {100 * s['mAcc']:.1f}  aAcc {100 * s['aAcc']:.1f}",
}


def add_arguments(parser: argparse.ArgumentParser, task: str, recipes: dict) -> None:
    steps = parser.add_subparsers(dest="step", required=True)
    train = steps.add_parser("train", help="train on a dataset (default: the built-in shapes)")
    train_command.add_arguments(train, recipes, default="shapes")
    train.set_defaults(data=BUILT_IN)
    train.add_argument("--on-bad-sample", dest="on_bad_image", choices=("error", "skip"),
                       help="a bad annotation or mask: stop naming it (default), or count and skip it")
    evaluate = steps.add_parser("eval", help="score weights on a dataset's val split")
    evaluate.add_argument("--weights", required=True, help="a run directory or a weights file")
    evaluate.add_argument("--data", default=BUILT_IN, help='ROOT with val/ in it, or "shapes" (built-in)')
    evaluate.add_argument("--batch-size", type=COUNT.parse, default=4)
    evaluate.add_argument("--device", default="cpu")
    evaluate.add_argument("--json", action="store_true")
    predict = steps.add_parser("predict", help="draw predictions over images, and print them")
    predict.add_argument("--weights", required=True, help="a run directory or a weights file")
    predict.add_argument("inputs", nargs="+", help="image files, folders or globs")
    predict.add_argument("--output", required=True, help="folder for the drawn images")
    predict.add_argument("--device", default="cpu")
    predict.add_argument("--json", action="store_true", help="print a JSON list")
    if task == "detect":
        predict.add_argument("--threshold", type=PROBABILITY.parse, default=0.5, help="lowest score drawn and listed")


def run(args: argparse.Namespace, task: str, recipes: dict) -> int:
    return {"train": run_train, "eval": run_eval, "predict": run_predict}[args.step](args, task, recipes)


def run_train(args, task, recipes) -> int:
    say = (lambda text: print(text, file=sys.stderr)) if args.json else print
    if args.resume:
        summary = resume_dense(task, args.resume, say=say, max_steps=args.max_steps)
    else:
        recipe = train_command.recipe_from(args, recipes)
        table = DETECTION_DROP_PATH if task == "detect" else SEGMENTATION_DROP_PATH
        if not hasattr(args, "recipe_drop_path") and size_of(recipe.model) in table:  # the official rate for the size
            recipe = recipe.update(drop_path=table[size_of(recipe.model)])
        summary = train_dense(task, recipe, train_command.run_config(args), say=say)
    say(f"{SUMMARY[task](summary)} after {summary['epochs']} epochs in {summary['wall_s']:.0f}s; "
        f"run written to {summary['run_dir']}")
    if args.json:
        print(json.dumps(summary))
    return 0


def run_eval(args, task, recipes) -> int:
    from torch.utils.data import DataLoader

    from ..training.dense.data import MaskFolder, coco_split, mask_split
    from ..training.dense.evaluation import evaluate_detection, evaluate_segmentation
    from ..training.distributed import Context

    model = load_dense(args.weights).to(args.device)
    val_dir = data_root(args.data) / "val"
    val = coco_split(val_dir, train=False) if task == "detect" else mask_split(MaskFolder(val_dir), train=False, size=0)
    context = Context(device=torch.device(args.device))
    if task == "detect":
        loader = DataLoader(val, args.batch_size, collate_fn=lambda batch: tuple(zip(*batch)))
        result = evaluate_detection(model, loader, val, context)
        lines = [f"box AP {100 * result['AP']:.1f}  AP50 {100 * result['AP50']:.1f}  AP75 {100 * result['AP75']:.1f}  "
                 f"mask AP {100 * result['mask_AP']:.1f}"]
        lines += [f"  {name:<20} box AP {100 * ap:.1f}" for name, ap in result["coco"]["bbox"]["per_class"].items()]
    else:
        result = evaluate_segmentation(model, DataLoader(val, 1), model.class_names or [], context)
        lines = [f"mIoU {100 * result['mIoU']:.1f}  mAcc {100 * result['mAcc']:.1f}  aAcc {100 * result['aAcc']:.1f}"]
        lines += [f"  {c['class']:<20} IoU {100 * c['IoU']:.1f}  Acc {100 * c['Acc']:.1f}" for c in result["per_class"]]
    if args.json:
        print(json.dumps(result))
    else:
        print("\n".join(lines))
    return 0


def run_predict(args, task, recipes) -> int:
    from PIL import Image
    from torchvision.transforms import v2

    from ..training.dense.data import IMAGENET_MEAN, IMAGENET_STD
    from ..training.dense.drawing import draw_detections, draw_segmentation
    from ..training.dense.evaluation import detect, segment

    model = load_dense(args.weights).to(args.device)
    names = model.class_names or []
    results, output = [], Path(args.output)
    for path in expand(args.inputs):
        try:
            with Image.open(path) as image:
                picture = v2.functional.to_dtype(v2.functional.pil_to_tensor(image.convert("RGB")), torch.float32, scale=True)
        except Exception as error:  # PIL raises many types for non-images
            print(f"skipped {path}: not a readable image ({type(error).__name__})", file=sys.stderr)
            continue
        if task == "detect":
            found = detect(model, [picture], args.device)[0]
            drawn = draw_detections(picture, found, names, args.threshold)
            keep = found["scores"] >= args.threshold
            results.append({"path": str(path), "detections": [
                {"class": names[label - 1] if names else str(label), "label": label, "score": score,
                 "box": [round(v, 2) for v in box]}
                for label, score, box in zip(found["labels"][keep].tolist(), found["scores"][keep].tolist(),
                                             found["boxes"][keep].tolist())]})
        else:
            normalised = v2.functional.normalize(picture, IMAGENET_MEAN, IMAGENET_STD)
            classes = segment(model, normalised[None], args.device)[0].argmax(0)
            drawn = draw_segmentation(picture, classes, len(names) or int(classes.max()) + 1)
            counts = torch.bincount(classes.flatten(), minlength=len(names)).tolist()
            results.append({"path": str(path), "classes": {
                (names[c] if names else str(c)): round(n / classes.numel(), 4) for c, n in enumerate(counts) if n}})
        with atomic_file(output / f"{path.stem}.{task}.png") as tmp:
            Image.fromarray(drawn.permute(1, 2, 0).numpy()).save(tmp, format="PNG")  # (3, H, W) -> (H, W, 3)
        results[-1]["drawn"] = str(output / f"{path.stem}.{task}.png")
    if not results:
        raise ValueError("no readable images among the inputs")
    if args.json:
        print(json.dumps(results))
    else:
        for r in results:
            found = r.get("detections", r.get("classes"))
            print(f"{r['path']}: {json.dumps(found)[:200]} -> {r['drawn']}")
    return 0
