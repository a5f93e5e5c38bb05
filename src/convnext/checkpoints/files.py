"""Reading and writing checkpoint files in every format, safely.

Nothing here unpickles arbitrary objects: `.pth`/`.bin` files go through `torch.load(weights_only=True)`,
which refuses any pickle that would need to run code; everything we write is safetensors or a
tensors-only `torch.save`.
"""
import hashlib
import json
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
from torch import nn

from ..runtime.atomic import atomic_dir, atomic_file
from .hf_hub import is_hub_name, snapshot
from .convert import CheckpointError, StateDict, rules_for, to_format
from .peer_configs import (hf_config, hf_preprocessor_config, layout_of, timm_architecture, timm_config,
                           timm_uses_conv_mlp)

WEIGHTS_FILE = "model.safetensors"  # our weights; also the name HF uses
MODEL_CONFIG_FILE = "model.json"  # our config, a readable copy of the one inside the safetensors header
HF_CONFIG_FILE = "config.json"  # transformers' model config; timm's local-dir folders use the same name
HF_PREPROCESSOR_FILE = "preprocessor_config.json"
METADATA_KEY = "convnext_config"
CHECKSUM_KEY = "convnext_sha256"  # over the config and every tensor: a changed byte is caught on reading
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
        if not all(isinstance(k, str) for k in keys):
            raise CheckpointError(f"{path}: corrupt checkpoint (a tensor name is not a string)")
        if all(k.startswith("module.") for k in keys):  # saved from DistributedDataParallel
            return {k[len("module."):]: v for k, v in obj.items()}
        return dict(obj)
    if isinstance(obj, dict):
        for key in WRAPPER_KEYS:
            if key in obj and isinstance(obj[key], dict):
                return _unwrap(obj[key], path)
        raise CheckpointError(f"{path}: no state dict inside (top-level keys: {', '.join(map(str, list(obj)[:8]))})")
    raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a state dict of tensors")


def checksum(state: StateDict, config_json: str) -> str:
    """SHA-256 of the config text and every tensor's name, dtype, shape and bytes, in key order."""
    digest = hashlib.sha256(config_json.encode())
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def write_ours(path: Path, state: StateDict, config: dict) -> None:
    """Our weights file: safetensors whose header holds the config and a checksum of everything."""
    config_json = json.dumps(config)
    metadata = {METADATA_KEY: config_json, CHECKSUM_KEY: checksum(state, config_json)}
    with atomic_file(path) as tmp:
        safetensors.torch.save_file(state, tmp, metadata=metadata)


def write_model_files(model: nn.Module, directory: str | Path, config: dict) -> Path:
    """Our on-disk model: `directory/model.safetensors` (config inside its header) and a readable
    `model.json`, each written atomically."""
    directory = Path(directory)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    write_ours(directory / WEIGHTS_FILE, state, config)
    with atomic_file(directory / MODEL_CONFIG_FILE) as tmp:
        tmp.write_text(json.dumps(config, indent=2))
    return directory / WEIGHTS_FILE


def _read_safetensors(path: Path) -> tuple[StateDict, dict]:
    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as error:  # safetensors raises its own error types for torn and foreign files
        raise CheckpointError(f"{path}: not a readable safetensors file ({str(error).splitlines()[0]})") from None
    if METADATA_KEY not in metadata:
        return state, {}
    damaged = f"{path}: damaged file: its tensors or config changed since it was written"
    if CHECKSUM_KEY in metadata and checksum(state, metadata[METADATA_KEY]) != metadata[CHECKSUM_KEY]:
        raise CheckpointError(damaged + " (checksum mismatch)")
    try:
        config = json.loads(metadata[METADATA_KEY])
    except ValueError:
        raise CheckpointError(damaged + " (unreadable config)") from None
    if not isinstance(config, dict):
        raise CheckpointError(damaged + " (unreadable config)")
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
    except Exception as error:  # a damaged pickle fails in many ways (KeyError, EOFError, RuntimeError, ...)
        reason = (str(error).splitlines() or [type(error).__name__])[0]
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint ({reason})") from None
    return _unwrap(obj, path)


def _located(path: str | Path) -> tuple[Path, dict]:
    """(the weights file, the configs beside it) for a file, a folder or a Hub name."""
    path = snapshot(path) if is_hub_name(path) else Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or directory")
    config: dict = {}
    if path.is_dir():
        if (path / HF_CONFIG_FILE).is_file():
            try:
                config = json.loads((path / HF_CONFIG_FILE).read_text())
            except (ValueError, UnicodeDecodeError):
                config = {}
            config = config if isinstance(config, dict) else {}
        if (path / HF_PREPROCESSOR_FILE).is_file():  # transformers' image processor: the eval transform
            try:
                config["image_processor"] = json.loads((path / HF_PREPROCESSOR_FILE).read_text())
            except (ValueError, UnicodeDecodeError):
                pass
        path = _find_weights_file(path)
    return path, config


