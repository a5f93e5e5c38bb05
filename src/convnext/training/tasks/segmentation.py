"""Semantic segmentation (`convnext segment train`): image + mask pairs, UperNet on ConvNeXt, cross-entropy
with the auxiliary head at 0.4, and mIoU from one confusion matrix."""
import torch
from torch import nn

from ...models.upernet import segmentation_loss, upernet_convnext
from .. import reporting
from ..dense.data import DenseData, segmentation_data
from ..dense.drawing import draw_segmentation
from ...models.upernet import segment
from ..dense.evaluation import evaluate_segmentation
from ..dense.shapes import data_root
from ..recipes import SegmentRecipe
from .dense import DenseTask


class Segmentation(DenseTask):
    name = "segment"
    command = "convnext segment train"
    recipe_class = SegmentRecipe
    columns = reporting.SEGMENTATION_COLUMNS
    decay_mode = "stage_wise"

    def build_data(self) -> DenseData:
        run, recipe = self.run, self.recipe
        return segmentation_data(data_root(run.data), run.seed, recipe.input_size, recipe.hflip, run.on_bad_image,
                                 run.subset, recipe.scale_jitter)

    def val_batch_size(self) -> int:
        return 1  # validation images keep their own sizes (ADE20K's differ), so they are not stacked

    def build_model(self, classifier: nn.Module) -> nn.Module:
        width = {"channels": self.recipe.head_width} if self.recipe.head_width else {}
        model = upernet_convnext(classifier, num_classes=len(self.data.class_names), **width)
        model.class_names = self.data.class_names
        return model

    def prepare(self, batch) -> tuple:
        images, masks = batch
        return images.to(self.ctx.device), masks.to(self.ctx.device)

    def loss(self, network: nn.Module, images, masks) -> torch.Tensor:
        out = network(images)
        return sum(segmentation_loss({k: v.float() for k, v in out.items()}, masks).values())

    def validate(self, model: nn.Module, loader, autocast) -> dict:
        return evaluate_segmentation(model, loader, self.data.class_names, self.ctx, autocast)

    def score(self, metrics: dict) -> float:
        return metrics["mIoU"]

    def row(self, metrics: dict) -> dict:
        return {"val_loss": metrics["loss"], "val_mIoU": metrics["mIoU"], "val_mAcc": metrics["mAcc"],
                "val_aAcc": metrics["aAcc"]}

    def describe(self, metrics: dict) -> str:
        return f"val_loss {metrics['loss']:.4f}  mIoU {100 * metrics['mIoU']:.1f}  aAcc {100 * metrics['aAcc']:.1f}"

    def summary(self, metrics: dict) -> dict:
        return {"mIoU": metrics["mIoU"], "mAcc": metrics["mAcc"], "aAcc": metrics["aAcc"],
                "per_class_IoU": {c["class"]: c["IoU"] for c in metrics["per_class"]}}

    def pictures(self, model: nn.Module) -> list[torch.Tensor]:
        images, classes = self.shown(), len(self.data.class_names)
        labels = [segment(model, image[None], self.ctx.device, self.autocast).argmax(1)[0] for image in images]
        return [draw_segmentation(image, label, classes, self.data.mean, self.data.std)
                for image, label in zip(images, labels)]
