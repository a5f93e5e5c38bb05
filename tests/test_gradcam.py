"""Grad-CAM: equal to plain autograd through the whole network, on folded frozen models too; empty maps
are reported; `convnext predict --cam` writes the overlays; the peak falls on the object that decides
the class (with the set-up docs/serving.md explains)."""
import json

import pytest
import torch

import convnext
from convnext.cli import main
from convnext.deploy.gradcam import grad_cam, overlay
import gradcam_localisation  # scripts/gradcam_localisation.py: the measurement docs/serving.md reports
from helpers import max_abs_diff, perturbed


def stage_output_and_gradient(model, images, classes, stage):
    """A stage's output A and ∂(the classes' logits)/∂A, the whole forward pass under plain autograd."""
    kept = {}
    step = model.stages[stage] if hasattr(model, "stages") else [model.stem, model.blocks][stage]
    handle = step.register_forward_hook(lambda module, args, out: kept.setdefault("A", out))
    try:
        logits = model(images.requires_grad_())
        (grads,) = torch.autograd.grad(logits.gather(1, torch.tensor(classes)[:, None]).sum(), kept["A"])
    finally:
        handle.remove()
    return kept["A"].detach(), grads


def autograd_reference(model, images, classes, stage):
    """Grad-CAM the textbook way: a hook on the stage's output."""
    activations, grads = stage_output_and_gradient(model, images, classes, stage)
    maps = torch.relu((grads.mean(dim=(2, 3), keepdim=True) * activations).sum(dim=1))
    return maps / maps.amax(dim=(1, 2), keepdim=True)


@pytest.mark.parametrize("name,stage", [("convnext_test", -1), ("convnextv2_test", 1), ("convnext_isotropic_test", -1)])
def test_maps_equal_plain_autograd(name, stage):
    torch.manual_seed(0)
    model = convnext.create_model(name, num_classes=4).eval()
    with torch.no_grad():
        for p in model.parameters():  # away from init, so GRN and layer scale matter
            p.add_(0.05 * torch.randn_like(p))
    images = torch.randn(3, 3, 128, 128)
    cams = grad_cam(model, images, classes=[0, 2, 3], stage=stage)
    assert cams.classes == [0, 2, 3] and not any(cams.empty)
    reference = autograd_reference(model, images.clone(), [0, 2, 3], stage)
    assert cams.maps.shape == reference.shape and max_abs_diff(cams.maps, reference) < 1e-4
    # A folded model with frozen weights gives the same maps (only the head is differentiated).
    folded = convnext.optimize_for_inference(model)
    assert max_abs_diff(grad_cam(folded, images, classes=[0, 2, 3], stage=stage).maps, cams.maps) < 1e-3


def test_an_all_negative_map_is_reported_empty_not_drawn():
    model = convnext.create_model("convnext_test", num_classes=3).eval()
    with torch.no_grad():
        model.head.weight.zero_()  # every class score flat: no gradient, no map
    cams = grad_cam(model, torch.randn(2, 3, 64, 64))
    assert cams.empty == [True, True] and torch.all(cams.maps == 0)
    picture = overlay(torch.rand(3, 64, 64), cams.maps[0])
    assert picture.size == (64, 64)
    with pytest.raises(ValueError, match="cam-stage"):
        grad_cam(model, torch.randn(1, 3, 64, 64), stage=4)


def test_predict_writes_cam_overlays(tmp_path, capsys):
    from PIL import Image

    run_dir = tmp_path / "run"
    assert main(["train", "--model", "convnext_test", "--epochs", "1", "--max-steps", "2", "--output-dir",
                 str(run_dir)]) == 0
    Image.new("L", (32, 32), 90).save(tmp_path / "digit.png")
    capsys.readouterr()
    assert main(["predict", "--weights", str(run_dir), str(tmp_path / "digit.png"), "--cam", str(tmp_path / "cams"),
                 "--cam-stage", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)[0]
    assert result["cam"]["class_index"] == result["top"][0]["index"]
    assert len(result["cam"]["grid"]) == 4  # stage 1 of a 32-pixel input: 4 x 4
    assert Image.open(tmp_path / "cams" / "digit.cam.png").size == (32, 32)


@pytest.mark.parametrize("name", ["convnext_test", "convnextv2_test"])
def test_every_stage_output_reaches_the_logit_through_a_layernorm(name):
    """Why Grad-CAM's peak can miss the object on ConvNeXt (docs/serving.md): each of stages 0-2 feeds
    the next downsampling's LayerNorm, which is invariant to scaling and shifting each position's
    channel vector, so the gradient at every position is orthogonal to that position's own activation;
    the last stage is averaged into the head's LayerNorm, so the weighted map sums to zero."""
    torch.manual_seed(0)
    model = perturbed(convnext.create_model(name, num_classes=4), 0.05).eval()
    images = torch.randn(2, 3, 96, 96)
    for stage in range(3):
        activations, grads = stage_output_and_gradient(model, images, [0, 0], stage)
        own = (grads * activations).sum(dim=1).abs()  # (N, h, w): ∂logit/∂A_pos · A_pos
        scale = grads.norm(dim=1) * activations.norm(dim=1)
        assert (own / scale).max() < 1e-3, stage
        # Other positions' gradients do not vanish against it: that is all Grad-CAM's α·A sees.
        cross = (grads.mean(dim=(2, 3), keepdim=True) * activations).sum(dim=1).abs()
        assert (cross / (grads.mean(dim=(2, 3), keepdim=True).norm(dim=1) * activations.norm(dim=1))).max() > 0.05
    activations, grads = stage_output_and_gradient(model, images, [0, 0], 3)
    weighted = (grads.mean(dim=(2, 3), keepdim=True) * activations).sum(dim=1)  # (N, h, w)
    assert (weighted.sum(dim=(1, 2)).abs() / weighted.abs().sum(dim=(1, 2))).max() < 1e-3


def test_the_peak_falls_inside_the_shape_that_decides_the_class():
    """A coloured shape at a random position in a 96² image decides the class. The isotropic ConvNeXt
    (its 6x6 map is the last stage's, the default) trained for a few seconds with one-vs-rest class
    scores, so that each score is its own class's evidence: measured 93-97% over 20 seeds."""
    model, _, _ = gradcam_localisation.train("convnext_isotropic_test", seed=0, steps=300, loss_name="one-vs-rest-hinge")
    x, y, masks = gradcam_localisation.held_out(seed=0)
    with torch.no_grad():
        assert (model(x).argmax(1) == y).float().mean() >= 0.95
    found = gradcam_localisation.localisation(model, x, masks, stage=-1)
    assert found["inside"] >= 0.9 and found["empty"] == 0, found
    # A map that ignored the image would land inside a shape (about 6% of the image) by chance only.
    assert masks.float().mean() < 0.1
