"""Same weights, same logits: our models against timm, torchvision and transformers."""
import pytest
import torch

import convnext
from conftest import max_abs_diff
from convnext.convert import from_format
from peers import hf_model, logits, timm_model, torchvision_model

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
