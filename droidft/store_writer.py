"""BatchWriter: a training worker's metric, event and sample rows, buffered and written in
one short transaction a second, so pages polling the database rarely wait. Callers use
`droidft.store.BatchWriter`.
"""

from __future__ import annotations

import sys
import threading
import time

from .store_db import StoreBusy, _write
from .store_rows import (
    _EVENT_COLS, _METRIC_COLS, _SAMPLE_COLS, _event_row, _insert_columns, _metric_row, _sample_row)


class BatchWriter:
    """Buffers a worker's metric, event and sample rows and writes them in one short
    transaction (with a heartbeat) at most once per `interval` when there are rows, else
    once per `heartbeat_every`, so the write lock is held ~15-20 ms a second per run at
    most and readers rarely wait. Rows survive a busy database: they
    stay buffered until a later flush gets through. The run's first metric row is written
    at once (the background thread wakes for it), so the chart's first point does not
    wait for the next tick."""

    def __init__(self, run_id: str, interval: float = 1.0, heartbeat_every: float | None = None):
        self.run_id = run_id
        self.interval = float(interval)
        # With nothing to write, the thread only beats the heartbeat, every `heartbeat_every`
        # (default 10 intervals): each write transaction interrupts training (measured at 23M
        # parameters, 4 s steps: flushing every second regardless cost 8% of tokens/s)
        self.heartbeat_every = 10 * self.interval if heartbeat_every is None else float(heartbeat_every)
        self._buf_lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._metrics: list[tuple] = []
        self._events: list[tuple] = []
        self._samples: list[tuple] = []
        self._last_flush = time.monotonic()
        self._stop = threading.Event()
        self._wake = threading.Event()  # set by stop and by the first metric row
        self._first_metric_seen = False
        self._thread: threading.Thread | None = None
        self.flushes = 0          # successful write transactions
        self.busy_flushes = 0     # flushes that met StoreBusy and kept their rows
        self.last_error: BaseException | None = None

    def metric(self, step: int, name: str, value: float, time: float | None = None) -> None:
        row = _metric_row(self.run_id, step, name, value, time)
        with self._buf_lock:
            self._metrics.append(row)
            first, self._first_metric_seen = not self._first_metric_seen, True
        if first:
            self._wake.set()

    def event(self, message: str, level: str = "info") -> None:
        row = _event_row(self.run_id, time.time(), level, message)
        with self._buf_lock:
            self._events.append(row)

    def sample(self, step: int, prompt: str, completion: str, reward: float | None = None,
               meta: dict | None = None) -> None:
        row = _sample_row(self.run_id, step, time.time(), prompt, completion, reward, meta)
        with self._buf_lock:
            self._samples.append(row)

    @property
    def pending(self) -> int:
        with self._buf_lock:
            return len(self._metrics) + len(self._events) + len(self._samples)

    def maybe_flush(self) -> None:
        """Flush if `interval` has passed; a no-op while the background thread does it, so
        the training loop never waits on the database."""
        if self._thread is not None and self._thread.is_alive():
            return
        if time.monotonic() - self._last_flush >= self.interval:
            self.flush()

    def flush(self) -> bool:
        """Write buffered rows and the heartbeat now. On StoreBusy the rows go back to the
        front of the buffer for the next flush; returns whether the write got through."""
        with self._flush_lock:
            with self._buf_lock:
                batch = (self._metrics, self._events, self._samples)
                self._metrics, self._events, self._samples = [], [], []
            try:
                with _write() as con:
                    _insert_columns(con, "metrics", _METRIC_COLS, batch[0])
                    _insert_columns(con, "events", _EVENT_COLS, batch[1])
                    _insert_columns(con, "samples", _SAMPLE_COLS, batch[2])
                    con.execute("UPDATE runs SET heartbeat_at = ? WHERE id = ?",
                                [time.time(), self.run_id])
            except BaseException as exc:
                with self._buf_lock:
                    self._metrics = batch[0] + self._metrics
                    self._events = batch[1] + self._events
                    self._samples = batch[2] + self._samples
                self.last_error = exc
                if isinstance(exc, StoreBusy):
                    self.busy_flushes += 1
                    return False
                raise
            finally:
                self._last_flush = time.monotonic()
            self.flushes += 1
            return True

    def _loop(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            if not self.pending and time.monotonic() - self._last_flush < self.heartbeat_every:
                continue
            try:
                self.flush()
            except Exception as exc:  # keep beating; the rows are still buffered
                self.last_error = exc
                print(f"droidft.store: flush failed for run {self.run_id}: {exc!r}", file=sys.stderr)

    def start_background(self) -> None:
        """Flush rows every `interval` and beat the heartbeat at least every `heartbeat_every`
        from a daemon thread, even while a training step takes minutes."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=f"droidft-writer-{self.run_id}",
                                        daemon=True)
        self._thread.start()

    def close(self, timeout: float = 60.0) -> None:
        """Stop the thread and write everything left, retrying a busy database for up to
        `timeout` seconds (a busy database, or a full disk being cleared); raises if rows are
        still unwritten after that."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.flush():
                    return
            except Exception:  # noqa: BLE001 - e.g. a full disk: keep the rows and retry
                if time.monotonic() >= deadline:
                    raise
            if time.monotonic() >= deadline:
                raise StoreBusy()
            time.sleep(0.5)

    def __enter__(self) -> "BatchWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
