"""Reading and writing checkpoint files in every format, safely.

Nothing here unpickles arbitrary objects: `.pth`/`.bin` files go through `torch.load(weights_only=True)`,
which refuses any pickle that would need to run code; everything we write is safetensors or a
tensors-only `torch.save`.
"""
import json
import pickle
import re
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
from torch import nn

from .atomic import atomic_dir, atomic_file
from .convert import CheckpointError, StateDict, architecture, to_format

WEIGHTS_FILE = "model.safetensors"  # our weights; also the name HF uses
MODEL_CONFIG_FILE = "model.json"  # our config, a readable copy of the one inside the safetensors header
HF_CONFIG_FILE = "config.json"
METADATA_KEY = "convnext_config"
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
WRAPPER_KEYS = ("model", "state_dict", "model_ema", "module")  # where trainers nest the weights


def _find_weights_file(directory: Path) -> Path:
    for name in (WEIGHTS_FILE, "pytorch_model.bin"):
        if (directory / name).is_file():
            return directory / name
    candidates = sorted(p for p in directory.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file())
    if len(candidates) == 1:
        return candidates[0]
    found = f"several candidates ({', '.join(p.name for p in candidates)})" if candidates else "none"
    raise CheckpointError(f"{directory}: no weights file to load (looked for {WEIGHTS_FILE}, pytorch_model.bin, "
                          f"or one *.safetensors/*.pth/*.pt/*.bin; found {found})")


def _unwrap(obj: Any, path: Path) -> StateDict:
    """The tensors of a loaded object: a bare state dict, or one nested under "model" and the like."""
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        keys = list(obj)
        if all(k.startswith("module.") for k in keys):  # saved from DistributedDataParallel
            return {k[len("module."):]: v for k, v in obj.items()}
        return dict(obj)
    if isinstance(obj, dict):
        for key in WRAPPER_KEYS:
            if key in obj and isinstance(obj[key], dict):
                return _unwrap(obj[key], path)
        raise CheckpointError(f"{path}: no state dict inside (top-level keys: {', '.join(map(str, list(obj)[:8]))})")
    raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a state dict of tensors")


def _read_safetensors(path: Path) -> tuple[StateDict, dict]:
    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as error:  # safetensors raises its own error types for torn and foreign files
        raise CheckpointError(f"{path}: not a readable safetensors file ({str(error).splitlines()[0]})") from None
    config = json.loads(metadata[METADATA_KEY]) if METADATA_KEY in metadata else {}
    return state, config


def _read_pickle(path: Path) -> StateDict:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # weights_only refuses any GLOBAL outside its allow-list: that is a pickle that wants to run code.
        culprit = re.search(r"GLOBAL ([\w.]+)", str(error))
        if culprit:
            raise CheckpointError(
                f"{path}: refused: loading it would run code from the file ({culprit[1]}); only tensor "
                "checkpoints are loaded. Re-save its state_dict(), or use safetensors") from None
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint (not a readable torch.save file)") from None
    except (RuntimeError, EOFError, ValueError, OSError) as error:
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint ({str(error).splitlines()[0]})") from None
    return _unwrap(obj, path)


def read_checkpoint(path: str | Path) -> tuple[StateDict, dict]:
    """Tensors and config from any weights file or folder (ours, official, timm, torchvision, HF, a run).

    The config is ours (from the safetensors header) or an HF `config.json`, else empty.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or directory")
    config: dict = {}
    if path.is_dir():
        if (path / HF_CONFIG_FILE).is_file():
            try:
                config = json.loads((path / HF_CONFIG_FILE).read_text())
            except json.JSONDecodeError:
                config = {}
        path = _find_weights_file(path)
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file")
    if path.suffix == ".safetensors":
        state, own_config = _read_safetensors(path)
        config = own_config or config
    else:
        state = _read_pickle(path)
    if not state:
        raise CheckpointError(f"{path}: holds no tensors")
    return state, config


def timm_uses_conv_mlp(model_name: str | None) -> bool:
    """timm builds its atto..nano variants with 1x1-conv MLPs, so their checkpoints store 4-D weights."""
    return any(f"_{size}" in (model_name or "") for size in ("atto", "femto", "pico", "nano"))


def hf_config(model: nn.Module, class_names: list[str] | None) -> dict:
    """A transformers `ConvNextConfig`/`ConvNextV2Config` as JSON, so `from_pretrained` works offline."""
    v2 = architecture(model.state_dict()) == "convnextv2"
    labels = class_names or [f"LABEL_{i}" for i in range(model.num_classes)]
    config = {
        "architectures": ["ConvNextV2ForImageClassification" if v2 else "ConvNextForImageClassification"],
        "model_type": "convnextv2" if v2 else "convnext",
        "num_channels": model.in_chans, "patch_size": 4, "num_stages": 4,
        "hidden_sizes": list(model.dims), "depths": [len(stage) for stage in model.stages],
        "hidden_act": "gelu", "layer_norm_eps": 1e-6, "drop_path_rate": 0.0, "image_size": 224,
        "id2label": {str(i): label for i, label in enumerate(labels)},
        "label2id": {label: i for i, label in enumerate(labels)},
    }
    if not v2:
        config["layer_scale_init_value"] = 1e-6 if model.stages[0][0].gamma is not None else 0.0
    return config


def write_checkpoint(model: nn.Module, destination: str | Path, fmt: str, class_names: list[str] | None = None) -> Path:
    """Write `model`'s weights in a peer's format, atomically.

    official/torchvision/timm: one file (`.safetensors` by suffix, else a tensors-only `torch.save`; the
    official one nests the weights under "model"). hf: a folder with config.json and model.safetensors.
    """
    destination = Path(destination)
    state = to_format(model.state_dict(), fmt, conv_mlp=fmt == "timm" and timm_uses_conv_mlp(getattr(model, "model_name", None)))
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    if fmt == "hf":
        with atomic_dir(destination) as tmp:
            safetensors.torch.save_file(state, tmp / WEIGHTS_FILE, metadata={"format": "pt"})
            (tmp / HF_CONFIG_FILE).write_text(json.dumps(hf_config(model, class_names), indent=2))
        return destination
    if destination.is_dir():
        raise CheckpointError(f"{destination} is a directory; the {fmt} format is a single file")
    with atomic_file(destination) as tmp:
        if destination.suffix == ".safetensors":
            safetensors.torch.save_file(state, tmp)
        else:
            torch.save({"model": state} if fmt == "official" else state, tmp)
    return destination
