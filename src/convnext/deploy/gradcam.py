"""Grad-CAM (Selvaraju et al., 2017) for every network here, folded and frozen ones included.

The trunk runs without autograd up to the chosen stage's output A (N, C, h, w); only the rest (later
stages, pooling, norm, head) is recomputed from A with autograd, so frozen or folded weights are fine
and each image gets its own map. With α_c = mean over positions of ∂logit_c/∂A, the map is
ReLU(Σ_c α_c A_c), scaled to [0, 1]. ConvNeXt's head is mean → LayerNorm → Linear, whose Jacobian can
make every α·A negative: such a map is reported empty rather than drawn as noise. Where the peak lands
on the object, and where it does not (softmax-trained scores; stages feeding a LayerNorm), is measured
in docs/serving.md.

    cams = grad_cam(model, images)                 # last stage, top-1 class
    cams = grad_cam(model, images, classes=[3, 7], stage=2)
    picture = overlay(image_in_0_1, cams.maps[0])  # PIL image, the map coloured over the picture
"""
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn


@dataclass
class Cams:
    maps: torch.Tensor  # (N, h, w) in [0, 1]; all zero where empty
    classes: list[int]
    empty: list[bool]


def spatial_steps(model: nn.Module) -> list[nn.Module]:
    """The model's trunk as stages: (downsampling + blocks) per stage, or stem and blocks (isotropic)."""
    if hasattr(model, "stages"):
        downsamples = list(getattr(model, "downsample_layers", []))
        return [nn.Sequential(downsamples[i], stage) if i < len(downsamples) else stage
                for i, stage in enumerate(model.stages)]
    return [model.stem, model.blocks]


def check_stage(model: nn.Module, stage: int) -> int:
    """The stage index counted from the front; one error line for a stage the model does not have."""
    count = len(spatial_steps(model))
    if not -count <= stage < count:
        raise ValueError(f"--cam-stage must be in 0..{count - 1} for this model, got {stage}")
    return stage % count


def grad_cam(model: nn.Module, images: torch.Tensor, classes: list[int] | torch.Tensor | None = None,
             stage: int = -1) -> Cams:
    model.eval()
    steps = spatial_steps(model)
    stage = check_stage(model, stage)
    dtype = next(model.parameters()).dtype
    with torch.no_grad():
        x = images.to(dtype).contiguous(memory_format=torch.channels_last)
        for step in steps[: stage + 1]:
            x = step(x)
    activations = x.detach().requires_grad_()
    with torch.enable_grad():
        y = activations
        for step in steps[stage + 1 :]:
            y = step(y)
        logits = model.forward_head(model.norm(y.mean(dim=(-2, -1)))).float()
        chosen = logits.argmax(dim=1) if classes is None else torch.as_tensor(classes, device=logits.device)
        (gradients,) = torch.autograd.grad(logits.gather(1, chosen[:, None]).sum(), activations)
    weights = gradients.float().mean(dim=(2, 3), keepdim=True)  # α: (N, C, 1, 1)
    maps = F.relu((weights * activations.detach().float()).sum(dim=1))  # (N, h, w)
    peaks = maps.amax(dim=(1, 2))
    empty = (peaks <= 0).tolist()
    maps = torch.where(peaks[:, None, None] > 0, maps / peaks.clamp(min=1e-30)[:, None, None], 0.0)
    return Cams(maps, chosen.tolist(), empty)


def overlay(image: torch.Tensor, cam: torch.Tensor, alpha: float = 0.5, colormap: str = "jet") -> Image.Image:
    """The map, upsampled (bilinear) to the image and coloured, over a (C, H, W) image in [0, 1]."""
    from matplotlib import colormaps

    height, width = image.shape[-2:]
    up = F.interpolate(cam[None, None].float(), size=(height, width), mode="bilinear", align_corners=False)[0, 0]
    heat = torch.from_numpy(colormaps[colormap](up.clamp(0, 1).numpy())[..., :3]).float()  # (H, W, 3)
    base = image.float().clamp(0, 1).expand(3, -1, -1).permute(1, 2, 0)  # (C, H, W) -> (H, W, 3), grey to RGB
    mixed = (1 - alpha) * base + alpha * heat
    return Image.fromarray((mixed * 255).round().to(torch.uint8).numpy().astype(np.uint8))
