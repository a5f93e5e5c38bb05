"""A model compiled by another engine (ONNX Runtime, OpenVINO), standing in for the PyTorch model."""
import torch
from torch import nn

# What predict, eval and serve read off a model besides calling it.
DESCRIPTION = ("class_names", "data_config", "in_chans", "num_classes", "min_input_size", "model_name")


class Compiled(nn.Module):
    """A model compiled by an engine, standing in for it: the same call, the same description."""

    def __init__(self, model: nn.Module, backend: str, run):
        super().__init__()
        self.backend, self.run = backend, run
        for name in DESCRIPTION:
            if hasattr(model, name):
                setattr(self, name, getattr(model, name))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x.float().contiguous())
