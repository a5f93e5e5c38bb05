"""Published weights: the official checkpoints' addresses, a download cache, and loading them.

    model = convnext.create_model("convnext_tiny", pretrained=True)              # ImageNet-1K
    model = convnext.create_model("convnext_base", pretrained="in22k")           # 21841 classes
    model = convnext.create_model("convnext_tiny", pretrained=True, num_classes=10)  # new head
    model = convnext.create_model("convnext_atto", pretrained="d2_in1k")         # timm's tag, from the Hub
    model = convnext.create_model("hf-hub:timm/convnext_atto.d2_in1k")           # any Hub repository

The tags in `PRETRAINED` are the official files (facebookresearch/ConvNeXt and ConvNeXt-V2 READMEs);
any other tag is timm's, fetched from the Hugging Face Hub as `timm/<name>.<tag>` (`hf_hub.py`). All go
through the same strict converter as any other checkpoint. Set CONVNEXT_CACHE to choose the cache
folder of the official files; the Hub's is huggingface_hub's (HF_HOME).
"""
import json
import urllib.error
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch
from torch import nn

from ..models import registry
from ..runtime.atomic import atomic_file
from ..runtime.cache import cache_dir
from .convert import CheckpointError
from .files import read_checkpoint
from .preprocessing import imagenet_class_names
from .hf_hub import PREFIX, is_hub_name, split
from .weights import load_pretrained, load_state, load_weights

V1 = "https://dl.fbaipublicfiles.com/convnext/"
V2 = "https://dl.fbaipublicfiles.com/convnext/convnextv2/"


@dataclass(frozen=True)
class Weights:
    url: str
    num_classes: int = 1000
    input_size: int = 224
    sha256: str | None = None  # the official files publish none; checked when set
    top1: float | None = None  # ImageNet-1K top-1 (%) as the paper or the official README gives it


# ImageNet-1K top-1 of the official weights: the V1 paper's Table 1 (in1k at 224) and the official
# README (ImageNet-22K fine-tuned at 224 and 384), the V2 paper's Table 8 (FCMAE + IN-1K fine-tuning).
V1_TOP1 = {"in1k": {"tiny": 82.1, "small": 83.1, "base": 83.8, "large": 84.3},
           "in22k_ft_in1k": {"tiny": 82.9, "small": 84.6, "base": 85.8, "large": 86.6, "xlarge": 87.0},
           "in22k_ft_in1k_384": {"tiny": 84.1, "small": 85.8, "base": 86.8, "large": 87.5, "xlarge": 87.8}}
V2_TOP1 = {"atto": 76.7, "femto": 78.5, "pico": 80.3, "nano": 81.9, "tiny": 83.0, "base": 84.9, "large": 85.8,
           "huge": 86.3}
ISOTROPIC_TOP1 = {"small": 78.7, "base": 82.0, "large": 82.6}


def _v1(size: str) -> dict[str, Weights]:
    tags = {}
    top1 = lambda tag: V1_TOP1.get(tag, {}).get(size)  # noqa: E731
    if size in ("tiny", "small", "base", "large"):
        tags["in1k"] = Weights(f"{V1}convnext_{size}_1k_224_ema.pth", top1=top1("in1k"))
    if size in ("base", "large"):
        tags["in1k_384"] = Weights(f"{V1}convnext_{size}_1k_384.pth", input_size=384)
    ema = "_ema" if size == "xlarge" else ""
    tags["in22k"] = Weights(f"{V1}convnext_{size}_22k_224.pth", num_classes=21841)
    tags["in22k_ft_in1k"] = Weights(f"{V1}convnext_{size}_22k_1k_224{ema}.pth", top1=top1("in22k_ft_in1k"))
    tags["in22k_ft_in1k_384"] = Weights(f"{V1}convnext_{size}_22k_1k_384{ema}.pth", input_size=384,
                                        top1=top1("in22k_ft_in1k_384"))
    return tags


def _v2(size: str) -> dict[str, Weights]:
    tags = {"in1k": Weights(f"{V2}im1k/convnextv2_{size}_1k_224_ema.pt", top1=V2_TOP1[size])}
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
    **{f"convnext_isotropic_{s}": {"in1k": Weights(f"{V1}convnext_iso_{s}_1k_224_ema.pth", top1=ISOTROPIC_TOP1[s])}
       for s in ("small", "base", "large")},
}


@dataclass(frozen=True)
class Known:
    """One set of weights `pretrained=` can name: an official file or a Hub repository."""
    tag: str  # what `pretrained=` takes
    source: str  # the official address, or the Hub name
    num_classes: int
    input_size: int
    top1: float | None


def known_weights(name: str) -> list[Known]:
    """Every set of weights known for model `name`: the official files, then timm's on the Hub
    (`hub_names.json`, written by scripts/hub_names.py from timm's pretrained configs)."""
    official = [Known(tag, w.url, w.num_classes, w.input_size, w.top1) for tag, w in PRETRAINED.get(name, {}).items()]
    on_hub = [Known(entry["tag"], entry["hub"], entry["num_classes"], entry["input_size"], None)
              for entry in _hub_names().get(name, [])]
    return official + on_hub


@cache
def _hub_names() -> dict[str, list[dict]]:
    return json.loads((Path(__file__).parent / "hub_names.json").read_text())["models"]


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


def create_model(name: str, pretrained: bool | str = False, revision: str | None = None, **overrides) -> nn.Module:
    """Build a registered model, with published weights when `pretrained` (a tag string picks a set: an
    official one, timm's, or a Hub name), or the model a Hub repository holds when `name` is
    `hf-hub:ORG/REPO` (its class count and names from the repository's config; `revision` pins a commit,
    branch or tag).

    This is `convnext.create_model`: the models layer builds, this layer adds the weights.
    """
    if is_hub_name(name):
        return load_pretrained(with_revision(name, revision), **overrides)
    model = registry.create_model(name, **overrides)
    if pretrained:
        load_pretrained_weights(model, name, None if pretrained is True else pretrained, revision)
    return model


def with_revision(reference: str, revision: str | None) -> str:
    return reference if revision is None else f"{PREFIX}{split(reference)[0]}@{revision}"


def hub_name(name: str, tag: str) -> str | None:
    """The Hub repository of a tag that is not an official file: itself if it is a Hub name, else timm's
    `timm/<name>.<tag>`."""
    return tag if is_hub_name(tag) else f"{PREFIX}timm/{name}.{tag}"


def load_pretrained_weights(model: nn.Module, name: str, tag: str | None = None, revision: str | None = None) -> None:
    """Download (or find in the cache) and load the published weights for `name` into `model`."""
    if tag is not None and tag not in PRETRAINED.get(name, {}):
        reference = with_revision(hub_name(name, tag), revision)
        try:
            load_weights(model, reference, num_classes=model.num_classes)
        except CheckpointError as error:
            if is_hub_name(tag):
                raise
            official = ", ".join(PRETRAINED.get(name, {})) or "none"
            raise CheckpointError(f"{name}: {tag!r} is no official tag (those: {official}) and {error}") from None
        return
    weights = pretrained_weights(name, tag)
    state, _ = read_checkpoint(download(weights))
    reset = load_state(model, state, "auto", reset_head=model.num_classes != weights.num_classes)
    model.class_names = imagenet_class_names() if weights.num_classes == 1000 and not reset else None
    model.data_config = {"input_size": weights.input_size}
