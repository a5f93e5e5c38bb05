"""torchrun / DDP glue: one process per device; NCCL on GPUs, gloo on CPUs. Only rank 0 writes files.

    torchrun --nproc_per_node=4 -m convnext.cli train --data /data/imagenet --recipe in1k
"""
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup(device: str | None = None) -> Context:
    """Start the process group when launched by torchrun (WORLD_SIZE > 1), and pick this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return Context(rank, world_size, torch.device(device))


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_sum(values: torch.Tensor, context: Context) -> torch.Tensor:
    """Sum a tensor of counts over all processes (a no-op on one)."""
    if context.distributed:
        values = values.clone()
        dist.all_reduce(values)
    return values


def any_of(flags: list[bool], context: Context) -> list[bool]:
    """Each flag true on every process if it is true on any (a stop signal one rank saw, a non-finite
    loss, new kernel choices): one all-reduce for all of them."""
    if not context.distributed:
        return list(flags)
    values = torch.tensor([1.0 if flag else 0.0 for flag in flags], device=context.device)
    dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return [bool(v) for v in values.tolist()]
