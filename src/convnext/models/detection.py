"""ConvNeXt for object detection and instance segmentation on torchvision's Faster/Mask R-CNN.

The backbone is `ConvNeXtBackbone` (the four stage maps with the official per-stage LayerNorms) into
torchvision's `FeaturePyramidNetwork` with a max-pool level, as in the official Mask R-CNN config
(FPN of 256 channels, 5 levels). Everything after it (RPN, RoIAlign, box and mask heads, the losses,
the resize/normalise transform) is torchvision's, with the official settings where they differ from
torchvision's defaults.

    model = maskrcnn_convnext("convnext_tiny", num_classes=81)      # 80 COCO classes + background
    losses = model(images, targets)                                 # train mode: a dict of losses
    detections = model.eval()(images)                               # [{boxes, labels, scores, masks}]
"""
from collections import OrderedDict

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from .backbone import ConvNeXtBackbone
from .registry import create_model

TRAIN_SIZES = tuple(range(480, 801, 32))  # shorter side, one drawn per image (the official multi-scale policy)


def trunk(model_or_name: nn.Module | str, drop_path_rate: float) -> nn.Module:
    """The classification network whose stages become the backbone (weights, if any, already loaded).
    The official downstream drop-path rates are recipe facts (`training/recipes.py`)."""
    if isinstance(model_or_name, str):
        return create_model(model_or_name, drop_path_rate=drop_path_rate)
    return model_or_name


class ConvNeXtFPN(nn.Module):
    """ConvNeXt maps at strides 4-32 into a feature pyramid: OrderedDict '0'..'3' and 'pool' (stride 64)."""

    def __init__(self, backbone: ConvNeXtBackbone, out_channels: int = 256):
        super().__init__()
        self.body = backbone  # names as torchvision's BackboneWithFPN: backbone.body.*, backbone.fpn.*
        self.fpn = FeaturePyramidNetwork(backbone.out_channels, out_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels  # torchvision's detectors read this

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return self.fpn(OrderedDict((str(i), m) for i, m in enumerate(self.body(x))))


OFFICIAL_ANCHORS = (32, 64, 128, 256, 512)  # one size per pyramid level, ratios 0.5, 1, 2


def _detector(cls, model_or_name, num_classes: int, drop_path_rate, min_size, max_size, fpn_channels: int = 256,
              anchor_sizes=OFFICIAL_ANCHORS, **kwargs):
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    classifier = trunk(model_or_name, drop_path_rate)
    backbone = ConvNeXtFPN(ConvNeXtBackbone(classifier), fpn_channels)
    # The official configs keep 1000 proposals per image after NMS in training (torchvision: 2000).
    kwargs.setdefault("rpn_post_nms_top_n_train", 1000)
    anchors = AnchorGenerator(tuple((int(s),) for s in anchor_sizes), ((0.5, 1.0, 2.0),) * len(anchor_sizes))
    model = cls(backbone, num_classes=num_classes, min_size=min_size, max_size=max_size,
                rpn_anchor_generator=anchors, **kwargs)
    if fpn_channels != 256:  # a narrower FPN narrows the heads in proportion (official: 256 → 1024 and 256)
        _narrow_heads(model, fpn_channels, num_classes, kwargs)
    model.model_name = getattr(classifier, "model_name", model_or_name if isinstance(model_or_name, str) else None)
    model.num_classes = num_classes
    # What rebuilds it from a file (checkpoints/dense.py): every setting that shapes a tensor or an answer.
    model.config = {"min_size": list(min_size) if isinstance(min_size, tuple) else min_size, "max_size": max_size,
                    "fpn_channels": fpn_channels, "anchor_sizes": list(anchor_sizes),
                    **{k: v for k, v in kwargs.items() if isinstance(v, (int, float, str))}}
    return model


def _narrow_heads(model: FasterRCNN, width: int, num_classes: int, given: dict) -> None:
    """The box head's two-layer MLP 4x the FPN width; the mask head's four convs as wide as the FPN."""
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

    heads = model.roi_heads
    if "box_head" not in given and "box_predictor" not in given:
        resolution = heads.box_roi_pool.output_size[0]
        heads.box_head = TwoMLPHead(width * resolution**2, 4 * width)
        heads.box_predictor = FastRCNNPredictor(4 * width, num_classes)
    if isinstance(model, MaskRCNN) and "mask_head" not in given:
        heads.mask_head = MaskRCNNHeads(width, (width,) * 4, 1)
        heads.mask_predictor = MaskRCNNPredictor(width, width, num_classes)


def maskrcnn_convnext(model_or_name: nn.Module | str, num_classes: int, drop_path_rate: float = 0.0,
                      min_size=TRAIN_SIZES, max_size: int = 1333, **kwargs) -> MaskRCNN:
    """Mask R-CNN with a ConvNeXt-FPN backbone. `num_classes` counts the background (COCO: 81).

    `model_or_name`: a registry name, or a classification model whose weights are the start.
    `fpn_channels` (256; a narrower FPN narrows the box and mask heads in proportion), `anchor_sizes`
    (32..512, one per level); other keywords go to torchvision's `MaskRCNN` (RoI sampling, RPN
    proposals, thresholds, ...).
    """
    return _detector(MaskRCNN, model_or_name, num_classes, drop_path_rate, min_size, max_size, **kwargs)


def fasterrcnn_convnext(model_or_name: nn.Module | str, num_classes: int, drop_path_rate: float = 0.0,
                        min_size=TRAIN_SIZES, max_size: int = 1333, **kwargs) -> FasterRCNN:
    """Faster R-CNN with a ConvNeXt-FPN backbone: boxes only."""
    return _detector(FasterRCNN, model_or_name, num_classes, drop_path_rate, min_size, max_size, **kwargs)


@torch.no_grad()
def detect(model: nn.Module, images: list[torch.Tensor], device, autocast=None) -> list[dict]:
    """The detector's findings per image ({boxes, labels, scores[, masks]}, on the CPU, float32), in eval mode."""
    model.eval()
    with torch.autocast(torch.device(device).type, dtype=autocast, enabled=autocast is not None):
        found = model([image.to(device) for image in images])
    return [{k: v.float().cpu() if v.is_floating_point() else v.cpu() for k, v in f.items()} for f in found]
