"""ConvNeXt V1 and V2, as the paper and the official code define them.

Parameter names are the official ones (`downsample_layers.i.j`, `stages.s.b.dwconv`, ...), so an
official checkpoint loads with `strict=True` and no renaming.
"""
from typing import Sequence

import torch
from torch import nn
from torchvision.ops import StochasticDepth

from .layers import GRN, BatchNormChannelsLast, Classifier, LayerNorm2d, check_input, checkpointed_blocks

torch.fx.wrap("check_input")  # one call in a symbolic trace (torchvision's feature extractor), not its branches


class Block(nn.Module):
    """The ConvNeXt block (paper Figure 4, the official `Block`): a 7x7 depthwise conv, LayerNorm, an
    inverted bottleneck of two pointwise layers with GELU between them, layer scale, stochastic depth,
    and the residual sum. The pointwise layers hold Linear weights, as in the official code.

    This is the reference, and only that: `convnext.accelerate(model)` turns blocks into ones that
    compute exactly this by kernels measured on the machine (docs/performance.md).
    """

    def __init__(self, dim: int, drop_path: float = 0.0, layer_scale_init_value: float = 1e-6, norm: str = "layer"):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6) if norm == "layer" else BatchNormChannelsLast(dim)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.grn = nn.Identity()  # ConvNeXt V2's GRN (BlockV2)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        # A zero init value means "no layer scale": no parameter at all, as in the official files.
        self.gamma = (
            nn.Parameter(torch.full((dim,), layer_scale_init_value)) if layer_scale_init_value > 0 else None
        )
        self.drop_path = StochasticDepth(drop_path, mode="row")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.dwconv(x).permute(0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C)
        x = self.act(self.pwconv1(self.norm(x)))
        x = self.pwconv2(self.grn(x))
        if self.gamma is not None:
            x = self.gamma * x
        return shortcut + self.drop_path(x.permute(0, 3, 1, 2))  # back to (N, C, H, W)


class BlockV2(Block):
    """The ConvNeXt V2 block: GRN after GELU, and no layer scale."""

    def __init__(self, dim: int, drop_path: float = 0.0, norm: str = "layer"):
        super().__init__(dim, drop_path, layer_scale_init_value=0.0, norm=norm)
        self.grn = GRN(4 * dim)


def drop_path_rates(drop_path_rate: float, depths: Sequence[int]) -> list[list[float]]:
    """The per-block linear schedule: 0 at the first block, `drop_path_rate` at the last, over all stages."""
    rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()  # cpu: also under meta
    starts = [sum(depths[:i]) for i in range(len(depths))]
    return [rates[s : s + d] for s, d in zip(starts, depths)]


def run_stages(downsample_layers: nn.ModuleList, stages: nn.ModuleList, x: torch.Tensor,
               indices: Sequence[int], checkpointed: bool = False) -> list[torch.Tensor]:
    """Downsample then stage, four times; return the outputs of the stages in `indices`."""
    outputs = []
    for i, (downsample, stage) in enumerate(zip(downsample_layers, stages)):
        x = downsample(x)
        x = checkpointed_blocks(stage, x) if checkpointed else stage(x)
        if i in indices:
            outputs.append(x)
        if i >= max(indices):
            break
    return outputs


# The stem's options (timm's names): "patch" is the paper's non-overlapping patchify convolution,
# "overlap" two 3x3 convolutions with GELU between them (timm's "overlap_act"), which sees across patch
# borders. `patch_size` is the stem's stride either way: 4 in the paper; 2 or 1 keep small inputs (32²)
# from shrinking to a 1x1 map by the last stage.
STEMS = ("patch", "overlap")
PATCH_SIZES = (1, 2, 4)
# "layer" is the paper's LayerNorm; "batch" is BatchNorm in the same places (the paper's step before it,
# §2.6: BN -> LN was +0.1), which starts learning sooner in short runs from scratch.
NORMS = ("layer", "batch")


def make_stem(kind: str, in_chans: int, dim: int, patch_size: int, norm: str) -> nn.Sequential:
    """The stem at stride `patch_size`; "patch" at 4 has the official layout (conv, then norm)."""
    norm_layer = LayerNorm2d(dim) if norm == "layer" else nn.BatchNorm2d(dim)
    if kind == "patch":
        return nn.Sequential(nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size), norm_layer)
    first, second = {4: (2, 2), 2: (1, 2), 1: (1, 1)}[patch_size]  # the two convolutions' strides
    return nn.Sequential(nn.Conv2d(in_chans, dim, kernel_size=3, stride=first, padding=1), nn.GELU(),
                         nn.Conv2d(dim, dim, kernel_size=3, stride=second, padding=1), norm_layer)


def make_norm2d(norm: str, dim: int) -> nn.Module:
    """A channels-first norm for the downsampling layers."""
    return LayerNorm2d(dim) if norm == "layer" else nn.BatchNorm2d(dim)


