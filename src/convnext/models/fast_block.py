"""A ConvNeXt block computed exactly as `Block.forward` writes it, by the fastest path for the moment.

`Block.forward` calls `fast_block(block, x)` wherever `covers(x)`; this is the one place that decides,
by grad mode and what requires gradients, which of the kernels in `kernels.py` run:

- **both**: the depthwise conv on the kernel taps that meet the map (maps smaller than its reach).
- **training** (autograd records): the depthwise conv with a faster backward pass; pwconv1 as a 1x1 conv
  or GEMM (measured); for V1, GELU recomputed in the backward pass instead of stored, and layer scale
  folded into pwconv2's weight; the residual sum in place where autograd allows it.
- **inference** (nothing records): GELU fused into pwconv1 or in place, packed weights for frozen
  models, and the block over cache-sized batch chunks (all measured, `runtime.autotune`).
- **exporting** (torch.jit.trace, torch.export, ONNX, OpenVINO): the same plain operators in every
  grad mode (jit.trace checks this by tracing twice), no autograd function of ours, nothing measured;
  pointwise layers as 1x1 convs (ONNX Runtime runs them faster than MatMuls).

Elsewhere (devices other than CPUs and CUDA GPUs, meta tensors, or `enabled = False`) the block runs
the paper's lines as written.
"""
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..runtime.autotune import exporting
from .kernels import (conv1x1, depthwise_conv, gelu_then_pointwise, pointwise, pointwise_then_gelu,
                      residual_by_chunks)

enabled = True  # False: every block runs the paper's lines (tests compare the two; `papers_lines`)


@contextmanager
def papers_lines() -> Iterator[None]:
    """Every block runs the paper's lines as written: for counting what the paper counts (the fast
    path skips work the paper's MACs include, such as kernel taps that only ever meet padding)."""
    global enabled
    before, enabled = enabled, False
    try:
        yield
    finally:
        enabled = before


def covers(x: torch.Tensor) -> bool:
    return enabled and x.device.type in ("cpu", "cuda")


def fast_block(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """block(x) for a `Block` or `BlockV2` on a channels-last (N, C, H, W) tensor."""
    if exporting():
        return x + block.drop_path(_plain_branch(block, x))
    if not (torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in block.parameters()))):
        width, projected = block.pwconv1.out_features, projection(block)  # once, not per batch chunk
        return residual_by_chunks(lambda part: block.drop_path(_inference_branch(block, part, projected)), x, width)
    out = block.drop_path(_training_branch(block, x))
    # The sum goes into the branch's output when autograd allows it (a fresh tensor nothing saved), one
    # activation-sized buffer less per block; not under autocast, where out is bf16 and the sum must
    # stay in x's float32.
    in_place = out.dtype == x.dtype and out._base is None
    return out.add_(x) if in_place else x + out


def _has_grn(block: nn.Module) -> bool:
    return not isinstance(block.grn, nn.Identity)


def _normed(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """LayerNorm over channels of the (N, C, H, W) stream."""
    return block.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # (N, H, W, C) and back


def _grn(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return block.grn(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # GRN on (N, H, W, 4C), then back


def projection(block: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """pwconv2's weight and bias with layer scale folded in: diag(γ)·(W x + b)."""
    if block.gamma is None:
        return block.pwconv2.weight, block.pwconv2.bias
    return block.pwconv2.weight * block.gamma[:, None], block.pwconv2.bias * block.gamma


def _training_branch(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = _normed(block, depthwise_conv(block.dwconv, x))
    h = pointwise(x, block.pwconv1.weight, block.pwconv1.bias, training=True)
    if not _has_grn(block):
        return gelu_then_pointwise(h, *projection(block))
    return pointwise(_grn(block, F.gelu(h)), *projection(block), training=True)


def _inference_branch(block: nn.Module, x: torch.Tensor, projected: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x = _normed(block, depthwise_conv(block.dwconv, x))
    x = pointwise_then_gelu(x, block.pwconv1.weight, block.pwconv1.bias)
    if _has_grn(block):
        x = _grn(block, x)
    return pointwise(x, *projected, training=False)


def _plain_branch(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = F.gelu(conv1x1(_normed(block, block.dwconv(x)), block.pwconv1.weight, block.pwconv1.bias))
    if _has_grn(block):
        x = _grn(block, x)
    return conv1x1(x, *projection(block))
