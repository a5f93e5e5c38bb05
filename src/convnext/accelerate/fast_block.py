"""The fast block: a ConvNeXt `Block` (or `BlockV2`) computing exactly the reference's function by the
measured kernels of `kernels.py`. `accelerate` turns recognised blocks into these; this is the one
place that decides, by grad mode and what requires gradients, which kernels run:

- **both**: the depthwise conv on the kernel taps that meet the map (maps smaller than its reach), on
  channels-last memory (free permutes, oneDNN's faster NHWC depthwise kernel).
- **training** (autograd records): the depthwise conv with a faster backward pass; pwconv1 as a 1x1 conv
  or GEMM (measured); for V1, GELU recomputed in the backward pass instead of stored, and layer scale
  folded into pwconv2's weight; the residual sum in place where autograd allows it.
- **inference** (nothing records): GELU fused into pwconv1 or in place, packed weights for frozen
  models, and the block over cache-sized batch chunks (all measured by the model's `Autotuner`).

A fast block is still the user's block: the same submodules, parameters and `state_dict()` keys. At
every call it checks that it is still exactly what `accelerate` recognised (`recognised`): if a
submodule was swapped, wrapped (PEFT's LoRA), hooked, pruned or reparametrised since, or the call is
one the kernels are not for (another device, a tracer or exporter recording a graph), it runs the
reference `Block.forward`, so it is never silently wrong.
"""
import torch
import torch.nn.functional as F
from torch import nn
from torch.fx._symbolic_trace import is_fx_symbolic_tracing
from torch.nn.modules import module as module_globals
from torch.nn.utils import parametrize
from torchvision.ops import StochasticDepth

from ..models.convnext import Block, BlockV2
from ..models.layers import GRN
from .autotune import Autotuner, exporting
from .kernels import (depthwise_conv, gelu_then_pointwise, pointwise, pointwise_then_gelu, residual_by_chunks)

# Each submodule of a block the kernels compute, by the exact type they compute it as.
SUBMODULES = {"dwconv": nn.Conv2d, "norm": nn.LayerNorm, "pwconv1": nn.Linear, "act": nn.GELU,
              "pwconv2": nn.Linear, "drop_path": StochasticDepth}
GRN_TYPES = {Block: nn.Identity, BlockV2: GRN}


def _hooked(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
                or module._backward_pre_hooks)


def _globally_hooked() -> bool:
    return bool(module_globals._global_forward_hooks or module_globals._global_forward_pre_hooks
                or module_globals._global_backward_hooks or module_globals._global_backward_pre_hooks)


def _qualified(kind: type) -> str:
    return f"{kind.__module__}.{kind.__qualname__}"


def why_not(block: nn.Module, reference: type) -> str | None:
    """Why the kernels cannot compute `block` as a `reference` block (None: they can)."""
    expected = {**SUBMODULES, "grn": GRN_TYPES[reference]}
    children = dict(block.named_children())
    if set(children) != set(expected):
        return f"its submodules are {', '.join(sorted(children))}"
    for name, kind in expected.items():
        child = children[name]
        if type(child) is not kind:
            return f"{name} is {_qualified(type(child))}, not {_qualified(kind)}"
        if _hooked(child) or parametrize.is_parametrized(child):
            return f"{name} has hooks or parametrizations"
        weight = getattr(child, "weight", None)
        if weight is not None and not isinstance(weight, nn.Parameter):
            return f"{name}'s weight is no longer a parameter (pruned?)"
        if list(child.named_children()):
            return f"{name} holds submodules"
    conv = block.dwconv
    if (conv.stride != (1, 1) or conv.dilation != (1, 1) or conv.groups != conv.in_channels
            or conv.padding != (conv.kernel_size[0] // 2,) * 2 or conv.kernel_size[0] != conv.kernel_size[1]
            or conv.kernel_size[0] % 2 == 0 or conv.bias is None or conv.padding_mode != "zeros"):
        return "dwconv is not a stride-1 'same' depthwise convolution with a bias"
    if block.act.approximate != "none":
        return "act is GELU's tanh approximation"
    if len(block.norm.normalized_shape) != 1:  # affine or not: `optimize_for_inference` folds it away
        return "norm is not a LayerNorm over channels"
    if _hooked(block) or parametrize.is_parametrized(block):
        return "the block has hooks or parametrizations"
    return None


class FastBlock(Block):
    """A `Block` whose forward runs the measured kernels (see the module's docstring)."""

    reference = Block
    tuner: Autotuner
    recognised: tuple  # (submodule, its type) as `accelerate` took the block (copies keep the pairing)

    def unchanged(self) -> bool:
        """Whether the block is still what `accelerate` recognised (`why_not` found nothing): the same
        submodule objects, of the same types (a parametrization changes the type), and no hooks. Checked
        at every call, so it is kept cheap."""
        children = list(self._modules.values())
        return (len(children) == len(self.recognised)
                and all(m is seen and type(m) is kind for m, (seen, kind) in zip(children, self.recognised))
                and not _hooked(self) and not any(_hooked(m) for m in children) and not _globally_hooked())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (is_fx_symbolic_tracing() or exporting() or x.device.type not in ("cpu", "cuda") or not self.unchanged()):
            return self.reference.forward(self, x)
        x = x.contiguous(memory_format=torch.channels_last)  # a no-op after the first block
        if not (torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self.parameters()))):
            width, projected = self.pwconv1.out_features, projection(self)  # once, not per batch chunk
            return residual_by_chunks(lambda part: self.drop_path(self._inference_branch(part, projected)), x, width,
                                      self.tuner)
        out = self.drop_path(self._training_branch(x))
        # The sum goes into the branch's output when autograd allows it (a fresh tensor nothing saved), one
        # activation-sized buffer less per block; not under autocast, where out is bf16 and the sum must
        # stay in x's float32.
        in_place = out.dtype == x.dtype and out._base is None
        return out.add_(x) if in_place else x + out

    def _normed(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # LayerNorm over (N, H, W, C), and back

    def _grn(self, x: torch.Tensor) -> torch.Tensor:
        return self.grn(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # GRN on (N, H, W, 4C), then back

    def _training_branch(self, x: torch.Tensor) -> torch.Tensor:
        x = self._normed(depthwise_conv(self.dwconv, x, self.tuner))
        h = pointwise(x, self.pwconv1.weight, self.pwconv1.bias, True, self.tuner)
        if self.reference is Block:
            return gelu_then_pointwise(h, *projection(self), self.tuner)
        return pointwise(self._grn(F.gelu(h)), *projection(self), True, self.tuner)

    def _inference_branch(self, x: torch.Tensor, projected: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x = self._normed(depthwise_conv(self.dwconv, x, self.tuner))
        x = pointwise_then_gelu(x, self.pwconv1.weight, self.pwconv1.bias, self.tuner)
        if self.reference is BlockV2:
            x = self._grn(x)
        return pointwise(x, *projected, False, self.tuner)


class FastBlockV2(FastBlock, BlockV2):
    """A `BlockV2` (GRN after GELU, no layer scale) on the measured kernels."""

    reference = BlockV2


FAST = {Block: FastBlock, BlockV2: FastBlockV2}


def projection(block: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """pwconv2's weight and bias with layer scale folded in: diag(γ)·(W x + b)."""
    if block.gamma is None:
        return block.pwconv2.weight, block.pwconv2.bias
    return block.pwconv2.weight * block.gamma[:, None], block.pwconv2.bias * block.gamma
