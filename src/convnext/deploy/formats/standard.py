"""The server-side formats: ONNX (run by ONNX Runtime or OpenVINO), OpenVINO IR, TorchScript and
torch.export's ExportedProgram. Each writer takes (model, path, example input, dynamic batch) and
returns notes to print; each runner takes the written path and returns images -> logits."""
from pathlib import Path

import torch
from torch import nn

from ..compiled import onnxruntime_runner, openvino_runner

BATCH = torch.export.Dim("batch", min=1, max=4096)


def write_onnx(model: nn.Module, path: Path, x: torch.Tensor, dynamic_batch: bool) -> list[str]:
    """The model as ONNX (torch.onnx's dynamo exporter), input "x", output "logits"."""
    shapes = {"x": {0: BATCH}} if dynamic_batch else None
    with torch.no_grad():
        program = torch.onnx.export(model, (x,), dynamo=True, dynamic_shapes=shapes, input_names=["x"],
                                    output_names=["logits"], verbose=False)
    program.save(str(path))
    return []


def to_openvino(model: nn.Module, x: torch.Tensor, dynamic_batch: bool):
    """The model converted to OpenVINO (traced on `x`), in memory."""
    import openvino

    shape = [-1 if dynamic_batch else x.shape[0], *x.shape[1:]]
    with torch.no_grad():
        return openvino.convert_model(model, example_input=x, input=[openvino.PartialShape(shape)])


def write_openvino(model: nn.Module, path: Path, x: torch.Tensor, dynamic_batch: bool) -> list[str]:
    """path.xml, and its weights beside it as path.bin: float32 (save_model halves them by default)."""
    import openvino

    openvino.save_model(to_openvino(model, x, dynamic_batch), str(path), compress_to_fp16=False)
    return []


def write_torchscript(model: nn.Module, path: Path, x: torch.Tensor, dynamic_batch: bool) -> list[str]:
    with torch.no_grad():
        torch.jit.save(torch.jit.trace(model, x), str(path))
    return []


def write_exported_program(model: nn.Module, path: Path, x: torch.Tensor, dynamic_batch: bool) -> list[str]:
    shapes = {"x": {0: BATCH}} if dynamic_batch else None
    with torch.no_grad():
        torch.export.save(torch.export.export(model, (x,), dynamic_shapes=shapes), str(path))
    return []


def run_onnx(path: Path):
    return onnxruntime_runner(path)


def run_openvino(path: Path):
    return openvino_runner(str(path), {"INFERENCE_PRECISION_HINT": "f32"})


def run_torchscript(path: Path):
    module = torch.jit.load(str(path))
    return lambda x: module(x)


def run_exported_program(path: Path):
    module = torch.export.load(str(path)).module()
    return lambda x: module(x)
