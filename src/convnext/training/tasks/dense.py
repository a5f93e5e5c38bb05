"""What detection and segmentation share as tasks: a classifier whose stages become the backbone (and
which --weights/--pretrained start), optimizer groups by the official downstream layer decay, DDP with
unused heads, per-epoch pictures of the first validation images, and the model in our dense format."""
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ...checkpoints.dense import save_dense
from ...models.backbone import ConvNeXtBackbone
from ...models.registry import get_spec
from ..dense.drawing import save_grid
from ..optim import build_optimizer, dense_param_groups
from .base import Task, build_network

PREDICTIONS_FILE = "predictions.png"
SHOWN = 8  # validation images in the pictures


def num_layers(model_name: str) -> int:
    """The official configs' layer count for lr decay: 3 + stage-3 blocks / 3 (T: 6, S/B/L/XL: 12)."""
    return 3 + get_spec(model_name).config["depths"][2] // 3


class DenseTask(Task):
    decay_mode = "layer_wise"

    def start_network(self) -> nn.Module:
        return build_network(self.recipe, ("drop_path",))

    def check_input_size(self, model: nn.Module, size: int) -> None:
        if size < 64:
            raise ValueError(f"images must be at least 64 pixels for dense prediction, got {size}")

    def optimizer(self, model: nn.Module, lr: float) -> torch.optim.Optimizer:
        recipe = self.recipe
        groups = dense_param_groups(model, recipe.weight_decay, recipe.layer_decay, num_layers(recipe.model),
                                    self.decay_mode)
        return build_optimizer(model, lr, recipe.weight_decay, beta2=recipe.beta2, groups=groups, kind=recipe.optimizer)

    def distribute(self, model: nn.Module) -> nn.Module:
        # UperNet's BatchNorms share statistics across processes (SyncBatchNorm runs on GPUs only; on
        # CPUs each process keeps its own); not every head runs every step (no objects: no mask head).
        if self.ctx.device.type == "cuda":
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return DistributedDataParallel(model, find_unused_parameters=True)

    def compile(self, network: nn.Module) -> nn.Module:
        """--compile: the ConvNeXt backbone alone, in place (its keys unchanged). torchvision's detection
        heads and UperNet's decoder have data-dependent shapes (proposals, RoIs, sizes per image): compiled
        whole, a Mask R-CNN step on a CPU was still compiling after minutes."""
        for module in network.modules():
            if isinstance(module, ConvNeXtBackbone):
                module.compile()
        return network

    def shown(self) -> list[torch.Tensor]:
        val = self.data.val
        return [val[i][0] for i in range(min(SHOWN, len(val)))]  # their sizes may differ

    def pictures(self, model: nn.Module) -> list[torch.Tensor]:
        raise NotImplementedError

    def after_epoch(self, model: nn.Module, run_dir: Path) -> None:
        save_grid(self.pictures(model), run_dir / PREDICTIONS_FILE)

    def save_outputs(self, model: nn.Module, run_dir: Path, metrics: dict) -> None:
        save_dense(model, run_dir, self.data.class_names)
        self.after_epoch(model, run_dir)
