"""The block's exact fast kernels: pointwise layers (oneDNN 1x1 conv, BLAS or packed GEMM), GELU fused
or recomputed, a depthwise-conv backward, and cache-sized batch chunks for inference. Which of them a
block runs, by grad mode and training, is decided in one place: `fast_block.FastBlock`. Every choice
is made by the `Autotuner` the accelerated model holds, passed in.

Each computes exactly what the plain PyTorch layers would (tests/test_kernels.py checks every path
against autograd in float64, tests/test_parity.py against timm's gradients and logits). Where the
fastest of several exact ways depends on the CPU, `autotune` measures them on the machine and shape at
hand; docs/performance.md has the measurements.
"""
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.weak import WeakIdKeyDictionary

from ..runtime.hardware import onednn_bf16
from ..runtime.precision import autocast_dtype, compute_dtype
from .autotune import Autotuner, Key, dtype_name


def on_onednn(x: torch.Tensor) -> bool:
    """Whether x's convolutions run on oneDNN (CPUs), whose kernels decide the fast paths below."""
    return x.device.type == "cpu"


def conv1x1(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return F.conv2d(x, weight[:, :, None, None], bias)  # oneDNN on CPUs


def _as_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return F.linear(x.permute(0, 2, 3, 1), weight, bias).permute(0, 3, 1, 2)  # through (N, H, W, C): BLAS, cuBLAS


def _fused_gelu_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """gelu(1x1 conv) as one oneDNN primitive (the kernel Inductor fuses to): no separate GELU pass.
    The op has no autocast rule, so the cast autocast would make is made here.
    """
    dtype = compute_dtype(x)
    weight, bias = weight.to(dtype), None if bias is None else bias.to(dtype)
    return torch.ops.mkldnn._convolution_pointwise(x.to(dtype), weight[:, :, None, None], bias, [0, 0], [1, 1],
                                                   [1, 1], 1, "gelu", [], "none")


def onednn_runs(dtype: torch.dtype) -> bool:
    """Whether oneDNN's own kernels (fused conv+GELU, packed linear) run `dtype` on this CPU: float32
    anywhere, bfloat16 where oneDNN has bf16 kernels (not on AVX2-only CPUs), nothing else."""
    return dtype == torch.float32 or (dtype == torch.bfloat16 and onednn_bf16())


def _plain_gelu(layer):
    return lambda x, weight, bias: torch.ops.aten.gelu_(layer(x, weight, bias))


# Frozen weight -> (its and its bias's versions, dtype, oneDNN's blocked copy, the bias in that dtype).
_packed = WeakIdKeyDictionary()  # by identity: tensors compare elementwise


def frozen(weight: torch.Tensor) -> bool:
    """A parameter that no optimizer updates (`optimize_for_inference`'s): worth a copy in oneDNN's layout."""
    return isinstance(weight, nn.Parameter) and not weight.requires_grad


def _packed_weights(weight: nn.Parameter, bias: torch.Tensor | None, dtype: torch.dtype):
    """oneDNN's blocked copy of a frozen weight, made on first use and again if it changes in place: an
    unpacked weight is reordered at every call, which costs stage 4 of ConvNeXt-T half its GEMM time at batch 1."""
    versions = (weight._version, None if bias is None else bias._version)
    entry = _packed.get(weight)
    if entry is None or entry[:2] != (versions, dtype):
        low_bias = None if bias is None else bias.detach().to(dtype)
        entry = _packed[weight] = (versions, dtype, torch.ops.mkldnn._reorder_linear_weight(weight.detach().to(dtype)),
                                   low_bias)
    return entry[2], entry[3]


def _packed_linear(post_op: str, algorithm: str):
    """A frozen pointwise layer as oneDNN's linear on its packed weight, with `post_op` ("gelu") fused."""
    def layer(x: torch.Tensor, weight: nn.Parameter, bias: torch.Tensor | None) -> torch.Tensor:
        dtype = compute_dtype(x)  # no autocast rule for this op: cast as autocast would
        packed, low_bias = _packed_weights(weight, bias, dtype)
        out = torch.ops.mkldnn._linear_pointwise(x.to(dtype).permute(0, 2, 3, 1), packed, low_bias, post_op, [],
                                                 algorithm)  # on (N, H, W, C)
        return out.permute(0, 3, 1, 2)  # (N, H, W, out) -> (N, out, H, W)
    return layer


POINTWISE = {"conv": conv1x1, "linear": _as_linear}
POINTWISE_GELU = {"conv": _plain_gelu(conv1x1), "linear": _plain_gelu(_as_linear)}
if torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise"):
    POINTWISE_GELU["fused"] = _fused_gelu_conv
if torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise"):
    POINTWISE["packed"] = _packed_linear("none", "")
    POINTWISE_GELU["packed"] = _packed_linear("gelu", "none")
ONEDNN_ONLY = ("fused", "packed")  # candidates that need oneDNN's own kernels (and its bf16 support)


def _trial(layer, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, training: bool):
    """One timed call of `layer`: forward only, or forward and backward as a training step runs it."""
    if not training:
        return lambda: layer(x, weight, bias)
    leaves = [t.detach().requires_grad_() if t is not None else None for t in (x, weight, bias)]
    grad = torch.ones(x.shape[0], weight.shape[0], *x.shape[2:], dtype=compute_dtype(x), device=x.device)

    def step():
        # Identity hooks on top of the stack: a surrounding activation checkpoint must not see the trial's
        # saved tensors (its recomputation, which finds the choice made, would not save them again).
        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t):
            layer(*leaves).backward(grad.contiguous(memory_format=torch.channels_last))
    return step


