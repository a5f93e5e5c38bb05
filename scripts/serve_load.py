"""Load on `convnext serve` (docs/serving.md): a real server process on 127.0.0.1, a bounded asyncio
client in this one; throughput and p50/p99 latency at 1, 4 and 16 concurrent clients, with batching
and without; then an overload run against a small queue, which must get only 200s and 503s and leave
the server healthy.

    python scripts/serve_load.py [--model convnext_atto] [--requests 200] [--out docs/bench/serve-cpu-zen4.json]
"""
import argparse
import asyncio
import io
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

import httpx
import torch
from PIL import Image

import convnext
from loadtest import load  # scripts/loadtest.py
from convnext.runtime.hardware import describe

MODES = {"batching (8, 5 ms)": ["--max-batch-size", "8", "--max-batch-delay-ms", "5"],
         "no batching": ["--max-batch-size", "1", "--max-batch-delay-ms", "0"]}


def photo_jpeg(size: int = 320) -> bytes:
    """A smooth random 'photo', JPEG-compressed, bigger than the crop so resizing is part of the cost."""
    torch.manual_seed(0)
    pixels = torch.nn.functional.interpolate(torch.rand(1, 3, 8, 8), size=(size, size), mode="bicubic")[0]
    buffer = io.BytesIO()
    Image.fromarray((pixels.clamp(0, 1) * 255).byte().permute(1, 2, 0).numpy()).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


class Server:
    def __init__(self, weights: str, *options: str):
        self.process = subprocess.Popen([sys.executable, "-m", "convnext.cli", "serve", "--weights", weights,
                                         "--port", "0", *options], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                        text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.url = re.search(r"on (http://\S+)/ ", self.process.stdout.readline()).group(1)
        while httpx.get(f"{self.url}/v2/health/ready").status_code != 200:
            time.sleep(0.1)

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="convnext_atto")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args()
    body = photo_jpeg()
    results = {"cpu": describe("cpu"), "model": args.model, "input": "224² crop of a 320² JPEG",
               "command": "python scripts/serve_load.py " + " ".join(sys.argv[1:]), "runs": [], "overload": None}
    print(results["cpu"])
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        convnext.save_pretrained(convnext.create_model(args.model, num_classes=10), tmp)
        for mode, options in MODES.items():
            server = Server(tmp, *options, "--queue-size", "64")
            for concurrency in (1, 4, 16):
                asyncio.run(load(server.url, body, requests=max(20, args.requests // 4), concurrency=concurrency))  # warm
                report = asyncio.run(load(server.url, body, requests=args.requests, concurrency=concurrency))
                results["runs"].append({"mode": mode, **report.as_dict()})
                print(f"{mode:>20}: {report.line()}", flush=True)
            assert server.stop() == 0
        server = Server(tmp, "--max-batch-size", "4", "--queue-size", "4")
        report = asyncio.run(load(server.url, body, requests=300, concurrency=64))
        healthy = httpx.get(f"{server.url}/v2/health/ready").json() == {"ready": True}
        after = httpx.post(f"{server.url}/v1/predict", content=body, headers={"Content-Type": "image/jpeg"})
        exit_status = server.stop()
        results["overload"] = {**report.as_dict(), "queue_size": 4, "healthy_after": healthy,
                               "next_request": after.status_code, "exit_status": exit_status}
        print(f"{'overload (queue 4)':>20}: {report.line()}; ready after: {healthy}; next request "
              f"{after.status_code}; exit status {exit_status}")
        assert set(report.statuses) <= {200, 503} and healthy and after.status_code == 200 and exit_status == 0
    if args.out:
        with open(args.out, "w") as file:
            json.dump(results, file, indent=1)


if __name__ == "__main__":
    main()
