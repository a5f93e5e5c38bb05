"""The roadmap's steps as a table (ours next to the paper's) and chosen by number or name; training
them is the study (training/roadmap_study.py)."""
import torch

from ..models.counting import count_macs, count_params
from ..models.registry import create_model
from ..models.roadmap import R50, R200, SMALL, Step

REGIMES = {"r50": R50, "r200": R200, "small": SMALL}


def step_row(step: Step, input_size: int = 224, num_classes: int = 1000) -> dict:
    with torch.device("meta"):
        model = create_model(step.name, num_classes=num_classes)
    return {"name": step.name, "change": step.change, "params": count_params(model),
            "gmacs": count_macs(model, input_size) / 1e9, "paper_top1": step.paper_top1, "paper_gflops": step.paper_gmacs}


def select(regime: str, wanted: str | None) -> list[Step]:
    """Steps by number ("2", "08"), suffix ("gelu", "kernel9") or full name; all when `wanted` is None."""
    steps = REGIMES[regime]
    if not wanted:
        return list(steps)
    chosen = []
    for token in (t.strip() for t in wanted.split(",") if t.strip()):
        number = f"{int(token):02d}" if token.isdigit() else None
        matches = [s for s in steps if s.name == token or s.name.endswith(f"_{token}")
                   or (number and s.name.split("_")[2] == number and not _is_branch(s))]
        if not matches:
            raise ValueError(f"no {regime} roadmap step {token!r}; see `convnext roadmap`")
        chosen += [m for m in matches if m not in chosen]
    return chosen


def _is_branch(step: Step) -> bool:
    return any(step.name.endswith(k) for k in ("_kernel5", "_kernel9", "_kernel11"))