def _mode(weight: torch.Tensor, training: bool) -> str:
    return "training" if training else "frozen" if frozen(weight) else "inference"


def _choose_layer(op: str, table: dict, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                  training: bool, tuner: Autotuner) -> str:
    n, c, h, w = x.shape
    mode = _mode(weight, training)
    key = Key(op, x.device.type, dtype_name(x.dtype), dtype_name(autocast_dtype(x)), (n * h * w, c, weight.shape[0]),
              mode)
    if mode != "frozen":
        table = {name: layer for name, layer in table.items() if name != "packed"}
    names = tuple(table)
    return tuner.choose(key, x, lambda: {k: _trial(table[k], x, weight, bias, training) for k in names}, names)


def _default_first(table: dict, x: torch.Tensor) -> dict:
    """The candidates for x's device, the default first: oneDNN's conv on CPUs (without oneDNN's own
    kernels where they do not run x's dtype); elsewhere the GEMM (cuBLAS on GPUs), then cuDNN's 1x1
    conv where it computes in the GEMM's precision, and nothing that only oneDNN has.
    """
    if on_onednn(x):
        if onednn_runs(compute_dtype(x)):
            return table
        return {name: layer for name, layer in table.items() if name not in ONEDNN_ONLY}
    return {name: table[name] for name in (("linear", "conv") if _cudnn_keeps_precision(x) else ("linear",))}


def _cudnn_keeps_precision(x: torch.Tensor) -> bool:
    """PyTorch lets cuDNN round float32 convolutions to TF32 by default but not cuBLAS's float32 GEMMs:
    in float32 the conv is a candidate only where both are allowed the same (it would be faster by
    being less exact, and the model's result would depend on which one won).
    """
    dtype = compute_dtype(x)
    return dtype != torch.float32 or torch.backends.cudnn.allow_tf32 == torch.backends.cuda.matmul.allow_tf32


def pointwise_backend(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, training: bool,
                      tuner: Autotuner) -> str:
    """"conv" (oneDNN, cuDNN) or "linear" (BLAS, cuBLAS), or for frozen weights without autograd "packed"
    (oneDNN's linear on a blocked copy of the weight): the fastest for these shapes on this machine."""
    return _choose_layer("pointwise", _default_first(POINTWISE, x), x, weight, bias, training, tuner)


def pointwise(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, training: bool,
              tuner: Autotuner) -> torch.Tensor:
    """A Linear layer's (out, in) weight applied at every position of a channels-last (N, C, H, W) tensor.

    It runs as a 1x1 convolution (oneDNN on CPUs, cuDNN on GPUs) or as `F.linear` on the (N, H, W, C)
    view (a BLAS or cuBLAS GEMM), whichever measures faster for the shape on the machine at hand
    (oneDNN was twice as fast on one AMD EPYC, level on a Zen 4 and on an Intel Xeon; docs/performance.md
    has the GPU's figures). Where nothing is measured: the conv on CPUs, the GEMM elsewhere. `training`:
    timed with its backward pass, as a training step runs it.
    """
    return POINTWISE[pointwise_backend(x, weight, bias, training, tuner)](x, weight, bias)


