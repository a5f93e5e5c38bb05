"""FCMAE, ConvNeXt V2's fully convolutional masked autoencoder (Woo et al., 2023, §3), with dense masked
convolutions instead of MinkowskiEngine's sparse ones.

A sparse convolution computes only at visible sites; here every op runs densely and the mask is
re-applied wherever a sparse op would have produced nothing: after the stem and every downsampling
layer, around every depthwise convolution, and on each block's output. GRN takes its statistics over
visible positions only, per sample, as the JAX code behind the paper's results does. Because the mask
is patch-aligned (32 px = the total stride), every 4x4 stem window and every 2x2 downsampling window is
either all visible or all masked, so the result at visible positions equals the sparse computation
(tests/test_fcmae.py checks it against a gather/scatter reference). docs/pretraining.md says where we
depart from the official code and why.

    mae = FCMAE("convnextv2_atto")
    loss, pred, mask = mae(images)         # images (N, 3, H, W), H and W multiples of 32
"""
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .convnext import BlockV2, ConvNeXtV2
from .layers import GRN, init_weights
from .registry import create_model


def masked_grn(grn: GRN, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """GRN on a channels-last (N, H, W, C) tensor with its statistics over visible positions only.

    `keep` is (N, H, W, 1), 1 where visible: the spatial L2 norm of x·keep per sample and channel,
    divided by its mean over channels; the affine part acts on x as GRN's does.
    """
    wide = torch.promote_types(x.dtype, torch.float32)  # a sum of H*W squares overflows fp16
    gx = torch.linalg.vector_norm((x * keep).to(wide), ord=2, dim=(1, 2), keepdim=True)  # (N, 1, 1, C)
    nx = (gx / (gx.mean(dim=-1, keepdim=True) + grn.eps)).to(x.dtype)
    return grn.gamma * (x * nx) + grn.beta + x


def masked_block(block: BlockV2, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """A V2 block as a submanifold sparse block computes it: zero at masked sites in, around the
    depthwise conv, and out. `keep` is (N, 1, H, W), 1 where visible.
    """
    shortcut = x
    x = block.dwconv(x * keep) * keep
    keep_nhwc = keep.permute(0, 2, 3, 1)  # (N, 1, H, W) -> (N, H, W, 1)
    x = block.norm(x.permute(0, 2, 3, 1))  # (N, C, H, W) -> (N, H, W, C)
    x = F.gelu(F.linear(x, block.pwconv1.weight, block.pwconv1.bias))
    x = masked_grn(block.grn, x, keep_nhwc)
    x = F.linear(x, block.pwconv2.weight, block.pwconv2.bias).permute(0, 3, 1, 2)  # back to (N, C, H, W)
    return (shortcut + block.drop_path(x)) * keep


class FCMAE(nn.Module):
    """Masked-autoencoder pre-training of a ConvNeXt V2 encoder, method names as in the official code.

    `encoder` is the registry's ConvNeXtV2 with the official parameter names; its final norm and head
    take no part (frozen here) and are not saved with pre-trained weights, as in the released
    `*_fcmae.pt` files. The decoder is one dense V2 block of width `decoder_dim` after a 1x1
    projection, with a learned mask token, and a 1x1 conv predicting each patch's pixels.
    """

    def __init__(self, encoder: str | nn.Module = "convnextv2_atto", patch_size: int = 32, mask_ratio: float = 0.6,
                 decoder_dim: int = 512, decoder_depth: int = 1, norm_pix_loss: bool = True, in_chans: int = 3):
        super().__init__()
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio!r}")
        self.encoder = create_model(encoder, in_chans=in_chans) if isinstance(encoder, str) else encoder
        if not isinstance(self.encoder, ConvNeXtV2):
            name = encoder if isinstance(encoder, str) else getattr(encoder, "model_name", type(encoder).__name__)
            raise ValueError(f"FCMAE pre-trains ConvNeXt V2 encoders (GRN blocks); {name} is not one")
        if patch_size != 32:
            raise ValueError("patch_size must be 32, the encoder's total stride (the mask is one cell of the last map)")
        self.encoder.norm.requires_grad_(False)
        self.encoder.head.requires_grad_(False)
        self.patch_size, self.mask_ratio, self.in_chans = patch_size, mask_ratio, in_chans
        self.norm_pix_loss = norm_pix_loss
        self.proj = nn.Conv2d(self.encoder.num_features, decoder_dim, kernel_size=1)
        self.mask_token = nn.Parameter(torch.zeros(1, decoder_dim, 1, 1))
        self.decoder = nn.Sequential(*(BlockV2(decoder_dim) for _ in range(decoder_depth)))
        self.pred = nn.Conv2d(decoder_dim, patch_size**2 * in_chans, kernel_size=1)
        for module in (self.proj, self.decoder, self.pred):
            module.apply(init_weights)
        nn.init.normal_(self.mask_token, std=0.02)

    grad_checkpointing = False

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute the encoder's blocks in the backward pass: less memory, same gradients."""
        self.grad_checkpointing = enable

    # --- patches and masks ---------------------------------------------------------------------
    def check_input(self, imgs: torch.Tensor) -> None:
        p = self.patch_size
        if imgs.ndim != 4 or imgs.shape[1] != self.in_chans or imgs.shape[2] % p or imgs.shape[3] % p:
            raise ValueError(f"FCMAE takes (N, {self.in_chans}, H, W) images with H and W multiples of {p}, "
                             f"got {tuple(imgs.shape)}")

    def gen_random_mask(self, imgs: torch.Tensor, mask_ratio: float) -> torch.Tensor:
        """(N, L) with 1 = masked, 0 = visible: exactly int(L * (1 - ratio)) visible patches per sample,
        row-major over the (H/32, W/32) grid.
        """
        n, p = imgs.shape[0], self.patch_size
        length = (imgs.shape[2] // p) * (imgs.shape[3] // p)
        keep = int(length * (1 - mask_ratio))
        noise = torch.rand(n, length, device=imgs.device)
        ranks = noise.argsort(dim=1).argsort(dim=1)  # each patch's place in its sample's random order
        return (ranks >= keep).float()

    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, L, p*p*C), each patch's pixels row by row, channels fastest."""
        n, c, h, w = imgs.shape
        p = self.patch_size
        x = imgs.reshape(n, c, h // p, p, w // p, p)
        x = torch.einsum("nchpwq->nhwpqc", x)
        return x.reshape(n, (h // p) * (w // p), p * p * c)

    def unpatchify(self, x: torch.Tensor, height: int | None = None) -> torch.Tensor:
        """(N, L, p*p*C) -> (N, C, H, W); a square grid unless `height` (in pixels) says otherwise."""
        n, length, _ = x.shape
        p, c = self.patch_size, self.in_chans
        h = (height // p) if height else int(length**0.5)
        w = length // h
        x = x.reshape(n, h, w, p, p, c)
        x = torch.einsum("nhwpqc->nchpwq", x)
        return x.reshape(n, c, h * p, w * p)

    def keep_map(self, mask: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
        """(N, L) mask -> (N, 1, *size) map, 1 where visible, each patch a block of equal cells."""
        keep = (1 - mask).reshape(-1, 1, *grid)
        return keep.repeat_interleave(size[0] // grid[0], dim=2).repeat_interleave(size[1] // grid[1], dim=3)

    # --- the three stages of a step ------------------------------------------------------------
    def forward_encoder(self, imgs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The last stage's (N, C, H/32, W/32) map, computed as the sparse encoder would, zero where masked."""
        self.check_input(imgs)
        grid = (imgs.shape[2] // self.patch_size, imgs.shape[3] // self.patch_size)
        x = imgs.to(memory_format=torch.channels_last)
        for downsample, stage in zip(self.encoder.downsample_layers, self.encoder.stages):
            x = downsample(x)
            keep = self.keep_map(mask, grid, x.shape[-2:]).to(x.dtype)
            x = x * keep
            for block in stage:
                if self.grad_checkpointing and self.training:
                    x = checkpoint(masked_block, block, x, keep, use_reentrant=False)
                else:
                    x = masked_block(block, x, keep)
        return x

    def forward_decoder(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w) encoder map -> (N, p*p*C_in, h, w) pixel predictions for every patch."""
        x = self.proj(x)
        masked = mask.reshape(-1, 1, *x.shape[-2:]).to(x.dtype)
        x = x * (1 - masked) + self.mask_token.to(x.dtype) * masked
        return self.pred(self.decoder(x))

    def forward_loss(self, imgs: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean squared error over masked patches only, against per-patch normalised pixels by default."""
        if pred.ndim == 4:
            pred = torch.einsum("ncl->nlc", pred.flatten(2))  # (N, p*p*C, h, w) -> (N, L, p*p*C)
        target = self.patchify(imgs)
        if self.norm_pix_loss:
            mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1e-6) ** 0.5
        wide = torch.promote_types(pred.dtype, torch.float32)  # bf16 predictions: the loss in float32
        per_patch = (pred.to(wide) - target.to(wide)).pow(2).mean(dim=-1)  # (N, L)
        return (per_patch * mask).sum() / mask.sum().clamp(min=1)

    def forward(self, imgs: torch.Tensor, mask_ratio: float | None = None,
                mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, pred (N, p*p*C, h, w), mask (N, L)); a random mask unless one is given."""
        self.check_input(imgs)
        if mask is None:
            mask = self.gen_random_mask(imgs, self.mask_ratio if mask_ratio is None else mask_ratio)
        pred = self.forward_decoder(self.forward_encoder(imgs, mask), mask)
        return self.forward_loss(imgs, pred, mask), pred, mask

    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        """What pre-training learned: the encoder without its unused final norm and head (official names)."""
        return {k: v for k, v in self.encoder.state_dict().items() if not k.startswith(("norm.", "head."))}
