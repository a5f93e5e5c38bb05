"""What the machine offers: the CPU's model and ISA flags, and whether a precision has hardware behind it.

Speed figures are only meaningful with the machine named (`describe`), and bfloat16 is only fast where
the CPU computes it natively: AVX512-BF16 (`vdpbf16ps`: AMD Zen 4 and later, Intel Cooper Lake and
later) or AMX (Intel Sapphire Rapids and later). Elsewhere oneDNN emulates it, slower than float32, so
`precision.amp_dtype` says so in one line and keeps float32 rather than crawl.
"""
from functools import cache

import torch

# The flags that decide CPU fast paths, as /proc/cpuinfo spells them, and how people name them.
ISA_FLAGS = {"avx512f": "AVX-512", "avx512_bf16": "AVX512-BF16", "amx_bf16": "AMX-BF16", "amx_tile": "AMX",
             "avx512_fp16": "AVX512-FP16", "avx512_vnni": "AVX512-VNNI", "avx_vnni": "AVX-VNNI"}
INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")  # int8 dot products in one instruction
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
FP16_FLAGS = ("avx512_fp16", "amx_fp16")


@cache
def _cpuinfo() -> tuple[str, frozenset[str]]:
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.read().splitlines()
    except OSError:  # not Linux
        return "CPU", frozenset()
    field = lambda name: next((l.split(":", 1)[1].strip() for l in lines if l.startswith(name)), "")  # noqa: E731
    return field("model name") or "CPU", frozenset(field("flags").split())


def cpu_model() -> str:
    return _cpuinfo()[0]


def cpu_flags() -> frozenset[str]:
    return _cpuinfo()[1]


def describe(device: torch.device | str = "cpu") -> str:
    """One line naming the machine: the GPU, or the CPU model, its threads and the ISA flags it has (what
    bf16 and INT8 run on among them, or that it has none)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    flags = cpu_flags()
    have = [label for flag, label in ISA_FLAGS.items() if flag in flags and flag != "amx_bf16"]
    if "avx512f" not in flags:
        have.insert(0, "no AVX-512")
    if not any(flag in flags for flag in INT8_FLAGS):
        have.append("no VNNI")
    return f"{cpu_model()}, {torch.get_num_threads()} threads, {' '.join(have)}"


def has_hardware(dtype: torch.dtype, device: torch.device | str = "cpu") -> bool:
    """Whether `device` computes `dtype` natively (not emulated)."""
    device = torch.device(device)
    if dtype == torch.float32:
        return True
    if device.type == "cuda":
        return dtype == torch.float16 or torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return True  # other accelerators: their own libraries decide
    wanted = BF16_FLAGS if dtype == torch.bfloat16 else FP16_FLAGS
    return any(flag in cpu_flags() for flag in wanted)


def onednn_bf16() -> bool:
    """Whether oneDNN's own bf16 kernels (its fused conv+GELU) run on this CPU: AVX-512 BW/VL/DQ,
    AVX-NE-CONVERT or ARM's bf16. Elsewhere they raise, although PyTorch's plain ops emulate bf16."""
    query = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)  # absent from builds without oneDNN
    return bool(torch.backends.mkldnn.is_available() and query is not None and query())
