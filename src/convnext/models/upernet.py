"""UperNet (Xiao et al., 2018) on ConvNeXt for semantic segmentation, as in the official ADE20K setup.

A pyramid-pooling module on the last map (pool scales 1, 2, 3, 6), a feature pyramid over all four,
512 channels, and an auxiliary FCN head on the stage-3 map (weight 0.4 in the loss). Submodule names
are those of transformers' `UperNetForSemanticSegmentation`, so the `openmmlab/upernet-convnext-*`
checkpoints load strictly after renaming only their backbone keys (`checkpoints/keymaps.py`).

    model = upernet_convnext("convnext_tiny", num_classes=150)
    out = model(images)     # {"out": (N, 150, H, W)} and, in training, "aux" of the same shape
"""
import torch
import torch.nn.functional as F
from torch import nn

from .backbone import ConvNeXtBackbone
from .detection import trunk

AUX_WEIGHT = 0.4
IGNORE_INDEX = 255


class ConvModule(nn.Module):
    """Conv (no bias) → BatchNorm → ReLU, named as transformers names it."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
        self.batch_norm = nn.BatchNorm2d(out_channels)
        self.activation = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.batch_norm(self.conv(x)))


def upsample(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class UperHead(nn.Module):
    def __init__(self, in_channels: list[int], num_classes: int, channels: int = 512,
                 pool_scales: tuple[int, ...] = (1, 2, 3, 6), dropout: float = 0.1):
        super().__init__()
        self.psp_modules = nn.ModuleList(nn.Sequential(nn.AdaptiveAvgPool2d(s), ConvModule(in_channels[-1], channels))
                                         for s in pool_scales)
        self.bottleneck = ConvModule(in_channels[-1] + len(pool_scales) * channels, channels, 3)
        self.lateral_convs = nn.ModuleList(ConvModule(c, channels) for c in in_channels[:-1])
        self.fpn_convs = nn.ModuleList(ConvModule(channels, channels, 3) for _ in in_channels[:-1])
        self.fpn_bottleneck = ConvModule(len(in_channels) * channels, channels, 3)
        self.dropout = nn.Dropout2d(dropout)  # mmseg's, before the classifier (transformers has none)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        last = maps[-1]
        pooled = [upsample(branch(last), last.shape[-2:]) for branch in self.psp_modules]
        laterals = [conv(m) for conv, m in zip(self.lateral_convs, maps)] + [self.bottleneck(torch.cat([last, *pooled], 1))]
        for i in range(len(laterals) - 1, 0, -1):  # top-down: each level adds the coarser one, upsampled
            laterals[i - 1] = laterals[i - 1] + upsample(laterals[i], laterals[i - 1].shape[-2:])
        outs = [conv(x) for conv, x in zip(self.fpn_convs, laterals)] + [laterals[-1]]
        fused = torch.cat([outs[0]] + [upsample(x, outs[0].shape[-2:]) for x in outs[1:]], 1)
        return self.classifier(self.dropout(self.fpn_bottleneck(fused)))


class FCNHead(nn.Module):
    """The auxiliary head: one 3x3 conv module and a classifier, on one map."""

    def __init__(self, in_channels: int, num_classes: int, channels: int = 256, num_convs: int = 1, dropout: float = 0.1):
        super().__init__()
        self.convs = nn.Sequential(*(ConvModule(in_channels if i == 0 else channels, channels, 3) for i in range(num_convs)))
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.convs(x)))


class UperNet(nn.Module):
    def __init__(self, backbone: ConvNeXtBackbone, num_classes: int, channels: int = 512,
                 pool_scales: tuple[int, ...] = (1, 2, 3, 6), aux_index: int | None = 2, aux_channels: int = 256):
        super().__init__()
        self.num_classes, self.aux_index, self.in_chans = num_classes, aux_index, backbone.in_chans
        self.config = {"channels": channels, "pool_scales": list(pool_scales), "aux_index": aux_index,
                       "aux_channels": aux_channels}  # what rebuilds it from a file
        self.backbone = backbone
        self.decode_head = UperHead(backbone.out_channels, num_classes, channels, pool_scales)
        self.auxiliary_head = (None if aux_index is None else
                               FCNHead(backbone.out_channels[aux_index], num_classes, aux_channels))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        maps = self.backbone(x)
        out = {"out": upsample(self.decode_head(maps), x.shape[-2:])}
        if self.training and self.auxiliary_head is not None:
            out["aux"] = upsample(self.auxiliary_head(maps[self.aux_index]), x.shape[-2:])
        return out


def segmentation_loss(out: dict[str, torch.Tensor], target: torch.Tensor, aux_weight: float = AUX_WEIGHT) -> dict:
    """Cross-entropy over labelled pixels (255 ignored), plus the auxiliary head's at `aux_weight`."""
    losses = {"loss_seg": F.cross_entropy(out["out"], target, ignore_index=IGNORE_INDEX)}
    if "aux" in out:
        losses["loss_aux"] = aux_weight * F.cross_entropy(out["aux"], target, ignore_index=IGNORE_INDEX)
    return losses


def upernet_convnext(model_or_name: nn.Module | str, num_classes: int, drop_path_rate: float = 0.0,
                     **kwargs) -> UperNet:
    """UperNet on a ConvNeXt V1/V2 backbone (a registry name, or a classifier whose weights are the start)."""
    classifier = trunk(model_or_name, drop_path_rate)
    model = UperNet(ConvNeXtBackbone(classifier), num_classes, **kwargs)
    model.model_name = getattr(classifier, "model_name", None)
    return model


@torch.no_grad()
def segment(model: nn.Module, images: torch.Tensor, device, autocast=None) -> torch.Tensor:
    """Class logits (N, K, H, W) at the images' size (on the CPU, float32), in eval mode."""
    model.eval()
    with torch.autocast(torch.device(device).type, dtype=autocast, enabled=autocast is not None):
        return model(images.to(device))["out"].float().cpu()
