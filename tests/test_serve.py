"""convnext serve: answers equal to `convnext predict`, every bad request a JSON 4xx and never a crash,
batching, overload as 503 only, SIGTERM answers what is queued and exits 0."""
import asyncio
import io
import json
import os
import re
import signal
import subprocess
import sys
import time

import httpx
import pytest
import torch
from PIL import Image
from starlette.testclient import TestClient

from convnext.cli import main
from convnext.deploy.predictor import Predictor
from convnext.deploy.serving.batcher import Batcher, Overloaded
from loadtest import load  # scripts/loadtest.py
from serving_helpers import app_for, png_bytes, running_server


@pytest.fixture(scope="module")
def run_dir(served_run):
    return served_run


@pytest.fixture(scope="module")
def client(run_dir):
    with TestClient(app_for(run_dir)) as client:
        deadline = time.monotonic() + 60
        while client.get("/v2/health/ready").status_code != 200:  # warm-up runs after startup
            assert time.monotonic() < deadline
            time.sleep(0.02)
        yield client


def predict_cli(capsys, run_dir, path, *extra):
    capsys.readouterr()
    assert main(["predict", "--weights", run_dir, str(path), "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)[0]


def test_answers_equal_convnext_predict_raw_and_multipart(client, run_dir, tmp_path, capsys):
    for n, value in enumerate((30, 200)):
        path = tmp_path / f"digit{n}.png"
        path.write_bytes(png_bytes(value))
        expected = predict_cli(capsys, run_dir, path, "--top-k", "3", "--cam", str(tmp_path / "cams"),
                               "--cam-stage", "1")
        raw = client.post("/v1/predict?top_k=3&cam=1", content=path.read_bytes(),
                          headers={"Content-Type": "image/png"})
        form = client.post("/v1/predict?top_k=3", files={"file": (path.name, path.read_bytes(), "image/png")})
        for response in (raw, form):
            assert response.status_code == 200, response.text
            answer = response.json()
            assert answer["model"] == "convnext_test"
            assert [t["index"] for t in answer["top"]] == [t["index"] for t in expected["top"]]
            assert [t["class"] for t in answer["top"]] == [t["class"] for t in expected["top"]]
            for got, want in zip(answer["top"], expected["top"]):
                assert got["probability"] == pytest.approx(want["probability"], abs=1e-5)
        cam = raw.json()["cam"]
        assert cam["class_index"] == expected["cam"]["class_index"] == expected["top"][0]["index"]
        assert torch.tensor(cam["grid"]) == pytest.approx(torch.tensor(expected["cam"]["grid"]), abs=1e-4)
        picture = Image.open(io.BytesIO(__import__("base64").b64decode(cam["png"].split(",", 1)[1])))
        assert picture.size == (32, 32) and cam["png"].startswith("data:image/png;base64,")
        assert "cam" not in form.json()


def test_cam_class_by_name_or_index_and_top_k_clipped(client):
    body, headers = png_bytes(), {"Content-Type": "image/png"}
    by_name = client.post("/v1/predict?cam_class=7", content=body, headers=headers).json()
    assert by_name["cam"]["class_index"] == 7  # the digits' class names are "0".."9"
    assert len(client.post("/v1/predict?top_k=50", content=body, headers=headers).json()["top"]) == 10


def truncated_png() -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise((64, 64), 60).save(buffer, format="PNG")
    return buffer.getvalue()[:300]


def bomb_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("1", (9000, 5000)).save(buffer, format="PNG")  # 45 M pixels in a few kB
    return buffer.getvalue()


def tiff() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (8, 8)).save(buffer, format="TIFF")
    return buffer.getvalue()


def chunks(total: int):  # a body without Content-Length: only counting while reading can stop it
    for _ in range(total // 65536):
        yield b"\0" * 65536


BAD_REQUESTS = [
    # (what, query, body, content type, status, message fragment)
    ("empty body", "", b"", "image/png", 400, "empty body"),
    ("text as png", "", b"hello, not an image", "image/png", 400, "not a readable image"),
    ("truncated png", "", truncated_png(), "image/png", 400, "damaged image"),
    ("pixel bomb", "", bomb_png(), "image/png", 400, "pixels"),
    ("tiff, not accepted", "", tiff(), "application/octet-stream", 400, "not a readable image"),
    ("wrong media type", "", png_bytes(), "text/plain", 415, "unsupported media type"),
    ("form-urlencoded", "", b"a=b", "application/x-www-form-urlencoded", 415, "unsupported media type"),
    ("svg", "", b"<svg/>", "image/svg+xml", 415, "unsupported media type"),
    ("multipart without file", "", None, "multipart", 400, "field named 'file'"),
    ("top_k zero", "top_k=0", png_bytes(), "image/png", 422, "top_k"),
    ("top_k text", "top_k=five", png_bytes(), "image/png", 422, "top_k"),
    ("top_k negative", "top_k=-2", png_bytes(), "image/png", 422, "top_k"),
    ("cam_class unknown", "cam_class=cat", png_bytes(), "image/png", 422, "cam_class"),
    ("cam_class out of range", "cam_class=10", png_bytes(), "image/png", 422, "cam_class"),
    ("cam not a flag", "cam=maybe", png_bytes(), "image/png", 422, "cam must be"),
    ("unknown parameter", "topk=3", png_bytes(), "image/png", 422, "unknown query parameter"),
]


@pytest.mark.parametrize("what,query,body,media,status,fragment", BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_requests_are_json_4xx_and_the_next_request_is_fine(client, what, query, body, media, status, fragment):
    if media == "multipart":
        response = client.post(f"/v1/predict?{query}", data={"note": "no file"}, files={"other": ("x.png", b"x")})
    else:
        response = client.post(f"/v1/predict?{query}", content=body, headers={"Content-Type": media})
    assert response.status_code == status, response.text
    assert response.json()["code"] == status and fragment in response.json()["error"]
    good = client.post("/v1/predict?top_k=2", content=png_bytes(), headers={"Content-Type": "image/png"})
    assert good.status_code == 200 and len(good.json()["top"]) == 2


def test_too_large_on_content_length_and_while_reading(run_dir):
    with TestClient(app_for(run_dir, max_upload_mb=0.25)) as client:
        declared = client.post("/v1/predict", content=b"\0" * 300_000, headers={"Content-Type": "image/png"})
        streamed = client.post("/v1/predict", content=chunks(400_000), headers={"Content-Type": "image/png"})
        for response in (declared, streamed):
            assert response.status_code == 413 and "0.25 MB" in response.json()["error"]
        assert "content-length" not in streamed.request.headers
        assert client.post("/v1/predict", content=png_bytes(), headers={"Content-Type": "image/png"}).status_code == 200


def test_routes_health_metadata_metrics_page_and_unknown_paths(client):
    assert client.get("/ping").json() == {"status": "Healthy"}
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    model = client.get("/v1/model").json()
    assert model["classes"] == [str(i) for i in range(10)] and model["input_size"] == 32
    assert model["max_batch_size"] == 8 and model["queue_size"] == 64 and model["cam_stage"] == 1
    for response, code in ((client.get("/nope"), 404), (client.get("/v1/predict"), 405)):
        assert response.status_code == code and response.json()["code"] == code
    metrics = client.get("/metrics").text
    assert re.search(r'convnext_requests_total\{route="/v1/predict",code="200"\} [1-9]', metrics)
    assert 'convnext_requests_total{route="unrouted",code="404"}' in metrics
    assert re.search(r'convnext_request_latency_seconds\{quantile="0.99"\} \d', metrics)
    assert re.search(r'convnext_batches_total\{size="1"\} [1-9]', metrics)
    page = client.get("/")
    assert page.headers["content-type"].startswith("text/html")
    assert not re.search(r"(src|href)=\"(https?:)?//", page.text)  # nothing from a CDN: works offline
    assert all(f'id="{name}"' in page.text for name in ("file", "drop", "results", "cam", "status", "show-cam"))


def test_not_ready_until_warmed_up(run_dir):
    class SlowToWarm(Predictor):
        def __call__(self, batch):
            time.sleep(0.5)
            return super().__call__(batch)

    with TestClient(app_for(run_dir, predictor_class=SlowToWarm)) as client:
        assert client.get("/v2/health/ready").status_code == 503 and client.get("/ping").status_code == 503
        assert client.get("/v2/health/live").status_code == 200
        # A request meanwhile waits behind the warm-up rather than failing.
        assert client.post("/v1/predict", content=png_bytes(), headers={"Content-Type": "image/png"}).status_code == 200
        assert client.get("/v2/health/ready").json() == {"ready": True}


def test_batcher_groups_waiting_requests_and_refuses_when_full():
    async def scenario():
        sizes = []

        def double(payloads):
            sizes.append(len(payloads))
            time.sleep(0.05)
            return [2 * p for p in payloads]

        batcher = Batcher(double, max_batch_size=4, max_delay_s=0.02, queue_size=6)
        batcher.start()
        futures = [batcher.submit(i) for i in range(6)]
        with pytest.raises(Overloaded, match="queue full"):
            batcher.submit(99)
        answers = await asyncio.gather(*futures)
        assert [result for result, _ in answers] == [0, 2, 4, 6, 8, 10]  # each caller its own answer
        assert sizes == [4, 2] and [timing.batch_size for _, timing in answers] == [4] * 4 + [2] * 2
        # A caller that gave up is skipped; closing answers what is queued, then refuses.
        gone = batcher.submit(7)
        gone.cancel()
        last = batcher.submit(5)
        await batcher.close()
        assert (await last)[0] == 10 and sizes[-1] == 1
        with pytest.raises(Overloaded, match="shutting down"):
            batcher.submit(1)

    asyncio.run(scenario())


def test_timeout_is_504_and_the_service_recovers(run_dir):
    class Slow(Predictor):
        slow = False

        def __call__(self, batch):
            time.sleep(0.6 if Slow.slow else 0)
            return super().__call__(batch)

    with TestClient(app_for(run_dir, predictor_class=Slow, request_timeout_s=0.3)) as client:
        while client.get("/v2/health/ready").status_code != 200:
            time.sleep(0.02)
        Slow.slow = True
        response = client.post("/v1/predict", content=png_bytes(), headers={"Content-Type": "image/png"})
        assert response.status_code == 504 and "0.3 s" in response.json()["error"]
        Slow.slow = False
        time.sleep(0.7)
        assert client.post("/v1/predict", content=png_bytes(), headers={"Content-Type": "image/png"}).status_code == 200


def test_overload_gives_only_correct_200s_and_503s_then_the_server_is_healthy(run_dir):
    class Slow(Predictor):  # slow enough that 24 clients overrun a queue of 2
        def __call__(self, batch):
            time.sleep(0.03)
            return super().__call__(batch)

    body = png_bytes(77)
    with running_server(app_for(run_dir, predictor_class=Slow, queue_size=2, max_batch_size=2)) as url:
        reference = httpx.post(f"{url}/v1/predict", content=body, headers={"Content-Type": "image/png"}).json()
        report = asyncio.run(load(url, body, requests=150, concurrency=24, keep_answers=True, time_cap_s=60))
        assert set(report.statuses) <= {200, 503} and report.statuses[200] > 0 and report.statuses[503] > 0
        for answer in report.answers:
            assert [t["index"] for t in answer["top"]] == [t["index"] for t in reference["top"]]
            assert answer["top"][0]["probability"] == pytest.approx(reference["top"][0]["probability"], abs=1e-5)
        assert httpx.get(f"{url}/v2/health/ready").json() == {"ready": True}
        after = httpx.post(f"{url}/v1/predict", content=body, headers={"Content-Type": "image/png"})
        assert after.status_code == 200
        metrics = httpx.get(f"{url}/metrics").text
        assert re.search(r'code="503"\} [1-9]', metrics) and "convnext_queue_depth 0" in metrics


def test_sigterm_answers_what_is_queued_and_exits_0(run_dir):
    # A long batch delay holds the requests in the queue when the signal arrives.
    server = subprocess.Popen([sys.executable, "-m", "convnext.cli", "serve", "--weights", run_dir, "--port", "0",
                               "--max-batch-delay-ms", "1500", "--max-batch-size", "8", "--cam-stage", "1"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        url = re.search(r"on (http://\S+)/ ", server.stdout.readline()).group(1)
        deadline = time.monotonic() + 60
        while httpx.get(f"{url}/v2/health/ready").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)

        async def clients():
            async with httpx.AsyncClient(timeout=30) as http:
                sends = [asyncio.create_task(http.post(f"{url}/v1/predict", content=png_bytes(v),
                                                       headers={"Content-Type": "image/png"})) for v in (10, 90, 170)]
                await asyncio.sleep(0.5)
                server.send_signal(signal.SIGTERM)
                return await asyncio.gather(*sends)

        responses = asyncio.run(clients())
        assert [r.status_code for r in responses] == [200, 200, 200]
        assert {r.json()["timing_ms"]["batch_size"] for r in responses} == {3}
        assert server.wait(timeout=30) == 0
        assert "stopped" in server.stdout.read()
        log = server.stderr.read()
        assert log.count("POST /v1/predict 200") == 3 and "Traceback" not in log
    finally:
        server.kill()
