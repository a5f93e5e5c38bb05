"""The same weights in the peers' implementations (timm, torchvision, transformers), for benchmarks.

Each builder returns None when the peer is not installed or has no such model.
"""
from typing import Callable

import torch
from torch import nn

from ..checkpoints.convert import architecture, to_format
from ..checkpoints.peer_configs import hf_config, timm_uses_conv_mlp


class LogitsOnly(nn.Module):
    """transformers models return an output object; benchmarks want the logits tensor."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=x).logits


def timm_peer(model: nn.Module) -> nn.Module | None:
    try:
        import timm
    except ImportError:
        return None
    name = getattr(model, "model_name", "")
    if architecture(model.state_dict()) not in ("convnext", "convnextv2") or not timm.list_models(name):
        return None
    peer = timm.create_model(name, pretrained=False, num_classes=model.num_classes, in_chans=model.in_chans)
    peer.load_state_dict(to_format(model.state_dict(), "timm", conv_mlp=timm_uses_conv_mlp(name)))
    return peer


def torchvision_peer(model: nn.Module) -> nn.Module | None:
    import torchvision

    name = getattr(model, "model_name", "")
    builders = {f"convnext_{s}": f"convnext_{s}" for s in ("tiny", "small", "base", "large")}
    builders["roadmap_r50_00_resnet50"] = builders["roadmap_r50_01_enhanced_recipe"] = "resnet50"
    if name not in builders or model.in_chans != 3:
        return None
    peer = getattr(torchvision.models, builders[name])(weights=None, num_classes=model.num_classes)
    peer.load_state_dict(to_format(model.state_dict(), "torchvision"))
    return peer


def transformers_peer(model: nn.Module) -> nn.Module | None:
    try:
        import transformers
    except ImportError:
        return None
    arch = architecture(model.state_dict())
    if arch not in ("convnext", "convnextv2"):
        return None
    config = {k: v for k, v in hf_config(model, None).items() if k not in ("architectures", "model_type")}
    if arch == "convnextv2":
        peer = transformers.ConvNextV2ForImageClassification(transformers.ConvNextV2Config(**config))
    else:
        peer = transformers.ConvNextForImageClassification(transformers.ConvNextConfig(**config))
    peer.load_state_dict(to_format(model.state_dict(), "hf"))
    return LogitsOnly(peer)


PEERS: dict[str, Callable[[nn.Module], nn.Module | None]] = {
    "timm": timm_peer, "torchvision": torchvision_peer, "transformers": transformers_peer,
}
