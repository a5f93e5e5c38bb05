"""The process-wide switches a run sets, owned by one context that restores them afterwards.

PyTorch's determinism, cuDNN's own autotuning and the thread count are global to the process: a training run, a benchmark or a test that changes them must not leave them changed for
whatever runs next in the same process (the test suite, a notebook, `convnext roadmap`'s next step).

    with process_settings(deterministic=True):
        ...   # deterministic algorithms, no cuDNN benchmark, no kernel measurements
"""
from contextlib import contextmanager
from typing import Iterator

import torch



@contextmanager
def process_settings(deterministic: bool = False, threads: int | None = None) -> Iterator[None]:
    """Within the block: `deterministic` algorithms (which also stops cuDNN's and our autotuners from
    measuring: a measured choice may differ from run to run) and, if given, `threads` intra-op threads."""
    saved = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark, torch.get_num_threads())
    try:
        if deterministic:
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
        if threads is not None:
            torch.set_num_threads(threads)
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0])
        torch.backends.cudnn.benchmark = saved[1]
        if torch.get_num_threads() != saved[2]:
            torch.set_num_threads(saved[2])
