"""Object detection and instance segmentation: Mask R-CNN with a ConvNeXt-FPN backbone.

    convnext detect train                                   # ConvNeXt-atto on the built-in shapes, minutes on a CPU
    convnext detect train --data ~/coco --recipe coco_3x --model convnext_tiny --pretrained
    convnext detect train --resume runs/convnext_atto-20260101-120000
    convnext detect eval --weights runs/convnext_atto-20260101-120000 --data ~/coco
    convnext detect predict --weights runs/convnext_atto-20260101-120000 photos/ --output drawn/

--data ROOT holds train/ and val/, each with images/ and a COCO annotations.json. Recipes: coco_3x
(the official Mask R-CNN 3x) and shapes (default).
"""
from ..training.recipes import DETECT_RECIPES
from . import dense


def add_arguments(parser):
    dense.add_arguments(parser, "detect", DETECT_RECIPES)


def run(args) -> int:
    return dense.run(args, "detect", DETECT_RECIPES)
