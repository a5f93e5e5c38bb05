"""Training checkpoints: written atomically, the newest K kept plus the best, read back safely.

A checkpoint holds everything a bit-exact resume needs: model, optimizer, scheduler, EMA and scaler
states, the RNG state, and the position in the data order, plus a checksum of all of it: a damaged
file is skipped for the previous one rather than resumed from.
"""
import os
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
    with atomic_file(path) as tmp, open(tmp, "wb") as file:
        torch.save({**state, CHECKSUM: _checksum(state)}, file)  # through a Python file: a full disk says so
    if best:
        with atomic_file(folder / BEST) as tmp:
            try:  # the same bytes: a second name costs no space (a copy where links are not allowed)
                tmp.unlink()
                os.link(path, tmp)
            except OSError:
                shutil.copyfile(path, tmp)
    for old in checkpoint_files(run_dir)[keep:]:
        old.unlink(missing_ok=True)
    return path


def read(path: Path) -> dict:
    """One checkpoint, its checksum verified; ValueError (or torch's error) when it is damaged."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    recorded = state.pop(CHECKSUM, None)
    if recorded is not None and recorded != _checksum(state):
        raise ValueError("damaged: checksum mismatch")
    return state


def newest_intact(run_dir: Path, say=None) -> tuple[Path, dict] | None:
    """The newest checkpoint that reads back whole, and its state; a damaged newer one is skipped,
    with a line through `say` naming it."""
    for path in checkpoint_files(run_dir):
        try:
            return path, read(path)
        except Exception as error:  # a damaged file: fall back to the previous one
            if say:
                say(f"skipping damaged checkpoint {path} ({(str(error).splitlines() or [type(error).__name__])[0]})")
    return None


class DamagedCheckpoints(ValueError):
    """A run's checkpoints exist and none reads back whole."""


def load_latest(run_dir: Path, say=print) -> dict | None:
    """The newest intact checkpoint's state (a damaged one is skipped with a note), or None.

    Raises DamagedCheckpoints when there are checkpoints and none is intact: starting over silently
    would throw the run's progress away."""
    found = newest_intact(run_dir, say)
    if found is None and checkpoint_files(run_dir):
        newest = checkpoint_files(run_dir)[0]
        raise DamagedCheckpoints(f"every checkpoint of {run_dir} is damaged (the newest: {newest}); to start the "
                                 f"run over, delete {newest.parent}")
    return found[1] if found else None



def remove_temporaries(run_dir: Path) -> list[Path]:
    """Delete what a killed writer left: the hidden `.NAME.*.tmp` files and folders of `runtime.atomic`."""
    strays = [p for p in Path(run_dir).rglob(".*.tmp")] if Path(run_dir).is_dir() else []
    for stray in strays:
        shutil.rmtree(stray) if stray.is_dir() else stray.unlink(missing_ok=True)
    return strays


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
