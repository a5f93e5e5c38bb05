"""`accelerate(model)`: every ConvNeXt block the kernels know becomes a fast block; `unaccelerate` undoes it.

    model = convnext.create_model("convnext_tiny")      # the reference: the paper's modules, run as written
    convnext.accelerate(model)                           # the same function, by the kernels measured here
    convnext.unaccelerate(model)                         # the reference again

The transform works in place, as `model.to` does, and returns the model. A block is taken only if it
is exactly a `Block` or `BlockV2` with the submodules the kernels compute (`fast_block.why_not`): a
block the user changed (a LoRA layer, a hook, a pruned or swapped layer) stays as it is, and the
transform says once how many it left and why. A taken block keeps its submodules, parameters and
`state_dict()` keys (saving, converting and Hub export see the reference's); only its class changes,
to one whose forward runs the kernels, so hooks added later, and other tools, still see a block.

The kernel choices live in one `Autotuner` the model holds (`autotuner_of(model)`): measured on first
use of each shape, saved in training checkpoints, agreed among DDP ranks.
"""
import logging
from collections import Counter
from typing import Callable

import torch
from torch import nn

from .autotune import Autotuner
from .fast_block import FAST, FastBlock, why_not

log = logging.getLogger("convnext")


def accelerate(model: nn.Module, tuner: Autotuner | None = None, say: Callable[[str], None] | None = None) -> nn.Module:
    """`model` with every recognised ConvNeXt block computed by the measured kernels (in place; returned).

    `tuner`: the kernel choices to use (a resumed run's, another model's); default: the model's own if
    it was accelerated before, else a new one. Blocks left as they are are said once, through `say`
    (default: the "convnext" logger's warning).
    """
    tuner = tuner or autotuner_of(model) or Autotuner()
    left: Counter = Counter()
    for name, block in model.named_modules():
        reference = getattr(block, "reference", type(block))
        if reference not in FAST:
            continue
        reason = why_not(block, reference)
        if reason is not None:
            if isinstance(block, FastBlock):  # changed since: back to the reference, said below
                block.__class__ = reference
            left[reason] += 1
            continue
        block.__class__ = FAST[reference]
        block.tuner = tuner
        block.recognised = tuple((m, type(m)) for m in block._modules.values())
    model.autotuner = tuner
    if fast_blocks(model):
        # Convolution weights channels-last: the stem's output, and every map after it, is then
        # channels-last too (free permutes, oneDNN's NHWC kernels), as the blocks want their input.
        model.to(memory_format=torch.channels_last)
    if left:
        reasons = "; ".join(f"{n} where {why}" for why, n in left.most_common())
        (say or log.warning)(f"accelerate: {sum(left.values())} block(s) left as they are ({reasons})")
    return model


def unaccelerate(model: nn.Module) -> nn.Module:
    """`model` with every fast block back as the reference block (in place; returned)."""
    for block in model.modules():
        if isinstance(block, FastBlock):
            block.__class__ = block.reference
            del block.tuner, block.recognised
    if "autotuner" in vars(model):
        del model.autotuner
    return model


def fast_blocks(model: nn.Module) -> list[FastBlock]:
    return [m for m in model.modules() if isinstance(m, FastBlock)]


def blocks(model: nn.Module) -> int:
    """How many ConvNeXt blocks the model holds, fast or not."""
    return sum(1 for m in model.modules() if getattr(m, "reference", type(m)) in FAST)


def autotuner_of(model: nn.Module) -> Autotuner | None:
    """The kernel choices an accelerated model computes with (None: it was never accelerated)."""
    found = vars(model).get("autotuner")
    if found is None:
        fast = fast_blocks(model)
        found = fast[0].tuner if fast else None
    return found


def describe(model: nn.Module) -> str:
    """"accelerated (18 of 18 blocks)", or "reference" for the header lines of the commands."""
    fast, total = len(fast_blocks(model)), blocks(model)
    return f"accelerated ({fast} of {total} blocks)" if fast else "reference"
