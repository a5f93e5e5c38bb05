"""Serve a model over HTTP: a JSON API with dynamic batching, Grad-CAM heat maps and a page to try it.

    convnext serve --weights runs/convnext_atto-20260101-120000 --cam-stage 1   # then open the address
    convnext serve --model convnext_tiny --pretrained --port 8080 --max-batch-size 16
    curl -H 'Content-Type: image/png' --data-binary @digit.png 'http://127.0.0.1:8000/v1/predict?top_k=3&cam=1'
    curl -F file=@photo.jpg http://127.0.0.1:8000/v1/predict

Routes: POST /v1/predict, GET /v1/model, /ping, /v2/health/live, /v2/health/ready, /metrics, /, and the
Open Inference Protocol's GET /v2, /v2/models/NAME[/ready] and POST /v2/models/NAME/infer.
With a key (--api-key-file, CONVNEXT_API_KEY or --api-key) clients send `Authorization: Bearer KEY`;
bound to anything but loopback, the server needs one (or --no-api-key, said explicitly).
SIGTERM (or Ctrl+C) stops accepting, answers what is queued, and exits 0.
"""
import argparse
import ipaddress
import logging
import os
import signal
import socket
import sys
from pathlib import Path

from ..deploy.predictor import Predictor
from ..runtime.ranges import COUNT, POSITIVE, Range
from .common import add_amp_argument, add_backend_argument, add_model_arguments, load_runnable

DELAY_MS = Range(float, low=0, high=10_000)  # a partial batch waits at most this long
PORT = Range(int, low=0, high=65535)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    add_amp_argument(parser)
    add_backend_argument(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 exposes it to the network)")
    parser.add_argument("--port", type=PORT.parse, default=8000, help="0 picks a free port")
    parser.add_argument("--max-batch-size", type=COUNT.parse, default=8)
    parser.add_argument("--max-batch-delay-ms", type=DELAY_MS.parse, default=5.0,
                        help="how long a partial batch waits for more requests")
    parser.add_argument("--queue-size", type=COUNT.parse, default=64, help="requests waiting beyond this get 503")
    parser.add_argument("--max-upload-mb", type=POSITIVE.parse, default=10.0)
    parser.add_argument("--request-timeout-s", type=POSITIVE.parse, default=30.0)
    parser.add_argument("--api-key-file", help="a file holding the API key clients must send as "
                                               "'Authorization: Bearer KEY' (or set CONVNEXT_API_KEY)")
    parser.add_argument("--api-key", help="the API key itself (visible to other users in the process list: "
                                          "prefer --api-key-file or CONVNEXT_API_KEY)")
    parser.add_argument("--no-api-key", action="store_true",
                        help="serve without a key on a non-loopback address (anyone who reaches the port may use it)")
    parser.add_argument("--cam-stage", type=int, default=-1,
                        help="the stage whose output Grad-CAM uses (default: the last; an earlier one for "
                             "small inputs whose last map is 1x1)")


KEY_VARIABLE = "CONVNEXT_API_KEY"


def api_key(args: argparse.Namespace) -> str | None:
    """The key from --api-key, --api-key-file or the environment (in that order), or None."""
    key = args.api_key
    if key is None and args.api_key_file:
        try:
            key = Path(args.api_key_file).read_text().strip()
        except OSError as error:
            raise ValueError(f"--api-key-file {args.api_key_file}: {error.strerror}") from None
        if not key:
            raise ValueError(f"--api-key-file {args.api_key_file} is empty")
    key = key or os.environ.get(KEY_VARIABLE) or None
    if key and args.no_api_key:
        raise ValueError("--no-api-key and a key (--api-key, --api-key-file or CONVNEXT_API_KEY) contradict each other")
    return key


def is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from ..deploy.serving import Settings, create_app
    except ImportError as missing:
        raise ValueError(f"serving needs {missing.name}: pip install 'convnext[serve]'") from None
    from ..deploy.gradcam import check_stage

    key = api_key(args)
    if key is None and not args.no_api_key and not is_loopback(args.host):
        raise ValueError(f"--host {args.host} lets anyone who reaches the port use the model: give a key "
                         f"(--api-key-file FILE or {KEY_VARIABLE}=...), or pass --no-api-key to serve without one")
    model = load_runnable(args)
    predictor = Predictor(model, args.device, args.amp, args.backend)
    if predictor.heat_maps:
        check_stage(model, args.cam_stage)  # refused at start, not on the first heat map
    settings = Settings(args.max_batch_size, args.max_batch_delay_ms, args.queue_size, args.max_upload_mb,
                        args.request_timeout_s, args.cam_stage)
    app = create_app(predictor, settings,
                     getattr(model, "model_name", None) or "convnext", api_key=key)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)

    listener = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # inherited by connections: no Nagle wait
    try:
        listener.bind((args.host, args.port))
        listener.listen(2048)  # connections made from now on wait in the backlog until uvicorn takes them
    except OSError as error:
        raise OSError(f"cannot listen on {args.host}:{args.port}: {error.strerror}") from None
    host, port = listener.getsockname()[:2]
    # uvicorn's own limit answers 503 in plain text; ours (the queue) should be the one that bites.
    config = uvicorn.Config(app, log_level="warning", access_log=False, limit_concurrency=4 * args.queue_size + 64,
                            timeout_graceful_shutdown=int(args.request_timeout_s) + 5)
    server = uvicorn.Server(config)
    access = "clients send 'Authorization: Bearer <key>'" if key else "no API key"
    print(f"serving {app.state.service.model_name} on http://{host}:{port}/ ({access}; {getattr(args, 'header', '')}; "
          "Ctrl+C to stop)", flush=True)
    for signum in (signal.SIGINT, signal.SIGTERM):  # uvicorn re-raises the signal after its graceful exit:
        signal.signal(signum, lambda *_: None)       # that one has been handled, exit 0
    server.run(sockets=[listener])
    print("stopped", flush=True)
    return 0
