"""Free disk space: checked before a run starts, watched while it trains.

A full disk is the one fault that can take the run database down with it, so droidft
keeps a margin (`DROIDFT_MIN_FREE_MB`, default 100 MB) on the disk holding its home:
`jobs.start` refuses a run whose checkpoints would not fit, and the worker ends a run
early (saving its adapter while there is still room) when free space drops below the
margin. If the disk fills anyway, errors that say so (ENOSPC, DuckDB's "No space left
on device", MLX's "Unable to write") become `DiskFull` with a message that says where
and how much is free.
"""

from __future__ import annotations

import errno
import os
import shutil
import time
from pathlib import Path

from .data import human_bytes

DEFAULT_MIN_FREE_MB = 100.0


class DiskFull(OSError):
    """The disk holding droidft's files is (nearly) full; the message says what to do."""

    def __init__(self, message: str):
        super().__init__(errno.ENOSPC, message)

    def __str__(self) -> str:
        return self.strerror


def min_free_bytes() -> int:
    try:
        mb = float(os.environ.get("DROIDFT_MIN_FREE_MB", DEFAULT_MIN_FREE_MB))
    except ValueError:
        mb = DEFAULT_MIN_FREE_MB
    return int(max(0.0, mb) * 2**20)


def free_bytes(path: str | os.PathLike) -> int:
    """Bytes free to this user on the disk holding `path` (or its nearest existing parent)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


def is_disk_full(exc: BaseException, path: str | os.PathLike | None = None) -> bool:
    """Does this error mean the disk ran out of space? MLX's writer only says "Unable to
    write", so for it the free space at `path` decides."""
    if isinstance(exc, DiskFull) or getattr(exc, "errno", None) == errno.ENOSPC:
        return True
    text = str(exc).lower()
    if "no space left on device" in text or "disk is full" in text:
        return True
    if "unable to write" in text and path is not None:
        try:
            return free_bytes(path) < max(min_free_bytes(), 2**20)
        except OSError:
            return False
    return False


def full_message(path: str | os.PathLike, doing: str) -> str:
    free = free_bytes(path)
    return (f"The disk is full while {doing}: {human_bytes(free)} free on the disk holding {path}. "
            f"Free some space (Sessions can delete old runs and their checkpoints), or set "
            f"DROIDFT_HOME to a bigger disk; then Resume continues from the last checkpoint.")


def require_free(path: str | os.PathLike, needed: int, what: str) -> None:
    """Raise DiskFull unless `needed` bytes plus the margin are free at `path`."""
    free, margin = free_bytes(path), min_free_bytes()
    if free < needed + margin:
        raise DiskFull(
            f"Not enough free disk space for {what}: {human_bytes(free)} free on the disk holding "
            f"{path}, and it needs about {human_bytes(needed)} plus a {human_bytes(margin)} margin. "
            f"Free some space (Sessions can delete old runs), save checkpoints less often, or set "
            f"DROIDFT_HOME to a bigger disk.")


class LowSpaceWatch:
    """Polled by the worker between training steps (at most once per `every` seconds):
    trips once free space at `path` falls below the margin, and remembers why."""

    def __init__(self, path: str | os.PathLike, every: float = 1.0):
        self.path, self.every = Path(path), every
        self.margin = min_free_bytes()
        self.reason: str | None = None
        self._next = 0.0

    def tripped(self) -> bool:
        if self.reason is not None:
            return True
        if self.margin <= 0 or time.monotonic() < self._next:
            return False
        self._next = time.monotonic() + self.every
        try:
            free = free_bytes(self.path)
        except OSError:
            return False
        if free < self.margin:
            self.reason = (
                f"Stopped early because the disk is almost full: {human_bytes(free)} free on the disk "
                f"holding {self.path} (droidft keeps {human_bytes(self.margin)} free so the run "
                f"database stays safe). The adapter so far is saved. Free some space (Sessions can "
                f"delete old runs), then Resume.")
        return self.reason is not None
