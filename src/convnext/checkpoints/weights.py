"""Loading any ConvNeXt checkpoint into our models, and our own self-describing weight files.

    model = convnext.load_weights("convnext", "convnext_tiny_22k_224.pth")    # variant and classes inferred
    convnext.save_pretrained(model, "out/")                                    # model.safetensors + model.json
    model = convnext.load_pretrained("out/")                                   # rebuilt from the file alone
"""
import contextlib
import logging
import math
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from ..models.registry import create_model, get_spec, list_models
from .convert import (
    CheckpointError,
    StateDict,
    detect_format,
    from_format,
    rules_for,
    target_key,
)
from .dense import backbone_from_hf, is_hf_backbone
from .files import Checkpoint, open_checkpoint, read_config, write_model_files
from .pretraining import ENCODER_ONLY_FRESH, encoder_state, is_encoder_only
from .preprocessing import CROP_MODES, IMAGENET_MEAN, IMAGENET_STD, INTERPOLATIONS, PIL_RESAMPLE

log = logging.getLogger("convnext")
HEAD_KEYS = ("head.weight", "head.bias")
FAMILIES = {"convnext": ("convnext",), "convnextv2": ("convnextv2",), "isotropic": ("isotropic",),
            "convnext_isotropic": ("isotropic",), "roadmap": ("roadmap",)}


def _their_key(fmt: str, arch: str, our_key: str) -> str:
    return target_key(rules_for(fmt, arch), our_key, ())[0]


def _source_arch(state: StateDict, fmt: str) -> str:
    if fmt == "official" and "stem.weight" in state:
        return "isotropic"
    if (fmt == "torchvision" and "conv1.weight" in state) or "stages.0.0.conv1.weight" in state:
        return "resnet"  # torchvision ResNets and the roadmap's ResNet steps
    return "convnextv2" if any("grn" in k for k in state) else "convnext"


def _shape_hints(state: StateDict, fmt: str) -> tuple[int, int]:
    """(num_classes, in_chans) read off the head and stem tensors (1000 classes for a headless encoder)."""
    arch = _source_arch(state, fmt)
    stem = "stem.weight" if arch == "isotropic" else "downsample_layers.0.0.weight"
    head, stem = _their_key(fmt, arch, "head.weight"), _their_key(fmt, arch, stem)
    if fmt == "official" and is_encoder_only(state):
        return 1000, state[stem].shape[1]
    if head not in state or stem not in state:
        raise CheckpointError(f"{fmt} checkpoint lacks its head or stem ({head}, {stem}): not a whole ConvNeXt")
    return state[head].shape[0], state[stem].shape[1]


def infer_model_name(state: StateDict, fmt: str, family: str | None = None, **overrides) -> str:
    """The registered model whose every tensor name and shape (head aside) matches the checkpoint."""
    if family is not None and family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; use a model name or one of {', '.join(FAMILIES)}")
    # The published families first: a roadmap step only when named, or when nothing published fits
    # (the last step has ConvNeXt-T's very tensors, and a user converting those means ConvNeXt-T).
    families = FAMILIES[family] if family else ("convnext", "convnextv2", "isotropic", "roadmap")
    num_classes, in_chans = _shape_hints(state, fmt)
    overrides = {"num_classes": num_classes, "in_chans": in_chans, **overrides}
    skip = HEAD_KEYS + (ENCODER_ONLY_FRESH if fmt == "official" and is_encoder_only(state) else ())
    for name in [n for group in families for n in list_models() if get_spec(n).family == group]:
        with torch.device("meta"):
            candidate = create_model(name, **overrides)
        try:
            from_format(state, candidate, fmt, skip=skip)
            return name
        except CheckpointError:
            continue
    raise CheckpointError(f"no registered {family or 'ConvNeXt'} model matches this {fmt} checkpoint "
                          f"({len(state)} tensors); pass a model built with the right depths and dims")


