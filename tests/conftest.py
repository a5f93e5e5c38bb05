import os

import pytest
import torch

from convnext.models import hardware, kernels


def pytest_configure(config):
    """CONVNEXT_TEST_AS_AVX2=1 makes this machine answer like an AVX2-only CPU (AMD Zen 3, most laptops):
    no AVX-512 flags, and oneDNN's bf16 conv refused as it is there. With ATEN_CPU_CAPABILITY=avx2 and
    ONEDNN_MAX_CPU_ISA=AVX2 (which hold PyTorch's and oneDNN's kernels to AVX2) it is the CI leg that
    keeps the next CPU kind from surprising us (Makefile: test-avx2)."""
    if os.environ.get("CONVNEXT_TEST_AS_AVX2") != "1":
        return
    model, flags = hardware._cpuinfo()
    avx2_flags = frozenset(flag for flag in flags if not flag.startswith(("avx512", "amx", "avx_vnni")))
    hardware._cpuinfo = lambda: (model, avx2_flags)
    fused = kernels.POINTWISE_GELU.get("fused")

    def fused_without_bf16(x, weight, bias):
        if torch.bfloat16 in (x.dtype, kernels._autocast_dtype(x)):  # the message PyTorch 2.14 gives on a Zen 3
            raise RuntimeError("mkldnn_convolution: bf16 path needs the cpu support avx_ne_convert or avx512bw, "
                               "avx512vl and avx512dq")
        return fused(x, weight, bias)

    if fused is not None:
        kernels.POINTWISE_GELU["fused"] = fused_without_bf16
    kernels.onednn_bf16 = lambda: False


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
    # Every test that compiles compiles the same forward code: the next starts afresh, below the recompile
    # limit and with no earlier shapes that would make its compilation dynamic.
    torch._dynamo.reset()
