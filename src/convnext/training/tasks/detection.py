"""Detection and instance segmentation (`convnext detect train`): COCO-style data (lists of images and
targets), ConvNeXt-FPN in torchvision's Mask R-CNN (Faster R-CNN for boxes-only data), the detector's
own losses, COCO box and mask AP."""
import torch
from torch import nn

from ...models.detection import OFFICIAL_ANCHORS, fasterrcnn_convnext, maskrcnn_convnext
from .. import reporting
from ..dense.data import DenseData, detection_data
from ..dense.drawing import draw_detections
from ...models.detection import detect
from ..dense.evaluation import evaluate_detection
from ..dense.shapes import data_root
from ..recipes import DetectRecipe
from .dense import DenseTask


def anchor_sizes(input_size: int) -> tuple:
    """torchvision's (official) anchors 32-512 for images of ~800 px; x0.75 (24-384) for small images
    (≤ 256 px), whose objects are few pixels wide: on the built-in shapes (boxes 22-49 px at 128²) the
    median box then has an anchor of IoU 0.70 (0.63 at x0.5), and the demo's AP50 rose 75 → 82 at epoch 7."""
    scale = 0.75 if input_size <= 256 else 1.0
    return tuple(int(s * scale) for s in OFFICIAL_ANCHORS)


def train_sizes(size: int) -> int | tuple[int, ...]:
    """Shorter sides drawn per training image: the official 480-800 (step 32) for an 800 recipe, the same
    0.6-1 span below it from 512 up; small inputs train at their size. Evaluation uses the largest."""
    return tuple(range(round(0.6 * size), size + 1, 32)) if size >= 512 else size


def proposals(kept: int) -> dict[str, int]:
    """RPN and output settings for `kept` proposals per image, in the official proportions (train: 2000
    enter NMS, 1000 kept; test: 1000 and 1000; 100 detections per image). Detections matter for speed:
    the mask head runs on every one, so at 100 per image it took most of the shapes' validation time."""
    return {"rpn_pre_nms_top_n_train": 2 * kept, "rpn_post_nms_top_n_train": kept,
            "rpn_pre_nms_top_n_test": kept, "rpn_post_nms_top_n_test": kept,
            "box_detections_per_img": max(1, kept // 10)}


class Detection(DenseTask):
    name = "detect"
    command = "convnext detect train"
    recipe_class = DetectRecipe
    columns = reporting.DETECTION_COLUMNS
    collate = staticmethod(lambda batch: tuple(zip(*batch)))

    def build_data(self) -> DenseData:
        run = self.run
        return detection_data(data_root(run.data), run.seed, self.recipe.hflip, run.on_bad_image, run.subset)

    def build_model(self, classifier: nn.Module) -> nn.Module:
        recipe, size = self.recipe, self.recipe.input_size or self.data.input_size
        width = {"fpn_channels": recipe.head_width} if recipe.head_width else {}
        builder = maskrcnn_convnext if self.data.has_masks else fasterrcnn_convnext  # boxes-only data: no mask head
        model = builder(classifier, num_classes=len(self.data.class_names) + 1, min_size=train_sizes(size),
                        max_size=max(size, round(size * 1333 / 800)), anchor_sizes=anchor_sizes(size),
                        box_batch_size_per_image=recipe.rois_per_image, **proposals(recipe.proposals), **width)
        model.class_names = self.data.class_names
        return model

    def prepare(self, batch) -> tuple:
        images, targets = batch
        device = self.ctx.device
        return ([image.to(device) for image in images],
                [{k: v.to(device) if torch.is_tensor(v) else v for k, v in t.items()} for t in targets])

    def loss(self, network: nn.Module, images, targets) -> torch.Tensor:
        return sum(loss.float() for loss in network(images, targets).values())

    def validate(self, model: nn.Module, loader, autocast) -> dict:
        return evaluate_detection(model, loader, self.data.val, self.ctx, autocast)

    def score(self, metrics: dict) -> float:
        return metrics["AP"]

    def row(self, metrics: dict) -> dict:
        return {"val_AP": metrics["AP"], "val_AP50": metrics["AP50"], "val_AP75": metrics["AP75"],
                "val_mask_AP": metrics["mask_AP"]}

    def describe(self, metrics: dict) -> str:
        return (f"box AP {100 * metrics['AP']:.1f}  AP50 {100 * metrics['AP50']:.1f}  "
                f"mask AP {100 * metrics['mask_AP']:.1f}")

    def summary(self, metrics: dict) -> dict:
        return {"box_AP": metrics["AP"], "box_AP50": metrics["AP50"], "box_AP75": metrics["AP75"],
                "mask_AP": metrics["mask_AP"], "mask_AP50": metrics["mask_AP50"],
                "per_class_box_AP": metrics["coco"]["bbox"]["per_class"]}

    def pictures(self, model: nn.Module) -> list[torch.Tensor]:
        images = self.shown()
        found = detect(model, images, self.ctx.device, self.autocast)
        return [draw_detections(image, boxes, self.data.class_names) for image, boxes in zip(images, found)]
