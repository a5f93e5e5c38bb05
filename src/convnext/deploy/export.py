"""Export to ONNX, TorchScript or a torch.export ExportedProgram, then check the file against eager.

    convnext export --weights runs/my-run --format onnx --output model.onnx --dynamic-batch
    convnext predict --weights model.onnx --backend onnxruntime photos/

Each export is written atomically, reloaded, and run on random inputs next to the eager model; the
largest absolute difference is printed and must stay within 1e-4. A `<output>.json` sidecar keeps the
class names and preprocessing so the file can be used on its own.
"""
import contextlib
import json
import os
from pathlib import Path

import torch
from torch import nn

from ..runtime.atomic import atomic_file
from ..checkpoints.preprocessing import data_config
from .compiled import Compiled, onnxruntime_runner, openvino_runner

FORMATS = ("onnx", "openvino", "torchscript", "exported-program")
TOLERANCE = 1e-4


def _example(model: nn.Module, batch: int, size: int | None = None) -> torch.Tensor:
    size = size or data_config(model)["input_size"]
    return torch.randn(batch, model.in_chans, size, size)


def write_onnx(model: nn.Module, path: Path, x: torch.Tensor, dynamic_batch: bool) -> None:
    """The model as ONNX (torch.onnx's dynamo exporter), input "x", output "logits"."""
    shapes = {"x": {0: torch.export.Dim("batch", min=1, max=4096)}} if dynamic_batch else None
    with torch.no_grad():
        program = torch.onnx.export(model, (x,), dynamo=True, dynamic_shapes=shapes, input_names=["x"],
                                    output_names=["logits"], verbose=False)
    program.save(str(path))


def to_openvino(model: nn.Module, x: torch.Tensor, dynamic_batch: bool):
    """The model converted to OpenVINO (traced on `x`), in memory."""
    import openvino

    shape = [-1 if dynamic_batch else x.shape[0], *x.shape[1:]]
    with torch.no_grad():
        return openvino.convert_model(model, example_input=x, input=[openvino.PartialShape(shape)])


def _write(model: nn.Module, fmt: str, path: Path, dynamic_batch: bool, size: int | None = None) -> None:
    x = _example(model, 2, size)
    with torch.no_grad():
        if fmt == "onnx":
            write_onnx(model, path, x, dynamic_batch)
        elif fmt == "openvino":
            import openvino

            # path.xml, and its weights beside it as path.bin: float32 (save_model halves them by default)
            openvino.save_model(to_openvino(model, x, dynamic_batch), str(path), compress_to_fp16=False)
        elif fmt == "torchscript":
            torch.jit.save(torch.jit.trace(model, x), str(path))
        else:
            shapes = {"x": {0: torch.export.Dim("batch", min=1, max=4096)}} if dynamic_batch else None
            torch.export.save(torch.export.export(model, (x,), dynamic_shapes=shapes), str(path))


def load_runner(path: Path, fmt: str):
    """A function images -> logits for an exported file."""
    if fmt == "onnx":
        return onnxruntime_runner(path)
    if fmt == "openvino":
        return openvino_runner(str(path), {"INFERENCE_PRECISION_HINT": "f32"})
    if fmt == "torchscript":
        module = torch.jit.load(str(path))
        return lambda x: module(x)
    module = torch.export.load(str(path)).module()
    return lambda x: module(x)


def check(model: nn.Module, path: Path, fmt: str, dynamic_batch: bool) -> list[tuple[int, float]]:
    """Max |exported - eager| on random inputs: batches 1 and 3 when the batch is dynamic, else 2."""
    run = load_runner(path, fmt)
    results = []
    for batch in ((1, 3) if dynamic_batch else (2,)):
        x = _example(model, batch)
        with torch.no_grad():
            results.append((batch, (run(x).float() - model(x).float()).abs().max().item()))
    return results


