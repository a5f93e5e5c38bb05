"""Segmentation and detection models in files: transformers' UperNet-ConvNeXt checkpoints read
strictly, and our own files, which name the builder, the backbone and the head settings.

    model = load_dense("upernet-convnext-tiny/model.safetensors")   # transformers' names, or ours
    save_dense(model, "out/", class_names=[...])
"""
from pathlib import Path

import torch
from torch import nn

from ..models.backbone import ConvNeXtBackbone
from ..models.detection import fasterrcnn_convnext, maskrcnn_convnext
from ..models.registry import create_model
from ..models.upernet import UperNet, upernet_convnext
from ..models.variants import SIZES
from .convert import CheckpointError, StateDict, detect_format, from_format, to_format
from .files import Checkpoint, open_checkpoint, write_model_files

DENSE_FORMAT = "convnext-dense"
BUILDERS = {"upernet": upernet_convnext, "maskrcnn": maskrcnn_convnext, "fasterrcnn": fasterrcnn_convnext}
TASKS = {"upernet": "segmentation", "maskrcnn": "detection", "fasterrcnn": "detection"}


def is_upernet(state: StateDict) -> bool:
    return any(k.startswith("decode_head.psp_modules.") for k in state)


def _backbone_name(state: StateDict, fmt: str) -> tuple[str, int]:
    """The registered classifier whose stages these are, and its input channels."""
    block = "backbone.encoder.stages.{}.layers.{}.dwconv.weight" if fmt == "hf-upernet" else "backbone.stages.{}.{}.dwconv.weight"
    depths, dims = [], []
    for stage in range(4):
        count = 0
        while block.format(stage, count) in state:
            count += 1
        if count == 0:
            raise CheckpointError(f"no blocks found for backbone stage {stage}")
        depths.append(count)
        dims.append(state[block.format(stage, 0)].shape[0])
    family = "convnextv2" if any(".grn." in k for k in state) else "convnext"
    stem = state["backbone.embeddings.patch_embeddings.weight" if fmt == "hf-upernet" else "backbone.downsample_layers.0.0.weight"]
    for size, (d, c) in SIZES.items():
        if tuple(d) == tuple(depths) and tuple(c) == tuple(dims):
            return f"{family}_{size}", stem.shape[1]
    raise CheckpointError(f"no ConvNeXt size has depths {depths} and widths {dims}")


def is_hf_backbone(state: StateDict) -> bool:
    """transformers' ConvNextBackbone / ConvNextV2Backbone tensors (AutoBackbone's): stages and per-stage norms."""
    return any(k.startswith("embeddings.patch_embeddings.") for k in state)


def backbone_from_hf(state: StateDict) -> ConvNeXtBackbone:
    """transformers' ConvNeXt (V2) backbone as our `ConvNeXtBackbone`, strictly: its tensors are the
    backbone half of the hf-upernet format, without the `backbone.` prefix."""
    prefixed = {f"backbone.{k}": v for k, v in state.items()}
    name, in_chans = _backbone_name(prefixed, "hf-upernet")
    stages = sorted({int(k.split(".")[1].removeprefix("stage")) - 1 for k in state if k.startswith("hidden_states_norms.")})
    holder = nn.Module()
    holder.backbone = ConvNeXtBackbone(create_model(name, in_chans=in_chans), out_indices=stages or (0, 1, 2, 3))
    holder.load_state_dict(from_format(prefixed, holder, "hf-upernet"), strict=True)
    holder.backbone.model_name = name
    return holder.backbone


def upernet_from_state(state: StateDict, fmt: str = "auto") -> UperNet:
    """An UperNet built to fit the tensors (backbone size, classes, head widths), loaded strictly."""
    fmt = detect_format(state) if fmt == "auto" else fmt
    name, in_chans = _backbone_name(state, fmt)
    classifier = state["decode_head.classifier.weight"]
    aux = state.get("auxiliary_head.classifier.weight")
    psp = sum(1 for k in state if k.startswith("decode_head.psp_modules.") and k.endswith(".conv.weight"))
    if psp != 4:
        raise CheckpointError(f"expected 4 pyramid-pooling branches (scales 1, 2, 3, 6), found {psp}")
    model = upernet_convnext(create_model(name, in_chans=in_chans), classifier.shape[0], channels=classifier.shape[1],
                             aux_index=None if aux is None else 2, aux_channels=256 if aux is None else aux.shape[1])
    model.load_state_dict(from_format(state, model, fmt))
    return model


def builder_of(model: nn.Module) -> str:
    if isinstance(model, UperNet):
        return "upernet"
    return "maskrcnn" if getattr(model.roi_heads, "mask_head", None) is not None else "fasterrcnn"


def save_dense(model: nn.Module, directory: str | Path, class_names: list[str] | None = None) -> Path:
    """Our file: safetensors with the config in its header, and a readable model.json."""
    builder = builder_of(model)
    config = {"format": DENSE_FORMAT, "task": TASKS[builder], "builder": builder, "backbone": model.model_name,
              "in_chans": model.backbone.in_chans if isinstance(model, UperNet) else model.backbone.body.in_chans,
              "num_classes": model.num_classes,
              "head": getattr(model, "config", {}), "class_names": class_names or getattr(model, "class_names", None)}
    return write_model_files(model, directory, config)


def load_dense(path: str | Path | Checkpoint, **builder_options) -> nn.Module:
    """Our dense file (any builder), or a transformers UperNet-ConvNeXt checkpoint (or either, read)."""
    checkpoint = open_checkpoint(path)
    state, config, path = checkpoint.state, checkpoint.config, checkpoint.source
    if config.get("format") == DENSE_FORMAT:
        backbone = create_model(config["backbone"], in_chans=config["in_chans"])
        model = BUILDERS[config["builder"]](backbone, config["num_classes"], **config["head"], **builder_options)
        model.load_state_dict(from_format(state, model, "official"))
    elif is_upernet(state):
        model = upernet_from_state(state)
    else:
        raise CheckpointError(f"{path}: not a segmentation or detection checkpoint (no decode head, no config naming one)")
    model.class_names = config.get("class_names") or config.get("id2label") and [
        config["id2label"][str(i)] for i in range(len(config["id2label"]))]
    return model


def dense_state(model: nn.Module, fmt: str) -> dict[str, torch.Tensor]:
    """The model's tensors in `fmt`'s names ("official": ours; "hf-upernet": transformers')."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return state if fmt == "official" else to_format(state, fmt)
