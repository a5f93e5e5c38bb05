"""Dense-prediction models: Mask/Faster R-CNN on ConvNeXt-FPN train and predict on torchvision's
framework, UperNet's shapes, and transformers' UperNet-ConvNeXt checkpoints loading strictly with equal
outputs (V1 and V2) through `convnext convert`."""
import pytest
import safetensors.torch
import torch
from transformers import ConvNextConfig, ConvNextV2Config, UperNetConfig, UperNetForSemanticSegmentation

import convnext
from convnext.checkpoints.convert import CheckpointError
from convnext.checkpoints.dense import load_dense, upernet_from_state
from convnext.cli import main
from convnext.models.backbone import ConvNeXtBackbone
from convnext.models.detection import ConvNeXtFPN, fasterrcnn_convnext, maskrcnn_convnext
from convnext.models.upernet import segmentation_loss, upernet_convnext
from convnext.training.recipes import DETECT_RECIPES, SEGMENT_RECIPES, with_official_drop_path
from helpers import max_abs_diff

SMALL = {"min_size": 128, "max_size": 128, "box_batch_size_per_image": 64, "rpn_batch_size_per_image": 64}


def targets_for(images, with_masks=True):
    """One box (and mask) in the first image, nothing in the second."""
    height, width = images[0].shape[-2:]
    mask = torch.zeros(1, height, width, dtype=torch.uint8)
    mask[0, 20:60, 30:70] = 1
    first = {"boxes": torch.tensor([[30.0, 20.0, 70.0, 60.0]]), "labels": torch.tensor([2])}
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    if with_masks:
        first["masks"] = mask
        empty["masks"] = torch.zeros(0, *images[1].shape[-2:], dtype=torch.uint8)
    return [first, empty]


def test_fpn_gives_five_levels_of_256_channels():
    fpn = ConvNeXtFPN(ConvNeXtBackbone(convnext.create_model("convnext_test")))
    maps = fpn(torch.randn(1, 3, 128, 128))
    assert list(maps) == ["0", "1", "2", "3", "pool"] and fpn.out_channels == 256
    assert [m.shape[-1] for m in maps.values()] == [32, 16, 8, 4, 2] and {m.shape[1] for m in maps.values()} == {256}


