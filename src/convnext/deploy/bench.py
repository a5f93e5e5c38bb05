"""Benchmarks: our model (the reference, accelerated, optimized) against timm, torchvision and transformers
on the same weights.

Run by run interleaving (the order rotates every round) in one process, so machine noise hits every
contender alike; medians over rounds are reported. All inference rounds run before any training step. Peak training memory on CPU is the growth of a
fresh process's resident set over one training step sequence (spawned per contender); on CUDA it is
`torch.cuda.max_memory_allocated`.
"""
import copy
import json
import multiprocessing
import os
import statistics
from dataclasses import dataclass, replace
from typing import Callable

import torch
from torch import nn

from ..accelerate import Autotuner, accelerate
from ..models.counting import count_macs
from ..models.registry import create_model
from ..runtime.atomic import atomic_file, write_text
from ..runtime.hardware import describe
from ..runtime.precision import amp_dtype
from .backends import ON_DEVICE, on_backend, onnxruntime_runner, openvino_runner, require
from .compiled import Compiled
from .inference import optimize_for_inference
from .peers import PEERS
from .timing import matmul_peak_gflops, timed


@dataclass(frozen=True)
class BenchConfig:
    """What `convnext bench` measures, and how."""
    model: str = "convnext_tiny"
    batch: int = 16
    size: int = 224
    device: str = "cpu"
    peers: tuple[str, ...] = tuple(PEERS)
    rounds: int = 3
    iters: int = 2  # timed calls per measurement
    train: bool = True
    memory: bool = True
    compile: bool = False
    engines: tuple[str, ...] = ("onnxruntime", "openvino")  # besides PyTorch, where installed (CPU)
    grad_checkpointing: bool = True
    amp: str | None = None
    int8: bool = False  # also our model quantized to INT8 (`quantize.py`) on ONNX Runtime and OpenVINO
    accelerate: bool = True  # our accelerated model too, not only the reference


@dataclass(frozen=True)
class Contender:
    """One implementation in the race, built from our model (so that every contender carries its weights)."""
    name: str
    ours: bool
    trainable: bool
    # (our reference model, the config, autocast's dtype, the kernel choices our accelerated ones share)
    # -> a module or images -> logits
    build: Callable[[nn.Module, BenchConfig, torch.dtype | None, Autotuner], object]
    wanted: Callable[[BenchConfig, torch.dtype | None], bool] = lambda config, dtype: True


def _accelerated(ours: nn.Module, tuner: Autotuner) -> nn.Module:
    return accelerate(copy.deepcopy(ours), tuner)


def _checkpointed(ours: nn.Module, config: BenchConfig, dtype, tuner: Autotuner) -> nn.Module:
    checkpointed = _accelerated(ours, tuner)
    checkpointed.set_grad_checkpointing(True)
    return checkpointed


def _accelerating(config: BenchConfig, dtype) -> bool:
    return config.accelerate


# Every contender, described once: the main process builds them all from one model of ours, and the
# fresh process that measures a contender's training memory builds the same one by its name.
CONTENDERS = (
    Contender("convnext reference", True, True, lambda ours, config, dtype, tuner: ours),
    Contender("convnext accelerated", True, True, lambda ours, config, dtype, tuner: _accelerated(ours, tuner),
              _accelerating),
    Contender("convnext accelerated +grad-ckpt", True, True, _checkpointed,
              lambda config, dtype: config.accelerate and config.grad_checkpointing),
    Contender("convnext optimized", True, False,
              lambda ours, config, dtype, tuner: optimize_for_inference(_accelerated(ours, tuner)), _accelerating),
    # weights and activations in bf16, not only autocast's matmuls
    Contender("convnext optimized bf16", True, False,
              lambda ours, config, dtype, tuner: optimize_for_inference(_accelerated(ours, tuner), dtype=dtype),
              lambda config, dtype: config.accelerate and dtype == torch.bfloat16),
    Contender("convnext optimized+compile", True, False,
              lambda ours, config, dtype, tuner: optimize_for_inference(_accelerated(ours, tuner), compile=True),
              lambda config, dtype: config.accelerate and config.compile),
    *(Contender(f"convnext {engine}", True, False,
                lambda ours, config, dtype, tuner, engine=engine: _engine(ours, engine, config),
                lambda config, dtype, engine=engine: engine in config.engines and torch.device(config.device).type == "cpu")
      for engine in ("onnxruntime", "openvino", "executorch", "litert")),
    # INT8: NNCF's IR on OpenVINO (the path `convnext export --format openvino --int8` takes), and ONNX
    # Runtime's QDQ file (`--format onnx --int8`) on both engines
    *(Contender(name, True, False,
                lambda ours, config, dtype, tuner, engine=engine, by=by: _int8(ours, engine, by, config),
                lambda config, dtype, engine=engine: config.int8 and engine in config.engines
                and torch.device(config.device).type == "cpu")
      for name, engine, by in (("convnext openvino int8", "openvino", "openvino"),
                               ("convnext onnxruntime int8", "onnxruntime", "onnxruntime"),
                               ("convnext openvino int8 qdq", "openvino", "onnxruntime"),
                               ("convnext executorch int8", "executorch", "executorch"),
                               ("convnext litert int8", "litert", "litert"))),
    *(Contender(name, False, True, lambda ours, config, dtype, tuner, name=name: PEERS[name](ours),
                lambda config, dtype, name=name: name in config.peers) for name in PEERS),
)
BY_NAME = {contender.name: contender for contender in CONTENDERS}


