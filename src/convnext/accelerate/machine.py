"""The kernel choices of this machine, kept on disk: a fresh run starts from the choices the runs before
it measured here, so two fresh runs of the same command compute with the same kernels and end bit for
bit equal, and a run killed before its first checkpoint restarts as the uninterrupted one ran.

Within a run nothing changes: its choices travel in its checkpoints (`training/loop.py`), a resumed
run takes exactly those, and DDP ranks take rank 0's. Here a run adds what it measured once its
first checkpoint is written. The file is keyed by what decides the speed and the kernels that can
run (CPU model and instruction sets, thread count, torch's version, the GPU): another machine, or the
same one with other settings, measures its own. `CONVNEXT_CACHE` moves it; deleting it measures anew.
"""
import hashlib
import json
import logging
from pathlib import Path

import torch

from ..runtime.atomic import WriteError, write_text
from ..runtime.cache import cache_dir
from ..runtime.hardware import describe
from .autotune import Autotuner

log = logging.getLogger(__name__)


def machine_key(device: torch.device) -> str:
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else ""
    return f"{describe(device)} | {gpu} | torch {torch.__version__}"


def choices_file(device: torch.device) -> Path:
    digest = hashlib.sha256(machine_key(device).encode()).hexdigest()[:16]
    return cache_dir() / "kernels" / f"{digest}.json"


def load_machine_choices(tuner: Autotuner, device: torch.device) -> int:
    """The choices measured on this machine before, into `tuner`; how many (0 where there are none or
    the file is unreadable: then this run measures, as the first one did)."""
    path = choices_file(device)
    try:
        saved = json.loads(path.read_text())
        tuner.load_state_dict(saved["choices"])
        return len(saved["choices"]["choices"])
    except FileNotFoundError:
        return 0
    except (OSError, ValueError, KeyError, TypeError) as error:
        log.debug("kernel choices in %s not read (%s): measuring anew", path, error)
        return 0


def save_machine_choices(tuner: Autotuner, device: torch.device) -> None:
    """Add `tuner`'s choices to this machine's file (its own win where both chose), atomically. A cache
    that cannot be written costs only the next run's measurements: it is said in the debug log."""
    merged = Autotuner()
    load_machine_choices(merged, device)
    merged.load_state_dict(tuner.state_dict())
    try:
        write_text(choices_file(device), json.dumps({"machine": machine_key(device), "choices": merged.state_dict()}))
    except (WriteError, OSError) as error:
        log.debug("kernel choices not kept for the next run: %s", error)