@pytest.mark.parametrize("factory,with_masks", [(maskrcnn_convnext, True), (fasterrcnn_convnext, False)])
def test_detectors_train_and_predict(factory, with_masks):
    torch.manual_seed(0)
    model = factory("convnext_test", num_classes=4, **SMALL)
    images = [torch.rand(3, 128, 128), torch.rand(3, 112, 128)]
    losses = model(images, targets_for(images, with_masks))
    expected = {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"} | ({"loss_mask"} if with_masks else set())
    assert set(losses) == expected and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    stem = model.backbone.body.downsample_layers[0][0].weight
    assert stem.grad is not None and stem.grad.abs().sum() > 0  # the backbone learns through the heads
    detections = model.eval()(images)
    assert len(detections) == 2 and {"boxes", "labels", "scores"} <= set(detections[0])
    if with_masks:
        assert detections[1]["masks"].shape[1:] == (1, 112, 128)


def test_a_narrower_fpn_narrows_the_heads_in_proportion():
    from convnext.training.tasks.detection import proposals

    model = maskrcnn_convnext("convnext_test", num_classes=4, fpn_channels=32, **SMALL, **proposals(50))
    heads = model.roi_heads
    assert heads.box_head.fc6.in_features == 32 * 7 * 7 and heads.box_head.fc7.out_features == 4 * 32  # official: 1024
    assert heads.box_predictor.cls_score.out_features == 4
    assert {m.out_channels for m in heads.mask_head.modules() if isinstance(m, torch.nn.Conv2d)} == {32}
    assert model.rpn._pre_nms_top_n == {"training": 100, "testing": 50}
    assert model.rpn._post_nms_top_n == {"training": 50, "testing": 50}
    assert heads.detections_per_img == 5  # the official 100 per 1000 proposals
    images = [torch.rand(3, 128, 128), torch.rand(3, 112, 128)]
    sum(model(images, targets_for(images)).values()).backward()
    assert len(model.eval()(images)) == 2


def test_images_without_objects_give_zero_box_and_mask_losses():
    model = maskrcnn_convnext("convnext_test", num_classes=3, **SMALL)
    images = [torch.rand(3, 128, 128)]
    losses = model(images, targets_for([images[0], images[0]])[1:])
    assert losses["loss_box_reg"] == 0 and losses["loss_mask"] == 0 and losses["loss_classifier"] > 0


def test_drop_path_follows_the_official_configs():
    rates = lambda model: [m.p for m in model.modules() if type(m).__name__ == "StochasticDepth"]  # noqa: E731
    detect = with_official_drop_path(DETECT_RECIPES["coco_3x"].update(model="convnext_tiny")).drop_path
    segment = with_official_drop_path(SEGMENT_RECIPES["ade20k_160k"].update(model="convnext_small")).drop_path
    assert max(rates(maskrcnn_convnext("convnext_tiny", 2, drop_path_rate=detect, **SMALL).backbone.body)) == pytest.approx(0.4)
    assert max(rates(upernet_convnext("convnext_small", 2, drop_path_rate=segment).backbone)) == pytest.approx(0.3)
    assert max(rates(upernet_convnext("convnext_small", 2).backbone)) == 0  # a builder's default: none


def test_upernet_shapes_aux_only_in_training_and_loss_ignores_255():
    model = upernet_convnext("convnext_test", num_classes=6)
    x = torch.randn(2, 3, 128, 96)
    out = model(x)
    assert out["out"].shape == out["aux"].shape == (2, 6, 128, 96)
    target = torch.randint(0, 6, (2, 128, 96))
    target[:, :10] = 255
    losses = segmentation_loss(out, target)
    assert set(losses) == {"loss_seg", "loss_aux"}
    sum(losses.values()).backward()
    model.eval()
    assert set(model(x)) == {"out"}
    assert sum(p.numel() for p in upernet_convnext("convnext_tiny", 150).parameters()) == pytest.approx(60.3e6, rel=0.002)


def hf_upernet(config_class):
    backbone = config_class(depths=[1, 1, 2, 1], hidden_sizes=[8, 16, 24, 32], layer_norm_eps=1e-6,
                            out_features=["stage1", "stage2", "stage3", "stage4"])
    model = UperNetForSemanticSegmentation(UperNetConfig(backbone_config=backbone, num_labels=5, hidden_size=32,
                                                         auxiliary_channels=16)).eval()
    with torch.no_grad():  # away from the initialisation: every tensor, BatchNorm statistics included
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    return model


@pytest.mark.parametrize("config_class,name", [(ConvNextConfig, "convnext_test"), (ConvNextV2Config, "convnextv2_test")])
def test_transformers_upernet_converts_strictly_with_equal_outputs(config_class, name, tmp_path, capsys):
    torch.manual_seed(0)
    hf = hf_upernet(config_class)
    source = tmp_path / "hf.safetensors"
    safetensors.torch.save_file({k: v.contiguous() for k, v in hf.state_dict().items()}, source)
    assert main(["convert", str(source), str(tmp_path / "ours"), "--to", "ours"]) == 0
    assert "UperNet on " + name in capsys.readouterr().out
    ours = load_dense(tmp_path / "ours").eval()
    x = torch.randn(2, 3, 128, 96)
    with torch.no_grad():
        assert max_abs_diff(ours(x)["out"], hf(pixel_values=x).logits) < 1e-5
    # ... and back to transformers' names: the same tensors under the same keys.
    assert main(["convert", str(tmp_path / "ours"), str(tmp_path / "back.safetensors"), "--to", "hf-upernet"]) == 0
    back = safetensors.torch.load_file(tmp_path / "back.safetensors")
    assert set(back) == set(hf.state_dict()) and all(torch.equal(back[k], v) for k, v in hf.state_dict().items())


def test_a_missing_or_extra_tensor_is_named():
    state = hf_upernet(ConvNextConfig).state_dict()
    broken = {k: v for k, v in state.items() if "fpn_bottleneck.conv" not in k}
    with pytest.raises(CheckpointError, match="missing keys: decode_head.fpn_bottleneck.conv.weight"):
        upernet_from_state(broken)
    with pytest.raises(CheckpointError, match="unexpected keys: decode_head.extra"):
        upernet_from_state({**state, "decode_head.extra": torch.zeros(1)})


def test_layer_decay_follows_the_official_rules():
    from convnext.training.optim import dense_layer_id, dense_param_groups

    # Mask R-CNN T: layer_wise, 6 layers. Stem 0, stage 2 block 7 -> 3 + 7 // 3, stage 3 -> 6, neck/heads/norms 7.
    cases = {"backbone.body.downsample_layers.0.0.weight": 0, "backbone.body.stages.0.2.dwconv.weight": 1,
             "backbone.body.downsample_layers.2.1.weight": 3, "backbone.body.stages.2.7.pwconv1.weight": 5,
             "backbone.body.stages.3.0.gamma": 6, "backbone.body.norm2.weight": 7, "backbone.fpn.layer_blocks.0.0.weight": 7,
             "roi_heads.box_head.fc6.weight": 7, "rpn.head.conv.0.0.weight": 7}
    assert {k: dense_layer_id(k, 6) for k in cases} == cases
    # UperNet: stage_wise, every downsampling layer at 0, stage i at i + 1.
    stage_wise = {"backbone.downsample_layers.3.1.weight": 0, "backbone.stages.0.0.dwconv.weight": 1,
                  "backbone.stages.3.2.pwconv2.bias": 4, "backbone.norm3.bias": 13, "decode_head.bottleneck.conv.weight": 13}
    assert {k: dense_layer_id(k, 12, "stage_wise") for k in stage_wise} == stage_wise
    model = upernet_convnext("convnext_test", num_classes=3)
    groups = dense_param_groups(model, 0.05, 0.9, 6, "stage_wise")
    scale_of = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    decay_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    params = dict(model.named_parameters())
    assert scale_of[id(params["decode_head.classifier.weight"])] == 1.0 == scale_of[id(params["backbone.norm0.weight"])]
    assert scale_of[id(params["backbone.downsample_layers.0.0.weight"])] == pytest.approx(0.9 ** 7)
    assert decay_of[id(params["decode_head.classifier.bias"])] == 0.0 == decay_of[id(params["backbone.stages.0.0.gamma"])]
    assert decay_of[id(params["decode_head.classifier.weight"])] == 0.05
    assert sum(len(g["params"]) for g in groups) == len(params)


def _detector_loss(model):
    images = [torch.rand(3, 128, 128, generator=torch.Generator().manual_seed(3)) for _ in range(2)]
    return sum(model(images, targets_for(images)).values())


def _segmenter_loss(model):
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    masks = torch.randint(0, 3, (2, 64, 64), generator=torch.Generator().manual_seed(4))
    return sum(segmentation_loss(model(images), masks).values())


@pytest.mark.parametrize("build,loss", [
    (lambda: maskrcnn_convnext("convnext_test", num_classes=4, drop_path_rate=0.2, **SMALL), _detector_loss),
    (lambda: upernet_convnext(convnext.create_model("convnext_test", drop_path_rate=0.2), num_classes=3, channels=32),
     _segmenter_loss),
], ids=["mask-rcnn", "upernet"])
def test_grad_checkpointing_recomputes_every_backbone_block_with_the_same_gradients(build, loss, monkeypatch):
    import copy

    import convnext.models.layers as layers
    from convnext.models.layers import set_grad_checkpointing

    torch.manual_seed(0)
    model = build().train()
    checkpointed = copy.deepcopy(model)
    assert set_grad_checkpointing(checkpointed) >= 1
    calls = []
    real = layers.checkpoint
    monkeypatch.setattr(layers, "checkpoint", lambda fn, *a, **k: calls.append(fn) or real(fn, *a, **k))
    grads = []
    for m in (model, checkpointed):
        torch.manual_seed(1)  # the same drop-path draws and RPN/RoI sampling in both
        loss(m).backward()
        grads.append({k: p.grad.clone() for k, p in m.named_parameters() if p.grad is not None})
    backbone = checkpointed.backbone.body if hasattr(checkpointed.backbone, "body") else checkpointed.backbone
    assert calls == [block for stage in backbone.stages for block in stage]  # only the checkpointed copy
    assert grads[0].keys() == grads[1].keys() and any(k.startswith("backbone") for k in grads[0])
    for key in grads[0]:
        assert torch.allclose(grads[0][key], grads[1][key], rtol=1e-4, atol=1e-6), key