def read_config(path: str | Path) -> dict:
    """The config a weights file or folder carries (ours, timm's, transformers'), without reading its
    tensors: what it says about preprocessing is wanted before the model is built. The checksum over
    config and tensors is checked when `read_checkpoint` reads them."""
    path, config = _located(path)
    if path.suffix != ".safetensors":
        return config
    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            own = json.loads((f.metadata() or {}).get(METADATA_KEY, "{}"))
    except Exception:  # noqa: BLE001 -- an unreadable header: read_checkpoint will say what is wrong
        return config
    return own if isinstance(own, dict) and own else config


@dataclass(frozen=True)
class Checkpoint:
    """A weights file or folder read once: its tensors and its config, passed on to whatever needs them
    (the model name, the preprocessing, the weights), so that a 350 MB file is parsed a single time."""
    source: str  # what the user named: a path or a Hub name, for messages
    state: StateDict
    config: dict


def open_checkpoint(source: "str | Path | Checkpoint") -> Checkpoint:
    """`source` read (or, already read, as it is): see `read_checkpoint`."""
    if isinstance(source, Checkpoint):
        return source
    path, config = _located(source)
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file")
    if path.suffix == ".safetensors":
        state, own_config = _read_safetensors(path)
        config = own_config or config
    else:
        state = _read_pickle(path)
    if not state:
        raise CheckpointError(f"{path}: holds no tensors")
    return Checkpoint(str(source), state, config)


def read_checkpoint(path: str | Path) -> tuple[StateDict, dict]:
    """Tensors and config from any weights file or folder (ours, official, timm, torchvision, HF, a run).

    The config is ours (from the safetensors header) or an HF `config.json`, else empty. `path` may be
    a Hub name, `hf-hub:ORG/REPO[@REVISION]`, read through the Hub cache.
    """
    checkpoint = open_checkpoint(path)
    return checkpoint.state, checkpoint.config


def _peer_state(model: nn.Module, fmt: str) -> StateDict:
    layout = layout_of(model)
    if layout == "roadmap" and fmt != "official":
        raise CheckpointError(f"the {fmt} format has no {getattr(model, 'model_name', 'roadmap step')}: an "
                              "intermediate roadmap step exists only here; write --to ours or official instead")
    rules_for(fmt, layout)  # refuses a network the format has no model for, before any work
    conv_mlp = fmt == "timm" and layout != "resnet" and timm_uses_conv_mlp(timm_architecture(model)[0])
    state = to_format(model.state_dict(), fmt, conv_mlp=conv_mlp, arch=layout)
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


# Model options beyond the paper's (models/convnext.py): the peers' builders make the paper's stem and
# LayerNorm, so their files cannot say that a model had another; ours (model.json) can.
PAPER_OPTIONS = {"stem": "patch", "patch_size": 4, "norm": "layer"}


def _check_peer_holds(model: nn.Module, fmt: str) -> None:
    beyond = {k: v for k, v in getattr(model, "model_overrides", {}).items()
              if k in PAPER_OPTIONS and v != PAPER_OPTIONS[k]}
    if beyond:
        raise CheckpointError(f"the {fmt} format holds the paper's patchify stem and LayerNorm; this model has "
                              f"{', '.join(f'{k}={v}' for k, v in beyond.items())}: keep it in our format (--to ours)")


def write_checkpoint(model: nn.Module, destination: str | Path, fmt: str, class_names: list[str] | None = None) -> Path:
    """Write `model`'s weights in a peer's format, atomically, as the peer's own loaders expect them.

    official/torchvision, and timm to a path with a weights suffix: one file (`.safetensors` by suffix,
    else a tensors-only `torch.save`; the official one nests the weights under "model").
    hf: a folder for `from_pretrained` and `pipeline` (config.json, preprocessor_config.json,
    model.safetensors). timm to a path without a weights suffix: a folder for
    `timm.create_model("local-dir:DIR", pretrained=True)` (config.json with its pretrained_cfg).
    """
    destination = Path(destination)
    _check_peer_holds(model, fmt)
    state = _peer_state(model, fmt)
    folder_configs = {}
    if fmt == "hf":
        folder_configs = {HF_CONFIG_FILE: hf_config(model, class_names), HF_PREPROCESSOR_FILE: hf_preprocessor_config(model)}
    elif fmt == "timm" and destination.suffix not in WEIGHT_SUFFIXES:
        folder_configs = {HF_CONFIG_FILE: timm_config(model, class_names)}
    if folder_configs:
        with atomic_dir(destination) as tmp:
            safetensors.torch.save_file(state, tmp / WEIGHTS_FILE, metadata={"format": "pt"})
            for name, config in folder_configs.items():
                (tmp / name).write_text(json.dumps(config, indent=2))
        return destination
    if destination.is_dir():
        raise CheckpointError(f"{destination} is a directory; the {fmt} format is a single file here")
    with atomic_file(destination) as tmp:
        if destination.suffix == ".safetensors":
            safetensors.torch.save_file(state, tmp)
        else:
            torch.save({"model": state} if fmt == "official" else state, tmp)
    return destination
