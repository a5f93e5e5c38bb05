"""Semantic segmentation: UperNet with a ConvNeXt backbone.

    convnext segment train                                  # ConvNeXt-atto on the built-in shapes, minutes on a CPU
    convnext segment train --data ~/ade20k --recipe ade20k_160k --model convnext_tiny --pretrained
    convnext segment eval --weights runs/convnext_atto-20260101-120000 --data ~/ade20k
    convnext segment predict --weights upernet/ photos/ --output drawn/    # also transformers' UperNet-ConvNeXt

--data ROOT holds train/ and val/, each with images/ and masks/ (index PNGs, same stems, 255 = ignore),
and classes.txt (one name per line, background first). Recipes: ade20k_160k (the official UperNet)
and shapes (default).
"""
import torch

from ..deploy.dense_predictor import SegmentationPredictor
from ..training.dense.drawing import draw_segmentation
from ..training.recipes import SEGMENT_RECIPES
from ..training.tasks import Segmentation
from . import dense


def evaluate(model, val_dir, batch_size: int, device: str) -> tuple[dict, list[str]]:
    from torch.utils.data import DataLoader

    from ..training.dense.data import MaskFolder, mask_split
    from ..training.dense.evaluation import evaluate_segmentation
    from ..training.distributed import Context

    val = mask_split(MaskFolder(val_dir), train=False, size=0)  # images keep their sizes: one per batch
    result = evaluate_segmentation(model, DataLoader(val, 1), model.class_names or [], Context(device=torch.device(device)))
    lines = [f"mIoU {100 * result['mIoU']:.1f}  mAcc {100 * result['mAcc']:.1f}  aAcc {100 * result['aAcc']:.1f}"]
    lines += [f"  {c['class']:<20} IoU {100 * c['IoU']:.1f}  Acc {100 * c['Acc']:.1f}" for c in result["per_class"]]
    return result, lines


COMMAND = dense.DenseCommand(
    task=Segmentation, recipes=SEGMENT_RECIPES, evaluate=evaluate,
    headline=lambda s: f"mIoU {100 * s['mIoU']:.1f}  mAcc {100 * s['mAcc']:.1f}  aAcc {100 * s['aAcc']:.1f}",
    predictor=lambda model, args: SegmentationPredictor(model, args.device),
    draw=lambda picture, classes, names, args: draw_segmentation(picture, classes, len(names) or int(classes.max()) + 1),
)


def add_arguments(parser):
    dense.add_arguments(parser, COMMAND)


def run(args) -> int:
    return dense.run(args, COMMAND)
