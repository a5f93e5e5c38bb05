"""The model's stem and norm options (small inputs, short runs from scratch): shapes, the official layout
kept for the paper's stem, our files holding the options and peers' files refusing them, the recipe
flags that reach them, and one-line refusals."""
import pytest
import torch

import convnext
from convnext.checkpoints.files import write_checkpoint
from convnext.checkpoints.convert import CheckpointError
from convnext.cli import main
from convnext.deploy.inference import optimize_for_inference
from helpers import randomised, timm_model


@pytest.mark.parametrize("stem", ["patch", "overlap"])
@pytest.mark.parametrize("patch_size", [1, 2, 4])
def test_the_stem_sets_the_first_stage_s_resolution(stem, patch_size):
    model = convnext.create_model("convnext_test", stem=stem, patch_size=patch_size, num_classes=5)
    x = torch.randn(2, 3, 32, 32)
    stages = model.forward_intermediates(x)
    assert [tuple(s.shape[-2:]) for s in stages] == [(32 // patch_size // 2 ** i,) * 2 for i in range(4)]
    assert model(x).shape == (2, 5) and model.min_input_size == 8 * patch_size


def test_the_paper_s_stem_keeps_the_official_layout():
    ours = convnext.create_model("convnext_atto")
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in convnext.create_model("convnext_atto", stem="patch", patch_size=4).state_dict().items()}
    assert ours.downsample_layers[0][0].kernel_size == (4, 4)
    peer = timm_model("convnext_atto")  # timm's tensors, renamed, have the same shapes
    assert sorted(v.numel() for v in peer.state_dict().values()) == sorted(v.numel() for v in ours.state_dict().values())


def test_our_files_hold_the_options_and_peers_refuse_them(tmp_path):
    model = randomised("convnext_test", stem="overlap", patch_size=2, norm="batch", num_classes=4)
    convnext.save_pretrained(model, tmp_path / "w")
    again = convnext.load_pretrained(tmp_path / "w").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(again(x), model(x))
    for fmt in ("official", "timm", "hf", "torchvision"):
        with pytest.raises(CheckpointError, match="holds the paper's patchify stem"):
            write_checkpoint(model, tmp_path / f"{fmt}.safetensors", fmt)
    assert main(["convert", str(tmp_path / "w"), str(tmp_path / "t.safetensors"), "--to", "timm"]) == 2


def test_batch_norm_blocks_fold_exactly_and_run_the_reference():
    model = randomised("convnext_test", norm="batch", num_classes=4)
    notes = []
    convnext.accelerate(model, say=notes.append)
    assert any("BatchNormChannelsLast" in n for n in notes)  # said, not silently slow
    folded = optimize_for_inference(model, channels_last=False)
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        assert (folded(x) - model(x)).abs().max() <= 1e-4


def test_bad_options_are_refused():
    for options, message in (({"stem": "conv"}, "stem must be one of"), ({"patch_size": 3}, "patch_size must be"),
                             ({"norm": "group"}, "norm must be one of")):
        with pytest.raises(ValueError, match=message):
            convnext.create_model("convnext_test", **options)
    with pytest.raises(ValueError, match="H, W >= 16"):
        convnext.create_model("convnext_test", patch_size=2)(torch.randn(1, 3, 8, 8))


def test_the_recipe_flags_reach_the_model_or_are_refused(tmp_path, capsys):
    common = ["train", "--model", "convnext_test", "--epochs", "1", "--max-steps", "1", "--subset", "64", "--batch-size", "16"]
    assert main([*common, "--stem", "overlap", "--patch-size", "1", "--norm", "batch",
                 "--output-dir", str(tmp_path / "r")]) == 0
    model = convnext.load_pretrained(tmp_path / "r")
    assert model.model_overrides["stem"] == "overlap" and model.min_input_size == 8
    assert isinstance(model.stages[0][0].norm, torch.nn.BatchNorm2d)
    capsys.readouterr()
    assert main(["train", "--model", "roadmap_small_13_separate_downsampling", "--epochs", "1", "--max-steps", "1",
                 "--subset", "64", "--batch-size", "16", "--stem", "overlap", "--output-dir", str(tmp_path / "s")]) == 2
    assert "--stem overlap: roadmap_small_13_separate_downsampling has no stem option" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit:
        main([*common, "--patch-size", "3", "--output-dir", str(tmp_path / "t")])
    assert exit.value.code == 2
    assert "--patch-size must be one of 1, 2, 4, got 3" in capsys.readouterr().err
    assert main([*common, "--data", "scenes:64", "--input-size", "16", "--output-dir", str(tmp_path / "u")]) == 2
    assert "--input-size must be ≥ 32" in capsys.readouterr().err
