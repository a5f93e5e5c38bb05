"""Every kernel the machine may choose computes exactly what the plain layers do: the hand-written
backward passes against autograd's own in float64, each candidate forced in turn, and the fast block
against the reference model."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import convnext
from convnext.accelerate import Autotuner, kernels
from helpers import max_abs_diff


@pytest.fixture
def tuner():
    """Kernel choices of the test's own: nothing is kept per process."""
    return Autotuner()


@pytest.fixture(params=[True, False], ids=["onednn", "gpu-path"])
def onednn(request, monkeypatch):
    """Run each test on the CPU paths and, with the switch forced off, on the ones GPUs take."""
    if not request.param:
        monkeypatch.setattr(kernels, "on_onednn", lambda x: False)
    return request.param


@pytest.mark.parametrize("size", [9, 2], ids=["by-chunks", "plane-within-padding"])
def test_depthwise_conv_gradients(monkeypatch, onednn, size, tuner):
    monkeypatch.setattr(kernels, "_WEIGHT_GRAD_CHUNK", 2 * 4 * size * size)  # two samples per chunk: 3 chunks
    conv = nn.Conv2d(4, 4, kernel_size=7, padding=3, groups=4).double()
    x = torch.randn(5, 4, size, size, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(kernels._DepthwiseConv.apply, (x, conv.weight, conv.bias, tuner))
    assert max_abs_diff(kernels.depthwise_conv(conv, x, tuner), conv(x)) < 1e-12


@pytest.mark.parametrize("height, width, taps", [(1, 1, 1), (2, 2, 3), (3, 3, 5), (1, 3, 5), (4, 4, 7), (9, 9, 7)])
@pytest.mark.parametrize("grad", [True, False], ids=["training", "inference"])
def test_depthwise_conv_on_small_maps_uses_the_taps_that_meet_them(onednn, height, width, taps, grad, tuner):
    conv = nn.Conv2d(4, 4, kernel_size=7, padding=3, groups=4).double()
    assert kernels.seen_taps(conv.weight, torch.empty(1, 4, height, width)).shape[-1] == taps
    x = torch.randn(5, 4, height, width, dtype=torch.double, requires_grad=grad)
    outputs = []
    for conv_of in (lambda conv, x: kernels.depthwise_conv(conv, x, tuner), lambda conv, x: conv(x)):
        conv.zero_grad()
        with torch.set_grad_enabled(grad):
            out = conv_of(conv, x)
        if grad:
            (x_grad,) = torch.autograd.grad(out.square().sum(), x, retain_graph=True)
            out.square().sum().backward()
            out = (out, x_grad, conv.weight.grad.clone(), conv.bias.grad.clone())
        outputs.append(out if grad else (out,))
    for fast, plain in zip(*outputs):
        assert max_abs_diff(fast, plain) < 1e-12
    if grad and taps < 7:  # the taps cropped off only ever met padding: their gradient is zero
        cut = (7 - taps) // 2
        assert torch.count_nonzero(outputs[0][2][..., cut:7 - cut, cut:7 - cut]) > 0
        assert torch.count_nonzero(outputs[0][2]) == torch.count_nonzero(outputs[0][2][..., cut:7 - cut, cut:7 - cut])


@pytest.mark.parametrize("channels_last", [True, False])
def test_gelu_then_pointwise_gradients(onednn, channels_last, tuner):
    h = torch.randn(2, 8, 5, 5, dtype=torch.double)
    h = h.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    weight = torch.randn(3, 8, dtype=torch.double, requires_grad=True)
    bias = torch.randn(3, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(kernels.gelu_then_pointwise, (h.requires_grad_(), weight, bias, tuner))
    reference = F.conv2d(F.gelu(h), weight[:, :, None, None], bias)
    assert max_abs_diff(kernels.gelu_then_pointwise(h, weight, bias, tuner), reference) < 1e-12


@pytest.mark.parametrize("name", ["convnext_test", "convnextv2_test", "convnext_isotropic_test"])
def test_bfloat16_autocast_training_step(onednn, name):
    """Under autocast the custom backward passes see bf16 gradients and float32 weights."""
    model = convnext.accelerate(convnext.create_model(name, num_classes=5).train())
    x, target = torch.randn(2, 3, 64, 64), torch.tensor([1, 3])
    F.cross_entropy(model(x), target).backward()
    reference = {k: p.grad.clone() for k, p in model.named_parameters()}
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = F.cross_entropy(model(x), target)
    loss.backward()
    for key, p in model.named_parameters():
        assert p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all(), key
        scale = reference[key].abs().max().item()
        assert max_abs_diff(p.grad, reference[key]) <= 0.1 * scale + 1e-6, key


@pytest.mark.parametrize("backend", ["conv", "linear"])
def test_each_pointwise_backend_has_exact_gradients(backend, tuner):
    h = torch.randn(2, 8, 5, 5, dtype=torch.double).contiguous(memory_format=torch.channels_last).requires_grad_()
    weight = torch.randn(3, 8, dtype=torch.double, requires_grad=True)
    bias = torch.randn(3, dtype=torch.double, requires_grad=True)
    with tuner.forced(pointwise=backend):
        assert torch.autograd.gradcheck(kernels.gelu_then_pointwise, (h, weight, bias, tuner))
        assert torch.autograd.gradcheck(lambda *args: kernels.pointwise(*args, True, tuner), (h, weight, bias))
        reference = F.conv2d(h, weight[:, :, None, None], bias)
        assert max_abs_diff(kernels.pointwise(h, weight, bias, True, tuner), reference) < 1e-12


@pytest.mark.parametrize("candidate", list(kernels.POINTWISE_GELU))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_each_fused_gelu_candidate_matches_the_plain_layers(candidate, dtype, tuner):
    if candidate in kernels.ONEDNN_ONLY and not kernels.onednn_runs(dtype):
        pytest.skip(f"oneDNN has no {dtype} path on this CPU (never a candidate here)")
    x = torch.randn(2, 16, 6, 6).contiguous(memory_format=torch.channels_last)
    weight, bias = torch.randn(32, 16) / 4, torch.randn(32)
    reference = F.gelu(F.conv2d(x.double(), weight.double()[:, :, None, None], bias.double()))
    with torch.no_grad(), tuner.forced(pointwise_gelu=candidate):
        out = kernels.pointwise_then_gelu(x.to(dtype), weight.to(dtype), bias.to(dtype), tuner)
    tolerance = 1e-5 if dtype == torch.float32 else 0.05 * reference.abs().max().item()
    assert out.dtype == dtype and max_abs_diff(out.double(), reference) < tolerance


def test_packed_weights_serve_frozen_parameters_only_and_follow_in_place_changes(tuner):
    x = torch.randn(2, 16, 6, 6).contiguous(memory_format=torch.channels_last)
    layer = nn.Linear(16, 32).requires_grad_(False)
    with torch.no_grad(), tuner.forced(pointwise="packed"):
        before = kernels.pointwise(x, layer.weight, layer.bias, False, tuner)
        layer.weight.mul_(2)  # an in-place change (a fold) makes a new packed copy
        after = kernels.pointwise(x, layer.weight, layer.bias, False, tuner)
    reference = F.conv2d(x, layer.weight[:, :, None, None], layer.bias)
    assert max_abs_diff(after, reference) < 1e-5 and max_abs_diff(before, reference) > 0.1
    assert after.is_contiguous(memory_format=torch.channels_last) and after.shape == (2, 32, 6, 6)
    assert kernels.frozen(layer.weight) and not kernels.frozen(nn.Linear(16, 32).weight)
    assert not kernels.frozen(layer.weight * 2)  # a product (layer scale folded per call) is no parameter
    with torch.no_grad():
        kernels.pointwise(x, nn.Linear(16, 32).weight, None, False, tuner)  # trainable: never offered
    assert all(key.mode == "inference" for key in tuner.measured())


@pytest.mark.parametrize("candidate", ["planes", "onednn"])
def test_each_depthwise_weight_gradient_is_exact(candidate, tuner):
    conv = nn.Conv2d(4, 4, kernel_size=7, padding=3, groups=4).double()
    x = torch.randn(3, 4, 9, 9, dtype=torch.double, requires_grad=True)
    with tuner.forced(depthwise_weight_grad=candidate):
        assert torch.autograd.gradcheck(kernels._DepthwiseConv.apply, (x, conv.weight, conv.bias, tuner))


@pytest.mark.parametrize("chunk", ["1", "2", "5"])
def test_block_chunks_give_the_whole_batch_result(chunk, tuner):
    model = convnext.accelerate(convnext.create_model("convnextv2_test").eval(), tuner)  # GRN: per-sample statistics
    x = torch.randn(5, 3, 64, 64)
    with torch.no_grad():
        with tuner.forced(block_chunks="5"):
            whole = model(x)
        with tuner.forced(block_chunks=chunk):
            chunked = model(x)
    assert max_abs_diff(chunked, whole) < 1e-5


@pytest.mark.parametrize("name", ["convnext_test", "convnextv2_test", "convnext_isotropic_test"])
@pytest.mark.parametrize("grad", [True, False], ids=["training", "inference"])
def test_the_fast_block_computes_the_reference(name, grad):
    model = convnext.create_model(name, num_classes=5).double().train(grad)
    x = torch.randn(3, 3, 64, 64, dtype=torch.double)

    def run():
        model.zero_grad()
        with torch.set_grad_enabled(grad):
            out = model(x)
        if grad:
            out.square().sum().backward()
        return out, {k: p.grad for k, p in model.named_parameters()}

    paper, paper_grads = run()
    convnext.accelerate(model)
    fast, fast_grads = run()
    assert max_abs_diff(fast, paper) < 1e-10
    for k, g in paper_grads.items():
        assert (g is None) == (not grad) and (g is None or max_abs_diff(fast_grads[k], g) < 1e-9), k
