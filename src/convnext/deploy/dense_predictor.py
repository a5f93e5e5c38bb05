"""Detection and segmentation on image files: what `convnext detect predict` and `convnext segment
predict` run, as `predictor.Predictor` is for classification.

    predictor = DetectionPredictor(load_dense("runs/detect"), threshold=0.5)
    found, row = predictor.predict(predictor.read("photo.jpg"))   # row: {"detections": [...]} for JSON
"""
import torch
from PIL import Image
from torchvision.transforms import v2

from ..checkpoints.preprocessing import IMAGENET_MEAN, IMAGENET_STD
from ..models.detection import detect
from ..models.upernet import segment


class DensePredictor:
    def __init__(self, model: torch.nn.Module, device: str | torch.device = "cpu"):
        self.model, self.device = model.to(device).eval(), device
        self.class_names = getattr(model, "class_names", None) or []

    @staticmethod
    def read(path) -> torch.Tensor:
        """An image file as a float (3, H, W) tensor in [0, 1]; PIL's error if it is no image."""
        with Image.open(path) as image:
            return v2.functional.to_dtype(v2.functional.pil_to_tensor(image.convert("RGB")), torch.float32, scale=True)



class DetectionPredictor(DensePredictor):
    """Boxes (and masks) scored at least `threshold`; labels 1..K, 0 being the background."""

    def __init__(self, model: torch.nn.Module, device: str | torch.device = "cpu", threshold: float = 0.5):
        super().__init__(model, device)
        self.threshold = threshold

    def predict(self, picture: torch.Tensor) -> tuple[dict, dict]:
        """(the detector's findings, all of them; the kept ones as a JSON-ready row)."""
        found = detect(self.model, [picture], self.device)[0]
        keep = found["scores"] >= self.threshold
        return found, {"detections": [
            {"class": self.class_names[label - 1] if self.class_names else str(label), "label": label, "score": score, "box": [round(v, 2) for v in box]}
            for label, score, box in zip(found["labels"][keep].tolist(), found["scores"][keep].tolist(),
                                         found["boxes"][keep].tolist())]}


class SegmentationPredictor(DensePredictor):
    """A class per pixel (normalised with ImageNet's statistics, as the segmenters train)."""

    def predict(self, picture: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """(the (H, W) class map; each class's share of the pixels as a JSON-ready row)."""
        normalised = v2.functional.normalize(picture, IMAGENET_MEAN, IMAGENET_STD)
        classes = segment(self.model, normalised[None], self.device)[0].argmax(0)
        counts = torch.bincount(classes.flatten(), minlength=len(self.class_names)).tolist()
        return classes, {"classes": {(self.class_names[c] if self.class_names else str(c)): round(n / classes.numel(), 4) for c, n in enumerate(counts) if n}}