def model_name_of(source: str | Path | Checkpoint) -> str:
    """The registered model a weights file or folder (or one already read) holds: the one our files
    name, else inferred."""
    checkpoint = open_checkpoint(source)
    state, config = checkpoint.state, checkpoint.config
    if config.get("format") == "convnext":
        return config["model"]
    with _reading(checkpoint.source):
        if is_hf_backbone(state):
            return backbone_from_hf(state).model_name
        state = encoder_state(state)
        return infer_model_name(state, detect_format(state))


def adapt_input_channels(model: nn.Module, state: StateDict, fmt: str) -> StateDict:
    """The checkpoint with its stem fitted to the model's input channels, as timm adapts a first conv
    (`timm.models._manipulate.adapt_input_conv`): from RGB to 1 channel the three filters are summed
    (a grey image is R = G = B), to N channels they are repeated and scaled by 3/N. Said in one line;
    anything else stays strict (the converter names the mismatch)."""
    want = getattr(model, "in_chans", None)
    arch = _source_arch(state, fmt)
    key = _their_key(fmt, arch, "stem.weight" if arch == "isotropic" else "downsample_layers.0.0.weight")
    stem = state.get(key)
    if want is None or stem is None or stem.ndim != 4 or stem.shape[1] == want or stem.shape[1] != 3:
        return state
    if want == 1:
        adapted, how = stem.sum(dim=1, keepdim=True), "its RGB filters summed"
    else:
        adapted = stem.repeat(1, math.ceil(want / 3), 1, 1)[:, :want] * (3 / want)
        how = f"its RGB filters repeated and scaled by 3/{want}"
    log.warning("input channels: the checkpoint's stem takes 3, the model %d: %s (as timm adapts them)", want, how)
    return {**state, key: adapted.to(stem.dtype)}


def load_state(model: nn.Module, state: StateDict, fmt: str = "auto", reset_head: bool = False) -> list[str]:
    """Load a checkpoint's tensors into `model` strictly; with `reset_head`, keep the model's own head.

    A V2 encoder without final norm and head (FCMAE pre-training's output) loads into a whole model:
    those two, and only those, keep the model's own initialisation. Returns the names of the tensors
    that were reset rather than loaded.
    """
    fmt = detect_format(state) if fmt == "auto" else fmt
    state = adapt_input_channels(model, state, fmt)
    skip = HEAD_KEYS if reset_head else ()
    if fmt == "official" and is_encoder_only(state):
        skip = ENCODER_ONLY_FRESH
    converted = from_format(state, model, fmt, skip=skip)
    full = model.state_dict()
    full.update(converted)
    model.load_state_dict(full, strict=True)
    if skip == ENCODER_ONLY_FRESH:
        log.warning("encoder-only checkpoint (FCMAE pre-training): the final norm and the head start fresh; "
                    "every other tensor loaded")
    elif skip:
        log.warning("new head for %d classes: reset %s; every other tensor loaded", model.num_classes, ", ".join(skip))
    return list(skip)


@contextlib.contextmanager
def _reading(path: str | Path) -> Iterator[None]:
    """Any failure to make a model of the file at `path` becomes a CheckpointError naming the file."""
    try:
        yield
    except CheckpointError as error:
        if str(path) in str(error):
            raise
        raise CheckpointError(f"{path}: {error}") from None
    except (ValueError, TypeError, KeyError, IndexError, RuntimeError) as error:
        raise CheckpointError(f"{path}: not a usable checkpoint ({error})") from None


