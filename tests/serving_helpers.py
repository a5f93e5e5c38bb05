"""What the serving tests share: a small trained run, request bodies, a real server on a free port."""
import contextlib
import io
import socket
import threading
import time

import uvicorn
from PIL import Image

from convnext.checkpoints.weights import load_pretrained
from convnext.cli import main
from convnext.deploy.predictor import Predictor
from convnext.deploy.serving import Settings, create_app


def train_tiny_run(directory) -> str:
    """convnext_test trained for two steps on the digits: 10 named classes, grey 32² input."""
    assert main(["train", "--model", "convnext_test", "--epochs", "1", "--max-steps", "2",
                 "--output-dir", str(directory)]) == 0
    return str(directory)


def app_for(run_dir: str, predictor_class=Predictor, api_key: str | None = None, **settings):
    model = load_pretrained(run_dir)
    return create_app(predictor_class(model), Settings(**{"cam_stage": 1, **settings}), "convnext_test", api_key)


def png_bytes(value: int = 120, size=(8, 8), mode="L") -> bytes:
    buffer = io.BytesIO()
    image = Image.new(mode, size, value)
    image.putpixel((2, 3), 255 - value if mode == "L" else (0, 0, 0))
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@contextlib.contextmanager
def running_server(app):
    """The app under uvicorn on 127.0.0.1 (a free port) in a thread; yields its base URL."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    service = app.state.service
    deadline = time.monotonic() + 60
    while not (server.started and service.ready):
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
