"""The model is a plain PyTorch module, and what users do to it takes effect: tested with the libraries
they use (PEFT, torchvision's feature extractor, PyTorch's FLOP counter, torch.nn.utils.prune, torchao's
PT2E quantization, pytorch-grad-cam), as on torchvision's ConvNeXt, before and after `accelerate`."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune

import convnext
from convnext.accelerate import autotuner_of, describe
from convnext.accelerate.fast_block import FastBlock
from convnext.checkpoints.convert import from_format
from convnext.models.convnext import Block
from helpers import max_abs_diff, perturbed, torchvision_model

NAMES = ["convnext_test", "convnextv2_test", "convnext_isotropic_test"]


def model_of(name: str, accelerated: bool, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    model = perturbed(convnext.create_model(name, **kwargs), 0.05).eval()
    return convnext.accelerate(model) if accelerated else model


def blocks_of(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, Block)]


@pytest.mark.parametrize("name", NAMES)
def test_accelerate_computes_the_reference_and_is_undone(name):
    model = model_of(name, False)
    x = torch.randn(3, 3, 64, 64)
    keys = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        reference = model(x)
        convnext.accelerate(model)
        assert describe(model) == f"accelerated ({len(blocks_of(model))} of {len(blocks_of(model))} blocks)"
        assert all(isinstance(b, FastBlock) for b in blocks_of(model)) and autotuner_of(model) is not None
        assert max_abs_diff(model(x), reference) < 1e-5
    assert autotuner_of(model).choices()  # the kernels ran: they measured this machine for these shapes
    state = model.state_dict()  # the reference's keys and values: save, convert, Hub export unaffected
    assert list(state) == list(keys) and all(torch.equal(state[k], keys[k]) for k in keys)
    convnext.unaccelerate(model)
    assert describe(model) == "reference" and not any(isinstance(b, FastBlock) for b in blocks_of(model))
    assert all(type(b) in (Block, convnext.models.convnext.BlockV2) for b in blocks_of(model))


@pytest.mark.parametrize("accelerated", [False, True], ids=["reference", "accelerated"])
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_a_forward_hook_on_every_submodule_of_a_block_fires(accelerated, training):
    model = model_of("convnextv2_test", accelerated).train(training)
    block = model.stages[1][0]
    fired = []
    for name, child in block.named_children():
        child.register_forward_hook(lambda module, args, out, name=name: fired.append(name))
    model(torch.randn(2, 3, 64, 64))
    assert fired == ["dwconv", "norm", "pwconv1", "act", "grn", "pwconv2", "drop_path"]  # the paper's order


@pytest.mark.parametrize("accelerated", [False, True], ids=["reference", "accelerated"])
def test_a_swapped_activation_and_a_pruned_layer_act_as_on_torchvisions_convnext(accelerated):
    peer = perturbed(torchvision_model("convnext_tiny"), 0.02).eval()
    ours = convnext.create_model("convnext_tiny").eval()
    ours.load_state_dict(from_format(peer.state_dict(), ours, "torchvision"))
    if accelerated:
        convnext.accelerate(ours)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = ours(x)
        ours.stages[2][1].act = nn.ReLU()
        peer.features[5][1].block[4] = nn.ReLU()  # torchvision's CNBlock: the GELU of its Sequential
        swapped = ours(x)
        assert max_abs_diff(swapped, peer(x)) < 1e-4 and max_abs_diff(swapped, before) > 1e-3
        prune.l1_unstructured(ours.stages[1][0].pwconv1, "weight", amount=0.5)
        prune.l1_unstructured(peer.features[3][0].block[3], "weight", amount=0.5)
        pruned = ours(x)
        assert max_abs_diff(pruned, peer(x)) < 1e-4 and max_abs_diff(pruned, swapped) > 1e-4


def test_accelerate_leaves_a_changed_block_and_says_so_in_one_line():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(model_of("convnext_test", False), LoraConfig(r=2, target_modules=["pwconv1"]))
    said = []
    convnext.accelerate(model, say=said.append)
    assert len(said) == 1 and "5 block(s) left as they are" in said[0] and "pwconv1 is peft." in said[0]
    assert not any(isinstance(b, FastBlock) for b in blocks_of(model))


def lora(model: nn.Module, targets, rank: int = 4):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=rank, target_modules=targets, init_lora_weights=False))


@pytest.mark.parametrize("order", ["reference", "accelerate-then-lora", "lora-then-accelerate"])
def test_peft_lora_changes_the_outputs_as_on_the_reference_and_merges(order):
    x = torch.randn(2, 3, 64, 64)
    torch.manual_seed(1)
    reference = lora(model_of("convnext_test", False), ["pwconv1", "pwconv2"])
    with torch.no_grad():
        base = model_of("convnext_test", False)(x)
        expected = reference(x)
    assert max_abs_diff(expected, base) > 1e-3  # non-zero LoRA weights act
    if order == "reference":
        model = reference
    elif order == "accelerate-then-lora":
        model = lora(model_of("convnext_test", True), ["pwconv1", "pwconv2"])
    else:
        model = convnext.accelerate(lora(model_of("convnext_test", False), ["pwconv1", "pwconv2"]), say=lambda t: None)
    model.load_state_dict(reference.state_dict())
    with torch.no_grad():
        assert max_abs_diff(model(x), expected) < 1e-5
        merged = model.merge_and_unload()
        assert max_abs_diff(merged(x), expected) < 1e-5
    assert not any("lora" in name for name, _ in merged.named_parameters())


def test_peft_lora_on_the_depthwise_conv():
    x = torch.randn(2, 3, 64, 64)
    model = model_of("convnext_test", False)
    with torch.no_grad():
        base = model(x)
        dims = model.dims[0]
        adapted = lora(copy.deepcopy(model), r"stages\.0\.\d+\.dwconv", rank=dims)  # PEFT: rank a multiple of groups
        assert max_abs_diff(adapted(x), base) > 1e-4
        accelerated = lora(convnext.accelerate(copy.deepcopy(model)), r"stages\.0\.\d+\.dwconv", rank=dims)
        accelerated.load_state_dict(adapted.state_dict())
        assert max_abs_diff(accelerated(x), adapted(x)) < 1e-5


@pytest.mark.parametrize("accelerated", [False, True], ids=["reference", "accelerated"])
def test_lora_fine_tuning_on_the_digits_trains_only_the_lora_weights(accelerated):
    from convnext.training.data import build_data
    from convnext.training.recipes import RECIPES

    data = build_data("digits", RECIPES["small"], seed=0)
    images = torch.stack([data.train[i][0] for i in range(64)])
    labels = torch.tensor([data.train[i][1] for i in range(64)])
    model = model_of("convnext_test", accelerated, in_chans=1, num_classes=10)
    model = lora(model, ["pwconv1", "pwconv2"])
    for name, p in model.named_parameters():
        if "head" in name:  # the new task's head trains too, as PEFT's modules_to_save would
            p.requires_grad_(True)
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=3e-3)
    model.train()
    losses = []
    for step in range(30):
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5
    changed = {k for k, p in model.named_parameters() if not torch.equal(p.detach(), before[k])}
    assert changed and all("lora_" in k or "head" in k for k in changed)
    assert any("lora_" in k for k in changed)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("accelerated", [False, True], ids=["reference", "accelerated"])
def test_torchvisions_feature_extractor_traces_the_model(name, accelerated):
    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

    model = model_of(name, accelerated)
    train_nodes, eval_nodes = get_graph_node_names(model)
    last = [n for n in eval_nodes if n.startswith(("stages.3", "blocks."))][-1]
    assert any(n.endswith("pwconv1") for n in eval_nodes) and any(n.endswith("act") for n in eval_nodes)
    extractor = create_feature_extractor(model, {last: "features", "head": "logits"})
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        found = extractor(x)
        assert max_abs_diff(found["logits"], model(x)) < 1e-5
    assert found["features"].shape[:2] == (2, model.num_features)


@pytest.mark.parametrize("name,paper", [("convnext_tiny", 4.46), ("convnext_small", 8.68), ("convnext_base", 15.35)])
def test_pytorchs_flop_counter_counts_the_papers_macs(name, paper):
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = convnext.create_model(name).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, 224, 224, device="meta"))
    assert counter.get_total_flops() / 2e9 == pytest.approx(paper, abs=0.01)


def test_pt2e_quantization_acts_as_on_torchvisions_convnext():
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer, get_default_x86_inductor_quantization_config)

    peer = perturbed(torchvision_model("convnext_tiny"), 0.02).eval()
    ours = convnext.create_model("convnext_tiny").eval()
    ours.load_state_dict(from_format(peer.state_dict(), ours, "torchvision"))
    x = torch.randn(2, 3, 64, 64)
    results = {}
    for name, model in (("ours", ours), ("torchvision", peer)):
        quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())
        prepared = prepare_pt2e(torch.export.export(model, (x,)).module(), quantizer)
        with torch.no_grad():
            prepared(x)  # calibration
            converted = convert_pt2e(prepared)
            results[name] = (model(x), converted(x), converted)
    for name, (float_out, int8_out, converted) in results.items():
        cosine = F.cosine_similarity(float_out.flatten(), int8_out.flatten(), dim=0)
        assert cosine > 0.95, name
    quantized = {name: sum("quantize_per" in str(node.target) for node in converted.graph.nodes)
                 for name, (_, _, converted) in results.items()}
    assert quantized["ours"] == quantized["torchvision"] > 0


@pytest.mark.parametrize("accelerated", [False, True], ids=["reference", "accelerated"])
def test_pytorch_grad_cam_gives_our_heat_maps(accelerated):
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from convnext.deploy.gradcam import grad_cam

    model = model_of("convnext_test", accelerated, num_classes=5)
    x = torch.randn(2, 3, 64, 64)
    ours = grad_cam(model, x, classes=[1, 3])
    with GradCAM(model=model, target_layers=[model.stages[-1]]) as cam:
        theirs = torch.from_numpy(cam(input_tensor=x, targets=[ClassifierOutputTarget(1), ClassifierOutputTarget(3)]))
    upsampled = F.interpolate(ours.maps[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    assert max_abs_diff(upsampled, theirs) < 1e-4


def test_every_command_accelerates_by_default_and_says_so(tmp_path, capsys):
    from PIL import Image

    from convnext.cli import main

    run = tmp_path / "run"
    common = ["train", "--model", "convnext_test", "--epochs", "1", "--max-steps", "1", "--subset", "32",
              "--batch-size", "16"]
    assert main([*common, "--output-dir", str(run)]) == 0
    assert "convnext_test: started; accelerated (5 of 5 blocks);" in capsys.readouterr().out
    assert main([*common, "--no-accelerate", "--output-dir", str(tmp_path / "plain")]) == 0
    assert "convnext_test: started; reference;" in capsys.readouterr().out
    image = tmp_path / "digit.png"
    Image.new("L", (32, 32), 128).save(image)
    assert main(["predict", "--weights", str(run), str(image)]) == 0
    assert "convnext predict: convnext_test, accelerated (5 of 5 blocks)" in capsys.readouterr().err
    assert main(["predict", "--weights", str(run), str(image), "--no-accelerate"]) == 0
    assert "convnext predict: convnext_test, reference" in capsys.readouterr().err
