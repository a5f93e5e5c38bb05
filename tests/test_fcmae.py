"""FCMAE with dense masked convolutions: exactly the sparse computation, in float64."""
import pytest
import torch
import torch.nn.functional as F

from convnext.models.fcmae import FCMAE, masked_block
from helpers import max_abs_diff


def small_mae(**kwargs) -> FCMAE:
    torch.manual_seed(0)
    mae = FCMAE("convnextv2_test", decoder_dim=16, **kwargs).double()
    with torch.no_grad():  # non-zero GRN affine, so the masked statistics matter
        for name, p in mae.named_parameters():
            if "grn" in name:
                p.normal_(std=0.5)
    return mae


def test_mask_has_exactly_the_visible_count():
    mae = small_mae()
    imgs = torch.zeros(6, 3, 224, 160)
    mask = mae.gen_random_mask(imgs, 0.6)
    assert mask.shape == (6, 35) and set(mask.unique().tolist()) == {0.0, 1.0}
    assert (mask == 0).sum(dim=1).tolist() == [int(35 * 0.4)] * 6  # 14 visible of 7 x 5 patches
    assert not torch.equal(mask[0], mask[1])


def test_patchify_round_trip_and_layout():
    mae = small_mae()
    imgs = torch.randn(2, 3, 64, 96, dtype=torch.double)
    patches = mae.patchify(imgs)
    assert patches.shape == (2, 6, 32 * 32 * 3)
    assert torch.equal(patches[1, 4, :3], imgs[1, :, 32, 32])  # patch (1, 1): its first pixel, RGB fastest
    assert torch.equal(mae.unpatchify(patches, height=64), imgs)


def changed_inside_masked_patches(mae, imgs, mask):
    grid_w = imgs.shape[3] // 32
    noisy = imgs.clone()
    for n, row in enumerate(mask):
        for index in row.nonzero().flatten().tolist():
            r, c = divmod(index, grid_w)
            noisy[n, :, 32 * r : 32 * r + 32, 32 * c : 32 * c + 32] = 10 * torch.randn(3, 32, 32, dtype=imgs.dtype)
    return noisy


