"""The paper's recipes as data, AdamW groups, layer-wise lr decay and the per-iteration schedule."""
import pytest
import torch

import convnext
from convnext.checkpoints import hub
from convnext.cli import main
from convnext.training.optim import build_optimizer, layer_id, lr_schedule, param_groups
from convnext.training.recipes import RECIPES, ClassifyRecipe


def test_in1k_recipe_is_the_papers():
    r = RECIPES["in1k"]
    assert (r.lr, r.lr_base_batch, r.weight_decay, r.epochs, r.warmup_epochs, r.min_lr) == (4e-3, 4096, 0.05, 300, 20, 1e-6)
    assert (r.randaugment, r.mixup, r.cutmix, r.reprob, r.label_smoothing) == (9, 0.8, 1.0, 0.25, 0.1)
    assert (r.ema_decay, r.crop_pct) == (0.9999, 0.875)
    # layer scale: the model's own, which is the paper's 1e-6
    assert r.layer_scale is None and convnext.create_model("convnext_tiny").stages[0][0].gamma.max().item() == pytest.approx(1e-6)
    f = RECIPES["finetune"]
    assert (f.lr, f.lr_base_batch, f.epochs, f.warmup_epochs, f.weight_decay, f.head_init_scale) == (5e-5, 512, 30, 0, 1e-8, 0.001)
    assert 0.7 <= f.layer_decay <= 0.8 and f.mixup == f.cutmix == 0


def test_no_weight_decay_on_biases_norms_layer_scale_and_grn():
    for name in ["convnext_test", "convnextv2_test"]:
        model = convnext.create_model(name)
        decay = {id(p): g["weight_decay"] for g in param_groups(model, 0.05) for p in g["params"]}
        norms = {id(p) for m in model.modules() if isinstance(m, torch.nn.LayerNorm) for p in m.parameters()}
        for key, p in model.named_parameters():
            exempt = key.endswith(("bias", ".gamma")) or ".grn." in key or id(p) in norms
            assert decay[id(p)] == (0.0 if exempt else 0.05), key


def test_layer_decay_has_twelve_groups_for_convnext():
    names = [k for k, _ in convnext.create_model("convnext_tiny").named_parameters()]
    ids = {layer_id(k) for k in names}
    assert layer_id("downsample_layers.0.0.weight") == 0 and layer_id("head.weight") == 13
    assert layer_id("stages.2.8.dwconv.weight") == 5 and layer_id("stages.3.0.gamma") == 12
    small = {layer_id(k) for k, _ in convnext.create_model("convnext_small").named_parameters()}
    assert small == set(range(14))  # stem, 12 body groups, head
    assert ids < small
    model = convnext.create_model("convnext_test")
    optimizer = build_optimizer(model, lr=1.0, weight_decay=0.05, layer_decay=0.5)
    scales = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    assert scales[id(model.head.weight)] == 1.0
    assert scales[id(model.downsample_layers[0][0].weight)] == 0.5 ** 13


def test_warmup_then_cosine_per_iteration():
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = lr_schedule(optimizer, total_steps=100, warmup_steps=10, min_lr_ratio=0.01, shape="cosine")
    lrs = []
    for _ in range(100):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:10]))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])) and lrs[-1] == pytest.approx(0.01, abs=1e-3)


def test_lr_scales_with_effective_batch(tmp_path, capsys):
    assert main(["train", "--model", "convnext_test", "--batch-size", "16", "--accum-steps", "2", "--lr", "1e-3",
                 "--lr-base-batch", "64", "--max-steps", "1", "--output-dir", str(tmp_path / "r")]) == 0
    assert "lr 0.001 at batch 64 -> 0.0005 for effective batch 32 (16 x 1 process(es) x 2 accumulation)" \
        in capsys.readouterr().out


def test_finetune_from_any_format_and_from_pretrained(tmp_path, capsys, monkeypatch):
    args = ["train", "--recipe", "finetune", "--model", "convnext_test", "--max-steps", "1", "--batch-size", "8"]
    # Digits are grayscale: an RGB stem is adapted as timm does (tests/test_hf_hub.py); any other channel
    # count is not, and the mismatch is named in the checkpoint's own (timm's) names.
    two = convnext.create_model("convnext_test", in_chans=2)
    convnext.write_checkpoint(two, tmp_path / "two.pth", "timm")
    assert main([*args, "--weights", str(tmp_path / "two.pth"), "--output-dir", str(tmp_path / "a")]) == 2
    assert "stem.0.weight: checkpoint (8, 2, 4, 4) vs model (8, 1, 4, 4)" in capsys.readouterr().err

    source = convnext.create_model("convnext_test", in_chans=1)  # a 1000-class model, saved in timm's format
    convnext.write_checkpoint(source, tmp_path / "timm.pth", "timm")
    assert main([*args, "--weights", str(tmp_path / "timm.pth"), "--output-dir", str(tmp_path / "b")]) == 0
    model = convnext.load_pretrained(tmp_path / "b")
    assert model.num_classes == 10
    # One step at lr 5e-5 barely moves the body; the new head starts at 0.001 x the usual init.
    assert torch.allclose(model.stages[0][0].dwconv.weight, source.stages[0][0].dwconv.weight, atol=1e-3)
    assert model.head.weight.abs().max() < 0.01

    torch.save({"model": source.state_dict()}, tmp_path / "published.pth")
    monkeypatch.setenv("CONVNEXT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(hub.PRETRAINED, "convnext_test", {"in1k": hub.Weights((tmp_path / "published.pth").as_uri())})
    assert main([*args, "--pretrained", "--output-dir", str(tmp_path / "c")]) == 0
    assert (tmp_path / "cache" / "published.pth").is_file()


def test_recipe_values_outside_their_range_are_refused():
    with pytest.raises(ValueError, match="epochs must be ≥ 1, got -1"):
        RECIPES["small"].update(epochs=-1)
    with pytest.raises(ValueError, match="warmup_epochs must be ≤ epochs"):
        RECIPES["small"].update(epochs=3, warmup_epochs=5)
    with pytest.raises(ValueError, match="drop_path must be in"):
        RECIPES["in1k"].update(drop_path=1.0)


def test_a_run_shorter_than_the_preset_warmup_keeps_its_share():
    small = RECIPES["small"]  # 2 warm-up epochs of 20
    assert small.update(epochs=1).warmup_epochs == small.warmup_epochs / small.epochs
    assert small.update(epochs=4).warmup_epochs == small.warmup_epochs  # long enough: unchanged


@pytest.mark.parametrize("command,flag", [(["train"], "--proposals"), (["train"], "--mask-ratio"),
                                          (["pretrain"], "--mixup"), (["detect", "train"], "--scale-jitter"),
                                          (["segment", "train"], "--rois-per-image"), (["segment", "train"], "--cutmix")])
def test_a_flag_of_another_task_is_refused(command, flag, capsys):
    """Each command's flags are its own task's recipe fields: another task's is an error, not ignored."""
    with pytest.raises(SystemExit) as exit_info:
        main([*command, flag, "1"])
    assert exit_info.value.code == 2 and f"unrecognized arguments: {flag}" in capsys.readouterr().err


def test_a_run_saved_with_every_tasks_fields_resumes_with_its_own():
    """config.json of runs before the split held all 34 fields; those of other tasks never acted."""
    saved = {**RECIPES["small"].as_dict(), "mask_ratio": 0.6, "proposals": 1000, "scale_jitter": 2.0,
             "rois_per_image": 512, "head_width": None}
    assert ClassifyRecipe.from_saved(saved) == RECIPES["small"]
