"""Small layers shared by every ConvNeXt: channels-first LayerNorm, GRN, init and checkpointing.

Drop path is torchvision's `StochasticDepth(p, "row")` (per-sample), so it is not redefined here.
"""
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an (N, C, H, W) tensor, each spatial position on its own.

    Not GroupNorm(1, C): that would normalise over C, H and W together. Permuting to channels-last
    and calling `F.layer_norm` keeps the fused kernel and lets autocast run it in float32, so fp16
    inputs cannot overflow the variance.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6):
        super().__init__(num_channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)


class BatchNormChannelsLast(nn.BatchNorm2d):
    """BatchNorm over the channels of an (N, H, W, C) tensor: the block's norm where `norm="batch"`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # (N, H, W, C) <-> (N, C, H, W)


class GRN(nn.Module):
    """Global Response Normalization (ConvNeXt V2) on a channels-last (N, H, W, C) tensor.

    gamma and beta start at zero, so a fresh GRN is the identity. Parameter shapes (1, 1, 1, C) follow
    the official checkpoints.
    """

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The spatial L2 norm sums H*W squares: in fp16 that overflows, so take it in float32.
        gx = torch.linalg.vector_norm(x.float(), ord=2, dim=(1, 2), keepdim=True)  # (N, 1, 1, C)
        nx = (gx / (gx.mean(dim=-1, keepdim=True) + self.eps)).to(x.dtype)
        return self.gamma * (x * nx) + self.beta + x


def init_weights(module: nn.Module) -> None:
    """The official initialisation: trunc-normal(std 0.02) conv/linear weights, zero biases."""
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class Classifier(nn.Module):
    """What every network here shares: the official init, the head split, and checkpointing switch.

    Subclasses define `forward_features` (pooled, normalised features) and a Linear `head`.
    """

    grad_checkpointing = False

    def init_weights(self, head_init_scale: float) -> None:
        """Trunc-normal(0.02) conv/linear weights, zero biases; the head scaled by `head_init_scale`."""
        self.apply(init_weights)
        with torch.no_grad():
            self.head.weight.mul_(head_init_scale)
            self.head.bias.mul_(head_init_scale)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute blocks in the backward pass: less memory, same gradients."""
        self.grad_checkpointing = enable

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def set_grad_checkpointing(model: nn.Module, enable: bool = True) -> int:
    """Switch block recomputation on (or off) in every network inside `model` that offers it: the model
    itself, a detector's or UperNet's ConvNeXt backbone, FCMAE's encoder. Returns how many took it."""
    networks = [m for m in model.modules() if callable(getattr(m, "set_grad_checkpointing", None))]
    for network in networks:
        network.set_grad_checkpointing(enable)
    return len(networks)


def checkpointed_blocks(blocks: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """Run blocks keeping only each block's input; every block is recomputed once in backward.

    Block by block costs the same recomputation as one checkpoint per stage but holds one block's
    activations at a time instead of a whole stage's.
    """
    for block in blocks:
        x = checkpoint(block, x, use_reentrant=False)
    return x


def check_input(x: torch.Tensor, in_chans: int, min_size: int) -> None:
    """Raise a ValueError naming the expected shape instead of a shape error deep inside."""
    if torch.jit.is_tracing():  # the tracer would warn that the comparisons become constants
        return
    if x.ndim != 4 or x.shape[1] != in_chans or x.shape[2] < min_size or x.shape[3] < min_size:
        raise ValueError(
            f"expected input of shape (N, {in_chans}, H, W) with H, W >= {min_size}, "
            f"got {tuple(x.shape)}"
        )
