"""Precision: which autocast dtype a run gets, what autocast is doing to a tensor now, and TF32.

`--amp bf16` is only worth it where the machine computes bf16 natively (`hardware.has_hardware`);
elsewhere the run keeps float32 and says so in one line.
"""
import sys
from contextlib import contextmanager
from typing import Iterator

import torch

from .hardware import cpu_model, has_hardware

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_dtype(x: torch.Tensor) -> torch.dtype | None:
    """The dtype autocast computes x's device's ops in right now, or None when autocast is off."""
    kind = x.device.type
    if kind not in ("cpu", "cuda"):  # meta tensors (MAC counting) have no autocast state
        return None
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else None


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype an op on x computes in: autocast's if it is on, else x's own."""
    return autocast_dtype(x) or x.dtype


def amp_dtype(amp: str | None, device: torch.device | str = "cpu", say=None) -> torch.dtype | None:
    """The autocast dtype for `--amp` on `device`, or None (float32) with one line said when the
    device has no hardware for it.
    """
    if amp is None:
        return None
    dtype = AMP_DTYPES[amp]
    if has_hardware(dtype, device):
        return dtype
    (say or (lambda text: print(text, file=sys.stderr)))(
        f"--amp {amp}: this {torch.device(device).type.upper()} ({cpu_model()}) has no {amp} hardware "
        f"({'AVX512-BF16 or AMX' if dtype == torch.bfloat16 else 'AVX512-FP16 or AMX-FP16'}); running in float32")
    return None


@contextmanager
def tf32(convolutions: bool, matmuls: bool) -> Iterator[None]:
    """Within the block, whether CUDA float32 convolutions (cuDNN) and GEMMs (cuBLAS) may round to TF32.
    PyTorch's defaults differ (convolutions yes, GEMMs no)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = convolutions, matmuls
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
