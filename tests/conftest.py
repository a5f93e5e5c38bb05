import os

import pytest
import torch

from convnext.accelerate import kernels
from convnext.runtime import hardware


def pytest_configure(config):
    """CONVNEXT_TEST_AS_AVX2=1 makes this machine answer like an AVX2-only CPU (AMD Zen 3, most laptops):
    no AVX-512 flags, and no oneDNN bf16 kernels, so none is a candidate. With ATEN_CPU_CAPABILITY=avx2
    and ONEDNN_MAX_CPU_ISA=AVX2 (which hold PyTorch's and oneDNN's kernels to AVX2) it is the CI leg
    that keeps the next CPU kind from surprising us (Makefile: test-avx2)."""
    if os.environ.get("CONVNEXT_TEST_AS_AVX2") != "1":
        return
    model, flags = hardware._cpuinfo()
    avx2_flags = frozenset(flag for flag in flags if not flag.startswith(("avx512", "amx", "avx_vnni")))
    hardware._cpuinfo = lambda: (model, avx2_flags)
    kernels.onednn_bf16 = lambda: False


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
    # Every test that compiles compiles the same forward code: the next starts afresh, below the recompile
    # limit and with no earlier shapes that would make its compilation dynamic.
    torch._dynamo.reset()


@pytest.fixture(scope="session")
def served_run(tmp_path_factory):
    """A tiny trained run (convnext_test, two steps on the digits) that the serving tests serve; read only."""
    from serving_helpers import train_tiny_run

    return train_tiny_run(tmp_path_factory.mktemp("served") / "run")
