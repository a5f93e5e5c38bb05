"""Supervised classification (`convnext train`, the roadmap's steps): images and labels, cross-entropy
with label smoothing, MixUp/CutMix, top-1/top-5 and a confusion matrix; the run leaves the model in our
format and confusion.png."""
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import v2

from ...checkpoints.weights import save_pretrained
from .. import reporting
from ..data import DataBundle, build_data
from ..evaluation import evaluate
from ..recipes import ClassifyRecipe
from ..starting_weights import starting_normalisation
from .base import Task, TrainingError, build_network


def mixer(recipe: ClassifyRecipe, num_classes: int):
    """MixUp and/or CutMix on a batch (one of them at random when both are on), or None."""
    alphas = {v2.MixUp: recipe.mixup, v2.CutMix: recipe.cutmix}
    chosen = [kind(alpha=alpha, num_classes=num_classes) for kind, alpha in alphas.items() if alpha > 0]
    return v2.RandomChoice(chosen) if chosen else None


class Classification(Task):
    name = "classify"
    command = "convnext train"
    recipe_class = ClassifyRecipe
    columns = reporting.COLUMNS

    def build_data(self) -> DataBundle:
        run = self.run
        data = build_data(run.data, self.recipe, run.seed, run.val_split, run.on_bad_image, run.subset,
                          columns=(run.image_column, run.label_column),
                          normalisation=starting_normalisation(self.starting))
        self.mixer = mixer(self.recipe, len(data.class_names))
        return data

    def start_network(self) -> nn.Module:
        # A new head keeps the model's own init, already scaled by head_init_scale (0.001 to fine-tune).
        return build_network(self.recipe, ("drop_path", "layer_scale", "head_init_scale", "stem", "patch_size", "norm"),
                             num_classes=len(self.data.class_names), in_chans=self.data.in_chans)

    def build_model(self, network: nn.Module) -> nn.Module:
        data = self.data
        network.class_names = data.class_names
        network.data_config = {"mean": data.mean, "std": data.std, "input_size": data.input_size,
                               "crop_pct": self.recipe.crop_pct}
        return network

    def check_input_size(self, model: nn.Module, size: int) -> None:
        if size < model.min_input_size:
            raise TrainingError(f"--input-size must be ≥ {model.min_input_size} for {self.recipe.model}, got {size}")

    def prepare(self, batch) -> tuple:
        images, labels = super().prepare(batch)
        if self.mixer is not None:
            images, labels = self.mixer(images, labels)
        return images, labels

    def loss(self, network: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(network(images).float(), labels, label_smoothing=self.recipe.label_smoothing)

    def validate(self, model: nn.Module, loader, autocast) -> dict:
        return evaluate(model, loader, len(self.data.class_names), context=self.ctx,
                        channels_last=self.run.channels_last, autocast_dtype=autocast)

    def score(self, metrics: dict) -> float:
        return metrics["top1"]

    def row(self, metrics: dict) -> dict:
        return {"val_loss": metrics["loss"], "val_top1": metrics["top1"], "val_top5": metrics["top5"]}

    def describe(self, metrics: dict) -> str:
        return f"val_loss {metrics['loss']:.4f}  top1 {100 * metrics['top1']:.2f}%  top5 {100 * metrics['top5']:.2f}%"

    def summary(self, metrics: dict) -> dict:
        return {"test_top1": metrics["top1"], "test_top5": metrics["top5"], "test_loss": metrics["loss"]}

    def save_outputs(self, model: nn.Module, run_dir: Path, metrics: dict) -> None:
        save_pretrained(model, run_dir)
        reporting.plot_confusion(metrics["confusion"], self.data.class_names, run_dir / "confusion.png")