def mask_once_after_the_stem(mae, imgs, mask):
    """The common mistake: zero masked positions once, then run the plain dense encoder."""
    grid = (imgs.shape[2] // 32, imgs.shape[3] // 32)
    x = mae.encoder.downsample_layers[0](imgs)
    x = x * mae.keep_map(mask, grid, x.shape[-2:])
    for i, stage in enumerate(mae.encoder.stages):
        x = stage(mae.encoder.downsample_layers[i](x) if i else x)
    return x


def noise_at_masked_sites(mae, mask):
    """Forward hooks adding noise to every depthwise conv's output at masked sites: whatever a masked
    site holds must not reach a visible one."""
    handles = []
    for stage in mae.encoder.stages:
        for block in stage:
            def hook(module, args, out):
                keep = mae.keep_map(mask, (4, 4), out.shape[-2:])
                return out + (1 - keep) * 5 * torch.randn_like(out)
            handles.append(block.dwconv.register_forward_hook(hook))
    return handles


def test_masked_pixels_never_reach_visible_positions():
    """The leak test. Masked pixels must not matter; and since the stem erases them, nor must anything
    else at masked sites (noise added there after every depthwise conv): the second part is what an
    encoder that masks only once, after the stem, fails."""
    mae = small_mae().eval()
    imgs = torch.randn(3, 3, 128, 128, dtype=torch.double)
    mask = mae.gen_random_mask(imgs, 0.6)
    noisy = changed_inside_masked_patches(mae, imgs, mask)
    keep = (1 - mask).reshape(3, 1, 4, 4)
    with torch.no_grad():
        clean_out, noisy_out = mae.forward_encoder(imgs, mask), mae.forward_encoder(noisy, mask)
        assert max_abs_diff(clean_out * keep, noisy_out * keep) < 1e-12
        assert torch.all(noisy_out * (1 - keep) == 0)
        leaky_clean = mask_once_after_the_stem(mae, imgs, mask)
        handles = noise_at_masked_sites(mae, mask)
        try:
            assert max_abs_diff(mae.forward_encoder(imgs, mask) * keep, clean_out * keep) < 1e-12
            leaky_noisy = mask_once_after_the_stem(mae, imgs, mask)
        finally:
            for handle in handles:
                handle.remove()
        assert max_abs_diff(leaky_noisy * keep, leaky_clean * keep) > 1e-3


def sparse_block_reference(block, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """The block on visible sites alone: each visible site's depthwise conv sums only visible
    neighbours (a submanifold conv, by explicit gathering), then LN, MLP and GRN on the gathered
    (sites, C) features per sample, scattered back into zeros.
    """
    n, c, h, w = x.shape
    k = block.dwconv.kernel_size[0]
    out = torch.zeros_like(x)
    for b in range(n):
        sites = keep[b, 0].nonzero().tolist()
        visible = {tuple(s) for s in sites}
        conv = torch.stack([
            block.dwconv.bias + sum(block.dwconv.weight[:, 0, i, j] * x[b, :, r + i - k // 2, q + j - k // 2]
                                    for i in range(k) for j in range(k)
                                    if (r + i - k // 2, q + j - k // 2) in visible)
            for r, q in sites])  # (sites, C)
        y = F.layer_norm(conv, (c,), block.norm.weight, block.norm.bias, block.norm.eps)
        y = F.gelu(F.linear(y, block.pwconv1.weight, block.pwconv1.bias))
        gx = y.norm(dim=0)  # this sample's visible sites only
        y = block.grn.gamma.flatten() * (y * (gx / (gx.mean() + block.grn.eps))) + block.grn.beta.flatten() + y
        y = F.linear(y, block.pwconv2.weight, block.pwconv2.bias)
        for (r, q), value in zip(sites, y):
            out[b, :, r, q] = x[b, :, r, q] + value
    return out


def test_a_masked_block_equals_the_sparse_block_at_visible_sites():
    mae = small_mae().eval()
    block = mae.encoder.stages[1][0]
    x = torch.randn(2, block.dwconv.in_channels, 8, 8, dtype=torch.double)
    mask = mae.gen_random_mask(torch.zeros(2, 3, 128, 128), 0.5)  # 4 x 4 patches of 2 x 2 cells at stride 8
    keep = mae.keep_map(mask, (4, 4), (8, 8)).double()
    with torch.no_grad():
        dense = masked_block(block, x * keep, keep)
        reference = sparse_block_reference(block, x * keep, keep)
    assert max_abs_diff(dense, reference) < 1e-12


def test_the_loss_sees_masked_patches_only_and_is_normalised_mse():
    mae = small_mae()
    imgs = torch.randn(2, 3, 64, 64, dtype=torch.double)
    mask = torch.tensor([[1.0, 0, 0, 1], [0, 1, 0, 0]], dtype=torch.double)
    pred = torch.randn(2, 4, 32 * 32 * 3, dtype=torch.double)
    loss = mae.forward_loss(imgs, pred, mask)
    changed = pred.clone()
    changed[mask == 0] += 5.0  # visible patches' predictions
    assert mae.forward_loss(imgs, changed, mask) == loss
    target = mae.patchify(imgs)
    by_hand = []
    for n, i in ((0, 0), (0, 3), (1, 1)):
        t = target[n, i]
        t = (t - t.mean()) / (t.var(unbiased=True) + 1e-6).sqrt()
        by_hand.append(((pred[n, i] - t) ** 2).mean())
    assert loss.item() == pytest.approx(torch.stack(by_hand).mean().item(), rel=1e-12)


def test_forward_shapes_and_bad_sizes():
    mae = FCMAE("convnextv2_test", decoder_dim=16)
    loss, pred, mask = mae(torch.randn(2, 3, 64, 96))
    assert loss.ndim == 0 and pred.shape == (2, 32 * 32 * 3, 2, 3) and mask.shape == (2, 6)
    loss.backward()
    assert mae.encoder.stages[0][0].dwconv.weight.grad is not None and mae.encoder.head.weight.grad is None
    assert not any(k.startswith(("norm.", "head.")) for k in mae.encoder_state_dict())
    with pytest.raises(ValueError, match="multiples of 32"):
        mae(torch.randn(1, 3, 64, 80))
    with pytest.raises(ValueError, match="ConvNeXt V2"):
        FCMAE("convnext_test")


# --- checkpoints -------------------------------------------------------------------------------------
import logging  # noqa: E402

import convnext  # noqa: E402
from convnext.checkpoints import pretraining  # noqa: E402
from convnext.cli import main  # noqa: E402


def released_style(model) -> dict:
    """What the released convnextv2_*_fcmae.pt files hold: dense, no final norm or head, GRN as (1, C)."""
    return {k: (v.reshape(1, -1) if ".grn." in k else v) for k, v in model.state_dict().items()
            if k not in pretraining.ENCODER_ONLY_FRESH}


def test_released_encoder_only_files_load_with_fresh_norm_and_head_only(tmp_path, caplog):
    encoder = FCMAE("convnextv2_atto").encoder
    path = tmp_path / "convnextv2_atto_1k_224_fcmae.pt"
    torch.save({"model": released_style(encoder)}, path)
    with caplog.at_level(logging.WARNING, logger="convnext"):
        model = convnext.load_weights(None, path)
    assert model.model_name == "convnextv2_atto" and "encoder-only" in caplog.text
    ours = model.state_dict()
    for key, value in encoder.state_dict().items():
        if key not in pretraining.ENCODER_ONLY_FRESH:
            assert torch.equal(ours[key], value), key
    # `convnext train --weights` fine-tunes it: the model is read off the file, norm and head start fresh.
    from PIL import Image

    for i in range(8):
        (tmp_path / "photos" / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40, 40), (30 * i, 90, 200 - 20 * i)).save(tmp_path / "photos" / f"c{i % 2}" / f"{i}.png")
    assert main(["train", "--weights", str(path), "--data", str(tmp_path / "photos"), "--val-split", "0.25",
                 "--batch-size", "2", "--epochs", "1", "--max-steps", "1", "--input-size", "32",
                 "--output-dir", str(tmp_path / "tuned")]) == 0
    assert convnext.load_pretrained(tmp_path / "tuned").model_name == "convnextv2_atto"
    # Strict about everything else: one missing block tensor is an error naming it.
    damaged = released_style(encoder)
    del damaged["stages.2.1.pwconv1.bias"]
    torch.save(damaged, tmp_path / "damaged.pt")
    with pytest.raises(convnext.CheckpointError, match="stages.2.1.pwconv1.bias"):
        convnext.load_weights("convnextv2_atto", tmp_path / "damaged.pt")


def test_minkowski_layouts_round_trip_and_convert(tmp_path, capsys):
    mae = FCMAE("convnextv2_test", decoder_dim=16)
    dense = mae.state_dict()
    sparse = pretraining.to_minkowski(dense)
    assert sparse["encoder.stages.0.0.dwconv.kernel"].shape == (49, mae.encoder.dims[0])
    assert sparse["encoder.downsample_layers.1.1.kernel"].shape == (4, mae.encoder.dims[0], mae.encoder.dims[1])
    assert sparse["encoder.downsample_layers.1.1.bias"].shape == (1, mae.encoder.dims[1])
    assert "encoder.stages.0.0.pwconv1.linear.weight" in sparse and "encoder.stages.0.0.norm.ln.bias" in sparse
    assert sparse["encoder.stages.0.0.grn.gamma"].shape == (1, 4 * mae.encoder.dims[0])
    back = pretraining.encoder_state(sparse)  # dense again, and the decoder's tensors left out
    encoder = mae.encoder.state_dict()
    assert back.keys() == encoder.keys()
    for key, value in back.items():
        assert value.shape == encoder[key].shape and torch.equal(value, encoder[key]), key
    # The whole sparse FCMAE checkpoint converts like any V2 model: to ours, then timm.
    torch.save({"model": sparse}, tmp_path / "sparse.pth")
    assert main(["convert", str(tmp_path / "sparse.pth"), str(tmp_path / "ours"), "--to", "ours"]) == 0
    assert main(["convert", str(tmp_path / "ours"), str(tmp_path / "timm.safetensors"), "--to", "timm"]) == 0
    loaded = convnext.load_pretrained(tmp_path / "ours")
    assert torch.equal(loaded.stages[1][0].dwconv.weight, mae.encoder.stages[1][0].dwconv.weight)


def test_checkpointed_encoder_gives_the_same_gradients():
    mae = small_mae().train()
    imgs = torch.randn(2, 3, 64, 64, dtype=torch.double)
    mask = mae.gen_random_mask(imgs, 0.6)
    grads = []
    for enable in (False, True):
        mae.zero_grad()
        mae.set_grad_checkpointing(enable)
        mae(imgs, mask=mask)[0].backward()
        grads.append({k: p.grad.clone() for k, p in mae.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for key in grads[0]:
        assert max_abs_diff(grads[0][key], grads[1][key]) < 1e-12, key
