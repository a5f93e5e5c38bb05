"""Benchmarks: our model eager and optimized against timm, torchvision and transformers on the same weights.

Run by run interleaving (the order rotates every round) in one process, so machine noise hits every
contender alike; medians over rounds are reported. All inference rounds run before any training step. Peak training memory on CPU is the growth of a
fresh process's resident set over one training step sequence (spawned per contender); on CUDA it is
`torch.cuda.max_memory_allocated`.
"""
import json
import multiprocessing
import os
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..runtime import autotune
from ..models.counting import count_macs
from ..runtime.hardware import describe
from ..runtime.precision import amp_dtype, tf32
from ..models.registry import create_model
from .inference import optimize_for_inference
from .peers import PEERS


@dataclass
class Contender:
    name: str
    model: object  # nn.Module or a callable images -> logits
    ours: bool
    trainable: bool
    spec: dict = field(default_factory=dict)  # how a fresh process rebuilds it (memory measurement)


def build_model(spec: dict) -> nn.Module:
    model = create_model(spec["model"], num_classes=spec.get("num_classes", 1000))
    if spec["impl"] == "ours":
        model.set_grad_checkpointing(spec.get("grad_checkpointing", False))
        return model
    return PEERS[spec["impl"]](model)


def contenders(model_name: str, peers: list[str], compile: bool, onnx: bool, grad_checkpointing: bool,
               device: torch.device, size: int, dtype: torch.dtype | None = None) -> list[Contender]:
    ours = create_model(model_name).eval()
    found = [Contender("convnext eager", ours, True, True, {"impl": "ours", "model": model_name})]
    if grad_checkpointing:
        found.append(Contender("convnext eager +grad-ckpt", ours, True, True,
                               {"impl": "ours", "model": model_name, "grad_checkpointing": True}))
    found.append(Contender("convnext optimized", optimize_for_inference(ours), True, False))
    if dtype == torch.bfloat16:  # weights and activations in bf16, not only autocast's matmuls
        found.append(Contender("convnext optimized bf16", optimize_for_inference(ours, dtype=dtype), True, False))
    if compile:
        found.append(Contender("convnext optimized+compile", optimize_for_inference(ours, compile=True), True, False))
    if onnx and device.type == "cpu":
        runner = _onnx_runner(ours, size)
        if runner is not None:
            found.append(Contender("convnext onnxruntime", runner, True, False))
    for peer_name in peers:
        peer = PEERS[peer_name](ours)
        if peer is not None:
            found.append(Contender(peer_name, peer.eval(), False, True, {"impl": peer_name, "model": model_name}))
    return found


def _onnx_runner(model: nn.Module, size: int):
    try:
        import onnxruntime
    except ImportError:
        return None
    import tempfile
    from pathlib import Path

    from .export import _write

    folder = Path(tempfile.mkdtemp(prefix="convnext-bench-"))
    _write(optimize_for_inference(model, channels_last=False), "onnx", folder / "model.onnx", dynamic_batch=True, size=size)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    # ORT's threads spin after each run by default, taking the cores from whichever contender runs next.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: torch.from_numpy(session.run(None, {name: x.numpy()})[0])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, iters: int, device: torch.device) -> float:
    fn()  # warm-up (and compilation) outside the clock
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
        seconds = min(_timed(fn, 3, device) for fn in candidates for _ in range(3))
    return 2 * n**3 / seconds / 1e9


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


def _memory_child(spec: dict, batch: int, size: int, threads: int, queue) -> None:
    torch.set_num_threads(threads)
    model = build_model(spec).train()
    optimizer = torch.optim.AdamW(model.parameters())
    x = torch.randn(batch, 3, size, size)
    baseline = _rss_bytes()
    _reset_peak_rss()
    for _ in range(2):
        optimizer.zero_grad(set_to_none=True)
        model(x).logsumexp(dim=1).mean().backward()
        optimizer.step()
    queue.put(_peak_rss_bytes() - baseline)


