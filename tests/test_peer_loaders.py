"""Exported weights work through the peers' own entry points: transformers' `pipeline` and timm's
`create_model("local-dir:...")` with its own data config, agreeing with `convnext predict`."""
import json

import timm
import torch
from PIL import Image
from timm.data import create_transform, resolve_data_config
from transformers import pipeline

import convnext
from convnext.cli import main
from helpers import perturbed

CLASSES = ["ant", "bee", "cat", "dog", "eel"]


def smooth_image(path):
    """A picture without sharp edges, so the peers' resizing kernels agree closely."""
    y, x = torch.meshgrid(torch.linspace(0, 1, 90), torch.linspace(0, 1, 120), indexing="ij")
    rgb = torch.stack([x, y, (x * y) ** 0.5]) * 255
    Image.fromarray(rgb.permute(1, 2, 0).round().byte().numpy()).save(path)


def test_same_top1_from_convnext_predict_transformers_pipeline_and_timm(tmp_path, capsys):
    torch.manual_seed(1)
    model = perturbed(convnext.create_model("convnext_atto", num_classes=len(CLASSES)), 0.05)
    model.class_names = CLASSES
    model.data_config = {"mean": (0.5, 0.4, 0.3), "std": (0.2, 0.25, 0.3), "input_size": 64, "crop_pct": 0.875}
    convnext.save_pretrained(model, tmp_path / "ours")
    assert main(["convert", str(tmp_path / "ours"), str(tmp_path / "hf"), "--to", "hf"]) == 0
    assert main(["convert", str(tmp_path / "ours"), str(tmp_path / "timm"), "--to", "timm"]) == 0
    smooth_image(tmp_path / "picture.png")
    capsys.readouterr()

    assert main(["predict", "--weights", str(tmp_path / "ours"), str(tmp_path / "picture.png"), "--json"]) == 0
    ours = json.loads(capsys.readouterr().out)[0]["top"][0]

    hf = pipeline("image-classification", model=str(tmp_path / "hf"))(str(tmp_path / "picture.png"))[0]

    peer = timm.create_model(f"local-dir:{tmp_path / 'timm'}", pretrained=True).eval()
    config = resolve_data_config({}, model=peer)
    assert (config["input_size"], config["crop_pct"], tuple(config["mean"])) == ((3, 64, 64), 0.875, (0.5, 0.4, 0.3))
    with Image.open(tmp_path / "picture.png") as image:
        x = create_transform(**config)(image.convert("RGB"))[None]
    with torch.no_grad():
        probabilities = peer(x).softmax(dim=1)[0]
    timm_top = peer.pretrained_cfg["label_names"][int(probabilities.argmax())]

    assert ours["class"] == hf["label"] == timm_top
    assert abs(ours["probability"] - hf["score"]) < 0.005
    assert abs(ours["probability"] - float(probabilities.max())) < 0.005


def test_exported_folders_carry_the_data_config_back(tmp_path):
    model = convnext.create_model("convnextv2_test", num_classes=3)
    model.class_names = ["a", "b", "c"]
    model.data_config = {"mean": (0.1, 0.2, 0.3), "std": (0.4, 0.5, 0.6), "input_size": 96, "crop_pct": 0.9}
    for fmt in ("hf", "timm"):
        convnext.write_checkpoint(model, tmp_path / fmt, fmt)
        back = convnext.load_weights(None, tmp_path / fmt)
        assert back.class_names == ["a", "b", "c"]
        assert {k: back.data_config[k] for k in model.data_config} == model.data_config
        assert back.data_config["interpolation"] == "bicubic" and back.data_config["crop_mode"] == "center"
