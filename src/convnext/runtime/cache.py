"""Where the package keeps what it makes once and reads again: downloaded weights, generated data sets,
the kernel choices measured on this machine. `CONVNEXT_CACHE` moves it (default: torch hub's folder)."""
import os
from pathlib import Path

import torch


def cache_dir() -> Path:
    return Path(os.environ.get("CONVNEXT_CACHE") or Path(torch.hub.get_dir()) / "convnext")
