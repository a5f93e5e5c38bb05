"""What the tests share: comparisons, random non-trivial weights, and the peers' models built offline."""
import contextlib
import io

import timm
import torch
import torchvision
from transformers import (ConvNextConfig, ConvNextForImageClassification, ConvNextV2Config,
                          ConvNextV2ForImageClassification)

import convnext
from convnext.training.dense.detection_metrics import rle


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


def relative_error(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def perturbed(model, scale: float = 0.02):
    """Random weights everywhere, layer scale and GRN included (they start at ~0)."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn_like(p))
    return model


def randomised(name, **kwargs):
    """A model in eval mode with non-trivial weights everywhere, BatchNorm statistics included."""
    model = perturbed(convnext.create_model(name, **kwargs), 0.05).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    return model


def hf_model(depths, dims, num_classes=1000, v2=False):
    config_class, model_class = ((ConvNextV2Config, ConvNextV2ForImageClassification) if v2
                                 else (ConvNextConfig, ConvNextForImageClassification))
    # HF defaults layer_norm_eps to 1e-12; the official models use 1e-6.
    config = config_class(depths=list(depths), hidden_sizes=list(dims), num_labels=num_classes, layer_norm_eps=1e-6)
    return model_class(config).eval()


def timm_model(name, **kwargs):
    return timm.create_model(name, pretrained=False, **kwargs).eval()


def torchvision_model(name="convnext_tiny", **kwargs):
    return getattr(torchvision.models, name)(weights=None, **kwargs).eval()


def logits(model, x):
    out = model(x)
    return out.logits if hasattr(out, "logits") else out


def coco_from_targets(targets: list[dict], image_sizes: list[tuple[int, int]], image_ids: list[int],
                      categories: list[dict], label_to_category: dict[int, int]):
    """A pycocotools COCO (the tests' known answers) ground truth built in memory from torchvision-style targets (annotation ids from 1)."""
    from pycocotools.coco import COCO

    images, annotations = [], []
    for image_id, (height, width), target in zip(image_ids, image_sizes, targets):
        images.append({"id": int(image_id), "height": int(height), "width": int(width)})
        boxes = target["boxes"].float()
        masks = target.get("masks")
        for n, (box, label) in enumerate(zip(boxes.tolist(), target["labels"].tolist())):
            x0, y0, x1, y1 = box
            annotation = {"id": len(annotations) + 1, "image_id": int(image_id), "category_id": label_to_category[label],
                          "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0}
            if masks is not None:
                annotation["segmentation"] = rle(masks[n].cpu().numpy())
                annotation["area"] = float(masks[n].sum())
            annotations.append(annotation)
    ground_truth = COCO()
    ground_truth.dataset = {"images": images, "annotations": annotations, "categories": categories}
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth.createIndex()
    return ground_truth
