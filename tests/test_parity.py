"""Same weights, same logits: our models against timm, torchvision and transformers."""
import contextlib

import pytest
import torch

import convnext
from convnext.checkpoints.convert import from_format, to_format
from convnext.runtime.precision import tf32
from helpers import hf_model, logits, max_abs_diff, timm_model, torchvision_model

TINY = ((3, 3, 9, 3), (96, 192, 384, 768))


def load_from_peer(name, peer, fmt, **kwargs):
    model = convnext.create_model(name, **kwargs).eval()
    model.load_state_dict(from_format(peer.state_dict(), model, fmt), strict=True)
    return model


@pytest.mark.parametrize("name,peer,fmt", [
    ("convnext_tiny", lambda: timm_model("convnext_tiny"), "timm"),
    ("convnextv2_tiny", lambda: timm_model("convnextv2_tiny"), "timm"),
    ("convnext_tiny", lambda: hf_model(*TINY), "hf"),
    ("convnextv2_tiny", lambda: hf_model(*TINY, v2=True), "hf"),
    ("convnext_tiny", lambda: torchvision_model("convnext_tiny"), "torchvision"),
], ids=["timm-v1", "timm-v2", "hf-v1", "hf-v2", "torchvision-v1"])
def test_tiny_logits_match_peer(name, peer, fmt):
    peer = peer()
    with torch.no_grad():
        # Non-zero GRN and layer scale, so those paths are compared too (both init to ~0).
        for p in peer.parameters():
            p.add_(0.01 * torch.randn_like(p))
        ours = load_from_peer(name, peer, fmt)
        x = torch.randn(2, 3, 96, 96)
        assert max_abs_diff(ours(x), logits(peer, x)) <= 1e-5


GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (scripts/gpu_check.sh runs it)")


@pytest.mark.parametrize("device,pointwise", [
    ("cpu", None), ("cpu", "conv"), ("cpu", "linear"),
    pytest.param("cuda", None, marks=GPU), pytest.param("cuda", "conv", marks=GPU), pytest.param("cuda", "linear", marks=GPU),
], ids=["cpu-measured", "cpu-conv", "cpu-linear", "cuda-measured", "cuda-conv", "cuda-linear"])
@pytest.mark.parametrize("amp", [None, torch.bfloat16], ids=["fp32", "bf16-autocast"])
@pytest.mark.parametrize("name", ["convnext_atto", "convnextv2_atto"])
def test_gradients_match_timm(name, amp, device, pointwise):
    """Our hand-written backward passes (depthwise conv, GELU recomputation, layer scale folded into
    pwconv2, pointwise layers as a 1x1 conv or a GEMM, whichever the machine measured faster, and each
    of the two) give the gradients plain autograd gives timm; under bf16 autocast both, to bf16's
    precision."""
    peer = timm_model(name).train()
    with torch.no_grad():
        for p in peer.parameters():  # non-zero GRN and layer scale, so their gradients are compared too
            p.add_(0.01 * torch.randn_like(p))
    ours = convnext.accelerate(load_from_peer(name, peer, "timm").train())
    ours, peer = ours.to(device), peer.to(device)
    x, target = torch.randn(3, 3, 64, 64, device=device), torch.randint(0, 1000, (3,), device=device)
    forced = ours.autotuner.forced(pointwise=pointwise) if pointwise else contextlib.nullcontext()
    with forced, tf32(convolutions=False, matmuls=False):  # fp32 means fp32 in both implementations
        for model in (ours, peer):
            with torch.autocast(device, dtype=amp or torch.bfloat16, enabled=amp is not None):
                logits = model(x)
            torch.nn.functional.cross_entropy(logits.float(), target).backward()
    ours_grads = to_format({k: p.grad for k, p in ours.named_parameters()}, "timm", conv_mlp=True)
    peer_grads = {k: p.grad for k, p in peer.named_parameters()}
    assert ours_grads.keys() == peer_grads.keys()
    relative = 1e-4 if amp is None else 0.1  # bf16 keeps 8 bits: both sides round, differently
    for key, grad in peer_grads.items():
        assert ours_grads[key].dtype == torch.float32
        assert max_abs_diff(ours_grads[key], grad) <= relative * grad.abs().max().item() + 1e-8, key
