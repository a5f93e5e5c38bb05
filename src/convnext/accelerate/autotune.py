"""Kernel choices measured on the machine that runs them, once per process and shape.

Several layers can be computed two or more exact ways (a pointwise layer as a BLAS GEMM or as a
oneDNN 1x1 convolution, a depthwise weight gradient by oneDNN or as another convolution, a block's
inference over the whole batch or over cache-sized chunks of it), and which is faster depends on the
CPU: on one 2-core AMD EPYC oneDNN ran ConvNeXt-T's GEMMs at twice the BLAS's speed, on a Zen 4 and
on an Intel Xeon with AMX the two were level (docs/performance.md); on GPUs the pointwise layers may
run on cuBLAS or cuDNN. So, like `torch.backends.cudnn.benchmark`, the first call with a new `Key`
times every candidate on the real inputs and later calls take the winner.

The first candidate of each op is its default: the plain PyTorch computation, which runs wherever
PyTorch runs, and what runs when nothing is measured (on devices other than CPUs and CUDA GPUs, while
tracing or compiling, under `torch.use_deterministic_algorithms`, or with `tuner.enabled = False`). A
candidate that raises when it is first tried (a oneDNN kernel this CPU lacks: bf16 convolutions
without AVX-512 BW/VL/DQ) is left out of the race and said once in the debug log.

Each accelerated model holds its own `Autotuner` (`accelerate.autotuner_of(model)`); nothing is kept
per process. The choices travel as its `state_dict()`: a training run stores them in its checkpoints
and loads them when it resumes (a resumed run computes with the kernels it started with and ends
bit-identical), and under DDP rank 0's are given to every rank (`agree`), so all ranks run the same
kernels. Its structure, version 1:

    {"version": 1, "choices": [{"op": "pointwise", "device": "cpu", "dtype": "float32",
                                "autocast": null, "sizes": [50176, 96, 384], "mode": "training",
                                "kernel": "conv"}, ...]}
"""
import ast
import logging
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Callable, Iterator

import torch

log = logging.getLogger(__name__)
Candidates = dict[str, Callable[[], object]]
STATE_VERSION = 1


@dataclass(frozen=True)
class Key:
    """What one choice is made for: the op and everything its speed depends on."""
    op: str  # "pointwise", "pointwise_gelu", "depthwise_weight_grad", "block_chunks"
    device: str  # "cpu", "cuda"
    dtype: str  # the input's, as torch names it without the prefix: "float32"
    autocast: str | None  # autocast's dtype, or None when it is off
    sizes: tuple[int, ...]  # the sizes that decide the speed (each op in accelerate/kernels.py says which)
    mode: str = "inference"  # "inference", "training" (forward and backward), "frozen" (inference, frozen weights)

    def as_dict(self) -> dict:
        return {**asdict(self), "sizes": list(self.sizes)}

    @classmethod
    def from_dict(cls, fields: dict) -> "Key":
        return cls(**{**fields, "sizes": tuple(fields["sizes"])})


def dtype_name(dtype: torch.dtype | None) -> str | None:
    return None if dtype is None else str(dtype).removeprefix("torch.")


def exporting() -> bool:
    """Whether the model is being recorded into a graph for another runtime (torch.jit.trace, torch.export,
    ONNX, OpenVINO's conversion) rather than run."""
    return torch.jit.is_tracing() or torch.compiler.is_exporting() or torch.onnx.is_in_onnx_export()


def timings(candidates: Candidates, device: torch.device = torch.device("cpu"), rounds: int = 3) -> dict[str, float]:
    """Each candidate's best-of-`rounds` wall time in seconds, candidates interleaved so that machine
    noise hits them alike. Each has been called once before (`Autotuner.runnable`)."""
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


