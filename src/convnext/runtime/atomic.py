"""Atomic writes: a file or folder appears complete at its destination, or not at all.

Write to a temporary sibling, flush it to disk, then rename over the destination. An interrupted or
killed writer leaves the previous version in place (and at most a stray temporary to clean up).
"""
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_parent(destination: Path) -> None:
    blocker = next((p for p in (destination.parent, *destination.parent.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise NotADirectoryError(f"cannot write {destination}: {blocker} is not a directory")
    destination.parent.mkdir(parents=True, exist_ok=True)


@contextmanager
def atomic_file(destination: str | os.PathLike) -> Iterator[Path]:
    """`with atomic_file("w.pth") as tmp: torch.save(state, tmp)` -> w.pth replaced in one step."""
    destination = Path(destination)
    _make_parent(destination)
    fd, tmp = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".tmp", dir=destination.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, destination)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_dir(destination: str | os.PathLike) -> Iterator[Path]:
    """Fill a temporary folder, then swap it in for `destination` (whose old contents are removed)."""
    destination = Path(destination)
    if destination.exists() and not destination.is_dir():
        raise NotADirectoryError(f"{destination} exists and is not a directory")
    _make_parent(destination)
    tmp = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", suffix=".tmp", dir=destination.parent))
    try:
        yield tmp
        for f in tmp.iterdir():
            _fsync(f)
        if destination.exists():
            old = destination.with_name(f".{destination.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(destination, old)
            os.replace(tmp, destination)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, destination)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
