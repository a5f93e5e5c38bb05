"""Write a model in any of `formats.FORMATS` (ONNX, OpenVINO, TorchScript, ExportedProgram, ExecuTorch,
LiteRT, Core ML), float32 or INT8, then check the file against eager PyTorch.

    convnext export --weights runs/my-run --format onnx --output model.onnx --dynamic-batch
    convnext predict --weights model.onnx photos/

Each export is written atomically, reloaded, and run on random inputs next to the eager model; the
largest absolute difference is printed and must stay within the format's tolerance (1e-4 in float32).
A `<output>.json` sidecar keeps the class names, the preprocessing and the version of the package that
wrote it, so the file can be used on its own: eval, predict, serve and bench take it as `--weights`.
"""
import contextlib
import json
import os
from pathlib import Path

import torch
from torch import nn

from ..checkpoints.preprocessing import data_config
from ..runtime.atomic import atomic_dir, atomic_file
from .compiled import Compiled
from .formats import FORMATS, Format, format_named, format_of_file


def _example(model: nn.Module, batch: int, size: int | None = None) -> torch.Tensor:
    size = size or data_config(model)["input_size"]
    return torch.randn(batch, model.in_chans, size, size)


def check(model: nn.Module, path: Path, fmt: Format, dynamic_batch: bool) -> list[tuple[int, float]]:
    """Max |exported - eager| on random inputs: batches 1 and 3 when the batch is dynamic, else 2
    (a batch-1 program is fed image by image)."""
    run = fmt.run(path)
    results = []
    for batch in ((1, 3) if dynamic_batch else (2,)):
        x = _example(model, batch)
        with torch.no_grad():
            results.append((batch, (run(x).float() - model(x).float()).abs().max().item()))
    return results


def sidecar(model: nn.Module, fmt: Format | None = None, int8: bool = False) -> dict:
    """What a runtime needs beside the exported graph: the classes and the preprocessing of the weights,
    and what wrote the file (an older engine cannot be trusted to read a newer engine's file)."""
    data = data_config(model)
    written = {"format": fmt.name, "writer": fmt.package, "writer_version": fmt.installed(),
               "engine": fmt.runtime or fmt.package, "engine_version": fmt.installed(runtime=True),
               "batch": None if fmt.dynamic_batch else 1} if fmt else {}
    return {"model": getattr(model, "model_name", None), "in_chans": model.in_chans,
            "num_classes": model.num_classes, "class_names": getattr(model, "class_names", None),
            "input_size": data["input_size"], "mean": list(data["mean"]), "std": list(data["std"]),
            "crop_pct": data["crop_pct"], "interpolation": data["interpolation"], "crop_mode": data["crop_mode"],
            **written, **({"int8": True} if int8 else {})}


@contextlib.contextmanager
def exported_file(output: Path, fmt: Format):
    """The path to write `output` in format `fmt` to; it takes `output`'s place when the block ends
    without an error (an OpenVINO IR: its weights `.bin` first, then the `.xml`; an .mlpackage folder
    whole), and nothing is left behind when it does not."""
    if output.suffix != fmt.suffix and (fmt.backend or fmt.suffix == ".mlpackage"):  # read by their suffix
        extra = " (its weights go beside it as NAME.bin)" if fmt.name == "openvino" else ""
        raise ValueError(f"--format {fmt.name} writes NAME{fmt.suffix}{extra}: got --output {output}")
    if fmt.suffix == ".mlpackage":  # a folder
        with atomic_dir(output) as written:
            yield written
        return
    with atomic_file(output) as tmp:
        written = tmp.with_suffix(fmt.suffix)  # engines name what they write after the suffix they are given
        try:
            yield written
            if fmt.name == "openvino":
                os.replace(written.with_suffix(".bin"), output.with_suffix(".bin"))
            os.replace(written, tmp)
        finally:
            if written != tmp:
                written.unlink(missing_ok=True)
                written.with_suffix(".bin").unlink(missing_ok=True)


def _checked(model: nn.Module, written: Path, fmt: Format, dynamic_batch: bool, output: Path) -> list:
    if fmt.tolerance is None:
        return []
    checks = check(model, written, fmt, dynamic_batch)
    worst = max(diff for _, diff in checks)
    if not worst <= fmt.tolerance:
        raise RuntimeError(f"exported {fmt.name} differs from the eager model by {worst:.2e} "
                           f"(> {fmt.tolerance:g}); {output} not written")
    return checks


def _write_sidecar(output: Path, meta: dict) -> None:
    with atomic_file(output.with_name(output.name + ".json")) as tmp:
        tmp.write_text(json.dumps(meta, indent=2))


