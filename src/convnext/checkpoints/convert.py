"""Strict conversion between our (official) parameter names and the timm, torchvision and HF formats.

Every source tensor must be consumed and every target tensor filled; otherwise the conversion fails and
names the missing and unexpected keys and the shape mismatches. There is no silent `strict=False`.
"""
from typing import Mapping

import torch
from torch import nn

from .keymaps import (
    CHECKPOINT_FORMATS,
    MARKERS,
    PEER_LAYOUTS,
    RESNET_TORCHVISION_RULES,
    TORCHVISION_RULES,
    Rule,
    hf_rules,
    hf_upernet_rules,
    timm_rules,
)

StateDict = dict[str, torch.Tensor]
LAYOUT_NAMES = {"convnext": "ConvNeXt V1", "convnextv2": "ConvNeXt V2", "isotropic": "isotropic ConvNeXt",
                "resnet": "ResNet", "roadmap": "intermediate roadmap step"}


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model; the message says why."""


def architecture(state: Mapping[str, torch.Tensor]) -> str:
    """Which network a state dict in our names is: "convnext", "convnextv2", "isotropic" or "resnet"."""
    if "stem.weight" in state:
        return "isotropic"
    if "stages.0.0.conv1.weight" in state:  # the roadmap's ResNet-ordered blocks
        return "resnet"
    return "convnextv2" if any(k.endswith("grn.gamma") for k in state) else "convnext"


def detect_format(state: Mapping[str, torch.Tensor]) -> str:
    """Tell official, timm, torchvision and HF state dicts apart by a key only that format has."""
    for fmt, marker in MARKERS.items():
        if any(marker.search(k) for k in state):
            return fmt
    sample = ", ".join(list(state)[:3]) or "no tensors"
    raise CheckpointError(f"not a ConvNeXt checkpoint in any known format ({', '.join(CHECKPOINT_FORMATS)}); first keys: {sample}")


def rules_for(fmt: str, arch: str, conv_mlp: bool = False) -> list[Rule] | None:
    """The rule table from our names to `fmt`, or None for the official format (our own names)."""
    if fmt == "official":
        return None
    if fmt not in CHECKPOINT_FORMATS:
        raise CheckpointError(f"unknown format {fmt!r}; choose from {', '.join(CHECKPOINT_FORMATS)}")
    if arch not in PEER_LAYOUTS[fmt]:
        raise CheckpointError(f"the {fmt} format has no {LAYOUT_NAMES.get(arch, arch)} model "
                              f"(it holds {', '.join(LAYOUT_NAMES[a] for a in PEER_LAYOUTS[fmt])}); "
                              "write --to ours or official instead")
    if arch == "resnet":
        return RESNET_TORCHVISION_RULES  # timm's ResNets use torchvision's names
    if fmt == "timm":
        return timm_rules(conv_mlp)
    if fmt == "torchvision":
        return TORCHVISION_RULES
    if fmt == "hf-upernet":
        return hf_upernet_rules()
    return hf_rules("convnextv2" if arch == "convnextv2" else "convnext")


def target_key(rules: list[Rule] | None, key: str, shape: tuple[int, ...]) -> tuple[str, tuple[int, ...]]:
    """Our key and shape -> the format's key and shape."""
    if rules is None:
        return key, shape
    for rule in rules:
        name = rule.apply(key)
        if name is not None:
            return name, rule.shape(shape) if rule.shape else shape
    raise CheckpointError(f"no rule maps parameter {key!r}: is this a ConvNeXt?")


def to_format(state: Mapping[str, torch.Tensor], fmt: str, conv_mlp: bool = False, arch: str | None = None) -> StateDict:
    """Rename (and reshape) a state dict in our names into `fmt`'s names (`arch`: see `architecture`)."""
    rules = rules_for(fmt, arch or architecture(state), conv_mlp)
    out = {}
    for key, tensor in state.items():
        name, shape = target_key(rules, key, tuple(tensor.shape))
        out[name] = tensor.reshape(shape).contiguous()
    return out


def _listing(keys: list[str], limit: int = 6) -> str:
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def from_format(source: Mapping[str, torch.Tensor], model: nn.Module, fmt: str = "auto",
                skip: tuple[str, ...] = ()) -> StateDict:
    """Map a checkpoint in any format onto `model`'s own keys and shapes, strictly.

    `skip` names our keys (e.g. the head, for fine-tuning) that are neither read nor required; the
    checkpoint's tensors for them are dropped.
    """
    fmt = detect_format(source) if fmt == "auto" else fmt
    ours = model.state_dict()
    conv_mlp = any(k.endswith("mlp.fc1.weight") and v.ndim == 4 for k, v in source.items())
    rules = rules_for(fmt, getattr(model, "layout", None) or architecture(ours), conv_mlp)
    expected = {}  # their key -> (our key, their shape)
    for key, tensor in ours.items():
        name, shape = target_key(rules, key, tuple(tensor.shape))
        expected[name] = (key, shape)
    dropped = {name for name, (key, _) in expected.items() if key in skip}
    source = {k: v for k, v in source.items() if k not in dropped}
    expected = {k: v for k, v in expected.items() if k not in dropped}
    missing = [k for k in expected if k not in source]
    unexpected = [k for k in source if k not in expected]
    mismatched = [
        f"{k}: checkpoint {tuple(source[k].shape)} vs model {shape}"
        for k, (_, shape) in expected.items() if k in source and tuple(source[k].shape) != shape
    ]
    if missing or unexpected or mismatched:
        problems = [f"missing keys: {_listing(missing)}" if missing else "",
                    f"unexpected keys: {_listing(unexpected)}" if unexpected else "",
                    f"shape mismatches: {_listing(mismatched, 3)}" if mismatched else ""]
        name = getattr(model, "model_name", type(model).__name__)
        raise CheckpointError(f"{fmt} checkpoint does not fit {name}: " + "; ".join(p for p in problems if p))
    return {key: source[name].reshape(ours[key].shape) for name, (key, _) in expected.items()}
