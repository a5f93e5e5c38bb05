"""Pretrained weights through the real download path, served locally (tests never reach the network)."""
import functools
import hashlib
import http.server
import threading

import pytest
import torch

import convnext
from convnext.checkpoints import hub


@pytest.fixture
def published(tmp_path, monkeypatch):
    """An official-format file for convnext_test, published at a file:// address with its sha256."""
    source = convnext.create_model("convnext_test")
    path = tmp_path / "served" / "convnext_test_1k_224_ema.pth"
    path.parent.mkdir()
    torch.save({"model": source.state_dict()}, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    monkeypatch.setenv("CONVNEXT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(hub.PRETRAINED, "convnext_test", {
        "in1k": hub.Weights(path.as_uri(), sha256=digest),
        "in22k": hub.Weights(path.as_uri(), num_classes=21841),
    })
    return source, path


def test_pretrained_downloads_caches_and_loads(published, tmp_path):
    source, path = published
    model = convnext.create_model("convnext_test", pretrained=True).eval()
    for key, tensor in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], tensor)
    assert model.class_names[:2] == ["tench", "goldfish"] and len(model.class_names) == 1000
    assert (tmp_path / "cache" / path.name).is_file()
    path.unlink()  # now only the cache has it
    assert torch.equal(convnext.create_model("convnext_test", pretrained="in1k").head.weight, source.head.weight)


def test_pretrained_with_a_new_head(published):
    source, _ = published
    model = convnext.create_model("convnext_test", pretrained=True, num_classes=5)
    assert model.head.weight.shape == (5, 32) and model.class_names is None
    assert torch.equal(model.stages[0][0].dwconv.weight, source.stages[0][0].dwconv.weight)


def test_hash_mismatch_is_refused(published, monkeypatch):
    _, path = published
    monkeypatch.setitem(hub.PRETRAINED, "convnext_test", {"in1k": hub.Weights(path.as_uri(), sha256="0" * 64)})
    with pytest.raises(convnext.CheckpointError, match="hash"):
        convnext.create_model("convnext_test", pretrained=True)


def test_no_network_says_what_to_download_and_where(published, monkeypatch, tmp_path):
    url = "http://127.0.0.1:9/convnext_test_1k_224_ema.pth"  # nothing listens on port 9
    monkeypatch.setitem(hub.PRETRAINED, "convnext_test", {"in1k": hub.Weights(url)})
    expected = str(tmp_path / "cache" / "convnext_test_1k_224_ema.pth")
    with pytest.raises(convnext.CheckpointError, match="download it by hand") as error:
        convnext.create_model("convnext_test", pretrained=True)
    assert url in str(error.value) and expected in str(error.value)


def test_download_over_local_http(published, monkeypatch):
    source, path = published
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(path.parent))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{path.name}"
        monkeypatch.setitem(hub.PRETRAINED, "convnext_test", {"in1k": hub.Weights(url)})
        model = convnext.create_model("convnext_test", pretrained=True)
    finally:
        server.shutdown()
    assert torch.equal(model.head.bias, source.head.bias)


def test_every_published_model_is_registered():
    for name, tags in hub.PRETRAINED.items():
        if name == "convnext_test":
            continue
        assert name in convnext.list_models()
        assert all(w.url.startswith("https://dl.fbaipublicfiles.com/convnext/") for w in tags.values())
    assert hub.pretrained_weights("convnext_base", "in22k").num_classes == 21841
    with pytest.raises(ValueError, match="choose from"):
        hub.pretrained_weights("convnext_tiny", "in5k")