def export(model: nn.Module, output: str | Path, fmt: str, dynamic_batch: bool = False,
           notes: list[str] | None = None) -> list[tuple[int, float]]:
    """Write `model` as `fmt` to `output` (atomically), verify it, and return the checks; what the
    writer reports (delegation, precisions) is appended to `notes`."""
    chosen = format_named(fmt)
    chosen.require()
    if dynamic_batch and not chosen.dynamic_batch:
        raise ValueError(f"--format {fmt} programs take batch 1, as a device runs them: drop --dynamic-batch")
    output = Path(output)
    model = model.eval()
    with exported_file(output, chosen) as written:
        said = chosen.write(model, written, _example(model, 2), dynamic_batch)
        checks = _checked(model, written, chosen, dynamic_batch, output)
    _write_sidecar(output, sidecar(model, chosen))
    if notes is not None:
        notes.extend(said)
    return checks


def int8_format(fmt: str) -> Format:
    """The format named, if it has an INT8 writer; else a one-line error naming those that have."""
    chosen = format_named(fmt)
    if chosen.int8 is None:
        offered = ", ".join(name for name, f in FORMATS.items() if f.int8)
        raise ValueError(f"--int8 is offered for --format {offered}, not {fmt}")
    return chosen


def export_int8(model: nn.Module, output: str | Path, fmt: str, calibration: list[torch.Tensor]) -> list[str]:
    """Write `model` quantized to INT8 as `fmt` (calibrated on `calibration`, batches of preprocessed
    images, where the format's INT8 is calibrated); returns the writer's notes."""
    chosen = int8_format(fmt)
    chosen.require()
    output = Path(output)
    with exported_file(output, chosen) as written:
        notes = chosen.int8(model.eval().cpu(), calibration, written, data_config(model)["input_size"])
    _write_sidecar(output, sidecar(model, chosen, int8=True))
    return notes


def _newer(found: str, installed: str) -> bool:
    from packaging.version import Version

    return Version(found) > Version(installed)


def load_exported(path: str | Path, backend: str = "pytorch") -> nn.Module:
    """An exported file (.onnx, OpenVINO .xml, ExecuTorch .pte, LiteRT .tflite) as a module images ->
    logits, described by its sidecar JSON (classes, channels, preprocessing), so that eval and predict
    take it as they take a model. It runs on its own engine, or an ONNX file on OpenVINO when asked
    (OpenVINO reads ONNX, INT8 QDQ graphs included)."""
    path = Path(path)
    fmt = format_of_file(path)
    meta_path = path.with_name(path.name + ".json")
    if fmt is None:
        raise ValueError(f"{path}: not a file any engine here runs (one of {', '.join(f.suffix for f in FORMATS.values() if f.run)})")
    if not path.is_file() or not meta_path.is_file():
        raise FileNotFoundError(f"{path}: need the exported file and its {meta_path.name} sidecar (from convnext export)")
    meta = json.loads(meta_path.read_text())
    engine = "openvino" if fmt.name == "onnx" and backend == "openvino" else fmt.backend
    if backend not in ("pytorch", engine):
        raise ValueError(f"{path} is a {fmt.name} file: it runs with --backend {fmt.backend}, not {backend}")
    installed = fmt.require(runtime=True) if engine == fmt.backend else FORMATS["openvino"].require()
    if engine == fmt.backend and meta.get("engine_version") and _newer(meta["engine_version"], installed):
        raise ValueError(f"{path} was written for {meta['engine']} {meta['engine_version']}, newer than the "
                         f"{installed} installed here: upgrade it (pip install -U {meta['engine']}) or export again")
    description = nn.Module()
    description.in_chans, description.num_classes = meta["in_chans"], meta["num_classes"]
    description.class_names, description.model_name = meta["class_names"], meta.get("model")
    description.data_config = {k: meta[k] for k in ("input_size", "mean", "std", "crop_pct", "interpolation", "crop_mode")
                               if k in meta}
    if fmt.signature:
        _check_signature(path, fmt, meta)
    runner = FORMATS["openvino"].run(path) if engine == "openvino" else fmt.run(path)
    return Compiled(description, engine, runner)


def _check_signature(path: Path, fmt: Format, meta: dict) -> None:
    """A classifier's program: one image of the sidecar's size in, the sidecar's classes out."""
    try:
        inputs, outputs = fmt.signature(path)
    except Exception as error:  # the engine cannot read it: a damaged file, or from a newer engine
        raise ValueError(f"{path}: {fmt.backend} cannot read it ({str(error).splitlines()[0] if str(error) else type(error).__name__})") from None
    size = meta["input_size"]
    expected_in, expected_out = (1, meta["in_chans"], size, size), (1, meta["num_classes"])
    if tuple(map(int, inputs)) != expected_in or tuple(map(int, outputs)) != expected_out:
        raise ValueError(f"{path} takes {tuple(map(int, inputs))} and gives {tuple(map(int, outputs))}: not the "
                         f"classifier its sidecar describes ({expected_in} -> {expected_out})")