def pointwise_then_gelu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                        tuner: Autotuner) -> torch.Tensor:
    """gelu(pointwise(x)), exact GELU, without autograd: the fastest of conv or GEMM followed by an
    in-place GELU (no 4C-wide buffer for the activation) and, on CPUs, GELU fused into oneDNN's 1x1 conv.
    """
    table = _default_first(POINTWISE_GELU, x)
    return table[_choose_layer("pointwise_gelu", table, x, weight, bias, False, tuner)](x, weight, bias)


def _conv_backward(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, padding: int, groups: int,
                   mask: tuple[bool, bool]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """PyTorch's own backward of a stride-1 conv: the input and weight gradients that `mask` asks for."""
    grad_x, grad_weight, _ = torch.ops.aten.convolution_backward(
        grad, x, weight, None, [1, 1], [padding, padding], [1, 1], False, [0, 0], groups, [*mask, False]
    )
    return grad_x, grad_weight


def pointwise_backward(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, input_grad: bool,
                       weight_grad: bool, backend: str) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The gradients of `pointwise(x, weight, bias)` with respect to x and the (out, in) weight."""
    if backend == "conv":
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
    def forward(ctx, h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, backend: str) -> torch.Tensor:
        ctx.save_for_backward(h, weight)
        ctx.backend = backend
        return POINTWISE[backend](F.gelu(h), weight, bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        h, weight = ctx.saved_tensors
        wants_h, wants_weight, wants_bias, _ = ctx.needs_input_grad
        activation = F.gelu(h).to(grad.dtype)  # under autocast h and grad are low precision, weight is not
        grad_activation, grad_weight = pointwise_backward(
            grad, activation, weight.to(grad.dtype), wants_h, wants_weight, ctx.backend
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
        return grad_h, grad_weight, grad_bias, None


def gelu_then_pointwise(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, tuner: Autotuner) -> torch.Tensor:
    """pointwise(gelu(h)), exact, with autograd: it keeps only h for the backward pass and recomputes
    gelu(h) there: one 4C-wide activation per block less to store (about a third of a ConvNeXt's
    activation memory), and faster on CPUs, where allocating it costs more than the recomputation.
    """
    return _GeluPointwise.apply(h, weight, bias, pointwise_backend(h, weight, bias, True, tuner))


class _DepthwiseConv(torch.autograd.Function):
    """A stride-1 "same" depthwise convolution whose backward pass computes the bias and weight
    gradients itself: on CPUs oneDNN's depthwise backward spends most of its time there.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, tuner: Autotuner) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.tuner = tuner
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
            grad_weight = depthwise_weight_grad(low_x, grad, low_weight, ctx.tuner).to(weight.dtype)
        if ctx.needs_input_grad[2]:
            grad_bias = grad.sum(dim=(0, 2, 3)).to(weight.dtype)  # several times faster than oneDNN's
        return grad_x, grad_weight, grad_bias, None


# Batch chunks of about this many elements keep the CPU weight gradient's working set in cache.
_WEIGHT_GRAD_CHUNK = 2**19


def _weight_grad_by_planes(x: torch.Tensor, grad: torch.Tensor, k: int) -> torch.Tensor:
    channels = x.shape[1]
    total = x.new_zeros(channels, k, k)
    per_chunk = max(1, _WEIGHT_GRAD_CHUNK // x[0].numel())
    for xs, gs in zip(x.split(per_chunk), grad.split(per_chunk)):
        planes = xs.shape[0] * channels
        h, w = xs.shape[-2:]
        correlation = F.conv2d(xs.reshape(1, planes, h, w), gs.reshape(planes, 1, h, w), padding=k // 2, groups=planes)
        total += correlation.view(-1, channels, k, k).sum(dim=0)  # (1, n*C, k, k) -> (C, k, k)
    return total.unsqueeze(1)  # (C, 1, k, k), the weight's shape


def depthwise_weight_grad(x: torch.Tensor, grad: torch.Tensor, weight: torch.Tensor, tuner: Autotuner) -> torch.Tensor:
    """dL/dweight of a stride-1 "same" depthwise conv: per channel, the correlation of the padded input
    with the output gradient, summed over the batch.

    On CPUs the faster (measured, `autotune`) of oneDNN's depthwise backward and the same correlation
    computed as a depthwise conv itself, one group per (sample, channel) plane with the gradient plane
    as the kernel, over batch chunks (2-18x faster than oneDNN's for ConvNeXt-T's four stages, fp32,
    batch 16, on a 2-core EPYC). Planes no larger than the padding (a map taller than wide, as
    `seen_taps` crops to the larger side) always take oneDNN's: it has only a slow generic kernel for
    the planes' conv. Off CPUs, cuDNN's.
    """
    channels, k = x.shape[1], weight.shape[-1]

    def by_onednn():
        return _conv_backward(grad, x, weight, k // 2, channels, (False, True))[1]

    if not on_onednn(x):
        return by_onednn()
    names = ("planes", "onednn") if min(x.shape[-2:]) > k // 2 else ("onednn",)
    candidates = {"planes": partial(_weight_grad_by_planes, x, grad, k), "onednn": by_onednn}
    key = Key("depthwise_weight_grad", x.device.type, dtype_name(x.dtype), None, (*x.shape, k), "training")
    chosen = tuner.choose(key, x, lambda: {n: candidates[n] for n in names}, names)
    return candidates[chosen]()


def seen_taps(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The taps of a stride-1 "same" kernel (odd, square) that ever meet x's map: all of them unless the
    map is smaller than the kernel's reach. Over stage 4 of a 32² input (1x1) a 7x7 kernel's outer taps
    only ever multiply the zero padding, and oneDNN's kernels for such shapes are slow: 18.6 ms forward
    for what is a per-channel scale at batch 128 (0.14 ms cropped), 8.6 ms against 0.7 for a training
    step's 2x2 maps with AVX2 (AMD EPYC Zen 4). Cropped to the central (2s-1)² taps, s the map's larger
    side, with padding s-1, the conv sums the same products less those zeros; the cropped-off taps'
    gradients are the zeros they were.
    """
    cut = weight.shape[-1] // 2 - (max(x.shape[-2:]) - 1)
    return weight if cut <= 0 else weight[..., cut:-cut, cut:-cut]


def depthwise_conv(conv: nn.Conv2d, x: torch.Tensor, tuner: Autotuner) -> torch.Tensor:
    """conv(x) for a block's stride-1 "same" depthwise conv on the taps that meet the map (`seen_taps`),
    with the faster backward pass where autograd records. Where it does not, and every tap meets the
    map, it is the module's own call (its forward hooks run, as they do on the paper's path)."""
    weight = seen_taps(conv.weight, x)
    records = torch.is_grad_enabled() and (x.requires_grad or conv.weight.requires_grad)
    if conv.bias is None or not records:
        if weight is conv.weight:
            return conv(x)
        return F.conv2d(x, weight, conv.bias, padding=weight.shape[-1] // 2, groups=x.shape[1])
    return _DepthwiseConv.apply(x, weight, conv.bias, tuner)


# Batch chunks whose block-internal 4C-wide activation is about this large (bytes) are tried for
# inference: L2- to L3-sized, so pwconv1's output is still in cache when GELU and pwconv2 read it, and
# small enough that the allocator reuses it instead of mapping (and faulting in) fresh pages each time.
CHUNK_BYTES = (16 << 20, 8 << 20, 4 << 20)


def residual_by_chunks(branch, x: torch.Tensor, width: int, tuner: Autotuner) -> torch.Tensor:
    """x + branch(x) without autograd: over the whole batch, or over chunks of samples if that measures
    faster. Exact, since every layer of a block treats samples independently.
    """
    def whole() -> torch.Tensor:
        out = branch(x)
        return out.add_(x) if out.dtype == x.dtype else x + out

    if not on_onednn(x) or not tuner.active("block_chunks", x):  # e.g. while compiling: no size tests
        return whole()
    n = x.shape[0]
    per_sample = x[0].numel() // x.shape[1] * width * (x.element_size() if autocast_dtype(x) is None else 2)
    sizes = sorted({n} | {max(1, min(n, b // per_sample)) for b in CHUNK_BYTES}, reverse=True)

    def run(size: int) -> torch.Tensor:
        if size >= n:
            return whole()
        total = torch.empty_like(x)
        for start in range(0, n, size):
            part = slice(start, start + size)
            torch.add(x[part], branch(x[part]), out=total[part])
        return total

    names = tuple(str(size) for size in sizes)
    key = Key("block_chunks", x.device.type, dtype_name(x.dtype), dtype_name(autocast_dtype(x)), (*x.shape, width))
    chosen = tuner.choose(key, x, lambda: {name: partial(run, int(name)) for name in names}, names)
    return run(int(chosen))
