"""Stochastic depth as the paper defines it, gradients everywhere, and gradient checkpointing."""
import copy

import pytest
import torch

import convnext
from convnext.models.convnext import Block


def test_drop_path_schedule_is_linear_over_all_blocks():
    model = convnext.create_model("convnext_tiny", drop_path_rate=0.3)
    rates = [block.drop_path.p for stage in model.stages for block in stage]
    assert len(rates) == 18
    assert rates == pytest.approx([0.3 * i / 17 for i in range(18)], abs=1e-6)
    iso = convnext.create_model("convnext_isotropic_test", drop_path_rate=0.2)
    assert [b.drop_path.p for b in iso.blocks] == pytest.approx([0.0, 0.2])


def test_drop_path_is_identity_in_eval():
    dropped = convnext.create_model("convnext_test", drop_path_rate=0.5).eval()
    plain = convnext.create_model("convnext_test").eval()
    plain.load_state_dict(dropped.state_dict())
    x = torch.randn(4, 3, 64, 64)
    assert torch.equal(dropped(x), plain(x))
    assert torch.equal(dropped(x), dropped(x))


def test_drop_path_is_per_sample_with_the_expected_keep_rate():
    block = Block(dim=4, drop_path=0.3, layer_scale_init_value=1.0).train()
    x = torch.randn(4000, 4, 7, 7)
    branch = block.eval()(x) - x  # drop path is the identity in eval
    residual = block.train()(x) - x  # per sample: either 0 (dropped) or branch / keep (kept)
    kept = residual.flatten(1).abs().amax(dim=1) > 0
    assert kept.float().mean().item() == pytest.approx(0.7, abs=0.03)
    assert 0 < kept.sum() < len(kept)  # samples dropped independently, not the whole batch
    assert torch.allclose(residual[kept], branch[kept] / 0.7, atol=1e-5)


@pytest.mark.parametrize("name", ["convnext_test", "convnextv2_test", "convnext_isotropic_test"])
def test_every_parameter_gets_a_gradient(name):
    model = convnext.create_model(name, num_classes=3).train()
    loss = model(torch.randn(4, 3, 64, 64)).logsumexp(dim=1).mean()
    loss.backward()
    for key, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), key
        assert p.grad.abs().sum() > 0, key


@pytest.mark.parametrize("name", ["convnext_test", "convnextv2_test", "convnext_isotropic_test"])
def test_gradient_checkpointing_leaves_gradients_unchanged(name):
    model = convnext.create_model(name, num_classes=3, drop_path_rate=0.2).train()
    checkpointed = copy.deepcopy(model)
    checkpointed.set_grad_checkpointing(True)
    x = torch.randn(4, 3, 64, 64)
    grads = []
    for m in (model, checkpointed):
        torch.manual_seed(1)  # the same drop-path draws; checkpointing must replay them, not redraw
        m(x).square().mean().backward()
        grads.append({k: p.grad.clone() for k, p in m.named_parameters()})
    for key in grads[0]:
        assert torch.allclose(grads[0][key], grads[1][key], rtol=1e-5, atol=1e-7), key


def test_gradient_checkpointing_recomputes_every_block(monkeypatch):
    import convnext.models.layers as layers

    calls = []
    real = layers.checkpoint
    monkeypatch.setattr(layers, "checkpoint", lambda fn, *a, **k: calls.append(fn) or real(fn, *a, **k))
    model = convnext.create_model("convnext_test").train()
    model(torch.randn(2, 3, 32, 32))
    assert calls == []
    model.set_grad_checkpointing(True)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    blocks = [block for stage in model.stages for block in stage]
    assert calls == blocks
    model.eval()(torch.randn(2, 3, 32, 32))  # no recomputation needed in eval
    assert len(calls) == len(blocks)