class Autotuner:
    """The kernel choices of this process: measured on first use of a key, then cached."""

    # Closer timings than this are noise (best-of-3 of one layer): the default is kept, so that a process
    # does not take one kernel or the other at random where they are level (an H100's cuBLAS and cuDNN on
    # several of ConvNeXt-T's pointwise shapes, a Zen 4's BLAS and oneDNN on others).
    margin = 0.05

    def __init__(self):
        self.enabled = True
        # False: keys not yet chosen take the default instead of being measured. A training run stops
        # measuring at its first checkpoint, so that what it computes afterwards depends only on the
        # checkpoint (which holds the choices): a resumed run and an uninterrupted one then take the same
        # kernels for shapes first met later (detection's random scales), where two measurements may not.
        self.measuring = True
        self._choices: dict[Key, str] = {}
        self._seconds: dict[Key, dict[str, float]] = {}  # each candidate's best time, for reports
        self._forced: dict[str, str] = {}  # op -> candidate, for tests that must cover every path
        self.version = 0  # how many choices this process has measured: a run asks whether any are new

    def measurable(self, example: torch.Tensor) -> bool:
        """Whether timing on `example` would mean anything: a real CPU or CUDA tensor in eager execution."""
        on_gpu = example.device.type == "cuda"
        if on_gpu and torch.cuda.is_current_stream_capturing():  # a CUDA graph records, nothing may synchronize
            return False
        return (self.enabled and (on_gpu or example.device.type == "cpu") and not exporting()
                and not torch.compiler.is_compiling() and not torch.are_deterministic_algorithms_enabled()
                and not isinstance(example, torch._subclasses.FakeTensor))

    def active(self, op: str, example: torch.Tensor) -> bool:
        """Whether `choose` could pick anything but the default (callers skip building candidates if not)."""
        return op in self._forced or self.measurable(example)

    def choose(self, key: Key, example: torch.Tensor, candidates: Callable[[], Candidates],
               names: tuple[str, ...]) -> str:
        """The name of the fastest of `names` for `key`; `candidates()` builds them only to be timed. The
        default (the first) keeps its place unless another is at least `margin` faster."""
        if key.op in self._forced:
            return self._forced[key.op]
        # Before the key is hashed: under a compiler its sizes may be symbolic, and nothing is measured.
        if len(names) == 1 or not self.measurable(example):
            return names[0]
        entry = key
        if entry not in self._choices and not self.measuring:
            return names[0]
        if entry not in self._choices:
            seconds = self._seconds[entry] = timings(self.runnable(entry, candidates()), example.device)
            best = min(seconds, key=seconds.get)
            self._choices[entry] = best if seconds[best] < (1 - self.margin) * seconds[names[0]] else names[0]
            self.version += 1
        # A loaded or earlier choice that is no candidate now (TF32 settings changed, a build without the
        # fused kernel) gives way to the default.
        return self._choices[entry] if self._choices[entry] in names else names[0]

    @staticmethod
    def runnable(key: Key, candidates: Candidates) -> Candidates:
        """The candidates whose first call succeeds (it builds oneDNN primitives and faults in pages, so it
        is never timed). The default is the plain PyTorch layer: if it fails, the model fails, so it raises."""
        default, kept = next(iter(candidates)), {}
        for name, run in candidates.items():
            try:
                run()
            except Exception as error:  # noqa: BLE001 -- any failure means "not on this machine"
                if name == default:
                    raise
                log.debug("%s: candidate %r left out on this machine: %s", key, name, str(error).splitlines()[0])
                continue
            kept[name] = run
        return kept

    def choices(self) -> dict[Key, str]:
        """Every choice made or loaded in this process."""
        return dict(self._choices)

    def measured(self) -> dict[Key, dict[str, float]]:
        """The seconds behind each choice this process measured (not those loaded), for benchmark reports."""
        return {key: dict(times) for key, times in self._seconds.items()}

    def summary(self) -> str:
        """"pointwise conv 12 linear 4; ...": how often each op took each kernel (shapes per choice)."""
        counts = Counter((key.op, name) for key, name in self._choices.items())
        ops = sorted({op for op, _ in counts})
        return "; ".join(f"{op} " + " ".join(f"{name} {n}" for (o, name), n in sorted(counts.items()) if o == op)
                         for op in ops)

    def state_dict(self) -> dict:
        return {"version": STATE_VERSION,
                "choices": [{**key.as_dict(), "kernel": name} for key, name in self._choices.items()]}

    def load_state_dict(self, state: dict) -> None:
        """Take saved choices as made (a resumed run keeps its kernels; a DDP rank takes rank 0's).
        Checkpoints written before version 1 held {"op (tuple)": kernel}; they load too."""
        if "version" not in state:
            state = {"choices": [{**_legacy_key(text).as_dict(), "kernel": name} for text, name in state.items()]}
        for entry in state["choices"]:
            fields = {k: v for k, v in entry.items() if k != "kernel"}
            self._choices[Key.from_dict(fields)] = entry["kernel"]

    def reset(self) -> None:
        self._choices.clear()
        self._seconds.clear()

    @contextmanager
    def forced(self, **ops: str) -> Iterator[None]:
        """Within the block, op=candidate is taken without measuring (tests cover every path with it)."""
        saved = dict(self._forced)
        self._forced.update(ops)
        try:
            yield
        finally:
            self._forced.clear()
            self._forced.update(saved)

    def agree(self) -> None:
        """Every process of the default process group takes rank 0's choices (a collective: all ranks call
        it at the same point). Keys rank 0 never measured keep this rank's own choice."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        shared = [self.state_dict() if dist.get_rank() == 0 else None]
        dist.broadcast_object_list(shared, src=0)
        if dist.get_rank() != 0:
            self.load_state_dict(shared[0])


def _legacy_key(text: str) -> Key:
    """A key as checkpoints before STATE_VERSION 1 wrote it: "op (a, b, ...)", the tuple per op."""
    op, _, rest = text.partition(" ")
    values = ast.literal_eval(rest)  # a tuple of str, int, bool and tuples: never code
    if op in ("pointwise", "pointwise_gelu"):  # (device, dtype, autocast, rows, in, out[, packable], training)
        device, dtype, autocast, *sizes = values[:6]
        packable, training = (values[6], values[7]) if len(values) == 8 else (False, values[6])
        mode = "training" if training else "frozen" if packable else "inference"
    elif op == "depthwise_weight_grad":  # (dtype, shape, kernel)
        device, (dtype, shape, k), autocast, mode = "cpu", values, "None", "training"
        sizes = [*shape, k]
    else:  # block_chunks: (dtype, autocast, shape, width)
        device, (dtype, autocast, shape, width), mode = "cpu", values, "inference"
        sizes = [*shape, width]
    autocast = None if autocast == "None" else autocast.removeprefix("torch.")
    return Key(op, device, dtype.removeprefix("torch."), autocast, tuple(sizes), mode)

