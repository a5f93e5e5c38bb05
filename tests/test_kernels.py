"""The hand-written backward passes in kernels.py against autograd's own, in float64."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import convnext
from convnext.models import kernels
from helpers import max_abs_diff


@pytest.fixture(params=[True, False], ids=["onednn", "gpu-path"])
def onednn(request, monkeypatch):
    """Run each test on the CPU paths and, with the switch forced off, on the ones GPUs take."""
    if not request.param:
        monkeypatch.setattr(kernels, "on_onednn", lambda x: False)
    return request.param


@pytest.mark.parametrize("size", [9, 2], ids=["by-chunks", "plane-within-padding"])
def test_depthwise_conv_gradients(monkeypatch, onednn, size):
    monkeypatch.setattr(kernels, "_WEIGHT_GRAD_CHUNK", 2 * 4 * size * size)  # two samples per chunk: 3 chunks
    conv = nn.Conv2d(4, 4, kernel_size=7, padding=3, groups=4).double()
    x = torch.randn(5, 4, size, size, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(kernels._DepthwiseConv.apply, (x, conv.weight, conv.bias))
    assert torch.equal(kernels.depthwise_conv(conv, x), conv(x))


@pytest.mark.parametrize("channels_last", [True, False])
def test_gelu_then_pointwise_gradients(onednn, channels_last):
    h = torch.randn(2, 8, 5, 5, dtype=torch.double)
    h = h.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    weight = torch.randn(3, 8, dtype=torch.double, requires_grad=True)
    bias = torch.randn(3, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(kernels.gelu_then_pointwise, (h.requires_grad_(), weight, bias))
    reference = F.conv2d(F.gelu(h), weight[:, :, None, None], bias)
    assert max_abs_diff(kernels.gelu_then_pointwise(h, weight, bias), reference) < 1e-12


@pytest.mark.parametrize("name", ["convnext_test", "convnextv2_test", "convnext_isotropic_test"])
def test_bfloat16_autocast_training_step(onednn, name):
    """Under autocast the custom backward passes see bf16 gradients and float32 weights."""
    model = convnext.create_model(name, num_classes=5).train()
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
