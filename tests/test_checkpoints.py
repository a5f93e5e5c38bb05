"""Every checkpoint format loads with the same logits, converts back, and round-trips bit for bit."""
import json
from pathlib import Path

import pytest
import safetensors.torch
import timm
import torch
import torchvision
from PIL import Image
from transformers import AutoModelForImageClassification

import convnext
from convnext.cli import main
from helpers import hf_model, logits, max_abs_diff, perturbed, timm_model

SMALL = ((1, 2, 1, 1), (16, 32, 48, 64))  # a non-standard config
CASES = {  # id: (our model kwargs, peer builder, peer formats)
    "tiny": (dict(name="convnext_tiny"), {
        "timm": lambda: timm_model("convnext_tiny"),
        "torchvision": lambda: torchvision.models.convnext_tiny(weights=None).eval(),
        "hf": lambda: hf_model((3, 3, 9, 3), (96, 192, 384, 768)),
    }),
    "v2-nano": (dict(name="convnextv2_nano"), {
        "timm": lambda: timm_model("convnextv2_nano"),  # timm stores its MLP as 1x1 convs here
        "hf": lambda: hf_model((2, 2, 8, 2), (80, 160, 320, 640), v2=True),
    }),
    "small-config": (dict(name="convnext_tiny", depths=SMALL[0], dims=SMALL[1], num_classes=7), {
        "timm": lambda: timm.models.convnext.ConvNeXt(depths=SMALL[0], dims=SMALL[1], num_classes=7).eval(),
        "torchvision": lambda: torchvision.models.convnext.ConvNeXt(
            [torchvision.models.convnext.CNBlockConfig(i, o, d) for i, o, d in
             zip(SMALL[1], (*SMALL[1][1:], None), SMALL[0])], num_classes=7).eval(),
        "hf": lambda: hf_model(*SMALL, num_classes=7),
    }),
}
PARAMS = [(case, fmt) for case, (_, peers) in CASES.items() for fmt in peers]


def save_peer(peer, fmt, tmp_path):
    if fmt == "hf":
        peer.save_pretrained(tmp_path / "hf")
        return tmp_path / "hf"
    path = tmp_path / f"{fmt}.pth"
    torch.save(peer.state_dict(), path)
    return path


def our_model(kwargs):
    kwargs = dict(kwargs)
    return convnext.create_model(kwargs.pop("name"), **kwargs).eval()


@pytest.mark.parametrize("case,fmt", PARAMS, ids=[f"{c}-{f}" for c, f in PARAMS])
def test_peer_checkpoint_loads_and_converts_back(case, fmt, tmp_path):
    kwargs, peers = CASES[case]
    peer = perturbed(peers[fmt]())
    path = save_peer(peer, fmt, tmp_path)
    x = torch.randn(2, 3, 64, 64)
    expected = logits(peer, x)

    ours = convnext.load_weights(our_model(kwargs), path)  # format detected from the keys
    assert max_abs_diff(ours(x), expected) <= 1e-5

    # Back to the peer's own format, loaded by the peer itself with strict=True.
    back = tmp_path / ("back_hf" if fmt == "hf" else f"back.{'safetensors' if fmt == 'timm' else 'pth'}")
    convnext.write_checkpoint(ours, back, fmt)
    fresh = peers[fmt]()
    if fmt == "hf":
        fresh = AutoModelForImageClassification.from_pretrained(back, local_files_only=True).eval()
    else:
        state = (safetensors.torch.load_file(back) if back.suffix == ".safetensors"
                 else torch.load(back, weights_only=True))
        fresh.load_state_dict(state, strict=True)
    assert max_abs_diff(logits(fresh, x), expected) <= 1e-5

    # Round trip ours -> peer -> ours is bit-identical.
    again = convnext.load_weights(our_model(kwargs), back)
    for key, tensor in ours.state_dict().items():
        assert torch.equal(tensor, again.state_dict()[key]), key


def test_torchvision_resnet50_loads_as_roadmap_step0(tmp_path):
    reference = torchvision.models.resnet50(weights=None).eval()
    torch.save(reference.state_dict(), tmp_path / "resnet50.pth")
    model = convnext.load_weights(None, tmp_path / "resnet50.pth").eval()
    assert model.model_name == "roadmap_r50_00_resnet50"
    x = torch.randn(1, 3, 64, 64)
    assert max_abs_diff(model(x), reference(x)) <= 1e-5


def test_official_format_is_our_naming(tmp_path):
    model = perturbed(convnext.create_model("convnext_tiny")).eval()
    torch.save({"model": model.state_dict(), "epoch": 3}, tmp_path / "official.pth")
    fresh = convnext.create_model("convnext_tiny").eval()
    fresh.load_state_dict(torch.load(tmp_path / "official.pth", weights_only=True)["model"], strict=True)
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(fresh(x), model(x))
    assert convnext.detect_format(model.state_dict()) == "official"