def sidecar(model: nn.Module) -> dict:
    """What a runtime needs beside the exported graph: the classes and the preprocessing of the weights."""
    data = data_config(model)
    return {"model": getattr(model, "model_name", None), "in_chans": model.in_chans,
            "num_classes": model.num_classes, "class_names": getattr(model, "class_names", None),
            "input_size": data["input_size"], "mean": list(data["mean"]), "std": list(data["std"]),
            "crop_pct": data["crop_pct"], "interpolation": data["interpolation"], "crop_mode": data["crop_mode"]}


@contextlib.contextmanager
def exported_file(output: Path, fmt: str):
    """The path to write `output` in format `fmt` to; it takes `output`'s place when the block ends
    without an error (an OpenVINO IR: its weights `.bin` first, then the `.xml`), and nothing is left
    behind when it does not."""
    if fmt == "openvino" and output.suffix != ".xml":
        raise ValueError(f"--format openvino writes an IR: --output NAME.xml (its weights go beside it as NAME.bin)")
    with atomic_file(output) as tmp:
        written = tmp.with_suffix(".xml") if fmt == "openvino" else tmp  # OpenVINO names the .bin after the .xml
        try:
            yield written
            if written != tmp:
                os.replace(written.with_suffix(".bin"), output.with_suffix(".bin"))
                os.replace(written, tmp)
        finally:
            if written != tmp:
                written.unlink(missing_ok=True)
                written.with_suffix(".bin").unlink(missing_ok=True)


def export(model: nn.Module, output: str | Path, fmt: str, dynamic_batch: bool = False) -> list[tuple[int, float]]:
    """Write `model` as `fmt` to `output` (atomically), verify it, and return the checks."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
    output = Path(output)
    model = model.eval()
    with exported_file(output, fmt) as written:
        _write(model, fmt, written, dynamic_batch)
        checks = check(model, written, fmt, dynamic_batch)
        worst = max(diff for _, diff in checks)
        if not worst <= TOLERANCE:
            raise RuntimeError(f"exported {fmt} differs from the eager model by {worst:.2e} (> {TOLERANCE:g}); "
                               f"{output} not written")
    with atomic_file(output.with_name(output.name + ".json")) as tmp:
        tmp.write_text(json.dumps(sidecar(model), indent=2))
    return checks


EXPORTED_SUFFIXES = (".onnx", ".xml")  # files that run on their own engine (ONNX Runtime, OpenVINO)


def load_exported(path: str | Path, backend: str = "pytorch") -> nn.Module:
    """An exported .onnx or OpenVINO .xml as a module images -> logits, described by its sidecar JSON
    (classes, channels, preprocessing), so that eval and predict take it as they take a model. It runs on
    its own engine, or on OpenVINO when asked (OpenVINO reads ONNX, INT8 QDQ graphs included); PyTorch
    runs neither, and ONNX Runtime no OpenVINO IR."""
    path = Path(path)
    meta_path = path.with_name(path.name + ".json")
    if not path.is_file() or not meta_path.is_file():
        raise FileNotFoundError(f"{path}: need the exported file and its {meta_path.name} sidecar (from convnext export)")
    meta = json.loads(meta_path.read_text())
    description = nn.Module()
    description.in_chans, description.num_classes = meta["in_chans"], meta["num_classes"]
    description.class_names, description.model_name = meta["class_names"], meta.get("model")
    description.data_config = {k: meta[k] for k in ("input_size", "mean", "std", "crop_pct", "interpolation", "crop_mode")
                               if k in meta}
    engine = "openvino" if path.suffix == ".xml" or backend == "openvino" else "onnxruntime"
    if path.suffix == ".xml" and backend == "onnxruntime":
        raise ValueError(f"{path} is an OpenVINO IR: it runs with --backend openvino, not onnxruntime")
    runner = load_runner(path, "openvino" if engine == "openvino" else "onnx")
    return Compiled(description, engine, runner)
