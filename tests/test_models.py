"""The model family: exact sizes, the paper's MACs, shapes, errors, dtypes and memory formats."""
import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import convnext
from helpers import max_abs_diff

EXACT_PARAMS = {  # the paper's Table / official README
    "convnext_tiny": 28_589_128,
    "convnext_small": 50_223_688,
    "convnext_base": 88_591_464,
    "convnext_large": 197_767_336,
}
PAPER_GMACS = {  # (model, input side): GMACs from the papers
    ("convnext_tiny", 224): 4.46, ("convnext_small", 224): 8.7, ("convnext_base", 224): 15.4,
    ("convnext_large", 224): 34.4, ("convnext_xlarge", 224): 60.9,
    ("convnext_tiny", 384): 13.1, ("convnext_small", 384): 25.5, ("convnext_base", 384): 45.1,
    ("convnext_large", 384): 101.0, ("convnext_xlarge", 384): 179.0,
    ("convnext_atto", 224): 0.55, ("convnext_femto", 224): 0.78, ("convnext_pico", 224): 1.37,
    ("convnext_nano", 224): 2.45, ("convnextv2_huge", 224): 115.0,
    ("convnext_isotropic_small", 224): 4.3, ("convnext_isotropic_base", 224): 16.9,
    ("convnext_isotropic_large", 224): 59.7,
}
APPROX_PARAMS_M = {  # figures the papers print, in millions, rounded as printed (atto..nano: V2 paper)
    "convnextv2_atto": "3.7", "convnextv2_femto": "5.2", "convnextv2_pico": "9.1", "convnextv2_nano": "15.6",
    "convnext_xlarge": "350.2", "convnextv2_huge": "660", "convnext_isotropic_small": "22",
    "convnext_isotropic_base": "87", "convnext_isotropic_large": "306",
}


def meta_model(name, **kw):
    with torch.device("meta"):
        return convnext.create_model(name, **kw)


@pytest.mark.parametrize("name,params", EXACT_PARAMS.items())
def test_exact_parameter_counts(name, params):
    assert convnext.count_params(meta_model(name)) == params


@pytest.mark.parametrize("name,millions", APPROX_PARAMS_M.items())
def test_rounded_parameter_counts(name, millions):
    decimals = len(millions.partition(".")[2])
    assert round(convnext.count_params(meta_model(name)) / 1e6, decimals) == float(millions)


@pytest.mark.parametrize("name,side", PAPER_GMACS)
def test_macs_match_the_paper(name, side):
    gmacs = convnext.count_macs(meta_model(name), side) / 1e9
    assert gmacs == pytest.approx(PAPER_GMACS[name, side], rel=0.01)


@pytest.mark.parametrize("name", ["convnext_atto", "convnextv2_atto"])
def test_macs_count_the_papers_operations_on_every_device(name):
    # At 32² stages 3 and 4 are 2x2 and 1x1, where the fast path skips the kernel taps over padding;
    # the count still has them, as the paper's and the meta device's do.
    assert convnext.count_macs(convnext.create_model(name), 32) == convnext.count_macs(meta_model(name), 32)


def test_official_parameter_names():
    keys = set(meta_model("convnext_tiny").state_dict())
    assert len(keys) == 182  # the official ConvNeXt-T checkpoint holds 182 tensors
    for key in ["downsample_layers.0.0.weight", "downsample_layers.0.1.bias", "downsample_layers.3.1.weight",
                "stages.2.8.dwconv.weight", "stages.2.8.norm.weight", "stages.2.8.pwconv1.weight",
                "stages.2.8.pwconv2.bias", "stages.2.8.gamma", "norm.weight", "head.weight"]:
        assert key in keys
    assert len(meta_model("convnext_small").state_dict()) == 344
    v2 = meta_model("convnextv2_tiny").state_dict()
    assert v2["stages.0.0.grn.gamma"].shape == (1, 1, 1, 384) and not any(k.endswith(".gamma") and "grn" not in k for k in v2)
    iso = meta_model("convnext_isotropic_small").state_dict()
    assert {"stem.weight", "blocks.17.pwconv1.weight", "norm.weight", "head.bias"} <= set(iso)
    assert "blocks.0.gamma" not in iso and "blocks.0.gamma" in meta_model("convnext_isotropic_large").state_dict()


def test_initialisation_follows_the_paper():
    model = convnext.create_model("convnext_tiny", head_init_scale=0.001)
    w = model.stages[0][0].pwconv1.weight
    assert w.abs().max() <= 2.0 and w.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.stages[0][0].pwconv1.bias.abs().max() == 0
    assert torch.all(model.stages[1][0].gamma == 1e-6)
    assert model.head.weight.std().item() == pytest.approx(0.02 * 0.001, rel=0.1)
    assert torch.all(model.norm.weight == 1) and torch.all(model.norm.bias == 0)
    assert convnext.create_model("convnext_test", layer_scale_init_value=0).stages[0][0].gamma is None
    grn = convnext.create_model("convnextv2_test").stages[0][0].grn
    assert torch.all(grn.gamma == 0) and torch.all(grn.beta == 0)


def test_layernorm_is_over_channels_only():
    """Each position normalised over C alone: scaling one position leaves the others unchanged."""
    model = convnext.create_model("convnext_test").eval()
    norm = model.downsample_layers[1][0]
    x = torch.randn(1, 8, 5, 5)
    y = x.clone()
    y[..., 0, 0] *= 100
    assert torch.allclose(norm(x)[..., 1:, :], norm(y)[..., 1:, :], atol=1e-6)
    reference = torch.nn.functional.layer_norm(x.permute(0, 2, 3, 1), (8,), eps=1e-6).permute(0, 3, 1, 2)
    assert max_abs_diff(norm(x), reference) < 1e-6


