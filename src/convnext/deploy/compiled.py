"""A model compiled by another engine (ONNX Runtime, OpenVINO), standing in for the PyTorch model, and
the two engines' runners: images -> logits on PyTorch's thread count."""
from pathlib import Path

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


def onnxruntime_runner(path: Path):
    """images -> logits through an ONNX Runtime session on PyTorch's thread count, threads not spinning."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: torch.from_numpy(session.run(None, {name: x.contiguous().numpy()})[0])


def openvino_runner(model, settings: dict | None = None):
    """images -> logits through OpenVINO's CPU plugin (latency hint, PyTorch's thread count); `model` is
    a converted model or a file it reads (IR, ONNX: a QDQ graph runs in INT8)."""
    import openvino

    compiled = openvino.compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY",
                                                     "INFERENCE_NUM_THREADS": torch.get_num_threads(), **(settings or {})})
    return lambda x: torch.from_numpy(compiled(x.contiguous().numpy())[0].copy())
