"""LiteRT (TensorFlow Lite) flatbuffers (.tflite) converted by litert-torch, float32 or INT8 weights, and
their runner (`ai-edge-litert`'s interpreter).

    convnext export --weights runs/my-run --format tflite --output model.tflite
    convnext export --weights runs/my-run --format tflite --int8 --output m.int8.tflite

The float32 graph goes to XNNPACK whole (TFLite has no LayerNorm builtin: the converter writes it as
mean, squared difference and rsqrt). `--int8` stores the convolution and matrix weights in int8 per
channel and quantizes activations on the fly (dynamic range): measured here, full INT8 (activations
calibrated) split the graph into many pieces and ran slower than float32 (docs/performance.md), so it
is not offered. The converter (`litert-torch`) pins older typing-extensions and pydantic than the
server uses: it is the `tflite` extra, best in an environment of its own; the runtime alone installs
anywhere. Programs take batch 1; the runner feeds a batch image by image.
"""
from pathlib import Path

import torch
from torch import nn

from ..inference import optimize_for_inference


def _folded(model: nn.Module) -> nn.Module:
    return optimize_for_inference(model.eval(), channels_last=False, accelerated=False)


def write(model: nn.Module, path: Path, x: torch.Tensor, dynamic_batch: bool) -> list[str]:
    """The model as a float32 .tflite."""
    import litert_torch

    litert_torch.convert(_folded(model), (x[:1],)).export(str(path))
    return []


def write_int8(model: nn.Module, batches: list[torch.Tensor], path: Path, size: int) -> list[str]:
    """INT8 weights per output channel, activations quantized at run time (no calibration needed)."""
    import litert_torch
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    x = torch.randn(1, model.in_chans, size, size)
    quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True))
    with torch.no_grad():
        prepared = prepare_pt2e(torch.export.export(_folded(model), (x,)).module(), quantizer)
        prepared(x)
        quantized = convert_pt2e(prepared, fold_quantize=False)
        litert_torch.convert(quantized, (x,), quant_config=QuantConfig(pt2e_quantizer=quantizer)).export(str(path))
    return ["INT8 weights, activations quantized at run time (dynamic range)"]


def _interpreter(path: Path):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=Path(path).read_bytes(), num_threads=torch.get_num_threads())
    interpreter.allocate_tensors()
    return interpreter


def runner(path: Path):
    """images -> logits through the LiteRT interpreter (XNNPACK) on PyTorch's thread count."""
    import numpy as np

    interpreter = _interpreter(path)
    run = interpreter.get_signature_runner()
    (name,) = run.get_input_details()

    def forward(x: torch.Tensor):
        outputs = [next(iter(run(**{name: image[None].numpy()}).values())) for image in x.contiguous()]
        return torch.from_numpy(np.concatenate(outputs))
    return forward


def signature(path: Path) -> tuple[tuple[int, ...], tuple[int, ...]]:
    interpreter = _interpreter(path)
    return (tuple(map(int, interpreter.get_input_details()[0]["shape"])),
            tuple(map(int, interpreter.get_output_details()[0]["shape"])))


def version() -> str:
    from importlib.metadata import version as installed

    return installed("ai-edge-litert")