def contenders(config: BenchConfig, dtype: torch.dtype | None,
               tuner: Autotuner) -> list[tuple[Contender, object]]:
    """(contender, its model) for every contender the config asks for that this machine has; our
    accelerated ones share `tuner`'s kernel choices."""
    ours = create_model(config.model).eval()
    found = []
    for contender in CONTENDERS:
        if contender.wanted(config, dtype):
            model = contender.build(ours, config, dtype, tuner)
            if model is not None:  # a peer or runtime that is not installed
                found.append((contender, model.eval() if isinstance(model, nn.Module) else model))
    return found


def training_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor,
                  dtype: torch.dtype | None) -> None:
    """The step every contender is timed and measured with: forward under autocast, a logsumexp loss,
    backward, AdamW."""
    with torch.autocast(x.device.type, dtype=dtype, enabled=dtype is not None):
        loss = model(x).float().logsumexp(dim=1).mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def _engine(model: nn.Module, backend: str, config: BenchConfig) -> nn.Module | None:
    """Our model exported to an engine (`backends.on_backend`), or None where the engine is not installed."""
    try:
        require(backend)
    except ValueError:
        return None
    return on_backend(model, backend, config.size)


def _int8(model: nn.Module, backend: str, quantizer: str, config: BenchConfig) -> nn.Module | None:
    """Our model quantized to INT8 by `quantizer` (ONNX Runtime or NNCF for OpenVINO; calibrated on
    random images: the speed does not depend on the ranges), run by `backend`, or None where an engine
    is not installed."""
    import tempfile
    from pathlib import Path

    from .quantize import quantize, require_quantizer

    try:
        if backend not in ON_DEVICE:
            require_quantizer(quantizer)
        require(backend)
    except ValueError:
        return None
    generator = torch.Generator().manual_seed(0)
    calibration = [torch.randn(8, model.in_chans, config.size, config.size, generator=generator) for _ in range(4)]
    if backend in ON_DEVICE:  # the program is written and read back whole (XNNPACK's INT8)
        fmt = ON_DEVICE[backend]
        with tempfile.TemporaryDirectory(prefix=f"convnext-{backend}-int8-") as folder:
            path = Path(folder) / f"model.int8{fmt.suffix}"
            fmt.int8(model.eval(), calibration, path, config.size)
            return Compiled(model, backend, fmt.run(path))
    # Both engines read the whole file when they compile it: the folder goes as soon as they have.
    with tempfile.TemporaryDirectory(prefix="convnext-int8-") as folder:
        path = Path(folder) / ("model.int8.xml" if quantizer == "openvino" else "model.int8.onnx")
        quantize(model, calibration, path, config.size, quantizer)
        runner = onnxruntime_runner(path) if backend == "onnxruntime" else openvino_runner(str(path))
    return Compiled(model, backend, runner)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak_rss() -> None:
    """Linux: writing 5 to clear_refs resets the peak resident set (VmHWM) to the current one."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


def _memory_child(config: BenchConfig, name: str, threads: int, queue) -> None:
    torch.set_num_threads(threads)
    dtype = amp_dtype(config.amp, config.device, say=lambda text: None)
    model = BY_NAME[name].build(create_model(config.model), config, dtype, Autotuner()).train()
    optimizer = torch.optim.AdamW(model.parameters())
    x = torch.randn(config.batch, 3, config.size, config.size)
    baseline = _rss_bytes()
    _reset_peak_rss()
    for _ in range(2):
        training_step(model, optimizer, x, dtype)
    queue.put(_peak_rss_bytes() - baseline)


def cpu_training_memory(config: BenchConfig, name: str) -> float:
    """Peak resident-memory growth (MB) of two training steps of contender `name` in a fresh process,
    under the same autocast as its timed steps."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_memory_child, args=(config, name, torch.get_num_threads(), queue))
    # glibc then maps every buffer over 64 KiB on its own and unmaps it on free, so the resident set
    # follows live memory instead of the allocator's cache: the same rule for every contender.
    saved = os.environ.get("MALLOC_MMAP_THRESHOLD_")
    os.environ["MALLOC_MMAP_THRESHOLD_"] = "65536"
    try:
        process.start()
    finally:
        if saved is None:
            del os.environ["MALLOC_MMAP_THRESHOLD_"]
        else:
            os.environ["MALLOC_MMAP_THRESHOLD_"] = saved
    process.join()
    return queue.get(timeout=5) / 2**20 if process.exitcode == 0 else float("nan")


