"""ConvNeXt as a dense-prediction backbone: four feature maps, optionally with per-stage LayerNorms.

The official detection and segmentation backbones add `norm0`..`norm3` (channels-first LayerNorms) on
the stage outputs and drop the classifier; this module holds the same names, so the backbone part of
those checkpoints loads with `strict=True`.
"""
from typing import Sequence

import torch
from torch import nn

from .convnext import ConvNeXt, run_stages
from .layers import LayerNorm2d, check_input

torch.fx.wrap("check_input")  # one call in a symbolic trace (torchvision's feature extractor), not its branches


class ConvNeXtBackbone(nn.Module):
    """`ConvNeXtBackbone(create_model("convnext_tiny"))(x)` -> maps at strides 4, 8, 16, 32."""

    def __init__(self, model: ConvNeXt, out_indices: Sequence[int] = (0, 1, 2, 3), stage_norms: bool = True):
        super().__init__()
        self.in_chans, self.min_input_size = model.in_chans, model.min_input_size
        self.out_indices = tuple(out_indices)
        self.downsample_layers, self.stages = model.downsample_layers, model.stages  # shared, not copied
        self.grad_checkpointing = model.grad_checkpointing
        for i in self.out_indices:
            self.add_module(f"norm{i}", LayerNorm2d(model.dims[i]) if stage_norms else nn.Identity())
        self.out_channels = [model.dims[i] for i in self.out_indices]

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute blocks in the backward pass: less memory, same gradients (as the classifier's)."""
        self.grad_checkpointing = enable

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        check_input(x, self.in_chans, self.min_input_size)
        maps = run_stages(self.downsample_layers, self.stages, x, self.out_indices,
                          self.grad_checkpointing and self.training)
        return [getattr(self, f"norm{i}")(m) for i, m in zip(self.out_indices, maps)]
