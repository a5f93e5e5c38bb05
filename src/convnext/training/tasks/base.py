"""What a task plugs into the training loop (`training/loop.py`): its data, its model around the network
that starting weights load into, its loss, its validation score, and the files its run leaves.

Everything else (the steps, checkpoints and resume, signals, DDP, EMA, autocast, metrics.csv and the
curves) is the loop's, written once for every task.
"""
import re
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ...checkpoints.files import Checkpoint
from ...models.registry import create_model, model_options
from ..data import DataBundle
from ..distributed import Context
from ..optim import build_optimizer
from ..recipes import Recipe


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite loss, say); the last good checkpoint is kept."""


# Recipe fields that are options of the model: (the builder's keyword, what the model lacks it as, the
# values that ask nothing of a model without it). A value that asks something of a model that has no
# such option is refused naming both, never dropped.
MODEL_FIELDS = {
    "drop_path": ("drop_path_rate", "drop path", (0.0,)),
    "layer_scale": ("layer_scale_init_value", "layer scale", (None, 0.0)),
    "head_init_scale": ("head_init_scale", "classifier head", (1.0,)),
    "stem": ("stem", "stem option", (None, "patch")),
    "patch_size": ("patch_size", "patch size option", (None, 4)),
    "norm": ("norm", "norm option", (None, "layer")),
}


def build_network(recipe: Recipe, fields: tuple[str, ...], **options) -> nn.Module:
    """`recipe.model` built with `options` and the recipe's model `fields` (of MODEL_FIELDS)."""
    accepted = model_options(recipe.model)
    for name in fields:
        keyword, what, neutral = MODEL_FIELDS[name]
        value = getattr(recipe, name)
        if keyword in accepted and value is not None:
            options[keyword] = value
        elif keyword not in accepted and value not in neutral:
            raise TrainingError(f"--{name.replace('_', '-')} {value:g}: {recipe.model} has no {what} to set"
                                if isinstance(value, float) else
                                f"--{name.replace('_', '-')} {value}: {recipe.model} has no {what} to set")
    try:
        return create_model(recipe.model, **options)
    except ValueError as error:  # an option the builder refuses for this model: named as the flag
        message = str(error)
        for name in fields:  # whole words: "stem" is also the end of "roadmap_..._patchify_stem"
            message = re.sub(rf"\b{MODEL_FIELDS[name][0]}\b", f"--{name.replace('_', '-')}", message)
        raise TrainingError(message) from None


class Task:
    name = "task"  # saved in config.json: which task a run is, so that its own command resumes it
    command = "convnext train"  # the command that trains (and resumes) it
    recipe_class: type[Recipe] = Recipe
    columns: list[str] = []  # metrics.csv
    collate = None  # the DataLoader's default: stacked tensors

    def __init__(self, recipe: Recipe, run, context: Context):
        self.recipe, self.run, self.ctx = recipe, run, context
        self.data: DataBundle | None = None
        self.autocast: torch.dtype | None = None  # the run's autocast dtype, set by the loop
        self.starting: Checkpoint | None = None  # the --weights the run starts from, read once by the loop

    # --- data and model ------------------------------------------------------------------------
    def build_data(self) -> DataBundle:
        raise NotImplementedError

    def start_network(self) -> nn.Module:
        """The network `--weights`/`--pretrained` load into (a classifier: its head is reset)."""
        raise NotImplementedError

    def build_model(self, network: nn.Module) -> nn.Module:
        """The module trained around the network with its starting weights (default: the network)."""
        return network

    def check_input_size(self, model: nn.Module, size: int) -> None:
        """Raise TrainingError for an input size this model cannot take."""

    def data_note(self) -> str:
        return f"{len(self.data.train)} train / {len(self.data.val)} val images, {len(self.data.class_names)} classes"

    def val_batch_size(self) -> int:
        return self.recipe.batch_size

    def optimizer(self, model: nn.Module, lr: float) -> torch.optim.Optimizer:
        recipe = self.recipe
        return build_optimizer(model, lr, recipe.weight_decay, recipe.layer_decay, recipe.beta2, kind=recipe.optimizer)

    def distribute(self, model: nn.Module) -> nn.Module:
        return DistributedDataParallel(model)

    def compile(self, network: nn.Module) -> nn.Module:
        """--compile: what the training steps run, compiled by torch.compile."""
        return torch.compile(network)

    # --- a step ---------------------------------------------------------------------------------
    def prepare(self, batch) -> tuple:
        """A loader batch -> (inputs, targets) on the device, as `loss` takes them."""
        inputs, targets = batch
        inputs, targets = inputs.to(self.ctx.device), targets.to(self.ctx.device)
        if self.run.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        return inputs, targets

    def loss(self, network: nn.Module, inputs, targets) -> torch.Tensor:
        """The training loss (the loop runs this under autocast)."""
        raise NotImplementedError

    # --- validation and what the run leaves --------------------------------------------------------
    def validate(self, model: nn.Module, loader, autocast: torch.dtype | None) -> dict:
        raise NotImplementedError

    def score(self, metrics: dict) -> float:
        """Higher is better: picks the best checkpoint (and the EMA over the model)."""
        raise NotImplementedError

    def row(self, metrics: dict) -> dict:
        """The task's columns of metrics.csv."""
        raise NotImplementedError

    def describe(self, metrics: dict) -> str:
        """The task's part of each epoch's line."""
        raise NotImplementedError

    def summary(self, metrics: dict) -> dict:
        """The task's scores in summary.json."""
        raise NotImplementedError

    def after_epoch(self, model: nn.Module, run_dir: Path) -> None:
        """Per-epoch pictures beyond the curves (on the main process)."""

    def save_outputs(self, model: nn.Module, run_dir: Path, metrics: dict) -> None:
        """The weights and pictures the finished run leaves (on the main process)."""
        raise NotImplementedError