def run(config: BenchConfig, say=print) -> dict:
    device = torch.device(config.device)
    dtype = amp_dtype(config.amp, device, say)  # None (float32) where the device has no hardware for it
    if dtype is None:
        config = replace(config, amp=None)
    tuner = Autotuner()
    found = contenders(config, dtype, tuner)
    channels_last = device.type == "cuda"
    models = {}
    for contender, model in found:
        if isinstance(model, nn.Module):
            model = model.to(device)
            if channels_last:
                model = model.to(memory_format=torch.channels_last)
        models[contender.name] = model
    x = torch.randn(config.batch, 3, config.size, config.size, device=device)
    x1 = x[:1].clone()
    if channels_last:
        x, x1 = x.contiguous(memory_format=torch.channels_last), x1.contiguous(memory_format=torch.channels_last)
    trained = [c for c, _ in found if c.trainable and config.train]
    optimizers = {c.name: torch.optim.AdamW(models[c.name].parameters()) for c in trained}

    def infer(model, inputs):
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            return model(inputs)

    def train_step(name: str) -> None:
        training_step(models[name].train(), optimizers[name], x, dtype)
        models[name].eval()

    names = [c.name for c, _ in found]
    times = {name: {"infer": [], "latency": [], "train": []} for name in names}

    def rotated(r: int, among: list[str]) -> list[str]:
        return among[r % len(among):] + among[: r % len(among)]

    # Inference first, as in a process that serves: once training steps have run, glibc's heap has grown
    # to hold their activations and serves the next fresh buffers without page faults, and on a 2-core
    # Zen 4 the peers' inference (which allocates more) then measured 15-17 img/s instead of 12.
    for r in range(config.rounds):
        for name in rotated(r, names):
            times[name]["infer"].append(timed(lambda: infer(models[name], x), config.iters, device))
            times[name]["latency"].append(timed(lambda: infer(models[name], x1), config.iters, device))
        say(f"inference round {r + 1}/{config.rounds} done")
    for r in range(config.rounds if trained else 0):
        for name in rotated(r, [c.name for c in trained]):
            times[name]["train"].append(timed(lambda: train_step(name), config.iters, device))
        say(f"training round {r + 1}/{config.rounds} done")
    with torch.device("meta"):
        macs = count_macs(create_model(config.model), config.size)
    peak = matmul_peak_gflops(device)
    low_peak = matmul_peak_gflops(device, dtype=dtype) if dtype is not None else None
    rows = []
    for contender, _ in found:
        t = times[contender.name]
        row = {"name": contender.name, "ours": contender.ours,
               "infer_img_s": config.batch / statistics.median(t["infer"]),
               "latency_ms": 1000 * statistics.median(t["latency"])}
        row["infer_gflops"] = 2 * macs * row["infer_img_s"] / 1e9
        if t["train"]:
            row["train_img_s"] = config.batch / statistics.median(t["train"])
            row["train_gflops"] = 6 * macs * row["train_img_s"] / 1e9  # forward + backward ≈ 3x forward
            if config.memory:
                row["train_peak_mb"] = _peak_memory(config, contender.name, train_step, device)
        rows.append(row)
    _add_ratios(rows)
    return {"model": config.model, "batch": config.batch, "input_size": config.size, "device": describe(device),
            "amp": config.amp, "threads": torch.get_num_threads(), "rounds": config.rounds, "iters": config.iters,
            "macs": macs, "matmul_peak_gflops": peak, "low_precision_peak_gflops": low_peak,
            "torch": torch.__version__, "kernels": tuner.state_dict(),
            "kernel_summary": tuner.summary(), "kernel_seconds": kernel_seconds(tuner), "results": rows}


