"""Predictions drawn over their images with torchvision's drawing utilities: boxes with class and
score, instance masks, colour-coded segmentation maps; and a grid of them saved atomically."""
from pathlib import Path

import torch
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks, make_grid

from ...runtime.atomic import atomic_file

SCORE_THRESHOLD = 0.5
READABLE = 256  # smaller pictures are drawn enlarged, so that captions fit


def enlarged(image: torch.Tensor, found: dict | None = None) -> tuple[torch.Tensor, dict | None, int]:
    """A small uint8 image (and its boxes/masks) scaled by a whole factor to at least READABLE pixels."""
    import torch.nn.functional as F

    factor = max(1, READABLE // max(image.shape[-2:]))
    if factor == 1:
        return image, found, 1
    image = F.interpolate(image[None].float(), scale_factor=factor, mode="nearest")[0].to(torch.uint8)
    if found is not None:
        found = {**found, "boxes": found["boxes"] * factor}
        if "masks" in found:
            found["masks"] = F.interpolate(found["masks"].float(), scale_factor=factor, mode="nearest")
    return image, found, factor


def palette(count: int) -> list[tuple[int, int, int]]:
    """Distinct colours from matplotlib's tab20 (tab10 first)."""
    from matplotlib import colormaps

    colours = colormaps["tab20"].colors
    return [tuple(int(255 * c) for c in colours[(2 * i) % 20 if i < 10 else (2 * i + 1) % 20]) for i in range(count)]


def to_uint8(image: torch.Tensor, mean=None, std=None) -> torch.Tensor:
    """A float image in [0, 1] (or normalised with mean/std) as uint8 RGB."""
    image = image.float().cpu()
    if mean is not None:
        image = image * torch.tensor(std).view(-1, 1, 1) + torch.tensor(mean).view(-1, 1, 1)
    return (image.clamp(0, 1) * 255).round().to(torch.uint8).expand(3, -1, -1)


def draw_detections(image: torch.Tensor, found: dict, class_names: list[str],
                    threshold: float = SCORE_THRESHOLD) -> torch.Tensor:
    canvas, found, _ = enlarged(to_uint8(image), found)
    keep = found["scores"] >= threshold
    labels = found["labels"][keep].tolist()
    colours = palette(len(class_names) + 1)
    if "masks" in found and keep.any():
        canvas = draw_segmentation_masks(canvas, found["masks"][keep][:, 0] > 0.5, alpha=0.45,
                                         colors=[colours[label] for label in labels])
    if not labels:
        return canvas
    captions = [f"{class_names[label - 1]} {score:.2f}" for label, score in zip(labels, found["scores"][keep].tolist())]
    return draw_bounding_boxes(canvas, found["boxes"][keep], captions, colors=[colours[label] for label in labels], width=2)


def draw_segmentation(image: torch.Tensor, classes: torch.Tensor, num_classes: int, mean=None, std=None,
                      alpha: float = 0.8) -> torch.Tensor:
    """Every class but the background (0) painted in its colour over the image."""
    canvas, _, factor = enlarged(to_uint8(image, mean, std))
    classes = classes.repeat_interleave(factor, 0).repeat_interleave(factor, 1)
    masks = torch.stack([classes == c for c in range(1, num_classes)])
    return draw_segmentation_masks(canvas, masks, alpha=alpha, colors=palette(num_classes)[1:])


def save_grid(pictures: list[torch.Tensor], destination: Path, columns: int = 4) -> None:
    from PIL import Image

    import torch.nn.functional as F

    height, width = max(p.shape[1] for p in pictures), max(p.shape[2] for p in pictures)
    same_size = [F.pad(p, (0, width - p.shape[2], 0, height - p.shape[1]), value=255) for p in pictures]  # white margins
    grid = make_grid(same_size, nrow=columns, padding=2, pad_value=255)
    with atomic_file(destination) as tmp:
        Image.fromarray(grid.permute(1, 2, 0).numpy()).save(tmp, format="PNG")  # (3, H, W) -> (H, W, 3)
