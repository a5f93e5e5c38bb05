"""Peer implementations built with random weights, offline: timm, torchvision and transformers."""
import timm
import torchvision
from transformers import (ConvNextConfig, ConvNextForImageClassification, ConvNextV2Config,
                          ConvNextV2ForImageClassification)


def hf_model(depths, dims, num_classes=1000, v2=False):
    config_class, model_class = ((ConvNextV2Config, ConvNextV2ForImageClassification) if v2
                                 else (ConvNextConfig, ConvNextForImageClassification))
    # HF defaults layer_norm_eps to 1e-12; the official models use 1e-6.
    config = config_class(depths=list(depths), hidden_sizes=list(dims), num_labels=num_classes, layer_norm_eps=1e-6)
    return model_class(config).eval()


def timm_model(name, **kwargs):
    return timm.create_model(name, pretrained=False, **kwargs).eval()


def torchvision_model(name="convnext_tiny", **kwargs):
    return getattr(torchvision.models, name)(weights=None, **kwargs).eval()


def logits(model, x):
    out = model(x)
    return out.logits if hasattr(out, "logits") else out
