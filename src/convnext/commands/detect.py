"""Object detection and instance segmentation: Mask R-CNN with a ConvNeXt-FPN backbone.

    convnext detect train                                   # ConvNeXt-atto on the built-in shapes, minutes on a CPU
    convnext detect train --data ~/coco --recipe coco_3x --model convnext_tiny --pretrained
    convnext detect train --resume runs/convnext_atto-20260101-120000
    convnext detect eval --weights runs/convnext_atto-20260101-120000 --data ~/coco
    convnext detect predict --weights runs/convnext_atto-20260101-120000 photos/ --output drawn/

--data ROOT holds train/ and val/, each with images/ and a COCO annotations.json. Recipes: coco_3x
(the official Mask R-CNN 3x) and shapes (default).
"""
import torch

from ..deploy.dense_predictor import DetectionPredictor
from ..runtime.ranges import PROBABILITY
from ..training.dense.drawing import draw_detections
from ..training.recipes import DETECT_RECIPES
from ..training.tasks import Detection
from . import dense


def evaluate(model, val_dir, batch_size: int, device: str) -> tuple[dict, list[str]]:
    from torch.utils.data import DataLoader

    from ..training.dense.data import coco_split
    from ..training.dense.evaluation import evaluate_detection
    from ..training.distributed import Context

    val = coco_split(val_dir, train=False)
    loader = DataLoader(val, batch_size, collate_fn=lambda batch: tuple(zip(*batch)))
    result = evaluate_detection(model, loader, val, Context(device=torch.device(device)))
    lines = [f"box AP {100 * result['AP']:.1f}  AP50 {100 * result['AP50']:.1f}  AP75 {100 * result['AP75']:.1f}  "
             f"mask AP {100 * result['mask_AP']:.1f}"]
    lines += [f"  {name:<20} box AP {100 * ap:.1f}" for name, ap in result["coco"]["bbox"]["per_class"].items()]
    return result, lines


COMMAND = dense.DenseCommand(
    task=Detection, recipes=DETECT_RECIPES, evaluate=evaluate,
    headline=lambda s: f"box AP {100 * s['box_AP']:.1f}  AP50 {100 * s['box_AP50']:.1f}  mask AP {100 * s['mask_AP']:.1f}",
    predictor=lambda model, args: DetectionPredictor(model, args.device, args.threshold),
    draw=lambda picture, found, names, args: draw_detections(picture, found, names, args.threshold),
    add_predict_arguments=lambda parser: parser.add_argument(
        "--threshold", type=PROBABILITY.parse, default=0.5, help="lowest score drawn and listed"),
)


def add_arguments(parser):
    dense.add_arguments(parser, COMMAND)


def run(args) -> int:
    return dense.run(args, COMMAND)
