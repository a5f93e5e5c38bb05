"""INT8 post-training quantization of a trained model, calibrated on the user's own images, by one of two
maintained tools: OpenVINO's NNCF on the folded model converted to OpenVINO (an IR, .xml + .bin, for
OpenVINO), or ONNX Runtime's static QDQ quantization of the folded model's ONNX graph (an .onnx file
that ONNX Runtime and OpenVINO both run). NNCF's IR is the one to deploy: measured side by side it runs
ConvNeXt-T 1.7x faster than the QDQ file on ONNX Runtime with VNNI, and the QDQ file on OpenVINO is slow
without VNNI (docs/performance.md, "INT8").

    convnext export --weights runs/my-run --format openvino --int8 --calibration-data ~/photos --output m.int8.xml
    convnext export --weights runs/my-run --format onnx --int8 --calibration-data ~/photos --output m.int8.onnx

Only the convolutions and matrix products are quantized (weights int8 per output channel, activations
8-bit per tensor, calibrated on the images given); LayerNorm, GELU, GRN and the classifier head stay
float32, as the reports of accuracy collapsing around ConvNeXt's LayerNorm under full quantization
(openvino_notebooks#683, nncf#1754) suggest. With ONNX Runtime activations are uint8 and weights int8
(U8S8), the combination x86 VNNI runs natively; `reduce_range` keeps weights to 7 bits where the CPU has
no VNNI, against the overflow of AVX2's 16-bit intermediate sums. NNCF is told the model is a
transformer (its LayerNorm and GELU patterns stay float) with the mixed preset (asymmetric activations,
as GELU's outputs are mostly positive); OpenVINO itself guards against that overflow on CPUs without
VNNI.
"""
import tempfile
from pathlib import Path
from typing import Iterable

import torch
from torch import nn

from ..runtime.hardware import INT8_FLAGS, cpu_flags
from .formats.standard import to_openvino, write_onnx
from .inference import optimize_for_inference

QUANTIZED_OPS = ["Conv", "MatMul", "Gemm"]
MIN_CALIBRATION_IMAGES = 16


def has_vnni() -> bool:
    """Whether the CPU multiplies int8 natively (AVX512-VNNI, AVX-VNNI or AMX-INT8)."""
    return any(flag in cpu_flags() for flag in INT8_FLAGS)


def _last_matrix_product(path: Path) -> list[str]:
    """The classifier head's node (the graph's last Gemm or MatMul), kept float32."""
    import onnx

    products = [node.name for node in onnx.load(str(path)).graph.node if node.op_type in ("Gemm", "MatMul")]
    return products[-1:]


def require_quantizer(engine: str) -> None:
    """The packages that quantize for `engine` are installed, or a one-line error naming the extra."""
    extra = "openvino" if engine == "openvino" else "export"
    try:
        __import__(engine)
    except ImportError:
        raise ValueError(f"--int8 for {engine} needs the {engine} package: pip install 'convnext[{extra}]'") from None
    if engine == "openvino":
        try:
            import nncf  # noqa: F401
        except ImportError:
            raise ValueError("--format openvino --int8 quantizes with NNCF: pip install 'convnext[openvino]'") from None


def quantize(model: nn.Module, calibration: Iterable[torch.Tensor], output: Path, size: int,
             engine: str = "onnxruntime") -> None:
    """Write `output`: the model folded, with int8 convolutions and matrix products calibrated on
    `calibration` (batches of preprocessed images): an ONNX file quantized by ONNX Runtime, or with
    engine "openvino" an OpenVINO IR (`output` is the .xml) quantized by NNCF."""
    batches = [batch.float().contiguous().numpy() for batch in calibration]
    images = sum(len(b) for b in batches)
    if images < MIN_CALIBRATION_IMAGES:
        raise ValueError(f"calibration needs at least {MIN_CALIBRATION_IMAGES} images, got {images}")
    if batches[0].shape[1] != model.in_chans:
        raise ValueError(f"the calibration images have {batches[0].shape[1]} channels; the model takes {model.in_chans}")
    folded = optimize_for_inference(model.eval(), channels_last=False)
    if engine == "openvino":
        _with_nncf(folded, batches, output)
    else:
        _with_onnxruntime(folded, batches, output, size)


def _with_nncf(folded: nn.Module, batches: list, output: Path) -> None:
    import nncf
    import openvino

    converted = to_openvino(folded, torch.from_numpy(batches[0][:2]), dynamic_batch=True)
    head = [op.get_friendly_name() for op in converted.get_ordered_ops() if op.get_type_name() == "MatMul"][-1:]
    quantized = nncf.quantize(converted, nncf.Dataset(batches), subset_size=len(batches),
                              preset=nncf.QuantizationPreset.MIXED, model_type=nncf.ModelType.TRANSFORMER,
                              ignored_scope=nncf.IgnoredScope(names=head))
    openvino.save_model(quantized, str(output), compress_to_fp16=False)


def _with_onnxruntime(folded: nn.Module, batches: list, output: Path, size: int) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.remaining = iter(batches)

        def get_next(self):
            batch = next(self.remaining, None)
            return None if batch is None else {"x": batch}

    with tempfile.TemporaryDirectory() as folder:
        float_path = Path(folder) / "model.onnx"
        write_onnx(folded, float_path, torch.randn(2, batches[0].shape[1], size, size), dynamic_batch=True)
        quantize_static(str(float_path), str(output), Reader(), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=QUANTIZED_OPS, nodes_to_exclude=_last_matrix_product(float_path),
                        per_channel=True, reduce_range=not has_vnni(), activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8)
