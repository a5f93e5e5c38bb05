"""Exact inference rewrites: fold norms and layer scale into the neighbouring linear layers.

    fast = convnext.optimize_for_inference(model)                 # eval-only copy, same logits
    fast = convnext.optimize_for_inference(model, compile=True)   # + torch.compile with weight freezing
    fast = convnext.optimize_for_inference(model, dtype=torch.bfloat16)  # bf16 weights and activations

Every fold is algebra, not approximation: LN(x) = x̂·w + b followed by W·(.) + c equals W'·x̂ + c' with
W' = W·diag(w), c' = c + W·b; layer scale γ after W equals diag(γ)·W; BatchNorm after a conv is a
per-channel affine map that the conv absorbs (torch.nn.utils.fusion).
"""
import copy
import warnings

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ..accelerate import accelerate, autotuner_of, unaccelerate
from ..models.convnext import Block
from ..runtime.hardware import has_hardware
from ..models.layers import GRN, BatchNormChannelsLast, LayerNorm2d
from ..models.roadmap import Pointwise, RoadmapBlock


def _plain_norm(norm: nn.LayerNorm) -> nn.LayerNorm:
    """The same normalisation without its affine part (which has been folded elsewhere)."""
    kind = LayerNorm2d if isinstance(norm, LayerNorm2d) else nn.LayerNorm
    plain = kind(norm.normalized_shape[0], eps=norm.eps)
    plain.weight, plain.bias = None, None
    plain.elementwise_affine = False
    return plain


def fold_norm_into_linear(norm: nn.LayerNorm, linear: nn.Linear) -> None:
    """linear(norm(x)) with the norm's affine moved into the linear layer."""
    linear.bias.add_(linear.weight @ norm.bias)
    linear.weight.mul_(norm.weight[None, :])


def fold_norm_into_conv(norm: nn.LayerNorm, conv: nn.Conv2d) -> None:
    """conv(norm(x)) for an unpadded conv (the 2x2/2 downsampling): every output sees the shift alike."""
    conv.bias.add_((conv.weight * norm.bias[None, :, None, None]).sum(dim=(1, 2, 3)))
    conv.weight.mul_(norm.weight[None, :, None, None])


def fold_scale_into_linear(scale: torch.Tensor, linear: nn.Linear) -> None:
    """scale * linear(x) as one linear layer."""
    linear.weight.mul_(scale[:, None])
    linear.bias.mul_(scale)


def fuse_pointwise_bn(layer: Pointwise, bn: nn.BatchNorm2d) -> None:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    bias = layer.bias if layer.bias is not None else torch.zeros_like(bn.running_mean)
    layer.weight.mul_(scale[:, None])
    layer.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias)


def fold_batch_norm_into_linear(norm: nn.BatchNorm2d, linear: nn.Linear) -> None:
    """linear(bn(x)) for a BatchNorm in eval mode: its per-channel affine map x*s + t moves into the linear layer."""
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    shift = norm.bias - norm.running_mean * scale
    linear.bias.add_(linear.weight @ shift)
    linear.weight.mul_(scale[None, :])


def _fold_block(block: Block) -> None:
    if isinstance(block.norm, BatchNormChannelsLast):  # norm="batch"
        fold_batch_norm_into_linear(block.norm, block.pwconv1)
        block.norm = nn.Identity()
    else:
        fold_norm_into_linear(block.norm, block.pwconv1)
        block.norm = _plain_norm(block.norm)
    if block.gamma is not None:
        fold_scale_into_linear(block.gamma, block.pwconv2)
        block.gamma = None
    grn = getattr(block, "grn", None)
    if isinstance(grn, GRN):  # GRN's additive beta passes straight into pwconv2
        block.pwconv2.bias.add_(block.pwconv2.weight @ grn.beta.flatten())
        grn.beta.zero_()


