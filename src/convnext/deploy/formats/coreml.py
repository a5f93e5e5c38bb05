"""Core ML ML programs (.mlpackage) converted by coremltools, the convolutions and matrix products in
float16, the statistics in float32.

    convnext export --weights runs/my-run --format coreml --output model.mlpackage

Core ML computes in float16 by default, and in float16 ConvNeXt's LayerNorm variance overflows in the
last stages (facebookresearch/ConvNeXt#80): LayerNorm, GELU and GRN's reductions are kept float32 (an
op selector on `compute_precision`), which `float32_ops` reads back from the converted spec. Core ML
predicts only on macOS (apple/coremltools#2658), so here a file is converted and its spec checked, never
run.
"""
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import torch
from torch import nn

from ..inference import optimize_for_inference

# MIL operations that stay float32: LayerNorm, GELU, and GRN's spatial L2 norm, channel mean and ratio.
FLOAT32_OPS = ("layer_norm", "gelu", "reduce_l2_norm", "reduce_mean", "real_div")


def _convert(model: nn.Module, x: torch.Tensor):
    import coremltools as ct

    folded = optimize_for_inference(model.eval(), channels_last=False, accelerated=False)
    with torch.no_grad():
        program = torch.export.export(folded, (x[:1],)).run_decompositions({})
    precision = ct.transform.FP16ComputePrecision(op_selector=lambda op: op.op_type not in FLOAT32_OPS)
    return ct.convert(program, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS16,
                      compute_precision=precision)


def write(model: nn.Module, path: Path, x: torch.Tensor, dynamic_batch: bool) -> list[str]:
    """The model as an ML program package (a folder); returns what ran in which precision."""
    converted = _convert(model, x)
    with tempfile.TemporaryDirectory(prefix="convnext-coreml-") as folder:  # coremltools names the package itself
        package = Path(folder) / "model.mlpackage"
        converted.save(str(package))
        shutil.copytree(package, path, dirs_exist_ok=True)  # into the folder that takes `path`'s place
    kept = precisions(converted.get_spec())
    return ["float32: " + ", ".join(f"{op} x{n}" for op, n in sorted(kept["float32"].items())),
            "float16: " + ", ".join(f"{op} x{n}" for op, n in sorted(kept["float16"].items())),
            "Core ML predicts on macOS only: the package was converted and its spec checked, not run here"]


def precisions(spec) -> dict[str, Counter]:
    """{"float32": ops, "float16": ops}: the computing operations of an ML program by output dtype."""
    from coremltools.proto.MIL_pb2 import DataType

    counts = {"float32": Counter(), "float16": Counter()}
    for function in spec.mlProgram.functions.values():
        for op in function.block_specializations[function.opset].operations:
            if op.type in ("const", "cast"):
                continue
            dtype = op.outputs[0].type.tensorType.dataType
            name = {DataType.FLOAT32: "float32", DataType.FLOAT16: "float16"}.get(dtype)
            if name:
                counts[name][op.type] += 1
    return counts


def load_spec(path: Path):
    import coremltools as ct

    return ct.utils.load_spec(str(path))


def version() -> str:
    from importlib.metadata import version as installed

    return installed("coremltools")
