"""Atomic writes: a file or folder appears complete at its destination, or not at all.

Write to a temporary sibling, flush it to disk, then rename over the destination. An interrupted or
killed writer leaves the previous version in place (and at most a stray temporary to clean up).
A write that fails (a full disk, a quota, a read-only or unwritable folder) raises `WriteError`, one
line that names the destination and the cause, whatever library did the writing.
"""
import errno
import os
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
NOT_WRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS}
UMASK = os.umask(0o022)  # read once (it can only be read by setting it), then put back
os.umask(UMASK)
LOW_SPACE_BYTES = 1 << 20  # a write that failed for no stated reason with less free than this: the disk is full


class WriteError(OSError):
    """A file could not be written; the message names it and says why (no space, not writable)."""

    def __init__(self, destination: Path, reason: str):
        super().__init__(f"cannot write {destination}: {reason}")
        self.destination, self.reason = Path(destination), reason

    @property
    def disk_full(self) -> bool:
        return self.reason.startswith("no space")


def _chain(error: BaseException):
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def _free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def why_not_written(error: BaseException, folder: Path) -> str | None:
    """The cause of a failed write in words, or None when it was not the file system's doing.

    Libraries report a full disk in their own ways: Python as OSError(ENOSPC), safetensors as
    "os error 28" in its message, torch.save to a path as "unexpected pos" with no errno at all; for
    those the free space decides (called while the partial file still holds its space).
    """
    for cause in _chain(error):
        if isinstance(cause, OSError) and cause.errno in NO_SPACE:
            return "no space left on device"
        if isinstance(cause, OSError) and cause.errno in NOT_WRITABLE:
            return f"not writable ({os.strerror(cause.errno).lower()})"
    text = " ".join(str(cause) for cause in _chain(error))
    if "No space left on device" in text or "os error 28" in text or "Disk quota exceeded" in text:
        return "no space left on device"
    if "Read-only file system" in text or "Permission denied" in text:
        return "not writable"
    free = _free_bytes(folder)
    if free is not None and free < LOW_SPACE_BYTES:
        return f"no space left on device ({free} bytes free)"
    return None


@contextmanager
def reported_as_write_error(destination: Path, folder: Path | None = None) -> Iterator[None]:
    """Turn a failed write to `destination` into a WriteError that says why (other errors pass)."""
    try:
        yield
    except WriteError:
        raise
    except Exception as error:
        reason = why_not_written(error, folder or destination.parent)
        if reason is None:
            raise
        raise WriteError(destination, reason) from error


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


def _new_temporary(destination: Path, folder: bool = False) -> Path:
    """An empty sibling file (or folder) of a fresh name, with the permissions a plain open() or
    mkdir() would give (mkstemp's are owner-only: a model written for a team would be unreadable to it)."""
    while True:
        tmp = destination.with_name(f".{destination.name}.{secrets.token_hex(4)}.tmp")
        try:
            if folder:
                os.mkdir(tmp, 0o777)
            else:
                os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return tmp
        except FileExistsError:
            continue


@contextmanager
def atomic_file(destination: str | os.PathLike) -> Iterator[Path]:
    """`with atomic_file("w.pth") as tmp: torch.save(state, tmp)` -> w.pth replaced in one step."""
    destination = Path(destination)
    with reported_as_write_error(destination):
        _make_parent(destination)
        tmp = _new_temporary(destination)
    try:
        with reported_as_write_error(destination):
            yield tmp
            _fsync(tmp)
            os.chmod(tmp, 0o666 & ~UMASK)  # as open() would create it (safetensors makes its files owner-only)
            os.replace(tmp, destination)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(destination: str | os.PathLike, text: str) -> Path:
    """Replace a small text file (JSON, CSV) in one step."""
    with atomic_file(destination) as tmp:
        tmp.write_text(text)
    return Path(destination)


@contextmanager
def atomic_dir(destination: str | os.PathLike) -> Iterator[Path]:
    """Fill a temporary folder, then swap it in for `destination` (whose old contents are removed)."""
    destination = Path(destination)
    if destination.exists() and not destination.is_dir():
        raise NotADirectoryError(f"{destination} exists and is not a directory")
    with reported_as_write_error(destination):
        _make_parent(destination)
        tmp = _new_temporary(destination, folder=True)
    try:
        with reported_as_write_error(destination, destination.parent):
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
