"""Parameter and multiply-accumulate counts, the paper's "params" and "FLOPs"."""
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    """Number of parameters: `count_params(create_model("convnext_tiny"))` -> 28_589_128."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_size: tuple[int, int, int] | int = 224) -> int:
    """Multiply-accumulates of one forward pass on one image (convolutions and matmuls).

    The paper's "FLOPs" are MACs; PyTorch's flop counter counts 2 per multiply-add, so halve it.
    Counted on what the model runs: on the reference model, the paper's lines (a kernel's taps over
    padding included, as the paper's count has them). Works on a model built on the `meta` device, so
    the largest variants cost no memory.
    """
    if isinstance(input_size, int):
        input_size = (getattr(model, "in_chans", 3), input_size, input_size)
    device = next(model.parameters()).device
    x = torch.zeros(1, *input_size, device=device)
    counter = FlopCounterMode(display=False)
    was_training = model.training
    model.eval()
    try:
        with counter, torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


def model_table(names: list[str], input_size: int = 224) -> list[dict]:
    """Params and GMACs of each named model, built on the meta device (no memory, no init time)."""
    from .registry import create_model

    rows = []
    for name in names:
        with torch.device("meta"):
            model = create_model(name)
        rows.append({"name": name, "params": count_params(model), "gmacs": count_macs(model, input_size) / 1e9})
    return rows
