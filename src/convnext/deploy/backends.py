"""Where a trained model runs on a CPU: PyTorch itself, the model exported once and compiled by ONNX
Runtime or OpenVINO, the engines people deploy ConvNeXts with on servers, or written as a program for
ExecuTorch (XNNPACK) or LiteRT, the engines of phones, run here by their Python runtimes.

    forward = on_backend(model, "openvino")       # an nn.Module: images (N, C, H, W) -> logits
    Predictor(model, backend="onnxruntime")       # what predict, eval and serve do with --backend

The engines get the folded model (`optimize_for_inference`, exact) exported with a dynamic batch, run in
float32 (OpenVINO's precision hint is set to f32: on CPUs with bf16 it would otherwise compute in bf16),
on as many threads as PyTorch uses, ONNX Runtime's threads not spinning between runs (they would take
the cores from whatever runs next). Outputs equal PyTorch's within `TOLERANCE` (tests/test_backends.py).
Grad-CAM needs gradients: it is PyTorch's alone.
"""
import tempfile
from pathlib import Path

import torch
from torch import nn

from ..checkpoints.preprocessing import data_config
from .compiled import Compiled, onnxruntime_runner, openvino_runner
from .formats import FORMATS
from .formats.standard import write_onnx
from .inference import optimize_for_inference

SERVER = ("onnxruntime", "openvino")  # compiled in memory from the model
ON_DEVICE = {"executorch": FORMATS["executorch"], "litert": FORMATS["tflite"]}  # written to a file, then run
BACKENDS = ("pytorch", *SERVER, *ON_DEVICE)
EXTRAS = {"onnxruntime": "export", "openvino": "openvino"}  # pip install "convnext[EXTRA]"
TOLERANCE = 1e-4


def require(backend: str):
    """The engine's Python package, or a one-line error naming the extra that installs it."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if backend in ON_DEVICE:
        ON_DEVICE[backend].require()  # the converter: the runtime alone cannot take a model
        return None
    try:
        return __import__(backend)
    except ImportError:
        raise ValueError(f"--backend {backend} needs the {backend} package: pip install "
                         f"'convnext[{EXTRAS[backend]}]'") from None


def on_backend(model: nn.Module, backend: str, size: int | None = None) -> nn.Module:
    """`model` to run on `backend`: itself for PyTorch, else exported once and compiled by the engine."""
    if backend == "pytorch":
        return model
    engine = require(backend)
    size = size or data_config(model)["input_size"]
    example = torch.randn(2, model.in_chans, size, size)
    if backend in ON_DEVICE:  # the writer folds; the runner reads the whole file at once
        fmt = ON_DEVICE[backend]
        with tempfile.TemporaryDirectory(prefix=f"convnext-{backend}-") as folder:
            path = Path(folder) / f"model{fmt.suffix}"
            fmt.write(model.eval(), path, example, False)
            return Compiled(model, backend, fmt.run(path))
    folded = optimize_for_inference(model.eval(), channels_last=False)
    if backend == "onnxruntime":
        # The session reads the whole file when it is made: the folder goes as soon as it has.
        with tempfile.TemporaryDirectory(prefix="convnext-onnx-") as folder:
            path = Path(folder) / "model.onnx"
            write_onnx(folded, path, example, dynamic_batch=True)
            return Compiled(model, backend, onnxruntime_runner(path))
    with torch.no_grad():
        converted = engine.convert_model(folded, example_input=example,
                                         input=[engine.PartialShape([-1, model.in_chans, -1, -1])])
    return Compiled(model, backend, openvino_runner(converted, {"INFERENCE_PRECISION_HINT": "f32"}))