def check_hyperparameters(num_classes: int, in_chans: int, drop_path_rate: float,
                          layer_scale_init_value: float, head_init_scale: float,
                          stem: str = "patch", patch_size: int = 4, norm: str = "layer") -> None:
    """Reject bad settings at construction, where the message can name them."""
    if stem not in STEMS:
        raise ValueError(f"stem must be one of {', '.join(STEMS)}, got {stem!r}")
    if patch_size not in PATCH_SIZES:
        raise ValueError(f"patch_size must be one of {', '.join(map(str, PATCH_SIZES))}, got {patch_size!r}")
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    if not isinstance(in_chans, int) or in_chans < 1:
        raise ValueError(f"in_chans must be a positive integer, got {in_chans!r}")
    if not 0.0 <= drop_path_rate < 1.0:
        raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate!r}")
    if layer_scale_init_value < 0:
        raise ValueError(f"layer_scale_init_value must be >= 0 (0 disables it), got {layer_scale_init_value!r}")
    if head_init_scale <= 0:
        raise ValueError(f"head_init_scale must be > 0, got {head_init_scale!r}")


class ConvNeXt(Classifier):
    """ConvNeXt (Liu et al., 2022). `create_model("convnext_tiny")` builds the paper's ConvNeXt-T."""

    layout = "convnext"  # which peers' models hold these tensors (see keymaps.PEER_LAYOUTS)

    def __init__(
        self,
        depths: Sequence[int] = (3, 3, 9, 3),
        dims: Sequence[int] = (96, 192, 384, 768),
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_path_rate: float = 0.0,
        layer_scale_init_value: float = 1e-6,
        head_init_scale: float = 1.0,
        stem: str = "patch",
        patch_size: int = 4,
        norm: str = "layer",
    ):
        super().__init__()
        check_hyperparameters(num_classes, in_chans, drop_path_rate, layer_scale_init_value, head_init_scale,
                              stem, patch_size, norm)
        if len(depths) != 4 or len(dims) != 4:
            raise ValueError(f"depths and dims need four stages, got {tuple(depths)} and {tuple(dims)}")
        self.in_chans, self.num_classes, self.dims = in_chans, num_classes, tuple(dims)
        self.num_features = dims[-1]
        self.min_input_size = 8 * patch_size  # total stride: smaller inputs would vanish before the last stage

        downsamples = [
            nn.Sequential(make_norm2d(norm, dims[i - 1]), nn.Conv2d(dims[i - 1], dims[i], kernel_size=2, stride=2))
            for i in range(1, 4)
        ]
        self.downsample_layers = nn.ModuleList([make_stem(stem, in_chans, dims[0], patch_size, norm), *downsamples])
        self.stages = nn.ModuleList(
            nn.Sequential(*(self.make_block(dim, rate, layer_scale_init_value, norm) for rate in rates))
            for dim, rates in zip(dims, drop_path_rates(drop_path_rate, depths))
        )
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)  # on the pooled features, whatever the body's norm
        self.head = nn.Linear(dims[-1], num_classes)
        self.init_weights(head_init_scale)

    def make_block(self, dim: int, drop_path: float, layer_scale_init_value: float, norm: str) -> nn.Module:
        return Block(dim, drop_path, layer_scale_init_value, norm)

    def forward_intermediates(self, x: torch.Tensor, indices: Sequence[int] = (0, 1, 2, 3)) -> list[torch.Tensor]:
        """The stage outputs at strides 4, 8, 16, 32 (for detection and segmentation heads)."""
        check_input(x, self.in_chans, self.min_input_size)
        checkpointed = self.grad_checkpointing and self.training
        return run_stages(self.downsample_layers, self.stages, x, indices, checkpointed)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled, normalised features: (N, num_features)."""
        x = self.forward_intermediates(x, indices=(3,))[0]
        return self.norm(x.mean(dim=(-2, -1)))



class ConvNeXtV2(ConvNeXt):
    """ConvNeXt V2 (Woo et al., 2023): the V1 macro design with GRN blocks and no layer scale."""

    layout = "convnextv2"

    def __init__(self, depths: Sequence[int] = (3, 3, 9, 3), dims: Sequence[int] = (96, 192, 384, 768),
                 num_classes: int = 1000, in_chans: int = 3, drop_path_rate: float = 0.0,
                 head_init_scale: float = 1.0, stem: str = "patch", patch_size: int = 4, norm: str = "layer"):
        super().__init__(depths, dims, num_classes, in_chans, drop_path_rate, 0.0, head_init_scale,
                         stem, patch_size, norm)

    def make_block(self, dim: int, drop_path: float, layer_scale_init_value: float, norm: str) -> nn.Module:
        return BlockV2(dim, drop_path, norm)