def load_weights(model_or_name: nn.Module | str | None, path: str | Path | Checkpoint, format: str = "auto",
                 reset_head: bool = False, **overrides) -> nn.Module:
    """Load a checkpoint in any format (official, timm, torchvision, HF, ours) into a model.

    `model_or_name` is a model, a registered name, a family ("convnext", "convnextv2", "isotropic") or
    None; for a name or family the variant, `num_classes` and `in_chans` are read off the tensors, and
    for None our own files rebuild the model they name. `path` may be a `Checkpoint` already read.
    `reset_head=True` (or a `num_classes` override that differs) keeps a freshly initialised head.
    """
    registered = isinstance(model_or_name, str) and model_or_name in list_models()
    if isinstance(model_or_name, str) and not registered and model_or_name not in FAMILIES:
        get_spec(model_or_name)  # an unknown name: the error lists the close ones
    checkpoint = open_checkpoint(path)
    state, config, path = checkpoint.state, checkpoint.config, checkpoint.source
    if model_or_name is None and format == "auto" and not reset_head and config.get("format") == "convnext":
        return _from_our_config(checkpoint, **overrides)  # the model the file names
    if is_hf_backbone(state):
        with _reading(path):
            return _from_hf_backbone(model_or_name, state)
    state = encoder_state(state)  # FCMAE checkpoints: sparse layouts, a whole autoencoder's encoder
    with _reading(path):
        fmt = detect_format(state) if format == "auto" else format
        if isinstance(model_or_name, nn.Module):
            model = model_or_name
        else:
            name = model_or_name if registered else infer_model_name(state, fmt, model_or_name)
            num_classes, in_chans = _shape_hints(state, fmt)
            overrides = {"num_classes": num_classes, "in_chans": in_chans, **overrides}
            model = create_model(name, **overrides)
        head = state.get(_their_key(fmt, _source_arch(state, fmt), "head.weight"))
        head_differs = head is not None and tuple(head.shape) != tuple(model.head.weight.shape)
        reset = load_state(model, state, fmt, reset_head=reset_head or ("num_classes" in overrides and head_differs))
    if not reset:
        model.class_names = config.get("class_names") or _config_labels(config, model.num_classes)
    data_config = _config_data(config)
    if data_config:
        model.data_config = data_config
    return model


def preprocessing_of(source: str | Path | Checkpoint) -> dict:
    """The evaluation settings a weights file or repository carries (ours, timm's pretrained_cfg,
    transformers' image processor), without building a model or reading its tensors (of a path: its
    config alone is read); empty if none."""
    config = source.config if isinstance(source, Checkpoint) else read_config(source)
    if config.get("format") == "convnext":
        return {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()
                if k in ("mean", "std", "input_size", "crop_pct", "interpolation", "crop_mode")}
    return _config_data(config) or {}


def _config_data(config: dict) -> dict | None:
    """The evaluation transform saved by timm (`pretrained_cfg`) or transformers (the image processor)."""
    try:
        if isinstance(config.get("pretrained_cfg"), dict):
            cfg = config["pretrained_cfg"]
            interpolation = cfg.get("interpolation", "bicubic")
            return {"mean": tuple(cfg["mean"]), "std": tuple(cfg["std"]), "input_size": int(cfg["input_size"][-1]),
                    "crop_pct": float(cfg.get("crop_pct") or 0.875),
                    "interpolation": interpolation if interpolation in INTERPOLATIONS else "bicubic",
                    "crop_mode": cfg.get("crop_mode") if cfg.get("crop_mode") in CROP_MODES else "center"}
        if isinstance(config.get("image_processor"), dict):
            # transformers' ConvNextImageProcessor: below 384 the short side goes to size / crop_pct and the
            # centre is cropped; from 384 up the image is resized to size x size, nothing cropped.
            cfg = config["image_processor"]
            size = int(cfg["size"]["shortest_edge"])
            crop_pct, crop_mode = (float(cfg.get("crop_pct") or 0.875), "center") if size < 384 else (1.0, "squash")
            return {"mean": tuple(cfg["image_mean"]), "std": tuple(cfg["image_std"]), "input_size": size,
                    "crop_pct": crop_pct, "crop_mode": crop_mode,
                    "interpolation": PIL_RESAMPLE.get(cfg.get("resample", 3), "bicubic")}
    except (KeyError, TypeError, ValueError, IndexError):
        pass  # a config without a usable transform: the model keeps the ImageNet defaults
    return None


