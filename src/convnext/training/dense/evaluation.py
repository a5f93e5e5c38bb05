"""Running a detector or segmenter over a loader and scoring it (validation in training, and
`convnext detect eval` / `convnext segment eval`)."""
import torch
import torch.distributed as dist
from torch import nn

from ...models.detection import detect
from ...models.upernet import segment
from ..distributed import Context
from .detection_metrics import coco_evaluate, coco_results
from .segmentation_metrics import SegmentationScores


def _gather(items: list, context: Context) -> list:
    if not context.distributed:
        return items
    everything = [None] * context.world_size
    dist.all_gather_object(everything, items)
    return [x for part in everything for x in part]


def evaluate_detection(model: nn.Module, loader, val, context: Context = Context(), autocast=None) -> dict:
    """COCO box and mask AP over `val` (a dataset carrying .coco, .ids and .label_of)."""
    to_category = {label: category for category, label in val.label_of.items()}
    results = []
    for images, targets in loader:
        results += coco_results(detect(model, images, context.device, autocast), [t["image_id"] for t in targets],
                                to_category)
    iou_types = ("bbox", "segm") if getattr(model.roi_heads, "mask_head", None) is not None else ("bbox",)
    scores = coco_evaluate(val.coco, _gather(results, context), iou_types, image_ids=val.ids)
    masks = scores.get("segm", {"AP": float("nan"), "AP50": float("nan")})
    return {"AP": scores["bbox"]["AP"], "AP50": scores["bbox"]["AP50"], "AP75": scores["bbox"]["AP75"],
            "mask_AP": masks["AP"], "mask_AP50": masks["AP50"], "coco": scores}


def evaluate_segmentation(model: nn.Module, loader, class_names: list[str], context: Context = Context(),
                          autocast=None) -> dict:
    """mIoU, mAcc, aAcc and per-class scores from one confusion matrix, and the mean loss."""
    from ...models.upernet import segmentation_loss

    scores = SegmentationScores(len(class_names), class_names)
    sums = torch.zeros(2, dtype=torch.float64)
    for images, masks in loader:
        logits = segment(model, images, context.device, autocast)
        sums += torch.tensor([segmentation_loss({"out": logits}, masks)["loss_seg"].item() * len(images), len(images)],
                             dtype=torch.float64)
        scores.update(logits.argmax(1), masks)
    if context.distributed:
        for tensor in (scores.matrix, sums):
            dist.all_reduce(tensor)
    return {**scores.compute(), "loss": (sums[0] / sums[1].clamp(min=1)).item()}