def _fuse_batch_norms(block: RoadmapBlock) -> None:
    for name, norm_name, _ in block.layers:
        layer, norm = getattr(block, name), getattr(block, norm_name)
        if not isinstance(norm, nn.BatchNorm2d):
            continue
        if isinstance(layer, Pointwise):
            fuse_pointwise_bn(layer, norm)
        else:
            setattr(block, name, fuse_conv_bn_eval(layer, norm))
        setattr(block, norm_name, nn.Identity())
    if isinstance(block.shortcut, nn.Sequential) and isinstance(block.shortcut[1], nn.BatchNorm2d):
        block.shortcut = nn.Sequential(fuse_conv_bn_eval(block.shortcut[0], block.shortcut[1]))
    if block.gamma is not None and isinstance(getattr(block, block.layers[-1][0]), (nn.Linear, nn.Conv2d)):
        last = getattr(block, block.layers[-1][0])
        if isinstance(getattr(block, block.layers[-1][1]), nn.Identity):  # nothing between the layer and γ
            weight_view = last.weight.view(last.weight.shape[0], -1)
            weight_view.mul_(block.gamma[:, None])
            if last.bias is not None:
                last.bias.mul_(block.gamma)
            block.gamma = None


def _cast_inputs(dtype: torch.dtype):
    def hook(module, args):
        return tuple(a.to(dtype) if torch.is_tensor(a) and a.is_floating_point() else a for a in args)
    return hook


def _float_outputs(module, args, output):
    return output.float()


def _to_dtype(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Weights and activations in `dtype`; `forward` still takes and returns float32 tensors. LayerNorm
    and GRN keep their statistics in float32 (PyTorch's kernels accumulate low-precision inputs in float).
    """
    device = next(model.parameters()).device
    if not has_hardware(dtype, device):
        warnings.warn(f"{device.type.upper()} has no {dtype} hardware: the model stays float32", stacklevel=3)
        return model
    model = model.to(dtype)
    model.register_forward_pre_hook(_cast_inputs(dtype))
    model.register_forward_hook(_float_outputs)
    return model


@torch.no_grad()
def optimize_for_inference(model: nn.Module, compile: bool = False, channels_last: bool = True,
                           dtype: torch.dtype = torch.float32, accelerated: bool = True) -> nn.Module:
    """An eval-only copy with exact folds and channels-last weights, accelerated (`convnext.accelerate`,
    with the model's own kernel choices if it has them); optionally in bfloat16, compiled.

    `dtype=torch.bfloat16` runs weights and activations in bfloat16 where the device has the hardware
    (CUDA, CPUs with AVX512-BF16 or AMX; elsewhere a one-line warning and float32): on such CPUs about
    twice float32's speed, at the accuracy cost docs/performance.md measures. `accelerated=False` leaves
    the folded reference (what exporters for other runtimes take, as they lay the weights out themselves).
    Compilation uses Inductor
    with weight freezing (constants folded into the graph) and `fullgraph=True`, so a graph break is an
    error rather than a silent slowdown.
    """
    tuner = autotuner_of(model)
    model = unaccelerate(copy.deepcopy(model).eval())  # the folds replace submodules: accelerated after them
    for module in list(model.modules()):
        if isinstance(module, Block):
            _fold_block(module)
        elif isinstance(module, RoadmapBlock):
            _fuse_batch_norms(module)
    layers = getattr(model, "downsample_layers", [])
    for i, layer in enumerate(layers):
        if i > 0 and isinstance(layer[0], LayerNorm2d) and isinstance(layer[1], nn.Conv2d):
            fold_norm_into_conv(layer[0], layer[1])
            layer[0] = _plain_norm(layer[0])
        elif i == 0 and len(layer) > 1 and isinstance(layer[1], nn.BatchNorm2d):  # a ResNet stem
            layer[0] = fuse_conv_bn_eval(layer[0], layer[1])
            layer[1] = nn.Identity()
    if isinstance(getattr(model, "norm", None), nn.LayerNorm) and isinstance(getattr(model, "head", None), nn.Linear):
        fold_norm_into_linear(model.norm, model.head)
        model.norm = _plain_norm(model.norm)
    for p in model.parameters():
        p.requires_grad_(False)
    if accelerated:
        accelerate(model, tuner)
    else:  # as the reference lays weights out (an accelerated model's convolutions had channels-last ones)
        model = model.to(memory_format=torch.contiguous_format)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if dtype != torch.float32:
        model = _to_dtype(model, dtype)
    if compile:
        model = torch.compile(model, fullgraph=True, options={"freezing": True})
    return model
