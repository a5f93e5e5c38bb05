"""Timing on the device at hand: seconds per call (GPU work waited for), and the matrix-multiply peak
that throughput is compared to."""
import time

import torch
import torch.nn.functional as F

from ..runtime.precision import tf32


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, iters: int, device: torch.device) -> float:
    """Seconds per call of `fn`, after one untimed call (warm-up and compilation)."""
    fn()
    _sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / iters


def matmul_peak_gflops(device: torch.device, n: int | None = None, dtype: torch.dtype = torch.float32) -> float:
    """Measured matrix-multiply throughput in `dtype`: the ceiling convolution-heavy models are compared to.

    The faster of `torch.mm` and the same (n, n) x (n, n) product as a 1x1 convolution, since PyTorch
    routes the two through different libraries (BLAS and oneDNN on CPUs, cuBLAS and cuDNN on GPUs)
    and either may be the faster on a given machine.
    """
    n = n or (8192 if device.type == "cuda" else 2048)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    image = torch.randn(1, n, n // 64, 64, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
    kernel = b[:, :, None, None]  # n positions of n channels, times an (n, n) weight
    candidates = (lambda: a @ b, lambda: F.conv2d(image, kernel))
    with tf32(convolutions=False, matmuls=False):  # fp32 means fp32, not TF32
        seconds = min(timed(fn, 3, device) for fn in candidates for _ in range(3))
    return 2 * n**3 / seconds / 1e9
