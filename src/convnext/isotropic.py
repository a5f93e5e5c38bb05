"""Isotropic ConvNeXt (paper §3.5): a 16x16 patchify stem, then blocks of one width, no downsampling."""
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint_sequential

from .layers import check_input, init_weights
from .model import Block, check_hyperparameters


class ConvNeXtIsotropic(nn.Module):
    """`create_model("convnext_isotropic_small")` builds iso-S (depth 18, width 384)."""

    min_input_size = 16

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
        self.grad_checkpointing = False
        self.stem = nn.Conv2d(in_chans, dim, kernel_size=16, stride=16)
        rates = torch.linspace(0, drop_path_rate, depth, device="cpu").tolist()
        self.blocks = nn.Sequential(*(Block(dim, rate, layer_scale_init_value) for rate in rates))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)
        self.apply(init_weights)
        with torch.no_grad():
            self.head.weight.mul_(head_init_scale)
            self.head.bias.mul_(head_init_scale)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_chans, self.min_input_size)
        x = self.stem(x)
        if self.grad_checkpointing and self.training:
            # One segment per 6 blocks: the isotropic net has no stages to checkpoint by.
            x = checkpoint_sequential(self.blocks, max(1, len(self.blocks) // 6), x, use_reentrant=False)
        else:
            x = self.blocks(x)
        return self.norm(x.mean(dim=(-2, -1)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
