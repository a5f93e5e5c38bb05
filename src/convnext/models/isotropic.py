"""Isotropic ConvNeXt (paper §3.5): a 16x16 patchify stem, then blocks of one width, no downsampling."""
import torch
from torch import nn

from .convnext import Block, check_hyperparameters
from .layers import Classifier, check_input, checkpointed_blocks

torch.fx.wrap("check_input")  # one call in a symbolic trace (torchvision's feature extractor), not its branches


class ConvNeXtIsotropic(Classifier):
    """`create_model("convnext_isotropic_small")` builds iso-S (depth 18, width 384)."""

    min_input_size = 16
    layout = "isotropic"

    def __init__(
        self,
        depth: int = 18,
        dim: int = 384,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_path_rate: float = 0.0,
        layer_scale_init_value: float = 0.0,
        head_init_scale: float = 1.0,
    ):
        super().__init__()
        check_hyperparameters(num_classes, in_chans, drop_path_rate, layer_scale_init_value, head_init_scale)
        self.in_chans, self.num_classes, self.num_features = in_chans, num_classes, dim
        self.stem = nn.Conv2d(in_chans, dim, kernel_size=16, stride=16)
        rates = torch.linspace(0, drop_path_rate, depth, device="cpu").tolist()
        self.blocks = nn.Sequential(*(Block(dim, rate, layer_scale_init_value) for rate in rates))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)
        self.init_weights(head_init_scale)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_chans, self.min_input_size)
        x = self.stem(x.contiguous(memory_format=torch.channels_last))  # as ConvNeXt: permutes become free
        x = checkpointed_blocks(self.blocks, x) if self.grad_checkpointing and self.training else self.blocks(x)
        return self.norm(x.mean(dim=(-2, -1)))