@pytest.mark.parametrize("name", ["convnext_test", "convnextv2_test", "convnext_isotropic_test"])
def test_outputs_and_feature_api(name):
    model = convnext.create_model(name, num_classes=7).eval()
    x = torch.randn(2, 3, 64, 64)
    logits = model(x)
    assert logits.shape == (2, 7)
    features = model.forward_features(x)
    assert features.shape == (2, model.num_features)
    assert torch.equal(model.forward_head(features), logits)
    assert torch.equal(model.forward_head(features, pre_logits=True), features)


def test_forward_intermediates_strides():
    model = convnext.create_model("convnext_tiny").eval()
    maps = model.forward_intermediates(torch.randn(1, 3, 224, 224))
    assert [tuple(m.shape[1:]) for m in maps] == [(96, 56, 56), (192, 28, 28), (384, 14, 14), (768, 7, 7)]
    assert [m.shape[-1] for m in model.forward_intermediates(torch.randn(1, 3, 128, 128), indices=(1, 2))] == [16, 8]


def test_backbone_with_stage_norms():
    model = convnext.create_model("convnext_test").eval()
    backbone = convnext.ConvNeXtBackbone(model, stage_norms=True).eval()
    assert {"norm0.weight", "norm3.bias", "stages.0.0.dwconv.weight"} <= set(backbone.state_dict())
    assert "head.weight" not in backbone.state_dict()
    x = torch.randn(2, 3, 64, 64)
    outs = backbone(x)
    raw = model.forward_intermediates(x)
    for out, plain, channels in zip(outs, raw, backbone.out_channels):
        assert out.shape == plain.shape and out.shape[1] == channels
        normed = torch.nn.functional.layer_norm(plain.permute(0, 2, 3, 1), (channels,), eps=1e-6)
        assert max_abs_diff(out, normed.permute(0, 3, 1, 2)) < 1e-5
    plain_backbone = convnext.ConvNeXtBackbone(model, out_indices=(1, 3), stage_norms=False)
    assert [torch.equal(a, b) for a, b in zip(plain_backbone(x), [raw[1], raw[3]])] == [True, True]


@settings(max_examples=12, deadline=None)
@given(st.integers(32, 97), st.integers(32, 97), st.integers(1, 3))
def test_any_input_size_from_32(h, w, n):
    model = convnext.create_model("convnext_test", num_classes=5).eval()
    assert model(torch.randn(n, 3, h, w)).shape == (n, 5)


@pytest.mark.parametrize("shape", [(1, 1, 64, 64), (3, 64, 64), (1, 3, 31, 64), (1, 3, 64, 16)])
def test_bad_input_shapes_name_the_expected_shape(shape):
    model = convnext.create_model("convnext_test")
    with pytest.raises(ValueError, match=r"expected input of shape \(N, 3, H, W\)"):
        model(torch.randn(*shape))


def test_in_chans_override():
    model = convnext.create_model("convnext_test", in_chans=1)
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 1000)


def test_unknown_model_lists_close_names():
    with pytest.raises(ValueError, match="convnext_tiny"):
        convnext.create_model("convnext_tiyn")


@pytest.mark.parametrize("overrides,error,match", [
    ({"drop_path_rate": -0.1}, ValueError, "drop_path_rate"),
    ({"drop_path_rate": 1.0}, ValueError, "drop_path_rate"),
    ({"num_classes": 0}, ValueError, "num_classes"),
    ({"in_chans": 0}, ValueError, "in_chans"),
    ({"layer_scale_init_value": -1.0}, ValueError, "layer_scale_init_value"),
    ({"head_init_scale": 0.0}, ValueError, "head_init_scale"),
    ({"num_clases": 10}, TypeError, "num_clases"),
])
def test_bad_overrides_fail_at_construction(overrides, error, match):
    with pytest.raises(error, match=match):
        convnext.create_model("convnext_test", **overrides)


def test_list_models():
    names = convnext.list_models()
    for size in ["atto", "femto", "pico", "nano", "tiny", "small", "base", "large", "xlarge"]:
        assert f"convnext_{size}" in names
    for size in ["atto", "femto", "pico", "nano", "tiny", "base", "large", "huge"]:
        assert f"convnextv2_{size}" in names
    assert {"convnext_isotropic_small", "convnext_isotropic_base", "convnext_isotropic_large"} <= set(names)
    assert convnext.list_models("convnextv2_*") == [n for n in names if n.startswith("convnextv2_")]


@pytest.mark.parametrize("name", ["convnext_test", "convnextv2_test"])
def test_bfloat16_and_channels_last(name):
    model = convnext.create_model(name).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        reference = model(x)
        channels_last = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
        assert max_abs_diff(channels_last, reference) < 1e-5
        bf16 = model.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert bf16.dtype == torch.bfloat16 and max_abs_diff(bf16, reference) < 0.1


@pytest.mark.parametrize("name", ["convnext_test", "convnextv2_test"])
def test_float16_autocast_does_not_overflow(name):
    """Inputs large enough that a float16 variance or GRN norm would overflow (> 65504)."""
    model = convnext.create_model(name).eval()
    x = 300 * torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        reference = model(x)
        with torch.autocast("cpu", dtype=torch.float16):
            half = model(x)
        assert torch.isfinite(half).all()
        assert max_abs_diff(half, reference) < 0.05 * reference.abs().max().item() + 0.05
        if name.startswith("convnextv2"):  # a GRN entirely in float16: sum of squares is 1.6e8
            grn = copy.deepcopy(model.stages[0][0].grn).half()
            out = grn(torch.full((1, 64, 64, 32), 200.0, dtype=torch.float16))
            assert out.dtype == torch.float16 and torch.isfinite(out).all()
