"""Kernel choices measured on the machine that runs them, once per process and shape.

Several layers here can be computed two or more exact ways (a pointwise layer as a BLAS GEMM or as a
oneDNN 1x1 convolution, a depthwise weight gradient by oneDNN or as another convolution, a block's
inference over the whole batch or over cache-sized chunks of it), and which is faster depends on the
CPU: on one 2-core AMD EPYC oneDNN ran ConvNeXt-T's GEMMs at twice the BLAS's speed, on a Zen 4 and
on an Intel Xeon with AMX the two were level (docs/performance.md); on GPUs the pointwise layers may
run on cuBLAS or cuDNN. So, like `torch.backends.cudnn.benchmark`, the first call with a new key
times every candidate on the real inputs and later calls take the winner.

The first candidate of each op is its default: the plain PyTorch computation, which runs wherever
PyTorch runs, and what runs when nothing is measured (on devices other than CPUs and CUDA GPUs, while
tracing or compiling, under `torch.use_deterministic_algorithms`, or with `enabled = False`). A
candidate that raises when it is first tried (a oneDNN kernel this CPU lacks: bf16 convolutions
without AVX-512 BW/VL/DQ) is left out of the race and said once in the debug log. A training run
stores `choices()` in its checkpoints and `pin`s them when it resumes, so a resumed run computes
with the kernels it started with and ends bit-identical.
"""
import logging
import time
from contextlib import contextmanager
from typing import Callable, Iterator

import torch

log = logging.getLogger(__name__)
enabled = True
# Closer timings than this are noise (best-of-3 of one layer): the default is kept, so that a process
# does not take one kernel or the other at random where they are level (an H100's cuBLAS and cuDNN on
# several of ConvNeXt-T's pointwise shapes, a Zen 4's BLAS and oneDNN on others).
MARGIN = 0.05
_choices: dict[str, str] = {}  # "op key" -> the winning candidate's name
_seconds: dict[str, dict[str, float]] = {}  # "op key" -> each candidate's best time, for reports
_forced: dict[str, str] = {}  # op -> candidate, for tests that must cover every path

Candidates = dict[str, Callable[[], object]]


def exporting() -> bool:
    """Whether the model is being recorded into a graph for another runtime (torch.jit.trace, torch.export,
    ONNX, OpenVINO's conversion) rather than run."""
    return torch.jit.is_tracing() or torch.compiler.is_exporting() or torch.onnx.is_in_onnx_export()


def measurable(example: torch.Tensor) -> bool:
    """Whether timing on `example` would mean anything: a real CPU or CUDA tensor in eager execution."""
    on_gpu = example.device.type == "cuda"
    if on_gpu and torch.cuda.is_current_stream_capturing():  # a CUDA graph records, nothing may synchronize
        return False
    return (enabled and (on_gpu or example.device.type == "cpu") and not exporting()
            and not torch.compiler.is_compiling() and not torch.are_deterministic_algorithms_enabled()
            and not isinstance(example, torch._subclasses.FakeTensor))


def active(op: str, example: torch.Tensor) -> bool:
    """Whether `choose` could pick anything but the default (callers skip building candidates if not)."""
    return op in _forced or measurable(example)


def choose(op: str, key: tuple, example: torch.Tensor, candidates: Callable[[], Candidates],
           names: tuple[str, ...]) -> str:
    """The name of the fastest of `names` for (op, key); `candidates()` builds them only to be timed.
    The default (the first) keeps its place unless another is at least `MARGIN` faster."""
    if op in _forced:
        return _forced[op]
    if len(names) == 1 or not measurable(example):  # before the key is formatted: it may hold symbolic sizes
        return names[0]
    entry = f"{op} {key}"
    if entry not in _choices:
        seconds = _seconds[entry] = timings(runnable(entry, candidates()), example.device)
        best = min(seconds, key=seconds.get)
        _choices[entry] = best if seconds[best] < (1 - MARGIN) * seconds[names[0]] else names[0]
    # A pinned or earlier choice that is no candidate now (TF32 settings changed, a build without the
    # fused kernel) gives way to the default.
    return _choices[entry] if _choices[entry] in names else names[0]


def runnable(entry: str, candidates: Candidates) -> Candidates:
    """The candidates whose first call succeeds (it builds oneDNN primitives and faults in pages, so it is
    never timed). The default is the plain PyTorch layer: if it fails, the model fails, so it raises."""
    default, kept = next(iter(candidates)), {}
    for name, run in candidates.items():
        try:
            run()
        except Exception as error:  # noqa: BLE001 -- any failure means "not on this machine"
            if name == default:
                raise
            log.debug("%s: candidate %r left out on this machine: %s", entry, name, str(error).splitlines()[0])
            continue
        kept[name] = run
    return kept


def timings(candidates: Candidates, device: torch.device = torch.device("cpu"), rounds: int = 3) -> dict[str, float]:
    """Each candidate's best-of-`rounds` wall time in seconds, candidates interleaved so that machine
    noise hits them alike. Each has been called once before (`runnable`)."""
    def finish():  # GPU kernels run asynchronously: a call's time is until its last kernel ends
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    best = dict.fromkeys(candidates, float("inf"))
    for _ in range(rounds):
        for name, run in candidates.items():
            finish()
            start = time.perf_counter()
            run()
            finish()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def choices() -> dict[str, str]:
    """Every choice made in this process (for a checkpoint)."""
    return dict(_choices)


def measured() -> dict[str, dict[str, float]]:
    """The seconds behind each choice this process measured (not those pinned), for benchmark reports."""
    return {entry: dict(times) for entry, times in _seconds.items()}


def pin(saved: dict[str, str]) -> None:
    """Take `saved` choices as made (a resumed run keeps its kernels)."""
    _choices.update(saved)


def reset() -> None:
    _choices.clear()
    _seconds.clear()


@contextmanager
def forced(**ops: str) -> Iterator[None]:
    """Within the block, op=candidate is taken without measuring (tests cover every path with it)."""
    saved = dict(_forced)
    _forced.update(ops)
    try:
        yield
    finally:
        _forced.clear()
        _forced.update(saved)
