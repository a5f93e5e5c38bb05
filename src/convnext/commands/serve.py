"""Serve a model over HTTP: a JSON API with dynamic batching, Grad-CAM heat maps and a page to try it.

    convnext serve --weights runs/convnext_atto-20260101-120000 --cam-stage 1   # then open the address
    convnext serve --model convnext_tiny --pretrained --port 8080 --max-batch-size 16
    curl -H 'Content-Type: image/png' --data-binary @digit.png 'http://127.0.0.1:8000/v1/predict?top_k=3&cam=1'
    curl -F file=@photo.jpg http://127.0.0.1:8000/v1/predict

Routes: POST /v1/predict, GET /v1/model, /ping, /v2/health/live, /v2/health/ready, /metrics, and /.
SIGTERM (or Ctrl+C) stops accepting, answers what is queued, and exits 0.
"""
import argparse
import logging
import signal
import socket
import sys

from ..deploy.predictor import Predictor
from ..runtime.ranges import COUNT, POSITIVE, Range
from .common import add_amp_argument, add_backend_argument, add_model_arguments, load_model

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
    parser.add_argument("--cam-stage", type=int, default=-1,
                        help="the stage whose output Grad-CAM uses (default: the last; an earlier one for "
                             "small inputs whose last map is 1x1)")


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from ..deploy.serving import Settings, create_app
    except ImportError as missing:
        raise ValueError(f"serving needs {missing.name}: pip install 'convnext[serve]'") from None
    from ..deploy.gradcam import check_stage

    model = load_model(args)
    check_stage(model, args.cam_stage)  # refused at start, not on the first heat map
    settings = Settings(args.max_batch_size, args.max_batch_delay_ms, args.queue_size, args.max_upload_mb,
                        args.request_timeout_s, args.cam_stage)
    app = create_app(Predictor(model, args.device, args.amp, args.backend), settings, getattr(model, "model_name", None) or "convnext")
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
    print(f"serving {app.state.service.model_name} on http://{host}:{port}/ (Ctrl+C to stop)", flush=True)
    for signum in (signal.SIGINT, signal.SIGTERM):  # uvicorn re-raises the signal after its graceful exit:
        signal.signal(signum, lambda *_: None)       # that one has been handled, exit 0
    server.run(sockets=[listener])
    print("stopped", flush=True)
    return 0
