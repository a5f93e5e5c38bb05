"""The config files the peers' own loaders read beside the weights: transformers' `config.json` and
`preprocessor_config.json` (for `from_pretrained` and `pipeline`), timm's `config.json` (for
`create_model("local-dir:DIR")`), each carrying the model's shape, class names and eval transform."""
from torch import nn

from .convert import StateDict, architecture
from .preprocessing import PIL_RESAMPLE, data_config


def timm_uses_conv_mlp(model_name: str | None) -> bool:
    """timm builds its atto..nano variants with 1x1-conv MLPs, so their checkpoints store 4-D weights."""
    return any(f"_{size}" in (model_name or "") for size in ("atto", "femto", "pico", "nano"))


# timm's names for the published sizes; any other depths and widths go in the config's model_args.
TIMM_CONVNEXT = {
    ((2, 2, 6, 2), (40, 80, 160, 320)): "atto", ((2, 2, 6, 2), (48, 96, 192, 384)): "femto",
    ((2, 2, 6, 2), (64, 128, 256, 512)): "pico", ((2, 2, 8, 2), (80, 160, 320, 640)): "nano",
    ((3, 3, 9, 3), (96, 192, 384, 768)): "tiny", ((3, 3, 27, 3), (96, 192, 384, 768)): "small",
    ((3, 3, 27, 3), (128, 256, 512, 1024)): "base", ((3, 3, 27, 3), (192, 384, 768, 1536)): "large",
    ((3, 3, 27, 3), (256, 512, 1024, 2048)): "xlarge", ((3, 3, 27, 3), (352, 704, 1408, 2816)): "huge",
}
TIMM_RESNETS = {(3, 4, 6, 3): "resnet50", (3, 4, 23, 3): "resnet101", (3, 8, 36, 3): "resnet152",
                (3, 24, 36, 3): "resnet200"}


def stage_depths(state: StateDict) -> tuple[int, ...]:
    """Blocks per stage of a state dict in our names (ConvNeXt or the roadmap's ResNets)."""
    return tuple(len({k.split(".")[2] for k in state if k.startswith(f"stages.{i}.")}) for i in range(4))


def stage_shape(state: StateDict) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(blocks per stage, stage widths) of a ConvNeXt state dict in our names."""
    dims = tuple(state[f"downsample_layers.{i}.{min(i, 1)}.weight"].shape[0] for i in range(4))
    return stage_depths(state), dims


def layout_of(model: nn.Module) -> str:
    """Which network the model's tensors are: its own `layout`, else read off its keys."""
    return getattr(model, "layout", None) or architecture(model.state_dict())


def timm_architecture(model: nn.Module) -> tuple[str, dict]:
    """The timm model name for `model` and the `model_args` timm needs to build it with its shape."""
    state, layout = model.state_dict(), layout_of(model)
    if layout == "resnet":
        depths = stage_depths(state)
        return TIMM_RESNETS.get(depths, "resnet50"), {"layers": list(depths), "in_chans": model.in_chans}
    depths, dims = stage_shape(state)
    size = TIMM_CONVNEXT.get((depths, dims), "tiny")
    if layout == "convnext" and size == "huge":
        size = "tiny"  # V1 has no huge
    args = {"depths": list(depths), "dims": list(dims), "in_chans": model.in_chans}
    if layout == "convnext" and not any(k.endswith(".gamma") for k in state):
        args["ls_init_value"] = None  # built without layer scale
    return f"{layout}_{size}", args


def _data_config(model: nn.Module) -> dict:
    data = data_config(model)
    return {**data, "mean": list(data["mean"]), "std": list(data["std"])}


def _labels(model: nn.Module, class_names: list[str] | None) -> list[str]:
    return list(class_names or getattr(model, "class_names", None) or [f"LABEL_{i}" for i in range(model.num_classes)])


def hf_config(model: nn.Module, class_names: list[str] | None) -> dict:
    """A transformers `ConvNextConfig`/`ConvNextV2Config` as JSON, so `from_pretrained` works offline."""
    state = model.state_dict()
    v2 = layout_of(model) == "convnextv2"
    depths, dims = stage_shape(state)
    labels = _labels(model, class_names)
    config = {
        "architectures": ["ConvNextV2ForImageClassification" if v2 else "ConvNextForImageClassification"],
        "model_type": "convnextv2" if v2 else "convnext",
        "num_channels": model.in_chans, "patch_size": 4, "num_stages": 4,
        "hidden_sizes": list(dims), "depths": list(depths),
        "hidden_act": "gelu", "layer_norm_eps": 1e-6, "drop_path_rate": 0.0,
        "image_size": _data_config(model)["input_size"],
        "id2label": {str(i): label for i, label in enumerate(labels)},
        "label2id": {label: i for i, label in enumerate(labels)},
    }
    if not v2:
        config["layer_scale_init_value"] = 1e-6 if any(k.endswith(".gamma") for k in state) else 0.0
    return config


def hf_preprocessor_config(model: nn.Module) -> dict:
    """transformers' ConvNeXt image processor with the model's own evaluation transform.

    Below 384 pixels it resizes the short side to size / crop_pct (bicubic) and centre-crops `size`,
    exactly as `convnext predict`; from 384 up it resizes to size x size without cropping.
    """
    data = _data_config(model)
    return {"image_processor_type": "ConvNextImageProcessor", "do_resize": True,
            "size": {"shortest_edge": data["input_size"]}, "crop_pct": data["crop_pct"],
            "resample": next((n for n, name in PIL_RESAMPLE.items() if name == data["interpolation"]), 3),
            "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
            "image_mean": data["mean"], "image_std": data["std"]}


def timm_config(model: nn.Module, class_names: list[str] | None) -> dict:
    """timm's `config.json` for `create_model("local-dir:DIR", pretrained=True)`."""
    architecture_name, model_args = timm_architecture(model)
    data = _data_config(model)
    size = data["input_size"]
    layout = layout_of(model)
    first_conv, classifier = ("conv1", "fc") if layout == "resnet" else ("stem.0", "head.fc")
    names = class_names or getattr(model, "class_names", None)
    return {
        "architecture": architecture_name, "num_classes": model.num_classes, "num_features": model.num_features,
        "model_args": model_args, **({"label_names": list(names)} if names else {}),
        "pretrained_cfg": {
            "input_size": [model.in_chans, size, size], "interpolation": data["interpolation"],
            "crop_pct": data["crop_pct"], "crop_mode": data["crop_mode"], "mean": data["mean"], "std": data["std"], "num_classes": model.num_classes,
            "first_conv": first_conv, "classifier": classifier, "fixed_input_size": False,
        },
    }
