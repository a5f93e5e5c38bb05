"""What a model's weights expect of their input: ImageNet's mean, std and 1000 class names (shipped by
torchvision), and the evaluation transform that a data config (size, crop, mean, std) describes."""
import math

import torch
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BICUBIC = v2.InterpolationMode.BICUBIC


def imagenet_class_names() -> list[str]:
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    return list(_IMAGENET_CATEGORIES)


# How timm's pretrained_cfg and our files name the resize filter; transformers' image processors give
# PIL's numbers (resample 2 and 3).
INTERPOLATIONS = {"bicubic": v2.InterpolationMode.BICUBIC, "bilinear": v2.InterpolationMode.BILINEAR,
                  "nearest": v2.InterpolationMode.NEAREST}
PIL_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}
CROP_MODES = ("center", "squash")  # timm's: crop the short side's centre, or squash both sides first
DEFAULTS = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD, "input_size": 224, "crop_pct": 0.875,
            "interpolation": "bicubic", "crop_mode": "center"}


def data_config(model) -> dict:
    """The evaluation settings the model's weights came with (`model.data_config`, from its file, the
    repository's config or its training run), ImageNet's defaults where a setting is missing."""
    found = getattr(model, "data_config", None) or {}
    return {**DEFAULTS, **{k: v for k, v in found.items() if v is not None}}


def eval_transform(size: int, mean, std, crop_pct: float = 0.875, interpolation: str = "bicubic",
                   crop_mode: str = "center") -> v2.Compose:
    """The paper's evaluation, as timm's `create_transform(is_training=False)` builds it: resize the short
    side to size / crop_pct ("squash": both sides), then centre-crop `size`. A PIL image is resized by
    PIL itself, as in timm, so both give the same pixels; tensors (the digits) by torchvision."""
    scale = int(math.floor(size / crop_pct))
    return v2.Compose([
        v2.Resize(scale if crop_mode == "center" else (scale, scale), interpolation=INTERPOLATIONS[interpolation],
                  antialias=True),
        v2.CenterCrop(size), v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std),
    ])


def model_transform(model, **overrides) -> v2.Compose:
    """`eval_transform` with the model's own settings (`overrides` replace some: --input-size, --crop-pct)."""
    config = {**data_config(model), **{k: v for k, v in overrides.items() if v is not None}}
    return eval_transform(config["input_size"], config["mean"], config["std"], config["crop_pct"],
                          config["interpolation"], config["crop_mode"])
