"""Files in a run folder that the worker, the distributed ranks and `jobs` share: the STOP
request (`jobs.stop` writes it, with the reason; a training process stops at the next step),
the run's log, which also goes to the events table, and whether a saved adapter is whole.
Its own module so `worker`, `distributed` and `jobs` need not import each other for them."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from . import store

STOP_FILE = "STOP"


def make_logger(log_path: Path, writer: "store.BatchWriter"):
    """A log function writing to the run's log file and the events table."""
    lock = threading.Lock()

    def log(message: str, level: str = "info") -> None:
        line = f"{time.strftime('%H:%M:%S')} {level.upper():5} {message}"
        try:
            with lock, open(log_path, "a", encoding="utf-8") as fh:
                fh.write(line + "\n")
        except OSError as exc:  # a full disk must not crash training: the event still goes to the store
            print(f"{line} (not in worker.log: {exc})", file=sys.stderr)
        writer.event(message, level=level)

    return log


def adapter_if_complete(folder: Path) -> str | None:
    """`folder` (as text) if its adapters.safetensors is whole, else None."""
    return str(folder) if _complete(folder / "adapters.safetensors") else None


def _complete(weights: Path) -> bool:
    """Is this safetensors file whole? A write cut short (a full disk) leaves a truncated
    file that would fail later in Compare; checks the header against the file size only."""
    if not weights.exists():
        return False
    try:
        from safetensors import safe_open

        with safe_open(str(weights), framework="numpy"):
            return True
    except Exception:  # noqa: BLE001 - any parse error means incomplete
        print(f"droidft.worker: {weights} is incomplete (a write was cut short)", file=sys.stderr)
        return False
