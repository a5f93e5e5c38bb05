"""Training checkpoints: written atomically, the newest K kept plus the best, read back safely.

A checkpoint holds everything a bit-exact resume needs: model, optimizer, scheduler, EMA and scaler
states, the RNG state, and the position in the data order.
"""
import re
import shutil
from pathlib import Path

import torch

from .atomic import atomic_file

CHECKPOINT_DIR = "checkpoints"
BEST = "best.pth"
PATTERN = re.compile(r"step-(\d+)\.pth$")


def checkpoint_files(run_dir: Path) -> list[Path]:
    """This run's step checkpoints, newest first."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    files = [p for p in folder.glob("step-*.pth") if PATTERN.search(p.name)] if folder.is_dir() else []
    return sorted(files, key=lambda p: int(PATTERN.search(p.name)[1]), reverse=True)


def save(state: dict, run_dir: Path, step: int, keep: int, best: bool = False) -> Path:
    folder = Path(run_dir) / CHECKPOINT_DIR
    path = folder / f"step-{step:08d}.pth"
    with atomic_file(path) as tmp:
        torch.save(state, tmp)
    if best:
        with atomic_file(folder / BEST) as tmp:
            shutil.copyfile(path, tmp)
    for old in checkpoint_files(run_dir)[keep:]:
        old.unlink(missing_ok=True)
    return path


def load_latest(run_dir: Path) -> dict | None:
    """The newest readable checkpoint (an unreadable one is skipped with a note), or None."""
    for path in checkpoint_files(run_dir):
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # a damaged file: fall back to the previous one
            print(f"skipping unreadable checkpoint {path} ({str(error).splitlines()[0]})")
    return None


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
