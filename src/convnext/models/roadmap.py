"""The modernisation roadmap (paper §2, Fig. 2, Tables 10-11): ResNet -> ConvNeXt, one decision a step.

`RoadmapNet` is the configurable network where the experiments live; each step is a small diff over
the previous step's `RoadmapConfig`. Every step is registered with `create_model`:

    convnext.create_model("roadmap_r50_06_inverted_bottleneck", num_classes=10)

Parameter names follow ConvNeXt's (`downsample_layers`, `stages.s.b`, `norm`, `head`), so the last
step *is* ConvNeXt-T: its weights load into `convnext_tiny` unchanged.
"""
from dataclasses import dataclass, replace
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import StochasticDepth

from .convnext import check_hyperparameters, drop_path_rates
from .layers import Classifier, LayerNorm2d, check_input, checkpointed_blocks

torch.fx.wrap("check_input")  # one call in a symbolic trace (torchvision's feature extractor), not its branches
from .registry import register_model


@dataclass(frozen=True)
class RoadmapConfig:
    depths: tuple[int, ...] = (3, 4, 6, 3)  # blocks per stage
    widths: tuple[int, ...] = (64, 128, 256, 512)  # bottleneck widths (ResNet) or stage widths (inverted)
    patchify_stem: bool = False  # 4x4/4 conv instead of 7x7/2 conv + max-pool
    depthwise: bool = False  # spatial conv with groups = channels
    inverted: bool = False  # narrow -> wide (4x) -> narrow; else wide -> narrow -> wide
    dwconv_first: bool = False  # spatial conv moved to the top of the block
    kernel_size: int = 3
    gelu: bool = False  # GELU instead of ReLU
    fewer_activations: bool = False  # one activation, between the two 1x1 layers
    fewer_norms: bool = False  # one norm, after the spatial conv
    layer_norm: bool = False  # LayerNorm (over channels) instead of BatchNorm
    separate_downsampling: bool = False  # LN + 2x2/2 conv between stages; LN after stem and after pooling
    layer_scale: float = 0.0  # ConvNeXt's per-channel residual scale (init value); 0: none


