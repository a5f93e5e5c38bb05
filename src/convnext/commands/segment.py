"""Semantic segmentation: UperNet with a ConvNeXt backbone.

    convnext segment train                                  # ConvNeXt-atto on the built-in shapes, minutes on a CPU
    convnext segment train --data ~/ade20k --recipe ade20k_160k --model convnext_tiny --pretrained
    convnext segment eval --weights runs/convnext_atto-20260101-120000 --data ~/ade20k
    convnext segment predict --weights upernet/ photos/ --output drawn/    # also transformers' UperNet-ConvNeXt

--data ROOT holds train/ and val/, each with images/ and masks/ (index PNGs, same stems, 255 = ignore),
and classes.txt (one name per line, background first). Recipes: ade20k_160k (the official UperNet)
and shapes (default).
"""
from ..training.recipes import SEGMENT_RECIPES
from . import dense


def add_arguments(parser):
    dense.add_arguments(parser, "segment", SEGMENT_RECIPES)


def run(args) -> int:
    return dense.run(args, "segment", SEGMENT_RECIPES)
