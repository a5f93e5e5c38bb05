"""The block's hand-written fast paths: pointwise layers, GELU recomputation, a depthwise-conv backward.

Each computes exactly what the plain PyTorch layers would (tests/test_kernels.py checks them against
autograd in float64, tests/test_parity.py against timm's gradients); docs/performance.md has the
measurements that chose them.
"""
import torch
import torch.nn.functional as F
from torch import nn


def on_onednn(x: torch.Tensor) -> bool:
    """Whether x's convolutions run on oneDNN (CPUs), whose kernels decide the fast paths below."""
    return x.device.type == "cpu"


def pointwise(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """A Linear layer's (out, in) weight applied at every position of a channels-last (N, C, H, W) tensor.

    On CPUs it runs as a 1x1 convolution, which oneDNN computes as the same fp32 GEMM about twice as
    fast as the BLAS behind `F.linear` on the 2-core AMD EPYC we measured (440 against 200 GFLOP/s for
    ConvNeXt-T's shapes, same results to float rounding). Elsewhere it is `F.linear` on the
    (N, H, W, C) view, which cuBLAS runs well.
    """
    if on_onednn(x):
        return F.conv2d(x, weight[:, :, None, None], bias)
    return F.linear(x.permute(0, 2, 3, 1), weight, bias).permute(0, 3, 1, 2)  # through (N, H, W, C)


def _conv_backward(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, padding: int, groups: int,
                   mask: tuple[bool, bool]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """PyTorch's own backward of a stride-1 conv: the input and weight gradients that `mask` asks for."""
    grad_x, grad_weight, _ = torch.ops.aten.convolution_backward(
        grad, x, weight, None, [1, 1], [padding, padding], [1, 1], False, [0, 0], groups, [*mask, False]
    )
    return grad_x, grad_weight


def pointwise_backward(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, input_grad: bool,
                       weight_grad: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The gradients of `pointwise(x, weight, bias)` with respect to x and the (out, in) weight."""
    if on_onednn(x):
        grad_x, grad_weight = _conv_backward(grad, x, weight[:, :, None, None], 0, 1, (input_grad, weight_grad))
        return grad_x, None if grad_weight is None else grad_weight.flatten(1)
    flat_grad = grad.permute(0, 2, 3, 1).reshape(-1, grad.shape[1])  # (N*H*W, out)
    grad_x = grad_weight = None
    if weight_grad:
        grad_weight = flat_grad.t() @ x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])
    if input_grad:
        n, _, h, w = grad.shape
        grad_x = (flat_grad @ weight).view(n, h, w, -1).permute(0, 3, 1, 2)  # back to (N, C, H, W)
    return grad_x, grad_weight


class _GeluPointwise(torch.autograd.Function):
    """pointwise(gelu(h), W, b) that saves only h and recomputes gelu(h) in the backward pass."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(h, weight)
        return pointwise(F.gelu(h), weight, bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        h, weight = ctx.saved_tensors
        wants_h, wants_weight, wants_bias = ctx.needs_input_grad
        activation = F.gelu(h).to(grad.dtype)  # under autocast h and grad are low precision, weight is not
        grad_activation, grad_weight = pointwise_backward(
            grad, activation, weight.to(grad.dtype), wants_h, wants_weight
        )
        del activation  # free it before the input gradient is computed
        grad_h = grad_bias = None
        if wants_weight:
            grad_weight = grad_weight.to(weight.dtype)
        if wants_bias:
            grad_bias = grad.sum(dim=(0, 2, 3)).to(weight.dtype)
        if wants_h:
            # In place over dL/dgelu(h): on CPUs every fresh 4C-wide buffer is a new mapping whose pages
            # fault in, which costs as much as computing it.
            gelu_backward = torch.ops.aten.gelu_backward.grad_input
            grad_h = gelu_backward(grad_activation, h.to(grad.dtype), grad_input=grad_activation).to(h.dtype)
        return grad_h, grad_weight, grad_bias


def gelu_pointwise(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """pointwise(gelu(h)), exact. With autograd it keeps only h for the backward pass and recomputes
    gelu(h) there: one 4C-wide activation per block less to store (about a third of a ConvNeXt's
    activation memory), and faster on CPUs, where allocating it costs more than the recomputation.
    Without autograd GELU runs in place.
    """
    if torch.is_grad_enabled():
        return _GeluPointwise.apply(h, weight, bias)
    return pointwise(torch.ops.aten.gelu_(h), weight, bias)


class _DepthwiseConv(torch.autograd.Function):
    """A stride-1 "same" depthwise convolution whose backward pass computes the bias and weight
    gradients itself: on CPUs oneDNN's depthwise backward spends most of its time there.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        return F.conv2d(x, weight, bias, padding=weight.shape[-1] // 2, groups=x.shape[1])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        low_x, low_weight = x.to(grad.dtype), weight.to(grad.dtype)  # under autocast grad is low precision
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            padding = weight.shape[-1] // 2
            grad_x = _conv_backward(grad, low_x, low_weight, padding, x.shape[1], (True, False))[0].to(x.dtype)
        if ctx.needs_input_grad[1]:
            grad_weight = depthwise_weight_grad(low_x, grad, low_weight).to(weight.dtype)
        if ctx.needs_input_grad[2]:
            grad_bias = grad.sum(dim=(0, 2, 3)).to(weight.dtype)  # several times faster than oneDNN's
        return grad_x, grad_weight, grad_bias


# Batch chunks of about this many elements keep the CPU weight gradient's working set in cache.
_WEIGHT_GRAD_CHUNK = 2**19


def depthwise_weight_grad(x: torch.Tensor, grad: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """dL/dweight of a stride-1 "same" depthwise conv: per channel, the correlation of the padded input
    with the output gradient, summed over the batch.

    On CPUs we compute it as a depthwise conv itself, one group per (sample, channel) plane with the
    gradient plane as the kernel, over batch chunks: 2-18x faster than oneDNN's depthwise backward for
    ConvNeXt-T's four stages (fp32, batch 16; measured on a 2-core EPYC). Not for planes no larger than
    the padding (stage 4 of a 32x32 input), where oneDNN has only a slow generic kernel for that conv;
    nor off CPUs, where cuDNN's own is used.
    """
    channels, k = x.shape[1], weight.shape[-1]
    if not on_onednn(x) or min(x.shape[-2:]) <= k // 2:
        return _conv_backward(grad, x, weight, k // 2, channels, (False, True))[1]
    total = x.new_zeros(channels, k, k)
    per_chunk = max(1, _WEIGHT_GRAD_CHUNK // x[0].numel())
    for xs, gs in zip(x.split(per_chunk), grad.split(per_chunk)):
        planes = xs.shape[0] * channels
        h, w = xs.shape[-2:]
        correlation = F.conv2d(xs.reshape(1, planes, h, w), gs.reshape(planes, 1, h, w), padding=k // 2, groups=planes)
        total += correlation.view(-1, channels, k, k).sum(dim=0)  # (1, n*C, k, k) -> (C, k, k)
    return total.unsqueeze(1)  # (C, 1, k, k), the weight's shape


def depthwise_conv(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """conv(x) for a block's depthwise conv, exact, with the faster backward pass when autograd is on."""
    if not torch.is_grad_enabled() or conv.bias is None:
        return conv(x)
    return _DepthwiseConv.apply(x, conv.weight, conv.bias)
