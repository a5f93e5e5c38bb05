"""The Open Inference Protocol's routes, spoken by clients nobody here wrote (Triton's tritonclient, the
bodies of KServe's and TorchServe's documented examples), and API keys on every route."""
import base64
import json
import logging
import uuid

import httpx
import numpy as np
import pytest
import tritonclient.http as triton

from convnext.cli import main
from serving_helpers import app_for, png_bytes, running_server

MODEL = "convnext_test"
KEY = "s3cret-key-for-tests"


@pytest.fixture(scope="module")
def run_dir(served_run):
    return served_run


@pytest.fixture(scope="module")
def server(run_dir):
    with running_server(app_for(run_dir)) as url:
        yield url


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pictures")
    paths = []
    for n, value in enumerate((40, 120, 220)):
        path = folder / f"{n}.png"
        path.write_bytes(png_bytes(value, size=(20, 24)))
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def predicted(run_dir, pictures):
    """What `convnext predict --json` says about the pictures: the answers every route must equal."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["predict", "--weights", run_dir, *map(str, pictures), "--top-k", "10", "--json"]) == 0
    return json.loads(out.getvalue())


def client(url: str) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(url.removeprefix("http://"))


def assert_equals_predict(probabilities: np.ndarray, labels, predicted: list[dict], k: int) -> None:
    assert probabilities.shape == (len(predicted), 10)
    for row, names, answer in zip(probabilities, labels, predicted):
        for top in answer["top"]:
            assert row[top["index"]] == pytest.approx(top["probability"], abs=1e-6)
        names = [n.decode() if isinstance(n, bytes) else n for n in names]
        assert names == [t["class"] for t in answer["top"][:k]]


def test_tritonclient_health_and_metadata(server):
    c = client(server)
    assert c.is_server_live() and c.is_server_ready() and c.is_model_ready(MODEL)
    assert not c.is_model_ready("another_model")
    assert "binary_tensor_data" in c.get_server_metadata()["extensions"]
    metadata = c.get_model_metadata(MODEL)
    assert metadata["name"] == MODEL and metadata["versions"] == ["1"]
    assert {(i["name"], i["datatype"], tuple(i["shape"])) for i in metadata["inputs"]} == {
        ("images", "BYTES", (-1,)), ("pixels", "FP32", (-1, 1, 32, 32))}
    assert {(o["name"], o["datatype"]) for o in metadata["outputs"]} == {("probabilities", "FP32"), ("labels", "BYTES")}
    parameters = metadata["parameters"]
    assert parameters["classes"] == [str(i) for i in range(10)] and parameters["input_size"] == 32
    assert {"mean", "std", "crop_pct", "interpolation"} <= set(parameters)
    assert c.get_model_metadata(MODEL, model_version="1")["name"] == MODEL


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_infers_encoded_images(server, pictures, predicted, binary):
    data = [p.read_bytes() for p in pictures]
    # tritonclient sends JSON BYTES as text: images go base64-encoded there, raw in the binary form.
    elements = data if binary else [base64.b64encode(d).decode() for d in data]
    images = triton.InferInput("images", [len(data)], "BYTES")
    images.set_data_from_numpy(np.array(elements, dtype=np.object_), binary_data=binary)
    outputs = [triton.InferRequestedOutput(name, binary_data=binary) for name in ("probabilities", "labels")]
    result = client(server).infer(MODEL, [images], outputs=outputs, parameters={"top_k": 3})
    assert_equals_predict(result.as_numpy("probabilities"), result.as_numpy("labels"), predicted, 3)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_infers_preprocessed_pixels(server, run_dir, pictures, predicted, binary):
    """A client that preprocesses by the metadata's description sends FP32 [N, C, H, W]."""
    from convnext.checkpoints.weights import load_pretrained
    from convnext.checkpoints.preprocessing import model_transform
    from PIL import Image

    transform = model_transform(load_pretrained(run_dir))
    pixels = np.stack([transform(Image.open(p).convert("L")).numpy() for p in pictures])
    tensor = triton.InferInput("pixels", list(pixels.shape), "FP32")
    tensor.set_data_from_numpy(pixels, binary_data=binary)
    result = client(server).infer(MODEL, [tensor], model_version="1")
    assert_equals_predict(result.as_numpy("probabilities"), result.as_numpy("labels"), predicted, 5)


