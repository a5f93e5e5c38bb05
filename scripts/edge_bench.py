"""Batch-1 latency of the on-device files against our PyTorch and the server engines, on one and on two
threads, in one run on this CPU; file sizes beside them.

    python scripts/edge_bench.py --models convnext_atto,convnext_femto,convnext_tiny --json docs/bench/edge-latency-zen4.json

Per model (random weights from seed 0; speed does not depend on them) at the size its preprocessing
says (224²): our PyTorch (accelerated; optimized = folded + accelerated), ONNX Runtime and OpenVINO in
float32, OpenVINO INT8 (NNCF), ExecuTorch float32 and INT8 (XNNPACK), LiteRT float32 and INT8 weights.
INT8 files are calibrated on random images: their accuracy is scripts/int8_accuracy.py's business.
The .tflite files are converted in LiteRT's own environment (`--tflite-python`, default .venv-tflite:
its converter cannot share this one) and run here. Each contender is timed `--iters` calls after a
warm-up, in rotated order over `--rounds`; the median is reported, with the speed-up over our float32
PyTorch (accelerated) in the same round.
"""
import argparse
import copy
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import convnext
from convnext.checkpoints.preprocessing import data_config
from convnext.deploy.backends import on_backend
from convnext.deploy.export import export, export_int8, load_exported
from convnext.deploy.inference import optimize_for_inference
from convnext.runtime.hardware import describe

ROOT = Path(__file__).resolve().parents[1]


def files_for(name: str, folder: Path, tflite_python: str) -> dict[str, Path]:
    """Every exported file of one model, written into `folder`."""
    torch.manual_seed(0)
    model = convnext.create_model(name).eval()
    convnext.save_pretrained(model, folder / "w")
    size = data_config(model)["input_size"]
    calibration = [torch.randn(8, 3, size, size) for _ in range(4)]
    paths = {"executorch": folder / "m.pte", "executorch int8": folder / "m.int8.pte",
             "openvino int8": folder / "m.int8.xml", "litert": folder / "m.tflite", "litert int8": folder / "m.int8.tflite",
             "onnx": folder / "m.onnx", "openvino": folder / "m.xml"}
    for fmt, key in (("executorch", "executorch"), ("onnx", "onnx"), ("openvino", "openvino")):
        export(model, paths[key], fmt, dynamic_batch=False)
    export_int8(model, paths["executorch int8"], "executorch", calibration)
    export_int8(model, paths["openvino int8"], "openvino", calibration)
    for key, extra in (("litert", []), ("litert int8", ["--int8"])):
        subprocess.run([tflite_python, "-m", "convnext.cli", "export", "--weights", str(folder / "w"), "--format",
                        "tflite", *extra, "--output", str(paths[key])], check=True, capture_output=True)
    return paths


def size_mb(path: Path) -> float:
    sizes = [path] + ([path.with_suffix(".bin")] if path.suffix == ".xml" else [])
    return sum(p.stat().st_size for p in sizes) / 1e6


def latency_ms(run, x: torch.Tensor, iters: int) -> float:
    with torch.no_grad():
        run(x)
        run(x)
        start = time.perf_counter()
        for _ in range(iters):
            run(x)
    return (time.perf_counter() - start) / iters * 1e3


def contenders(paths: dict[str, Path]) -> dict:
    """Every contender built on the current thread count (the engines read it when they are made)."""
    model = convnext.load_pretrained(paths["onnx"].parent / "w").eval()
    found = {"pytorch reference": model, "pytorch accelerated": convnext.accelerate(copy.deepcopy(model)),
             "pytorch optimized": optimize_for_inference(model)}
    found["onnxruntime"] = on_backend(model, "onnxruntime")
    found["openvino"] = on_backend(model, "openvino")
    for key in ("openvino int8", "executorch", "executorch int8", "litert", "litert int8"):
        found[key] = load_exported(paths[key])
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="convnext_atto,convnext_femto,convnext_tiny")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--tflite-python", default=str(ROOT / ".venv-tflite" / "bin" / "python"))
    parser.add_argument("--json")
    args = parser.parse_args()
    report = {"cpu": describe("cpu"), "command": " ".join(sys.argv), "torch": torch.__version__, "models": {}}
    with tempfile.TemporaryDirectory(prefix="convnext-edge-") as root:
        for name in args.models.split(","):
            folder = Path(root) / name
            folder.mkdir()
            paths = files_for(name, folder, args.tflite_python)
            entry = {"file_mb": {key: round(size_mb(path), 2) for key, path in paths.items()}, "threads": {}}
            x = torch.randn(1, 3, 224, 224)
            for threads in map(int, args.threads.split(",")):
                torch.set_num_threads(threads)
                built = contenders(paths)
                times = {key: [] for key in built}
                keys = list(built)
                for r in range(args.rounds):
                    for key in keys[r % len(keys):] + keys[:r % len(keys)]:  # rotated: no contender always first
                        times[key].append(latency_ms(built[key], x, args.iters))
                medians = {key: statistics.median(v) for key, v in times.items()}
                base = medians["pytorch accelerated"]
                entry["threads"][threads] = {key: {"ms": round(ms, 2), "speedup_vs_pytorch_accelerated": round(base / ms, 2)}
                                             for key, ms in medians.items()}
                print(f"{name}, {threads} thread(s): " + ", ".join(f"{k} {v:.1f} ms" for k, v in medians.items()), flush=True)
                del built
            report["models"][name] = entry
            if args.json:  # after every model: a crash later keeps what was measured
                Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
