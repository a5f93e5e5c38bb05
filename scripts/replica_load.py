"""One Ray Serve replica against two on this machine, under the same load (scripts/loadtest.py).

    python scripts/replica_load.py --weights runs/convnext_atto-...   # a trained run
    python scripts/replica_load.py --model convnext_tiny --input 224  # random ConvNeXt-T weights

Ray starts on all of the machine's CPUs; one replica gets them all (PyTorch on as many threads), two
replicas half each. Prints one line per configuration and the ratio; docs/serving.md quotes them.
"""
import argparse
import asyncio
import io
import os
import socket
import tempfile
from pathlib import Path

from PIL import Image

from loadtest import load


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", help="a run directory or model file (default: --model with random weights)")
    parser.add_argument("--model", default="convnext_tiny")
    parser.add_argument("--input", type=int, default=224, help="the side of the picture sent")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()

    import ray
    from ray import serve

    import convnext
    from convnext.deploy.serving import replicas
    from convnext.runtime.hardware import describe

    cpus = os.cpu_count()
    with tempfile.TemporaryDirectory() as scratch:
        weights = args.weights or str(convnext.save_pretrained(convnext.create_model(args.model), Path(scratch) / "m").parent)
        picture = io.BytesIO()
        Image.new("RGB", (args.input, args.input), (120, 60, 200)).save(picture, format="PNG")
        ray.init(num_cpus=cpus, include_dashboard=False, _temp_dir=f"/tmp/ray-load-{os.getpid()}", log_to_driver=False)
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        print(describe())
        results = {}
        for count in (1, 2):
            serve.run(replicas.application(weights, num_replicas=count, num_cpus=cpus / count), route_prefix="/")
            url = f"http://127.0.0.1:{port}"
            asyncio.run(load(url, picture.getvalue(), requests=16, concurrency=4))  # warm-up
            report = asyncio.run(load(url, picture.getvalue(), args.requests, args.concurrency))
            results[count] = report.throughput
            print(f"{count} replica(s), {cpus / count:g} CPUs each: {report.line()}", flush=True)
            serve.delete("default")
        serve.shutdown()
        ray.shutdown()
    print(f"two replicas / one: {results[2] / results[1]:.2f}x throughput")


if __name__ == "__main__":
    main()
