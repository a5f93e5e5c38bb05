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


def eval_transform(size: int, mean, std, crop_pct: float = 0.875) -> v2.Compose:
    """The paper's evaluation: resize the short side to size / crop_pct (bicubic), centre-crop `size`."""
    return v2.Compose([
        v2.ToImage(), v2.Resize(int(math.floor(size / crop_pct)), interpolation=BICUBIC, antialias=True),
        v2.CenterCrop(size), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std),
    ])