@pytest.mark.parametrize("name", ["convnext_test", "convnextv2_test", "convnext_isotropic_test"])
def test_variant_and_classes_inferred_from_tensors(name, tmp_path):
    model = convnext.create_model(name, num_classes=21841, in_chans=1).eval()
    torch.save({"model": model.state_dict()}, tmp_path / "w.pth")
    loaded = convnext.load_weights(None, tmp_path / "w.pth")
    assert (loaded.model_name, loaded.num_classes, loaded.in_chans) == (name, 21841, 1)
    family = {"convnext_test": "convnext", "convnextv2_test": "convnextv2"}.get(name, "isotropic")
    assert convnext.load_weights(family, tmp_path / "w.pth").model_name == name
    x = torch.randn(1, 1, 64, 64)
    assert torch.equal(loaded(x), model(x))


def test_save_and_load_pretrained_rebuilds_from_the_file_alone(tmp_path):
    model = perturbed(convnext.create_model("convnext_tiny", depths=SMALL[0], dims=SMALL[1], num_classes=3)).eval()
    convnext.save_pretrained(model, tmp_path / "m", class_names=["cat", "dog", "fox"])
    config = json.loads((tmp_path / "m" / "model.json").read_text())
    assert config["model"] == "convnext_tiny" and config["overrides"]["depths"] == [1, 2, 1, 1]
    for path in (tmp_path / "m", tmp_path / "m" / "model.safetensors"):  # folder, or the file alone
        loaded = convnext.load_pretrained(path).eval()
        assert loaded.class_names == ["cat", "dog", "fox"]
        x = torch.randn(2, 3, 64, 64)
        assert torch.equal(loaded(x), model(x))


def test_fine_tuning_resets_only_the_head(tmp_path, caplog):
    source = perturbed(convnext.create_model("convnext_test"))
    torch.save(source.state_dict(), tmp_path / "in1k.pth")
    model = convnext.load_weights("convnext_test", tmp_path / "in1k.pth", num_classes=10)
    assert model.num_classes == 10
    for key, tensor in model.state_dict().items():
        assert torch.equal(tensor, source.state_dict()[key]) != key.startswith("head."), key
    assert "reset head.weight, head.bias" in caplog.text
    convnext.save_pretrained(source, tmp_path / "ours")
    assert convnext.load_pretrained(tmp_path / "ours", num_classes=4).head.weight.shape == (4, 32)


def test_head_mismatch_names_the_shapes(tmp_path):
    torch.save({"model": convnext.create_model("convnext_test", num_classes=21841).state_dict()}, tmp_path / "22k.pth")
    with pytest.raises(convnext.CheckpointError, match=r"head\.weight: checkpoint \(21841, 32\) vs model \(1000, 32\)"):
        convnext.load_weights(convnext.create_model("convnext_test"), tmp_path / "22k.pth")


def test_missing_and_unexpected_keys_are_named(tmp_path):
    state = convnext.create_model("convnext_test").state_dict()
    state.pop("stages.0.0.gamma")
    state["stages.0.0.extra"] = torch.zeros(1)
    torch.save(state, tmp_path / "w.pth")
    with pytest.raises(convnext.CheckpointError, match=r"missing keys: stages\.0\.0\.gamma.*unexpected keys: stages\.0\.0\.extra"):
        convnext.load_weights(convnext.create_model("convnext_test"), tmp_path / "w.pth")


class _RunsCode:
    def __reduce__(self):
        import os
        return (os.system, ("touch pwned-marker",))


