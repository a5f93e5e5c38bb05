"""Replicas on an existing engine: the service as a Ray Serve application with two replicas (Ray started
locally on two CPUs in a temporary directory), its routes and keys as `convnext serve` has them; and
the KServe InferenceService manifest checked against what the server really serves."""
import base64
import shutil
import socket
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from serving_helpers import app_for, png_bytes, running_server

KEY = "replica-key"
MODEL = "convnext_test"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run_dir(served_run):
    return served_run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ray_serve_replicas_answer_as_one_server(run_dir, tmp_path):
    import ray
    from ray import serve

    from convnext.deploy.serving import replicas

    picture = png_bytes(150, size=(16, 16))
    with running_server(app_for(run_dir)) as url:  # one process, the reference answers
        expected = httpx.post(f"{url}/v1/predict?top_k=3", content=picture, headers={"Content-Type": "image/png"}).json()

    temp = Path("/tmp") / f"ray-{tmp_path.name[:20]}"  # Ray's socket paths must stay short
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=str(temp), log_to_driver=False, configure_logging=False)
    try:
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(replicas.application(run_dir, num_replicas=2, num_cpus=1.0, api_key=KEY), route_prefix="/")
        status = serve.status().applications["default"].deployments["convnext"]
        assert status.replica_states == {"RUNNING": 2}
        url, key = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {KEY}"}
        assert httpx.get(f"{url}/v2/health/ready").status_code == 200  # probes need no key
        assert httpx.get(f"{url}/v1/model").status_code == 401
        assert httpx.get(f"{url}/v1/model", headers=key).json()["model"] == MODEL

        for _ in range(16):
            answer = httpx.post(f"{url}/v1/predict?top_k=3", content=picture,
                                headers={**key, "Content-Type": "image/png"}).json()
            assert [t["class"] for t in answer["top"]] == [t["class"] for t in expected["top"]]
            assert [t["probability"] for t in answer["top"]] == pytest.approx(
                [t["probability"] for t in expected["top"]], abs=1e-6)
        body = {"inputs": [{"name": "images", "shape": [1], "datatype": "BYTES",
                            "data": [base64.b64encode(picture).decode()]}], "parameters": {"top_k": 3}}
        outputs = {o["name"]: o for o in httpx.post(f"{url}/v2/models/{MODEL}/infer", json=body, headers=key)
                   .json()["outputs"]}
        assert outputs["labels"]["data"] == [t["class"] for t in expected["top"]]
        probabilities = np.array(outputs["probabilities"]["data"])
        assert probabilities[[t["index"] for t in expected["top"]]] == pytest.approx(
            [t["probability"] for t in expected["top"]], abs=1e-6)
        # Both replicas answered: each replica's log names the predictions it served.
        logs = list((temp / "session_latest" / "logs" / "serve").glob("replica_default_convnext_*.log"))
        assert len(logs) == 2 and all("/v1/predict" in log.read_text() for log in logs)
    finally:
        serve.shutdown()
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
    assert not ray.is_initialized()


def test_kserve_manifest_matches_the_server(run_dir):
    """The InferenceService's port and probes are the routes the server answers, open without a key;
    its container runs `convnext serve` as the Dockerfile builds it."""
    manifest = yaml.safe_load((ROOT / "kserve" / "inferenceservice.yaml").read_text())
    assert manifest["apiVersion"] == "serving.kserve.io/v1beta1" and manifest["kind"] == "InferenceService"
    predictor = manifest["spec"]["predictor"]
    assert 1 <= predictor["minReplicas"] <= predictor["maxReplicas"]
    container = predictor["containers"][0]
    assert container["args"][:1] == ["serve"] and "--host" in container["args"] and "--port" in container["args"]
    port = int(container["args"][container["args"].index("--port") + 1])
    assert [p["containerPort"] for p in container["ports"]] == [port] == [8080]
    assert container["ports"][0]["protocol"] == "TCP"
    key = next(e for e in container["env"] if e["name"] == "CONVNEXT_API_KEY")
    assert "secretKeyRef" in key["valueFrom"]  # the key comes from a Secret, never the manifest
    probes = [container["readinessProbe"]["httpGet"], container["livenessProbe"]["httpGet"]]
    assert all(probe["port"] == port for probe in probes)
    dockerfile = (ROOT / "kserve" / "Dockerfile").read_text()
    assert "EXPOSE 8080" in dockerfile and 'ENTRYPOINT ["convnext"]' in dockerfile
    with running_server(app_for(run_dir, api_key=KEY)) as url:
        for probe in probes:  # answered by the server, with no key, as a kubelet asks
            assert httpx.get(url + probe["path"]).status_code == 200, probe["path"]
        metadata = httpx.get(f"{url}/v2/models/{MODEL}", headers={"Authorization": f"Bearer {KEY}"})
        assert metadata.status_code == 200