def test_kserve_and_torchserve_request_bodies(server, pictures, predicted):
    """KServe's InferRequest as JSON (`InferRequest.to_rest()`: inputs with name, shape, datatype,
    data) and TorchServe's KServe v2 example (a random input name, shape [-1], base64 images): over
    plain HTTP, as the `kserve` package would send them (it is not a test dependency: it pins
    protobuf and pandas below what onnx and the rest of the suite use)."""
    encoded = [base64.b64encode(p.read_bytes()).decode() for p in pictures]
    kserve = {"id": "request-1", "inputs": [{"name": "images", "shape": [len(encoded)], "datatype": "BYTES",
                                             "data": encoded}],
              "outputs": [{"name": "probabilities"}, {"name": "labels"}]}
    torchserve = {"inputs": [{"name": str(uuid.uuid4()), "shape": [-1], "datatype": "BYTES", "data": encoded}]}
    for body in (kserve, torchserve):
        answer = httpx.post(f"{server}/v2/models/{MODEL}/infer", json=body).json()
        outputs = {o["name"]: o for o in answer["outputs"]}
        assert answer["model_name"] == MODEL and answer.get("id") == body.get("id")
        probabilities = np.array(outputs["probabilities"]["data"], dtype=np.float32).reshape(outputs["probabilities"]["shape"])
        labels = np.array(outputs["labels"]["data"]).reshape(outputs["labels"]["shape"])
        assert_equals_predict(probabilities, labels, predicted, 5)


def bad_requests(png: bytes) -> list[tuple[int, dict, bytes, str]]:
    """(status, headers, body, words of the error) of requests the protocol's routes must refuse."""
    one = lambda tensor: json.dumps({"inputs": [tensor]}).encode()  # noqa: E731
    b64 = base64.b64encode(png).decode()
    short = json.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "BYTES",
                                    "parameters": {"binary_data_size": 99}}]}).encode()  # 2 bytes follow, not 99
    return [
        (400, {}, b"{not json", "not JSON"),
        (400, {}, json.dumps({"inputs": []}).encode(), "one input tensor"),
        (400, {}, one({"name": "x", "shape": [1], "datatype": "BYTES", "data": ["%%%"]}), "not base64"),
        (400, {}, one({"name": "x", "shape": [1], "datatype": "BYTES", "data": [base64.b64encode(b"junk").decode()]}),
         "image 0 of the batch"),
        (400, {}, one({"name": "x", "shape": [2], "datatype": "BYTES", "data": [b64]}), "base64 strings"),
        (400, {}, one({"name": "x", "shape": [1], "datatype": "INT64", "data": [1]}), "datatype"),
        (400, {"Inference-Header-Content-Length": "999"}, b"{}", "does not fit"),
        (400, {"Inference-Header-Content-Length": str(len(short))}, short + b"\x05\x00", "binary_data_size"),
        (422, {}, one({"name": "x", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": [0.0] * 3072}), "[N, 1, 32, 32]"),
        (422, {}, json.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "BYTES", "data": [b64]}],
                              "parameters": {"top_k": 0}}).encode(), "top_k"),
        (400, {}, json.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "BYTES", "data": [b64]}],
                              "outputs": [{"name": "logits"}]}).encode(), "unknown output"),
        (413, {}, one({"name": "x", "shape": [1], "datatype": "BYTES", "data": ["A" * (3 << 20)]}), "limit"),
        (413, {}, one({"name": "x", "shape": [80], "datatype": "BYTES", "data": [b64] * 80}), "queue"),
        (415, {"Content-Type": "text/plain"}, one({"name": "x", "shape": [1], "datatype": "BYTES", "data": [b64]}),
         "media type"),
    ]


def test_bad_requests_get_the_protocols_error_and_the_next_is_answered(run_dir):
    png = png_bytes()
    good = {"inputs": [{"name": "images", "shape": [1], "datatype": "BYTES", "data": [base64.b64encode(png).decode()]}]}
    with running_server(app_for(run_dir, max_upload_mb=2)) as url:
        infer = f"{url}/v2/models/{MODEL}/infer"
        for status, headers, body, words in bad_requests(png):
            answer = httpx.post(infer, content=body, headers={"Content-Type": "application/json", **headers})
            assert answer.status_code == status, (words, answer.text)
            assert set(answer.json()) == {"error"} and words in answer.json()["error"], answer.text
            assert httpx.post(infer, json=good).status_code == 200  # as if nothing had happened
        for path in ("/v2/models/other/infer", f"/v2/models/{MODEL}/versions/2/infer"):
            answer = httpx.post(url + path, json=good)
            assert answer.status_code == 404 and set(answer.json()) == {"error"}


ROUTES = [("GET", "/v1/model"), ("POST", "/v1/predict"), ("GET", "/metrics"), ("GET", "/v2"),
          ("GET", f"/v2/models/{MODEL}"), ("GET", f"/v2/models/{MODEL}/ready"), ("POST", f"/v2/models/{MODEL}/infer")]
OPEN = [("GET", "/ping"), ("GET", "/v2/health/live"), ("GET", "/v2/health/ready"), ("GET", "/")]


def call(url: str, method: str, path: str, key: str | None):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    png = png_bytes()
    if path == "/v1/predict":
        return httpx.post(url + path, content=png, headers={**headers, "Content-Type": "image/png"})
    if method == "POST":
        body = {"inputs": [{"name": "images", "shape": [1], "datatype": "BYTES", "data": [base64.b64encode(png).decode()]}]}
        return httpx.post(url + path, json=body, headers=headers)
    return httpx.get(url + path, headers=headers)


