"""Export formats as data: one `Format` entry per format says how it is written, how it runs, what it is
called, what installs it and how close to PyTorch it must come. `deploy/export.py` writes and checks any
of them, `commands/export.py` offers them, and eval, predict, serve and bench run a file of any format
that has a runner. A new format is one module here and one entry in `FORMATS`.
"""
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Callable

from . import coreml, executorch_pte, litert, standard

Writer = Callable  # (model, path, example batch, dynamic_batch) -> notes to print
Runner = Callable  # path -> (images -> logits)
Quantizer = Callable  # (model, calibration batches, path, input size) -> notes to print


@dataclass(frozen=True)
class Format:
    name: str  # --format
    suffix: str  # the file's suffix (.mlpackage: a folder)
    package: str  # the distribution that writes it (its version is recorded beside the file)
    extra: str | None  # pip install "convnext[EXTRA]" installs it; None: PyTorch itself
    write: Writer
    run: Runner | None = None  # None: converted and checked here, run elsewhere (Core ML: macOS)
    backend: str | None = None  # the engine that runs the file (--backend), where it is not PyTorch
    runtime: str | None = None  # the distribution that runs it, if not `package` (LiteRT: ai-edge-litert)
    int8: Quantizer | None = None
    int8_calibrated: bool = True  # whether --int8 needs --calibration-data
    dynamic_batch: bool = True  # False: the file takes batch 1, as devices run it
    signature: Callable | None = None  # path -> (input shape, output shape), read without running
    tolerance: float | None = 1e-4  # float32: max |file - PyTorch| on random inputs; None: not run here

    def installed(self, runtime: bool = False) -> str | None:
        """The version of the package that writes (or, with `runtime`, runs) this format, or None."""
        try:
            return version((self.runtime or self.package) if runtime else self.package)
        except PackageNotFoundError:
            return None

    def require(self, runtime: bool = False) -> str:
        """The installed version, or a one-line error naming the extra that installs it."""
        found = self.installed(runtime)
        if found is None:
            what = (self.runtime or self.package) if runtime else self.package
            raise ValueError(f"--format {self.name} needs {what}: pip install 'convnext[{self.extra}]'")
        return found


def _quantized_for(engine: str) -> Quantizer:
    """INT8 by `deploy/quantize.py`: ONNX Runtime's static QDQ, or NNCF for an OpenVINO IR."""
    def write_int8(model, batches, path: Path, size: int) -> list[str]:
        from ..quantize import quantize

        quantize(model, batches, path, size, engine)
        return []
    return write_int8


FORMATS = {f.name: f for f in (
    Format("onnx", ".onnx", "onnx", "export", standard.write_onnx, standard.run_onnx, "onnxruntime",
           runtime="onnxruntime", int8=_quantized_for("onnxruntime")),
    Format("openvino", ".xml", "openvino", "openvino", standard.write_openvino, standard.run_openvino, "openvino",
           int8=_quantized_for("openvino")),
    Format("torchscript", ".pt", "torch", None, standard.write_torchscript, standard.run_torchscript),
    Format("exported-program", ".pt2", "torch", None, standard.write_exported_program, standard.run_exported_program),
    Format("executorch", ".pte", "executorch", "executorch", executorch_pte.write, executorch_pte.runner,
           "executorch", int8=executorch_pte.write_int8, dynamic_batch=False, signature=executorch_pte.signature),
    Format("tflite", ".tflite", "litert-torch", "tflite", litert.write, litert.runner, "litert",
           runtime="ai-edge-litert", int8=litert.write_int8, int8_calibrated=False, dynamic_batch=False,
           signature=litert.signature),
    Format("coreml", ".mlpackage", "coremltools", "coreml", coreml.write, tolerance=None),
)}
RUNNABLE = {f.suffix: f for f in FORMATS.values() if f.run and f.backend}  # files eval/predict/serve/bench take


def format_named(name: str) -> Format:
    if name not in FORMATS:
        raise ValueError(f"unknown export format {name!r}; choose from {', '.join(FORMATS)}")
    return FORMATS[name]


def format_of_file(path: str | Path) -> Format | None:
    """The runnable format a file's suffix names, or None (weights, a run folder)."""
    return RUNNABLE.get(Path(path).suffix)
