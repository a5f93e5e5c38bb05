"""A loaded model with its preprocessing: images in, ranked classes (and Grad-CAM maps) out.

`convnext predict` and `convnext serve` both answer through this, so a served answer equals the
command-line one for the same file.

    predictor = Predictor(model, device="cpu", amp="bf16")
    batch = torch.stack([predictor.transform(image.convert(predictor.image_mode)) for image in images])
    ranked = rank(predictor(batch), top_k=5, class_names=predictor.class_names)   # [[{"class", "index", "probability"}, ...], ...]
"""
import torch
from torch import nn

from ..checkpoints.preprocessing import data_config, model_transform
from ..runtime.precision import amp_dtype
from .backends import on_backend
from .compiled import Compiled
from .gradcam import Cams, grad_cam


def rank(probabilities: torch.Tensor, top_k: int, class_names: list[str] | None) -> list[list[dict]]:
    """The top_k classes of each row, most probable first, as `predict --json` prints them."""
    top = probabilities.topk(min(top_k, probabilities.shape[1]), dim=1)
    return [[{"class": class_names[i] if class_names else str(i), "index": i, "probability": p}
             for i, p in zip(indices, values)] for indices, values in zip(top.indices.tolist(), top.values.tolist())]


class Predictor:
    """A model with its preprocessing, ranking and Grad-CAM, on a backend (`backends.BACKENDS`)."""

    def __init__(self, model: nn.Module, device: str = "cpu", amp: str | None = None, backend: str = "pytorch"):
        exported = isinstance(model, Compiled)  # an exported file (`export.load_exported`): it runs on its engine
        backend = model.backend if exported else backend
        if backend != "pytorch" and (amp or torch.device(device).type != "cpu"):
            raise ValueError(f"--backend {backend} runs on the CPU: drop --amp and --device")
        self.model = model if exported else on_backend(model.to(device).eval(), backend)
        self.device, self.backend = device, backend
        self.autocast = amp_dtype(amp, device)
        config = data_config(model)  # the preprocessing the weights came with
        self.in_chans, self.class_names = model.in_chans, getattr(model, "class_names", None)
        self.num_classes = model.num_classes
        self.input_size, self.crop_pct = config["input_size"], config["crop_pct"]
        self.mean, self.std = config["mean"], config["std"]
        self.interpolation, self.crop_mode = config["interpolation"], config["crop_mode"]
        self.transform = model_transform(model)

    @property
    def image_mode(self) -> str:
        return "L" if self.in_chans == 1 else "RGB"

    @torch.no_grad()
    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """Class probabilities (N, num_classes) for a batch of transformed images."""
        device_type = torch.device(self.device).type
        with torch.autocast(device_type, dtype=self.autocast, enabled=self.autocast is not None):
            logits = self.model(batch.to(self.device))
        return logits.float().softmax(dim=1).cpu()

    @property
    def heat_maps(self) -> bool:
        """Whether Grad-CAM can run: it takes gradients, which only PyTorch computes."""
        return self.backend == "pytorch"

    def cams(self, batch: torch.Tensor, stage: int = -1, classes: list[int] | None = None) -> tuple[Cams, torch.Tensor]:
        """Grad-CAM maps (top-1 classes unless given), and the crops in [0, 1] to draw them over."""
        if not self.heat_maps:
            raise ValueError(f"Grad-CAM heat maps need gradients: run with --backend pytorch, not {self.backend}")
        crops = batch * torch.tensor(self.std).view(1, -1, 1, 1) + torch.tensor(self.mean).view(1, -1, 1, 1)
        cams = grad_cam(self.model, batch.to(self.device), classes=classes, stage=stage)
        return Cams(cams.maps.cpu(), cams.classes, cams.empty), crops