def cpu_training_memory(spec: dict, batch: int, size: int) -> float:
    """Peak resident-memory growth (MB) of a training step sequence in a fresh process."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_memory_child, args=(spec, batch, size, torch.get_num_threads(), queue))
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


def run(model_name: str = "convnext_tiny", batch: int = 16, size: int = 224, device: str = "cpu",
        peers: list[str] | None = None, rounds: int = 3, iters: int = 2, train: bool = True,
        memory: bool = True, compile: bool = False, onnx: bool = True, grad_checkpointing: bool = True,
        amp: str | None = None, say=print) -> dict:
    device = torch.device(device)
    dtype = amp_dtype(amp, device, say)  # None (float32) where the device has no hardware for it
    amp = amp if dtype is not None else None
    peers = list(PEERS) if peers is None else peers
    found = contenders(model_name, peers, compile, onnx, grad_checkpointing, device, size, dtype)
    channels_last = device.type == "cuda"
    for c in found:
        if isinstance(c.model, nn.Module):
            c.model = c.model.to(device)
            if channels_last:
                c.model = c.model.to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, size, size, device=device)
    x1 = x[:1].clone()
    if channels_last:
        x, x1 = x.contiguous(memory_format=torch.channels_last), x1.contiguous(memory_format=torch.channels_last)
    optimizers = {c.name: torch.optim.AdamW(c.model.parameters()) for c in found if c.trainable and train}

    def infer(model, inputs):
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            return model(inputs)

    def train_step(c):
        model = c.model.train()
        checkpointed = c.spec.get("grad_checkpointing", False)
        if checkpointed:
            model.set_grad_checkpointing(True)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = model(x).float().logsumexp(dim=1).mean()
        optimizers[c.name].zero_grad(set_to_none=True)
        loss.backward()
        optimizers[c.name].step()
        model.eval()
        if checkpointed:
            model.set_grad_checkpointing(False)

    times = {c.name: {"infer": [], "latency": [], "train": []} for c in found}

    def rotated(r: int) -> list[Contender]:
        return found[r % len(found):] + found[: r % len(found)]

    # Inference first, as in a process that serves: once training steps have run, glibc's heap has grown
    # to hold their activations and serves the next fresh buffers without page faults, and on a 2-core
    # Zen 4 the peers' inference (which allocates more) then measured 15-17 img/s instead of 12.
    for r in range(rounds):
        for c in rotated(r):
            times[c.name]["infer"].append(_timed(lambda: infer(c.model, x), iters, device))
            times[c.name]["latency"].append(_timed(lambda: infer(c.model, x1), iters, device))
        say(f"inference round {r + 1}/{rounds} done")
    for r in range(rounds if train else 0):
        for c in filter(lambda c: c.trainable, rotated(r)):
            times[c.name]["train"].append(_timed(lambda: train_step(c), iters, device))
        say(f"training round {r + 1}/{rounds} done")
    with torch.device("meta"):
        macs = count_macs(create_model(model_name), size)
    peak = matmul_peak_gflops(device)
    low_peak = matmul_peak_gflops(device, dtype=dtype) if dtype is not None else None
    rows = []
    for c in found:
        t = times[c.name]
        row = {"name": c.name, "ours": c.ours, "infer_img_s": batch / statistics.median(t["infer"]),
               "latency_ms": 1000 * statistics.median(t["latency"])}
        row["infer_gflops"] = 2 * macs * row["infer_img_s"] / 1e9
        if t["train"]:
            row["train_img_s"] = batch / statistics.median(t["train"])
            row["train_gflops"] = 6 * macs * row["train_img_s"] / 1e9  # forward + backward ≈ 3x forward
            if memory:
                row["train_peak_mb"] = _peak_memory(c, x, train_step, device, batch, size)
        rows.append(row)
    _add_ratios(rows)
    return {"model": model_name, "batch": batch, "input_size": size, "device": describe(device),
            "amp": amp, "threads": torch.get_num_threads(), "rounds": rounds, "iters": iters,
            "macs": macs, "matmul_peak_gflops": peak, "low_precision_peak_gflops": low_peak,
            "torch": torch.__version__, "kernels": autotune.choices(),
            "kernel_seconds": autotune.measured(), "results": rows}


def _peak_memory(c: Contender, x, train_step, device: torch.device, batch: int, size: int) -> float:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        train_step(c)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    return cpu_training_memory(c.spec, batch, size)


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
    if report.get("kernels"):
        lines.append(f"kernels measured on this machine (shapes per choice): {kernel_summary(report['kernels'])}")
    return "\n".join(lines)


def kernel_summary(choices: dict[str, str]) -> str:
    """{"pointwise (...)": "conv", ...} as "pointwise conv 12 linear 4; ...": what autotune picked."""
    by_op: dict[str, Counter] = {}
    for key, choice in choices.items():
        by_op.setdefault(key.split(" ", 1)[0], Counter())[choice] += 1
    return "; ".join(f"{op} " + " ".join(f"{name} {n}" for name, n in sorted(counts.items()))
                     for op, counts in sorted(by_op.items()))


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
    figure.savefig(path, dpi=100)


def save(report: dict, path) -> None:
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