def _from_hf_backbone(model: nn.Module | str | None, state: StateDict) -> nn.Module:
    """transformers' backbone: as our `ConvNeXtBackbone`, or, into a classifier, its stem and stages (the
    final norm and head start fresh, as from an FCMAE encoder; the per-stage norms have no place there)."""
    backbone = backbone_from_hf(state)
    if not isinstance(model, nn.Module):
        return backbone
    trunk = {k: v for k, v in backbone.state_dict().items() if not k.startswith("norm")}
    trunk = adapt_input_channels(model, trunk, "official")
    model.load_state_dict({**model.state_dict(), **from_format(trunk, model, "official", skip=ENCODER_ONLY_FRESH)})
    log.warning("backbone checkpoint (transformers' ConvNextBackbone): stem and stages loaded; the final norm and "
                "the head start fresh; its per-stage norms are not part of a classifier")
    return model


def _config_labels(config: dict, num_classes: int) -> list[str] | None:
    """Class names from a folder's config.json: timm's `label_names` or transformers' `id2label`."""
    if isinstance(config.get("label_names"), list) and len(config["label_names"]) == num_classes:
        return [str(name) for name in config["label_names"]]
    labels = config.get("id2label") or {}
    if not isinstance(labels, dict):
        return None
    names = [labels.get(str(i)) for i in range(num_classes)]
    if all(names) and not all(n.startswith("LABEL_") for n in names):
        return names
    return None


def model_config(model: nn.Module, class_names: list[str] | None = None) -> dict:
    """What `load_pretrained` needs to rebuild `model`: its registered name, overrides and data settings."""
    if not hasattr(model, "model_name"):
        raise ValueError("save_pretrained needs a model built by convnext.create_model (its name is saved)")
    overrides = {k: list(v) if isinstance(v, tuple) else v for k, v in getattr(model, "model_overrides", {}).items()}
    overrides.update(num_classes=model.num_classes, in_chans=model.in_chans)
    overrides.pop("drop_path_rate", None)  # a training setting, not part of the weights
    data = getattr(model, "data_config", {})
    return {
        "format": "convnext", "model": model.model_name, "overrides": overrides,
        "class_names": class_names or getattr(model, "class_names", None),
        "mean": list(data.get("mean", IMAGENET_MEAN)), "std": list(data.get("std", IMAGENET_STD)),
        "input_size": data.get("input_size", 224), "crop_pct": data.get("crop_pct", 0.875),
        "interpolation": data.get("interpolation", "bicubic"), "crop_mode": data.get("crop_mode", "center"),
    }


def save_pretrained(model: nn.Module, directory: str | Path, class_names: list[str] | None = None) -> Path:
    """Write `directory/model.safetensors` (config inside its header) and a readable `model.json`."""
    return write_model_files(model, directory, model_config(model, class_names))


def load_pretrained(path: str | Path | Checkpoint, **overrides) -> nn.Module:
    """Rebuild a model from our weights file or folder (a training run folder works too).

    Files without our config (official, timm, torchvision, HF) are loaded with the variant inferred.
    `num_classes=` different from the file's keeps every tensor but the head, which starts fresh.
    """
    checkpoint = open_checkpoint(path)
    if checkpoint.config.get("format") != "convnext":
        return load_weights(None, checkpoint, **overrides)
    return _from_our_config(checkpoint, **overrides)


def _from_our_config(checkpoint: Checkpoint, **overrides) -> nn.Module:
    state, config = checkpoint.state, checkpoint.config
    with _reading(checkpoint.source):
        model = create_model(config["model"], **{**config["overrides"], **overrides})
        reset = load_state(model, state, "official", reset_head=model.num_classes != config["overrides"]["num_classes"])
        model.class_names = None if reset else config.get("class_names")
        model.data_config = {"mean": tuple(config["mean"]), "std": tuple(config["std"]),
                             "input_size": config["input_size"], "crop_pct": config.get("crop_pct", 0.875),
                             "interpolation": config.get("interpolation", "bicubic"),
                             "crop_mode": config.get("crop_mode", "center")}
    return model