def _peak_memory(config: BenchConfig, name: str, train_step, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        train_step(name)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    return cpu_training_memory(config, name)


def _add_ratios(rows: list[dict]) -> None:
    peers = [r for r in rows if not r["ours"]]
    for key in ("infer_img_s", "train_img_s"):
        best = max((r[key] for r in peers if key in r), default=None)
        for r in rows:
            if best and key in r:
                r[key.replace("img_s", "vs_best_peer")] = r[key] / best
    lowest = min((r["train_peak_mb"] for r in peers if "train_peak_mb" in r), default=None)
    for r in rows:
        if lowest and "train_peak_mb" in r:
            r["memory_vs_lowest_peer"] = r["train_peak_mb"] / lowest


def table(report: dict) -> str:
    """The report as text; "% peak" is against the matmul peak in the run's precision."""
    peak = report["matmul_peak_gflops"]
    low_peak = report.get("low_precision_peak_gflops")
    peaks = f"fp32 matmul peak {peak:.0f} GFLOP/s" + (f", {report['amp']} {low_peak:.0f}" if low_peak else "")
    peak = low_peak or peak
    lines = [f"{report['model']}, batch {report['batch']}, {report['input_size']}², {report['device']}, "
             f"amp {report['amp'] or 'off (fp32)'}; {peaks}",
             f"{'implementation':<28} {'infer img/s':>11} {'x peer':>6} {'b=1 ms':>7} {'% peak':>6} "
             f"{'train img/s':>11} {'x peer':>6} {'% peak':>6} {'train MB':>8} {'x peer':>6}"]
    for r in report["results"]:
        def cell(key, fmt, width):
            return f"{r[key]:{width}{fmt}}" if key in r else " " * (width - 1) + "-"
        share = {f"{key}_pct": 100 * r[key] / peak for key in ("infer_gflops", "train_gflops") if key in r}
        r = {**r, **share}
        lines.append(f"{r['name']:<28} {cell('infer_img_s', '.2f', 11)} {cell('infer_vs_best_peer', '.2f', 6)} "
                     f"{cell('latency_ms', '.1f', 7)} {cell('infer_gflops_pct', '.0f', 6)} "
                     f"{cell('train_img_s', '.2f', 11)} {cell('train_vs_best_peer', '.2f', 6)} "
                     f"{cell('train_gflops_pct', '.0f', 6)} "
                     f"{cell('train_peak_mb', '.0f', 8)} {cell('memory_vs_lowest_peer', '.2f', 6)}")
    if report.get("kernel_summary"):
        lines.append(f"kernels measured on this machine (shapes per choice): {report['kernel_summary']}")
    return "\n".join(lines)


def kernel_seconds(tuner: Autotuner) -> list[dict]:
    """Each measured key with every candidate's best time, for the JSON report."""
    return [{**key.as_dict(), "seconds": times} for key, times in tuner.measured().items()]


def plot(report: dict, path) -> None:
    from matplotlib.figure import Figure  # a bare figure renders to files without a display backend

    rows = report["results"]
    names = [r["name"] for r in rows]
    figure = Figure(figsize=(12, 0.4 * len(rows) + 2))
    axes = figure.subplots(1, 2)
    for ax, key, title in ((axes[0], "infer_img_s", "Inference (img/s)"), (axes[1], "train_img_s", "Training step (img/s)")):
        values = [r.get(key, 0) for r in rows]
        ax.barh(names[::-1], values[::-1], color=["tab:blue" if r["ours"] else "tab:gray" for r in rows][::-1])
        ax.set_title(title)
    figure.suptitle(f"{report['model']}, batch {report['batch']}, {report['input_size']}², {report['device']}")
    figure.tight_layout()
    with atomic_file(path) as tmp:
        figure.savefig(tmp, dpi=100, format="png")


def save(report: dict, path) -> None:
    write_text(path, json.dumps(report, indent=2))
