"""Published weights: the official checkpoints' addresses, a download cache, and loading them.

    model = convnext.create_model("convnext_tiny", pretrained=True)              # ImageNet-1K
    model = convnext.create_model("convnext_base", pretrained="in22k")           # 21841 classes
    model = convnext.create_model("convnext_tiny", pretrained=True, num_classes=10)  # new head

The files are the official ones (facebookresearch/ConvNeXt and ConvNeXt-V2 READMEs); they go through
the same strict converter as any other checkpoint. Set CONVNEXT_CACHE to choose the cache folder.
"""
import os
import urllib.error
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..models import registry
from ..runtime.atomic import atomic_file
from .convert import CheckpointError
from .files import read_checkpoint
from .preprocessing import imagenet_class_names
from .weights import load_state

V1 = "https://dl.fbaipublicfiles.com/convnext/"
V2 = "https://dl.fbaipublicfiles.com/convnext/convnextv2/"


@dataclass(frozen=True)
class Weights:
    url: str
    num_classes: int = 1000
    input_size: int = 224
    sha256: str | None = None  # the official files publish none; checked when set


def _v1(size: str) -> dict[str, Weights]:
    tags = {}
    if size in ("tiny", "small", "base", "large"):
        tags["in1k"] = Weights(f"{V1}convnext_{size}_1k_224_ema.pth")
    if size in ("base", "large"):
        tags["in1k_384"] = Weights(f"{V1}convnext_{size}_1k_384.pth", input_size=384)
    ema = "_ema" if size == "xlarge" else ""
    tags["in22k"] = Weights(f"{V1}convnext_{size}_22k_224.pth", num_classes=21841)
    tags["in22k_ft_in1k"] = Weights(f"{V1}convnext_{size}_22k_1k_224{ema}.pth")
    tags["in22k_ft_in1k_384"] = Weights(f"{V1}convnext_{size}_22k_1k_384{ema}.pth", input_size=384)
    return tags


def _v2(size: str) -> dict[str, Weights]:
    tags = {"in1k": Weights(f"{V2}im1k/convnextv2_{size}_1k_224_ema.pt")}
    if size in ("nano", "tiny", "base", "large"):
        tags["in22k_ft_in1k"] = Weights(f"{V2}im22k/convnextv2_{size}_22k_224_ema.pt")
    if size in ("nano", "tiny", "base", "large", "huge"):
        tags["in22k_ft_in1k_384"] = Weights(f"{V2}im22k/convnextv2_{size}_22k_384_ema.pt", input_size=384)
    if size == "huge":
        tags["in22k_ft_in1k_512"] = Weights(f"{V2}im22k/convnextv2_huge_22k_512_ema.pt", input_size=512)
    return tags


PRETRAINED: dict[str, dict[str, Weights]] = {
    **{f"convnext_{s}": _v1(s) for s in ("tiny", "small", "base", "large", "xlarge")},
    **{f"convnextv2_{s}": _v2(s) for s in ("atto", "femto", "pico", "nano", "tiny", "base", "large", "huge")},
    **{f"convnext_isotropic_{s}": {"in1k": Weights(f"{V1}convnext_iso_{s}_1k_224_ema.pth")}
       for s in ("small", "base", "large")},
}


def cache_dir() -> Path:
    return Path(os.environ.get("CONVNEXT_CACHE") or Path(torch.hub.get_dir()) / "convnext")


def pretrained_weights(name: str, tag: str | None = None) -> Weights:
    tags = PRETRAINED.get(name)
    if not tags:
        raise ValueError(f"no published weights for {name!r}; models with weights: {', '.join(PRETRAINED)}")
    tag = tag or next(iter(tags))  # the first tag is the default: ImageNet-1K where there is one
    if tag not in tags:
        raise ValueError(f"{name} has no {tag!r} weights; choose from {', '.join(tags)}")
    return tags[tag]


def download(weights: Weights, progress: bool = True) -> Path:
    """The cached file for `weights`, downloaded on first use (atomically, hash-checked when known)."""
    destination = cache_dir() / weights.url.rstrip("/").rsplit("/", 1)[-1]
    if destination.is_file():
        return destination
    try:
        with atomic_file(destination) as tmp:
            torch.hub.download_url_to_file(weights.url, str(tmp), hash_prefix=weights.sha256, progress=progress)
    except (urllib.error.URLError, OSError, TimeoutError) as error:
        reason = getattr(error, "reason", error)
        raise CheckpointError(f"cannot download {weights.url} ({reason}); download it by hand and save it as "
                              f"{destination}") from None
    except RuntimeError as error:  # torch.hub's hash mismatch
        raise CheckpointError(f"{weights.url}: {error}") from None
    return destination


def create_model(name: str, pretrained: bool | str = False, **overrides) -> nn.Module:
    """Build a registered model, with the published weights when `pretrained` (a tag string picks a set).

    This is `convnext.create_model`: the models layer builds, this layer adds the weights.
    """
    model = registry.create_model(name, **overrides)
    if pretrained:
        load_pretrained_weights(model, name, tag=None if pretrained is True else pretrained)
    return model


def load_pretrained_weights(model: nn.Module, name: str, tag: str | None = None) -> None:
    """Download (or find in the cache) and load the published weights for `name` into `model`."""
    weights = pretrained_weights(name, tag)
    state, _ = read_checkpoint(download(weights))
    reset = load_state(model, state, "auto", reset_head=model.num_classes != weights.num_classes)
    model.class_names = imagenet_class_names() if weights.num_classes == 1000 and not reset else None
    model.data_config = {"input_size": weights.input_size}