def bad_files(tmp_path):
    good = tmp_path / "good.pth"
    torch.save(convnext.create_model("convnext_test").state_dict(), good)
    data = good.read_bytes()
    (tmp_path / "truncated.pth").write_bytes(data[: len(data) // 2])
    (tmp_path / "corrupt.pth").write_bytes(b"\x00garbage" * 100)
    (tmp_path / "empty.pth").write_bytes(b"")
    (tmp_path / "no_weights").mkdir()
    (tmp_path / "torn.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":")
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "resnet18.pth")
    torch.save(torch.nn.Transformer(d_model=8, nhead=2, dim_feedforward=8).state_dict(), tmp_path / "other.pth")
    torch.save({"model": _RunsCode()}, tmp_path / "evil.pth")
    return {
        "truncated.pth": "truncated or corrupt", "corrupt.pth": "truncated or corrupt", "empty.pth": "empty file",
        "no_weights": "no weights file", "torn.safetensors": "not a readable safetensors",
        "other.pth": "not a ConvNeXt checkpoint", "resnet18.pth": "no registered ConvNeXt model matches", "evil.pth": "refused: loading it would run code",
        "missing.pth": "no such file",
    }


def test_bad_files_give_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name, message in bad_files(tmp_path).items():
        with pytest.raises(convnext.CheckpointError, match=message):
            convnext.load_weights(None, tmp_path / name)
    assert not (tmp_path / "pwned-marker").exists()  # the crafted pickle never ran


def test_cli_bad_files_exit_non_zero_with_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name, message in bad_files(tmp_path).items():
        assert main(["convert", str(tmp_path / name), str(tmp_path / "out"), "--to", "ours"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "out").exists() and not (tmp_path / "pwned-marker").exists()


@pytest.mark.parametrize("fmt", ["ours", "official", "timm", "torchvision", "hf"])
def test_cli_converts_every_direction(fmt, tmp_path, capsys):
    source = perturbed(convnext.create_model("convnext_test")).eval()
    torch.save({"model": source.state_dict()}, tmp_path / "src.pth")
    destination = tmp_path / ("out" if fmt in ("ours", "hf") else "out.pth")
    assert main(["convert", str(tmp_path / "src.pth"), str(destination), "--to", fmt]) == 0
    assert "convnext_test" in capsys.readouterr().out
    if fmt == "torchvision":  # torchvision has no test-size model: check the names instead
        assert convnext.detect_format(torch.load(destination, weights_only=True)) == "torchvision"
    loaded = convnext.load_weights("convnext_test", destination)
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(loaded(x), source(x))


def test_interrupted_conversion_keeps_the_old_destination(tmp_path, monkeypatch):
    model = convnext.create_model("convnext_test")
    convnext.write_checkpoint(model, tmp_path / "w.safetensors", "timm")
    before = (tmp_path / "w.safetensors").read_bytes()

    def dies_half_way(state, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.torch, "save_file", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        convnext.write_checkpoint(perturbed(model), tmp_path / "w.safetensors", "timm")
    assert (tmp_path / "w.safetensors").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]  # no temporary left behind


def test_weights_written_by_release_0_1_0_still_load():
    """A file from before checksums and the package layout: the same tensors, bit for bit, and the logits
    that release computed (recorded on another CPU, so to float32 rounding: kernels differ by machine)."""
    folder = Path(__file__).parent / "data" / "convnextv2_test-0.1.0"
    model = convnext.load_pretrained(folder).eval()
    stored = safetensors.torch.load_file(folder / "model.safetensors")
    expected = safetensors.torch.load_file(folder / "expected.safetensors")
    assert type(model) is convnext.ConvNeXtV2 and model.class_names == ["a", "b", "c"]
    state = model.state_dict()
    assert stored.keys() == state.keys() and all(torch.equal(stored[k], state[k]) for k in stored)
    with torch.no_grad():
        assert max_abs_diff(model(expected["input"]), expected["logits"]) < 1e-5

@pytest.fixture
def weight_reads(monkeypatch):
    """Every parse of a weights file, by its name: safetensors' tensors read, or a torch.load."""
    from convnext.checkpoints import files

    reads: list[str] = []
    real_safetensors, real_pickle = files._read_safetensors, files._read_pickle
    monkeypatch.setattr(files, "_read_safetensors", lambda path: reads.append(Path(path).name) or real_safetensors(path))
    monkeypatch.setattr(files, "_read_pickle", lambda path: reads.append(Path(path).name) or real_pickle(path))
    return reads


@pytest.mark.parametrize("fmt", ["ours", "official"])
def test_a_checkpoint_is_read_once_by_train_predict_serve_and_convert(fmt, tmp_path, capsys, weight_reads):
    model = perturbed(convnext.create_model("convnext_test", num_classes=10))  # RGB: the digits' stem is adapted
    if fmt == "ours":
        convnext.save_pretrained(model, tmp_path / "start")
        weights = tmp_path / "start"
    else:
        weights = convnext.write_checkpoint(model, tmp_path / "start.pth", "official")
    digit = tmp_path / "digit.png"
    Image.fromarray(torch.randint(0, 255, (40, 40, 3), dtype=torch.uint8).numpy()).save(digit)

    assert main(["train", "--weights", str(weights), "--epochs", "1", "--max-steps", "1", "--batch-size", "16",
                 "--subset", "32", "--output-dir", str(tmp_path / "run")]) == 0
    assert len(weight_reads) == 1, weight_reads  # the model name, the normalisation and the tensors: one read
    weight_reads.clear()
    assert main(["predict", "--weights", str(weights), str(digit)]) == 0
    assert len(weight_reads) == 1, weight_reads
    weight_reads.clear()
    from convnext.commands.common import load_runnable
    from convnext.cli import build_parser

    load_runnable(build_parser().parse_args(["serve", "--weights", str(weights)]))  # what serve loads
    assert len(weight_reads) == 1, weight_reads
    weight_reads.clear()
    assert main(["convert", str(weights), str(tmp_path / "converted"), "--to", "ours"]) == 0
    assert len(weight_reads) == 1, weight_reads
    capsys.readouterr()
