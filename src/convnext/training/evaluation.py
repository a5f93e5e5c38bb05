"""Evaluation: loss, top-1, top-5, per-class accuracy and the confusion matrix, reduced over processes."""
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from .distributed import Context, all_sum


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, num_classes: int, context: Context = Context(),
             channels_last: bool = False, autocast_dtype: torch.dtype | None = None) -> dict:
    model.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.float64, device=context.device)
    sums = torch.zeros(3, dtype=torch.float64, device=context.device)  # loss, top-5 hits, count
    for images, labels in loader:
        images, labels = images.to(context.device), labels.to(context.device)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(context.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            logits = model(images).float()
        sums[0] += F.cross_entropy(logits, labels, reduction="sum")
        top5 = logits.topk(min(5, num_classes), dim=1).indices
        sums[1] += (top5 == labels[:, None]).any(dim=1).sum()
        sums[2] += len(labels)
        confusion.index_put_((labels, logits.argmax(dim=1)), torch.ones_like(labels, dtype=torch.float64), accumulate=True)
    sums, confusion = all_sum(sums, context).cpu(), all_sum(confusion, context).cpu()
    count = max(sums[2].item(), 1.0)
    per_class = (confusion.diag() / confusion.sum(dim=1).clamp(min=1)).tolist()
    return {
        "loss": sums[0].item() / count, "top1": confusion.diag().sum().item() / count,
        "top5": sums[1].item() / count, "count": int(sums[2].item()),
        "per_class": per_class, "confusion": confusion.to(torch.int64).tolist(),
    }
