"""Files in a run folder that the worker and the distributed ranks share: the STOP request
(`jobs.stop` touches it; a training process stops at the next step) and the run's log, which
also goes to the events table. Its own module so `worker` and `distributed` need not import
each other for them."""

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
