"""Training checkpoints: written atomically, the newest K kept plus the best, read back safely.

A checkpoint holds everything a bit-exact resume needs: model, optimizer, scheduler, EMA and scaler
states, the RNG state, and the position in the data order, plus a checksum of all of it: a damaged
file is skipped for the previous one rather than resumed from.
"""
import re
import shutil
from pathlib import Path

import torch

from ..runtime.atomic import atomic_file
from ..checkpoints.files import checksum

CHECKSUM = "sha256"  # of every tensor and value in the checkpoint, checked on resume

CHECKPOINT_DIR = "checkpoints"
BEST = "best.pth"
PATTERN = re.compile(r"step-(\d+)\.pth$")


def checkpoint_files(run_dir: Path) -> list[Path]:
    """This run's step checkpoints, newest first."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    files = [p for p in folder.glob("step-*.pth") if PATTERN.search(p.name)] if folder.is_dir() else []
    return sorted(files, key=lambda p: int(PATTERN.search(p.name)[1]), reverse=True)


def _leaves(obj, prefix: str = ""):
    """(path, value) for every tensor or plain value inside nested dicts, lists and tuples."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _leaves(value, f"{prefix}{key}/")
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from _leaves(value, f"{prefix}{i}/")
    else:
        yield prefix, obj


def _checksum(state: dict) -> str:
    leaves = list(_leaves(state))
    plain = repr(sorted((path, repr(v)) for path, v in leaves if not isinstance(v, torch.Tensor)))
    return checksum({path: v for path, v in leaves if isinstance(v, torch.Tensor)}, plain)


def save(state: dict, run_dir: Path, step: int, keep: int, best: bool = False) -> Path:
    folder = Path(run_dir) / CHECKPOINT_DIR
    path = folder / f"step-{step:08d}.pth"
    with atomic_file(path) as tmp:
        torch.save({**state, CHECKSUM: _checksum(state)}, tmp)
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
            state = torch.load(path, map_location="cpu", weights_only=True)
            recorded = state.pop(CHECKSUM, None)
            if recorded is not None and recorded != _checksum(state):
                raise ValueError("damaged: checksum mismatch")
            return state
        except Exception as error:  # a damaged file: fall back to the previous one
            print(f"skipping unreadable checkpoint {path} ({(str(error).splitlines() or [type(error).__name__])[0]})")
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
