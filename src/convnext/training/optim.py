"""AdamW parameter groups (weight decay and layer-wise lr decay) and the warm-up + cosine schedule."""
import math
import re
from typing import Callable

import torch
from torch import nn

NUM_LAYERS = 12  # ConvNeXt's layer-decay depth: stem, stages, every 3 blocks of stage 3 (paper §5)


def decays(name: str, param: torch.Tensor) -> bool:
    """No weight decay on biases, norm weights, layer scale gamma or GRN gamma/beta."""
    return param.ndim > 1 and not name.endswith(".gamma") and ".grn." not in name


def layer_id(name: str, depth: int = NUM_LAYERS) -> int:
    """Layer index for layer-wise lr decay: 0 for the stem ... depth for the last stage, depth + 1 for the head."""
    if m := re.match(r"downsample_layers\.(\d)", name):
        return {0: 0, 1: 2, 2: 3}.get(int(m[1]), depth)  # each downsample joins the stage it feeds
    if m := re.match(r"stages\.(\d)\.(\d+)", name):
        stage, block = int(m[1]), int(m[2])
        return {0: 1, 1: 2}.get(stage, 3 + block // 3 if stage == 2 else depth)
    if name.startswith("stem"):
        return 0
    if m := re.match(r"blocks\.(\d+)", name):  # isotropic: one layer per block
        return int(m[1]) + 1
    return depth + 1  # final norm and head


def param_groups(model: nn.Module, weight_decay: float, layer_decay: float | None = None,
                 layer_of: Callable[[str], int] | None = None, depth: int | None = None) -> list[dict]:
    """Groups keyed by (decays, layer); each carries `lr_scale` = layer_decay ** (depth + 1 - layer) for the
    scheduler to apply. `layer_of(name)` (default: the classifier's `layer_id`) and `depth` (default:
    the isotropic block count or NUM_LAYERS) number the layers."""
    depth = depth or len(getattr(model, "blocks", [])) or NUM_LAYERS
    layer_of = layer_of or (lambda name: layer_id(name, depth))
    groups: dict[tuple[bool, int], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        layer = layer_of(name) if layer_decay else 0
        scale = layer_decay ** (depth + 1 - layer) if layer_decay else 1.0
        key = (decays(name, param), layer)
        group = groups.setdefault(key, {"params": [], "weight_decay": weight_decay if key[0] else 0.0, "lr_scale": scale})
        group["params"].append(param)
    return list(groups.values())


def dense_layer_id(name: str, num_layers: int, mode: str = "layer_wise") -> int:
    """Layer index of a detection/segmentation model's parameter, by the official downstream rules
    (`layer_decay_optimizer_constructor.py`): the backbone's stem and stages as in classification
    ("layer_wise") or one id per stage with every downsampling layer at 0 ("stage_wise"); the neck,
    the heads and the per-stage norms `norm0..3` at num_layers + 1, which is lr scale 1."""
    match = re.match(r"backbone\.(?:body\.)?((downsample_layers|stages)\..*)", name)
    if match is None:
        return num_layers + 1
    inner = match[1]
    if mode == "stage_wise":
        return 0 if inner.startswith("downsample_layers") else int(inner.split(".")[1]) + 1
    return layer_id(inner, num_layers)


def dense_param_groups(model: nn.Module, weight_decay: float, layer_decay: float | None, num_layers: int,
                       mode: str = "layer_wise") -> list[dict]:
    """AdamW groups for a detector or segmenter: lr scale layer_decay ** (num_layers + 1 - id)."""
    return param_groups(model, weight_decay, layer_decay, lambda name: dense_layer_id(name, num_layers, mode), num_layers)


OPTIMIZERS = ("adamw", "sgd")


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, layer_decay: float | None = None,
                    beta2: float = 0.999, groups: list[dict] | None = None, kind: str = "adamw") -> torch.optim.Optimizer:
    """AdamW (or SGD with momentum 0.9, the classic ResNet recipe's) over `groups` (default: the
    classification groups), each at lr x its lr_scale."""
    groups = groups if groups is not None else param_groups(model, weight_decay, layer_decay)
    for group in groups:
        group["lr"] = lr * group["lr_scale"]
    # The fused kernel updates every tensor in one pass: on a CPU 3.5x faster than the default loop for
    # ConvNeXt-atto's 100-odd tensors (2.8 against 9.6 ms a step, 2-core AMD EPYC), same update rule.
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in model.parameters())
    if kind == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9, fused=fused or None)
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, beta2), fused=fused or None)


# After warm-up, the lr factor as a function of progress in [0, 1] and the final ratio.
SCHEDULES = {
    "cosine": lambda progress, floor: floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)),
    # mmdet's "3x": x0.1 at epochs 27 and 33 of 36 (the official detection schedule)
    "step": lambda progress, floor: 1.0 if progress < 27 / 36 else 0.1 if progress < 33 / 36 else 0.01,
    # mmseg's poly, power 1, to the floor (the official segmentation schedule)
    "poly": lambda progress, floor: floor + (1 - floor) * (1 - progress),
}


def lr_schedule(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int, min_lr_ratio: float,
                shape: str = "cosine") -> torch.optim.lr_scheduler.LambdaLR:
    """Per-iteration schedule: linear warm-up to the peak, then `shape` (cosine, step or poly)."""
    after = SCHEDULES[shape]

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return after(min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps)), min_lr_ratio)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