def test_api_key_on_every_route(run_dir, caplog):
    caplog.set_level(logging.INFO, logger="convnext.serve")
    with running_server(app_for(run_dir, api_key=KEY)) as url:
        for method, path in ROUTES:
            for key in (None, "wrong-key", KEY[:-1]):
                answer = call(url, method, path, key)
                assert answer.status_code == 401, (path, key, answer.text)
                assert "API key" in answer.json()["error"] and answer.headers["www-authenticate"].startswith("Bearer")
            assert call(url, method, path, KEY).status_code == 200, path
        for method, path in OPEN:  # probes and the page need no key
            assert call(url, method, path, None).status_code == 200, path
        assert KEY not in httpx.get(url + "/v1/model", headers={"Authorization": f"Bearer {KEY}"}).text
        # tritonclient sends it as a header too
        c = client(url)
        assert c.get_model_metadata(MODEL, headers={"Authorization": f"Bearer {KEY}"})["name"] == MODEL
        with pytest.raises(triton.InferenceServerException, match="API key"):
            c.get_model_metadata(MODEL)
    assert KEY not in caplog.text


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.1", "::"])
def test_a_server_open_to_the_network_needs_a_key(run_dir, host, capsys, monkeypatch):
    monkeypatch.delenv("CONVNEXT_API_KEY", raising=False)
    assert main(["serve", "--weights", run_dir, "--host", host, "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--host {host} lets anyone" in err and "--no-api-key" in err
    assert "--api-key-file" in err and "CONVNEXT_API_KEY" in err


def test_key_sources_and_their_errors(tmp_path, monkeypatch):
    from argparse import Namespace

    from convnext.commands.serve import api_key

    (tmp_path / "key").write_text(f"{KEY}\n")
    (tmp_path / "empty").write_text("\n")
    args = dict(api_key=None, api_key_file=None, no_api_key=False)
    assert api_key(Namespace(**{**args, "api_key_file": str(tmp_path / "key")})) == KEY
    assert api_key(Namespace(**{**args, "api_key": "given"})) == "given"
    monkeypatch.setenv("CONVNEXT_API_KEY", "from-the-environment")
    assert api_key(Namespace(**args)) == "from-the-environment"
    for bad, words in (({"api_key_file": str(tmp_path / "empty")}, "is empty"),
                       ({"api_key_file": str(tmp_path / "missing")}, "No such file"),
                       ({"api_key": "k", "no_api_key": True}, "contradict")):
        with pytest.raises(ValueError, match=words):
            api_key(Namespace(**{**args, **bad}))


def test_the_protocol_serves_other_backends_too(run_dir, pictures, predicted):
    """An app on ONNX Runtime answers the same infer request with the same probabilities (float32 engines
    differ in the last bits)."""
    from convnext.deploy.predictor import Predictor

    with running_server(app_for(run_dir, predictor_class=lambda m: Predictor(m, backend="onnxruntime"))) as url:
        images = triton.InferInput("images", [len(pictures)], "BYTES")
        images.set_data_from_numpy(np.array([p.read_bytes() for p in pictures], dtype=np.object_))
        result = client(url).infer(MODEL, [images])
        assert client(url).get_model_metadata(MODEL)["platform"] == "onnxruntime"
    probabilities = result.as_numpy("probabilities")
    for row, answer in zip(probabilities, predicted):
        for top in answer["top"]:
            assert row[top["index"]] == pytest.approx(top["probability"], abs=1e-4)


def test_no_request_body_makes_a_500(run_dir):
    """Arbitrary JSON, and arbitrary bytes behind a binary header, get 4xx answers, never a 500."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from starlette.testclient import TestClient

    leaves = st.none() | st.booleans() | st.integers(-3, 3) | st.floats(allow_nan=True) | st.text(max_size=8)
    values = st.recursive(leaves, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["inputs", "outputs", "name", "shape", "datatype", "data", "parameters", "binary_data_size",
                         "top_k", "binary_data", "id"]), inner, max_size=5), max_leaves=20)
    tensor = st.fixed_dictionaries({"name": st.text(max_size=4), "shape": st.lists(st.integers(-2, 4), max_size=4),
                                    "datatype": st.sampled_from(["BYTES", "FP32", "INT8"]), "data": values},
                                   optional={"parameters": values})
    bodies = values | st.builds(lambda t, rest: {"inputs": [t], **rest}, tensor, st.dictionaries(
        st.sampled_from(["outputs", "parameters", "id"]), values, max_size=2))

    with TestClient(app_for(run_dir)) as http:
        @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
        @given(bodies, st.binary(max_size=64), st.booleans())
        def never_500(body, tail, binary):
            header = json.dumps(body).encode()
            headers = {"Inference-Header-Content-Length": str(len(header))} if binary else {}
            answer = http.post(f"/v2/models/{MODEL}/infer", content=header + (tail if binary else b""), headers=headers)
            assert answer.status_code in (200, 400, 413, 422), (body, answer.text)
            assert answer.status_code == 200 or set(answer.json()) == {"error"}

        never_500()
