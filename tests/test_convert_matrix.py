"""`convnext convert` over every (model family x target format): the peer's own loader takes the file
with the same logits, or the command ends in one error line and writes nothing."""
import json

import pytest
import timm
import torch
import torchvision
from torchvision.models.convnext import CNBlockConfig
from transformers import AutoModelForImageClassification

import convnext
from convnext.cli import main
from helpers import logits, max_abs_diff, perturbed

NUM_CLASSES = 5
FAMILIES = {  # family: (model, the formats that hold it)
    "v1": ("convnext_atto", {"ours", "official", "timm", "torchvision", "hf"}),
    "v2": ("convnextv2_atto", {"ours", "official", "timm", "hf"}),
    "isotropic": ("convnext_isotropic_test", {"ours", "official"}),
    "roadmap-resnet": ("roadmap_r50_00_resnet50", {"ours", "official", "timm", "torchvision"}),
    "roadmap-convnext": ("roadmap_r50_13_separate_downsampling", {"ours", "official", "timm", "torchvision", "hf"}),
    "roadmap-between": ("roadmap_r50_07_move_up_dwconv", {"ours", "official"}),
}
TARGETS = ("ours", "official", "timm", "torchvision", "hf")
DESTINATIONS = {"ours": "ours", "official": "official.pth", "timm": "timm", "torchvision": "torchvision.pth", "hf": "hf"}


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Each family's model with random weights, saved in our format (which names the model)."""
    made = {}
    for family, (name, _) in FAMILIES.items():
        torch.manual_seed(0)
        model = perturbed(convnext.create_model(name, num_classes=NUM_CLASSES), 0.05).eval()
        path = convnext.save_pretrained(model, tmp_path_factory.mktemp(family)).parent
        made[family] = (model, path)
    return made


def torchvision_model(name: str, model):
    if name.startswith("roadmap_r50_00"):
        return torchvision.models.resnet50(num_classes=NUM_CLASSES)
    if name.startswith("roadmap_r50_13"):
        return torchvision.models.convnext_tiny(num_classes=NUM_CLASSES)
    depths, dims = convnext.checkpoints.peer_configs.stage_shape(model.state_dict())
    blocks = [CNBlockConfig(i, o, d) for i, o, d in zip(dims, (*dims[1:], None), depths)]
    return torchvision.models.convnext.ConvNeXt(blocks, num_classes=NUM_CLASSES)


def load_with_peer(fmt: str, name: str, model, destination):
    """The file as the peer's users load it: strict, by the peer's own entry point."""
    if fmt == "ours":
        return convnext.load_pretrained(destination)
    if fmt == "official":
        fresh = convnext.create_model(name, num_classes=NUM_CLASSES)
        fresh.load_state_dict(torch.load(destination, weights_only=True)["model"], strict=True)
        return fresh
    if fmt == "timm":
        return timm.create_model(f"local-dir:{destination}", pretrained=True)
    if fmt == "torchvision":
        fresh = torchvision_model(name, model)
        fresh.load_state_dict(torch.load(destination, weights_only=True), strict=True)
        return fresh
    return AutoModelForImageClassification.from_pretrained(destination, local_files_only=True)


CASES = [(family, fmt) for family in FAMILIES for fmt in TARGETS]


@pytest.mark.parametrize("family,fmt", CASES, ids=[f"{f}-to-{t}" for f, t in CASES])
def test_every_family_to_every_format_works_or_says_why(family, fmt, sources, tmp_path, capsys):
    name, holds = FAMILIES[family]
    model, source = sources[family]
    destination = tmp_path / DESTINATIONS[fmt]
    code = main(["convert", str(source), str(destination), "--to", fmt])
    out, err = capsys.readouterr()
    if fmt not in holds:
        assert code == 2
        assert err.count("\n") == 1 and err.startswith("convnext convert: error: ") and "Traceback" not in err
        assert not destination.exists() and list(tmp_path.iterdir()) == []
        return
    assert code == 0, err
    assert f": {name}, {NUM_CLASSES} classes" in out  # the model the file named, not a look-alike
    peer = load_with_peer(fmt, name, model, destination).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert max_abs_diff(logits(peer, x), model(x)) <= 1e-4


# model: formats a checkpoint of it comes in. Reading each format is format code, the same for every
# model (every format of the two smallest V1/V2 models and of ConvNeXt-T, which a roadmap step shares
# its architecture with); naming the model is not, so the larger models take two formats each.
PUBLISHED = {
    "convnext_atto": ("official", "timm", "torchvision", "hf", "ours"),
    "convnext_tiny": ("official", "timm", "torchvision", "hf", "ours"),
    "convnext_small": ("torchvision", "ours"),
    "convnextv2_atto": ("official", "timm", "hf", "ours"),
    "convnextv2_tiny": ("official", "hf"),
}
NAMED = [(name, fmt) for name, formats in PUBLISHED.items() for fmt in formats]


@pytest.mark.parametrize("name,fmt", NAMED, ids=[f"{n}-from-{f}" for n, f in NAMED])
def test_published_name_wins_over_roadmap_steps(name, fmt, tmp_path, capsys):
    model = convnext.create_model(name, num_classes=7)
    source = tmp_path / ("src" if fmt in ("hf", "ours") else "src.pth")
    if fmt == "ours":
        convnext.save_pretrained(model, source)
    else:
        convnext.write_checkpoint(model, source, fmt)
    assert main(["convert", str(source), str(tmp_path / "dst"), "--to", "ours"]) == 0
    assert f"(ours): {name}, 7 classes" in capsys.readouterr().out
    assert json.loads((tmp_path / "dst" / "model.json").read_text())["model"] == name
    assert type(convnext.load_pretrained(tmp_path / "dst")) is type(model)


def test_roadmap_step_only_when_named(tmp_path, capsys):
    """A ConvNeXt-T checkpoint is ConvNeXt-T unless the user names the step (or its family)."""
    convnext.write_checkpoint(convnext.create_model("convnext_tiny", num_classes=3), tmp_path / "t.pth", "timm")
    for model, expected in ((None, "convnext_tiny"), ("roadmap", "roadmap_r50_13_separate_downsampling"),
                            ("roadmap_r50_13_separate_downsampling", "roadmap_r50_13_separate_downsampling")):
        args = ["convert", str(tmp_path / "t.pth"), str(tmp_path / "out"), "--to", "ours"]
        assert main(args + (["--model", model] if model else [])) == 0
        assert f"(ours): {expected}, 3 classes" in capsys.readouterr().out
    # A ResNet has no published ConvNeXt: the roadmap's first step is found by itself.
    torch.save(torchvision.models.resnet50(num_classes=3).state_dict(), tmp_path / "r50.pth")
    assert main(["convert", str(tmp_path / "r50.pth"), str(tmp_path / "r"), "--to", "ours"]) == 0
    assert "(ours): roadmap_r50_00_resnet50, 3 classes" in capsys.readouterr().out
