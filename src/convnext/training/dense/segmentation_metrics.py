"""Semantic segmentation scores from one confusion matrix over the whole set (the ADE20K/mmseg
protocol): per-class IoU and accuracy, mIoU and mAcc as their mean over classes present, and aAcc over
all labelled pixels. Not torchmetrics' `MeanIoU`, which averages per image and has no ignore label."""
import torch

IGNORE = 255


class SegmentationScores:
    def __init__(self, num_classes: int, class_names: list[str] | None = None, ignore_index: int = IGNORE):
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.class_names = class_names or [str(i) for i in range(num_classes)]
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.float64)  # [truth, prediction]

    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        """Class maps of the same shape; target pixels equal to ignore_index do not count."""
        if prediction.shape != target.shape:
            raise ValueError(f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ in shape")
        keep = target != self.ignore_index
        truth, guess = target[keep].long().cpu(), prediction[keep].long().cpu()
        if truth.numel() and int(truth.max()) >= self.num_classes:
            raise ValueError(f"target has class {int(truth.max())}, beyond the {self.num_classes} classes (255 is ignore)")
        self.matrix += torch.bincount(truth * self.num_classes + guess, minlength=self.num_classes**2).reshape(
            self.num_classes, self.num_classes).double()

    def compute(self) -> dict:
        hits, truth, guessed = self.matrix.diag(), self.matrix.sum(1), self.matrix.sum(0)
        union = truth + guessed - hits
        iou = torch.where(union > 0, hits / union.clamp(min=1), torch.nan)  # absent everywhere: not a class here
        accuracy = torch.where(truth > 0, hits / truth.clamp(min=1), torch.nan)
        return {"mIoU": float(iou.nanmean()), "mAcc": float(accuracy.nanmean()),
                "aAcc": float(hits.sum() / self.matrix.sum().clamp(min=1)),
                "per_class": [{"class": name, "IoU": float(i), "Acc": float(a)}
                              for name, i, a in zip(self.class_names, iou, accuracy)]}