class Pointwise(nn.Linear):
    """A 1x1 conv on (N, C, H, W) holding Linear-shaped (out, in) weights, as ConvNeXt's pwconv layers."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight[:, :, None, None], self.bias)


def _norm(config: RoadmapConfig, channels: int) -> nn.Module:
    return LayerNorm2d(channels) if config.layer_norm else nn.BatchNorm2d(channels)


def _act(config: RoadmapConfig) -> nn.Module:
    return nn.GELU() if config.gelu else nn.ReLU(inplace=True)


class RoadmapBlock(nn.Module):
    """A residual block that every roadmap step is a setting of.

    Layer order is conv1 -> conv2 -> conv3 (ResNet) or dwconv -> pwconv1 -> pwconv2 (spatial conv moved
    up). A conv has a bias exactly when no BatchNorm follows it; stride 2 sits in the spatial conv
    (ResNet v1.5), with a 1x1 projection shortcut when the shape changes.
    """

    def __init__(self, config: RoadmapConfig, in_dim: int, width: int, stride: int, drop_path: float):
        super().__init__()
        out_dim = width if config.inverted else 4 * width
        hidden = 4 * width if config.inverted else width
        k, c = config.kernel_size, config
        spatial_dim = in_dim if c.dwconv_first else hidden

        def spatial(channels_in, channels_out, bias):
            groups = channels_in if c.depthwise else 1
            return nn.Conv2d(channels_in, channels_out, k, stride, k // 2, groups=groups, bias=bias)

        if c.dwconv_first:  # dwconv -> norm -> pwconv1 -> act -> pwconv2
            names = ("dwconv", "pwconv1", "pwconv2")
            norms = ("norm", "norm1", "norm2")
            shapes = ((in_dim, spatial_dim), (in_dim, hidden), (hidden, out_dim))
        else:
            names, norms = ("conv1", "conv2", "conv3"), ("norm1", "norm2", "norm3")
            shapes = ((in_dim, hidden), (hidden, hidden), (hidden, out_dim))
        spatial_index = 0 if c.dwconv_first else 1
        normed = (True, False, False) if c.fewer_norms else (True, True, True)
        # activations after layers 0 and 1 (and after the sum), or only between the two 1x1 layers
        acts = (False, True, False) if c.fewer_activations else (True, True, False)
        self.layers = []
        for i, (name, norm_name, (cin, cout)) in enumerate(zip(names, norms, shapes)):
            batch_norm_follows = normed[i] and not c.layer_norm
            if i == spatial_index:
                layer = spatial(cin, cout, bias=not batch_norm_follows)
            elif c.dwconv_first:
                layer = Pointwise(cin, cout, bias=not batch_norm_follows)
            else:
                layer = nn.Conv2d(cin, cout, 1, bias=not batch_norm_follows)
            setattr(self, name, layer)
            setattr(self, norm_name, _norm(c, cout) if normed[i] else nn.Identity())
            self.layers.append((name, norm_name, _act(c) if acts[i] else nn.Identity()))
        for i, (_, _, act) in enumerate(self.layers):
            self.add_module(f"act{i + 1}", act)
        self.post_act = nn.Identity() if c.fewer_activations else _act(c)
        self.gamma = nn.Parameter(torch.full((out_dim,), c.layer_scale)) if c.layer_scale > 0 else None
        self.shortcut = (
            nn.Sequential(nn.Conv2d(in_dim, out_dim, 1, stride, bias=c.layer_norm), _norm(c, out_dim))
            if stride != 1 or in_dim != out_dim else nn.Identity()
        )
        self.drop_path = StochasticDepth(drop_path, mode="row")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for name, norm_name, act in self.layers:
            out = act(getattr(self, norm_name)(getattr(self, name)(out)))
        if self.gamma is not None:
            out = self.gamma[:, None, None] * out
        return self.post_act(self.shortcut(x) + self.drop_path(out))


class RoadmapNet(Classifier):
    """The configurable network of the roadmap. `RoadmapNet(RoadmapConfig())` is ResNet-50 (v1.5)."""

    min_input_size = 32

    def __init__(self, config: RoadmapConfig = RoadmapConfig(), num_classes: int = 1000, in_chans: int = 3,
                 drop_path_rate: float = 0.0, head_init_scale: float = 1.0):
        super().__init__()
        check_hyperparameters(num_classes, in_chans, drop_path_rate, config.layer_scale, head_init_scale)
        self.config, self.in_chans, self.num_classes = config, in_chans, num_classes
        c, widths = config, config.widths
        dims = [w if c.inverted else 4 * w for w in widths]  # the residual stream's width per stage
        stem_dim = widths[0]
        if c.patchify_stem:
            stem = [nn.Conv2d(in_chans, stem_dim, 4, 4, bias=c.layer_norm), _norm(c, stem_dim)]
        else:
            stem = [nn.Conv2d(in_chans, stem_dim, 7, 2, 3, bias=c.layer_norm), _norm(c, stem_dim), _act(c),
                    nn.MaxPool2d(3, 2, 1)]
        layers = [nn.Sequential(*stem)]
        if c.separate_downsampling:
            stem_dim = dims[0]
            layers += [nn.Sequential(LayerNorm2d(dims[i - 1]), nn.Conv2d(dims[i - 1], dims[i], 2, 2)) for i in (1, 2, 3)]
        self.downsample_layers = nn.ModuleList(layers)
        stages, in_dim = [], stem_dim
        for s, (width, depth_rates) in enumerate(zip(widths, drop_path_rates(drop_path_rate, c.depths))):
            blocks = []
            for b, rate in enumerate(depth_rates):
                stride = 2 if s > 0 and b == 0 and not c.separate_downsampling else 1
                blocks.append(RoadmapBlock(c, in_dim if b == 0 and not c.separate_downsampling else dims[s],
                                           width, stride, rate))
            stages.append(nn.Sequential(*blocks))
            in_dim = dims[s]
        self.stages = nn.ModuleList(stages)
        self.num_features = dims[-1]
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6) if c.separate_downsampling else nn.Identity()
        self.head = nn.Linear(dims[-1], num_classes)
        self.init_weights(head_init_scale)

    @property
    def layout(self) -> str:
        """Which published network this step's tensors are: "resnet" (torchvision's bottleneck ResNet,
        any depths), "convnext" (the last step, any depths and widths) or "roadmap" (only ours)."""
        c = self.config
        if replace(c, depths=RESNET.depths) == RESNET:
            return "resnet"
        if replace(c, depths=CONVNEXT.depths, widths=CONVNEXT.widths, layer_scale=CONVNEXT.layer_scale) == CONVNEXT:
            return "convnext"
        return "roadmap"

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_chans, self.min_input_size)
        for i, stage in enumerate(self.stages):
            if i < len(self.downsample_layers):
                x = self.downsample_layers[i](x)
            x = checkpointed_blocks(stage, x) if self.grad_checkpointing and self.training else stage(x)
        return self.norm(x.mean(dim=(-2, -1)))


@dataclass(frozen=True)
class Step:
    name: str
    change: str
    paper_top1: float
    paper_gmacs: float
    config: RoadmapConfig


def _path(prefix: str, start: RoadmapConfig, rows: Sequence[tuple]) -> list[Step]:
    """Each row: (suffix, change, top-1, GMACs, diff over the previous main-line step).

    A suffix ending in "*" is a side branch (the other kernel sizes): later rows do not build on it.
    """
    steps, config = [], start
    for suffix, change, top1, gmacs, diff in rows:
        step_config = replace(config, **diff)
        if not suffix.endswith("*"):
            config = step_config
        steps.append(Step(f"{prefix}_{suffix.rstrip('*')}", change, top1, gmacs, step_config))
    return steps


R50_ROWS = [
    ("00_resnet50", "ResNet-50 (torchvision v1.5), original recipe", 76.1, 4.09, {}),
    ("01_enhanced_recipe", "training only: the paper's recipe", 78.8, 4.09, {}),
    ("02_stage_ratio", "blocks per stage (3,4,6,3) -> (3,3,9,3)", 79.4, 4.53, {"depths": (3, 3, 9, 3)}),
    ("03_patchify_stem", "7x7/2 conv + max-pool -> 4x4/4 conv", 79.5, 4.42, {"patchify_stem": True}),
    ("04_depthwise", "3x3 conv -> depthwise (ResNeXt-ify)", 78.3, 2.35, {"depthwise": True}),
    ("05_width", "width 64 -> 96 (Swin-T's channels)", 80.5, 5.27, {"widths": (96, 192, 384, 768)}),
    ("06_inverted_bottleneck", "wide-narrow-wide -> narrow-wide (4x)-narrow", 80.6, 4.64, {"inverted": True}),
    ("07_move_up_dwconv", "depthwise conv first in the block", 79.9, 4.07, {"dwconv_first": True}),
    ("08_kernel5*", "depthwise kernel 3 -> 5", 80.4, 4.10, {"kernel_size": 5}),
    ("08_kernel7", "depthwise kernel 3 -> 7 (adopted)", 80.6, 4.15, {"kernel_size": 7}),
    ("08_kernel9*", "depthwise kernel 7 -> 9", 80.6, 4.21, {"kernel_size": 9}),
    ("08_kernel11*", "depthwise kernel 7 -> 11", 80.5, 4.29, {"kernel_size": 11}),
    ("09_gelu", "ReLU -> GELU", 80.6, 4.15, {"gelu": True}),
    ("10_fewer_activations", "one GELU, between the two 1x1 layers", 81.3, 4.15, {"fewer_activations": True}),
    ("11_fewer_norms", "one norm, after the depthwise conv", 81.4, 4.15, {"fewer_norms": True}),
    ("12_layer_norm", "BatchNorm -> LayerNorm", 81.5, 4.46, {"layer_norm": True}),
    ("13_separate_downsampling", "LN + 2x2/2 conv between stages (+ layer scale) = ConvNeXt-T", 82.0, 4.49,
     {"separate_downsampling": True, "layer_scale": 1e-6}),
]
R50 = _path("roadmap_r50", RoadmapConfig(), R50_ROWS)

R200 = _path("roadmap_r200", RoadmapConfig(depths=(3, 24, 36, 3)), [
    ("00_resnet200", "ResNet-200, original recipe", 78.20, 15.01, {}),
    ("01_enhanced_recipe", "training only: the paper's recipe", 81.14, 15.01, {}),
    ("02_stage_ratio", "blocks (3,24,36,3) -> (3,3,27,3), width 64 -> 84", 81.33, 14.52,
     {"depths": (3, 3, 27, 3), "widths": (84, 168, 336, 672)}),
    ("03_patchify_stem", "7x7/2 conv + max-pool -> 4x4/4 conv", 81.59, 14.38, {"patchify_stem": True}),
    ("04_depthwise", "3x3 conv -> depthwise", 80.54, 7.23, {"depthwise": True}),
    ("05_width", "width -> 128", 81.85, 16.76, {"widths": (128, 256, 512, 1024)}),
    ("06_inverted_bottleneck", "narrow-wide (4x)-narrow", 82.64, 15.68, {"inverted": True}),
    ("07_move_up_dwconv", "depthwise conv first in the block", 82.04, 14.63, {"dwconv_first": True}),
    ("08_kernel5*", "depthwise kernel 3 -> 5", 82.32, 14.70, {"kernel_size": 5}),
    ("08_kernel7", "depthwise kernel 3 -> 7 (adopted)", 82.30, 14.81, {"kernel_size": 7}),
    ("08_kernel9*", "depthwise kernel 7 -> 9", 82.27, 14.95, {"kernel_size": 9}),
    ("08_kernel11*", "depthwise kernel 7 -> 11", 82.18, 15.13, {"kernel_size": 11}),
    ("09_gelu", "ReLU -> GELU", 82.19, 14.81, {"gelu": True}),
    ("10_fewer_activations", "one GELU, between the two 1x1 layers", 82.71, 14.81, {"fewer_activations": True}),
    ("11_fewer_norms", "one norm, after the depthwise conv", 83.17, 14.81, {"fewer_norms": True}),
    ("12_layer_norm", "BatchNorm -> LayerNorm", 83.35, 14.81, {"layer_norm": True}),
    ("13_separate_downsampling", "LN + 2x2/2 conv between stages (+ layer scale) = ConvNeXt-B", 83.60, 15.35,
     {"separate_downsampling": True, "layer_scale": 1e-6}),
])

# The same decisions in the same order at a size two CPU cores train on the built-in scenes (the
# roadmap study, training/roadmap_study.py): a bottleneck ResNet of (2, 2, 2, 2) blocks, widths 32-256,
# to ConvNeXt-atto ((2, 2, 6, 2), 40-320). The paper's figures beside each step are the R50 path's.
SMALL_ROWS = {  # the R50 rows that differ at this size: (suffix, change, diff); the others are R50's
    "00_resnet50": ("00_resnet", "a small bottleneck ResNet, (2,2,2,2) blocks, original recipe", {}),
    "02_stage_ratio": ("02_stage_ratio", "blocks per stage (2,2,2,2) -> (2,2,6,2)", {"depths": (2, 2, 6, 2)}),
    "05_width": ("05_width", "width 32 -> 40 (ConvNeXt-atto's channels)", {"widths": (40, 80, 160, 320)}),
    "13_separate_downsampling": ("13_separate_downsampling", "LN + 2x2/2 conv between stages (+ layer scale) = "
                                 "ConvNeXt-atto", {"separate_downsampling": True, "layer_scale": 1e-6}),
}
SMALL = _path("roadmap_small", RoadmapConfig(depths=(2, 2, 2, 2), widths=(32, 64, 128, 256)), [
    (SMALL_ROWS[suffix][0], SMALL_ROWS[suffix][1], top1, gmacs, SMALL_ROWS[suffix][2]) if suffix in SMALL_ROWS
    else (suffix, change, top1, gmacs, diff) for suffix, change, top1, gmacs, diff in R50_ROWS])

STEPS = {step.name: step for step in (*R50, *R200, *SMALL)}
RESNET, CONVNEXT = R50[0].config, R50[-1].config  # the two ends of the path


def _builder(step: Step):
    def build(num_classes: int = 1000, in_chans: int = 3, drop_path_rate: float = 0.0, head_init_scale: float = 1.0,
              layer_scale_init_value: float | None = None):
        """`layer_scale_init_value`: None keeps the step's own; a step with layer scale (the last) takes
        any value (0: none), as ConvNeXt does; a step without it has none to set."""
        config = step.config
        if layer_scale_init_value is not None and layer_scale_init_value != config.layer_scale:
            if config.layer_scale == 0:
                raise ValueError(f"{step.name} has no layer scale (it comes with the last step): "
                                 f"layer_scale_init_value {layer_scale_init_value:g} refused")
            config = replace(config, layer_scale=layer_scale_init_value)
        return RoadmapNet(config, num_classes, in_chans, drop_path_rate, head_init_scale)
    build.__name__ = step.name
    return build


for _step in STEPS.values():
    register_model(_step.name, _builder(_step), "roadmap")
