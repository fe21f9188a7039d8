"""The run database: DuckDB schema and every query droidft makes.

DuckDB lets one process write a database file at a time, and a read-write connection
shuts out readers in other processes. Training workers write while Streamlit pages poll,
so every access here is short: a write opens the file, runs one transaction and closes
it; a read opens it read-only, runs its queries and closes it. Nothing keeps the file
open between calls.

How an access works (`connect`):

1. One access at a time per process (a thread lock): DuckDB refuses a read-only and a
   read-write handle on one file inside one process, and a Streamlit server writes from
   one session while others poll.
2. A sidecar lock file (``droidft.duckdb.lock``, ``flock``: shared for readers, exclusive
   for writers) queues droidft's processes before they touch DuckDB, so they wait on a
   cheap syscall instead of failing DuckDB opens.
3. The file is ATTACHed to a long-lived in-memory DuckDB instance of this process (read-only
   for reads) and DETACHed afterwards, which releases DuckDB's file lock and checkpoints a
   write. Creating a DuckDB instance costs ~9 ms (even ``:memory:``), more than the work
   itself; ATTACH skips it, so a lock is held ~1-3 ms for a read and ~5-7 ms for a write,
   against ~11 ms and ~15 ms with ``duckdb.connect`` per access.
4. DuckDB's own lock conflicts (a process not using the lock file, e.g. the duckdb CLI, or
   a platform without ``fcntl``) are retried with jittered exponential backoff.

Any wait gives up after ``BUSY_TIMEOUT`` (20 s) with `StoreBusy`, whose message is fit for
a user. ``stats`` counts opens, waits and retries in this process. ``DROIDFT_STORE_ATTACH=0``
and ``DROIDFT_STORE_LOCKFILE=0`` switch steps 3 and 2 off (for the benchmark and tests).

Measured with duckdb 2.0 on a 2-core Linux box shared with other jobs (load average ~8;
``bench/bench_store.py``, medians):

- ATTACH per access: write 1 row ~3.5 ms, BatchWriter flush of 50 rows ~5 ms, read-only
  get_run ~1.2 ms, Monitor snapshot ~5 ms. ``duckdb.connect`` per access: ~15, ~19, ~12 and
  ~20 ms, of which ~9 ms is instance start-up and ~3.5 ms the checkpoint on close. Settings
  do not help: ``threads=1``, no extension autoloading, ``memory_limit`` change nothing;
  ``PRAGMA disable_checkpoint_on_shutdown`` saves ~1.5 ms on close but leaves a WAL every
  later open (readers too) must replay; ``fsync_mode=NONE`` saves ~1 ms at the price of
  corruption on power loss. So: defaults.
- Batch inserts use ``INSERT ... SELECT unnest(list)`` per column: 1,000 rows in ~17 ms
  (connect mode) against ~90 ms with ``executemany`` and ~44 ms with a multi-row VALUES.
- `run_summaries` over 1,000 runs / 1,000,000 metric rows: 25-45 ms including the open; an
  ART index on ``metrics(run_id)`` made it and per-run reads slower and inserts ~3 ms
  dearer, so there is none.
- 3 workers flushing once a second + 2 pollers every 0.25 s: every row lands, 1-6% of polls
  wait for a lock, poll p50/p95 6/18 ms (connect + retry, the design doc's way: 12%, 71/310
  ms). At the design doc's overload (3 writers every 20 ms) still no loss and no StoreBusy;
  47 write transactions/s get through against 5 with connect + retry, poll p95 126 ms
  against 1,363 ms.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import secrets
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

import duckdb

from . import paths

try:  # the sidecar lock needs flock (Linux, macOS); elsewhere DuckDB's retry loop alone
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None


class StoreBusy(Exception):
    """The database stayed locked by another process for longer than BUSY_TIMEOUT."""

    def __init__(self, message: str = "The run database is busy (another process holds it). "
                                      "Try again in a moment."):
        super().__init__(message)


RUN_STATUSES = ("queued", "running", "completed", "failed", "stopped")
DOWNLOAD_STATUSES = ("queued", "running", "completed", "failed", "cancelled")

BUSY_TIMEOUT = 20.0  # seconds any open may wait before StoreBusy
USE_LOCKFILE = fcntl is not None and os.environ.get("DROIDFT_STORE_LOCKFILE", "1") != "0"
USE_ATTACH = os.environ.get("DROIDFT_STORE_ATTACH", "1") != "0"

# table -> [(column, type)]; the first column of each table is created with the table,
# the rest are also added with ADD COLUMN IF NOT EXISTS so older files gain new columns.
SCHEMA: dict[str, list[tuple[str, str]]] = {
    "runs": [
        ("id", "VARCHAR PRIMARY KEY"), ("name", "VARCHAR"), ("method", "VARCHAR"),
        ("status", "VARCHAR"), ("config", "VARCHAR"), ("model", "VARCHAR"), ("data", "VARCHAR"),
        ("parent_id", "VARCHAR"), ("created_at", "DOUBLE"), ("started_at", "DOUBLE"),
        ("ended_at", "DOUBLE"), ("pid", "BIGINT"), ("heartbeat_at", "DOUBLE"),
        ("error", "VARCHAR"), ("blas", "VARCHAR"), ("adapter_path", "VARCHAR"),
        ("host", "VARCHAR"), ("extra", "VARCHAR"),
        ("queue_order", "DOUBLE"),  # set while waiting in the run queue (droidft.queue)
        ("sweep_id", "VARCHAR"),
    ],
    "metrics": [
        ("run_id", "VARCHAR"), ("step", "BIGINT"), ("name", "VARCHAR"), ("value", "DOUBLE"),
        ("time", "DOUBLE"),
    ],
    "artifacts": [
        ("id", "VARCHAR PRIMARY KEY"), ("run_id", "VARCHAR"), ("kind", "VARCHAR"),
        ("path", "VARCHAR"), ("step", "BIGINT"), ("created_at", "DOUBLE"), ("meta", "VARCHAR"),
    ],
    "events": [
        ("run_id", "VARCHAR"), ("time", "DOUBLE"), ("level", "VARCHAR"), ("message", "VARCHAR"),
    ],
    "samples": [
        ("run_id", "VARCHAR"), ("step", "BIGINT"), ("time", "DOUBLE"), ("prompt", "VARCHAR"),
        ("completion", "VARCHAR"), ("reward", "DOUBLE"), ("meta", "VARCHAR"),
    ],
    "evaluations": [
        ("id", "VARCHAR PRIMARY KEY"), ("suite", "VARCHAR"), ("target", "VARCHAR"),
        ("dataset", "VARCHAR"), ("artifact_id", "VARCHAR"), ("run_id", "VARCHAR"),
        ("created_at", "DOUBLE"), ("results", "VARCHAR"),
    ],
    "sweeps": [
        ("id", "VARCHAR PRIMARY KEY"), ("name", "VARCHAR"), ("method", "VARCHAR"),
        ("created_at", "DOUBLE"), ("spec", "VARCHAR"),
    ],
    # pairs an online run (judge: human) waits on; status pending -> decided | skipped | expired
    "judgments": [
        ("id", "VARCHAR PRIMARY KEY"), ("run_id", "VARCHAR"), ("step", "BIGINT"),
        ("created_at", "DOUBLE"), ("deadline", "DOUBLE"), ("prompt", "VARCHAR"),
        ("completion_a", "VARCHAR"), ("completion_b", "VARCHAR"), ("status", "VARCHAR"),
        ("choice", "INTEGER"), ("decided_by", "VARCHAR"), ("decided_at", "DOUBLE"),
    ],
    # Hub downloads (droidft.models.download): a job per pull, like a run; never a token in here.
    "downloads": [
        ("id", "VARCHAR PRIMARY KEY"), ("repo_id", "VARCHAR"), ("revision", "VARCHAR"),
        ("commit_sha", "VARCHAR"), ("status", "VARCHAR"), ("phase", "VARCHAR"),
        ("bytes_done", "BIGINT"), ("bytes_total", "BIGINT"), ("resumed_bytes", "BIGINT"),
        ("speed_bps", "DOUBLE"), ("files_done", "BIGINT"), ("files_total", "BIGINT"),
        ("current_file", "VARCHAR"), ("path", "VARCHAR"), ("quantize_bits", "BIGINT"),
        ("error", "VARCHAR"), ("pid", "BIGINT"), ("created_at", "DOUBLE"), ("started_at", "DOUBLE"),
        ("ended_at", "DOUBLE"), ("heartbeat_at", "DOUBLE"),
    ],
    # Export jobs (droidft.export.jobs): one row per export started from the dashboard.
    "exports": [
        ("id", "VARCHAR PRIMARY KEY"), ("source", "VARCHAR"), ("target", "VARCHAR"),
        ("status", "VARCHAR"), ("phase", "VARCHAR"), ("done", "DOUBLE"), ("total", "DOUBLE"),
        ("out", "VARCHAR"), ("artifact_id", "VARCHAR"), ("error", "VARCHAR"), ("options", "VARCHAR"),
        ("pid", "BIGINT"), ("created_at", "DOUBLE"), ("started_at", "DOUBLE"), ("ended_at", "DOUBLE"),
        ("heartbeat_at", "DOUBLE"),
    ],
}
RUN_COLUMNS = tuple(c for c, _ in SCHEMA["runs"])
DOWNLOAD_COLUMNS = tuple(c for c, _ in SCHEMA["downloads"])
EXPORT_COLUMNS = tuple(c for c, _ in SCHEMA["exports"])
_JSON_COLUMNS = {"runs": ("config", "extra"), "artifacts": ("meta",), "samples": ("meta",),
                 "evaluations": ("results",), "sweeps": ("spec",), "exports": ("options",)}

# Process-wide counters, for tests and the benchmark (reset with reset_stats()).
stats: dict[str, float] = {}
_stats_lock = threading.Lock()


def reset_stats() -> None:
    with _stats_lock:
        stats.update(opens=0, read_opens=0, write_opens=0, contended=0, lock_waits=0,
                     thread_waits=0, retries=0, busy=0, wait_s=0.0)


reset_stats()


def _count(**deltas) -> None:
    with _stats_lock:
        for key, delta in deltas.items():
            stats[key] = stats.get(key, 0) + delta


# --------------------------------------------------------------------------- connections

_ready: set[str] = set()  # db paths whose schema this process has ensured
_ready_lock = threading.Lock()
_local = threading.local()  # .open: this thread already holds a store connection


def _is_lock_error(exc: Exception) -> bool:
    msg = str(exc)
    return ("Could not set lock" in msg or "Conflicting lock" in msg
            or "different configuration" in msg  # same process, rw vs read-only instance
            or (isinstance(exc, duckdb.IOException) and "lock" in msg.lower()))


def _flock(fd: int, mode: int, deadline: float) -> bool:
    """flock with a deadline: poll LOCK_NB with short jittered sleeps (a blocking flock
    cannot time out). Returns whether it had to wait."""
    delay, waited = 0.001, False
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return waited
        except BlockingIOError:
            waited = True
            if time.monotonic() >= deadline:
                _count(busy=1)
                raise StoreBusy() from None
            time.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 1.5, 0.02)


@contextlib.contextmanager
def _sidecar(db: Path, exclusive: bool, deadline: float) -> Iterator[bool]:
    """Hold droidft's own lock file (shared or exclusive); yields whether we had to wait.

    No fairness queue: a Streamlit server serialises its own threads (one store access at a
    time per process), so readers cannot overlap into a wall that starves a writer, and a
    turnstile file tried against this showed no measurable gain."""
    if not USE_LOCKFILE:
        yield False
        return
    fd = os.open(str(db) + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        waited = _flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH, deadline)
        if waited:
            _count(lock_waits=1)
        yield waited
    finally:
        os.close(fd)  # closing the descriptor releases the flock


_ALIAS = "droidft_db"
_engine: duckdb.DuckDBPyConnection | None = None  # this process's in-memory DuckDB instance
_engine_pid = 0
_orphans: list = []  # engines inherited through fork: never closed in the child
_proc_lock = threading.Lock()  # one store access at a time per process (ATTACH is per instance)


def _after_fork_in_child() -> None:
    """A forked child gets a fresh engine and fresh locks (another thread may have held
    them at fork time); the parent's engine is kept referenced, never closed here."""
    global _engine, _proc_lock, _ready_lock, _stats_lock
    if _engine is not None:
        _orphans.append(_engine)
    _engine, _proc_lock = None, threading.Lock()
    _ready_lock, _stats_lock = threading.Lock(), threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _engine_con() -> duckdb.DuckDBPyConnection:
    global _engine, _engine_pid
    if _engine is None or _engine_pid != os.getpid():
        _engine, _engine_pid = duckdb.connect(":memory:"), os.getpid()
    return _engine


def _open_duckdb(db: Path, read_only: bool, deadline: float) -> tuple[duckdb.DuckDBPyConnection, int]:
    """Open the file, retrying lock conflicts with jittered exponential backoff.

    USE_ATTACH: ATTACH it to this process's long-lived in-memory instance and hand out a
    cursor with the file as default catalog; DETACH (in _close_duckdb) releases the lock.
    That skips DuckDB's ~9 ms instance start-up on every access, so locks are held for
    ~1 ms (reads) to ~5 ms (writes) instead of ~12-15 ms. Otherwise: duckdb.connect."""
    delay, tries, stale = 0.002, 0, 0
    while True:
        try:
            if not USE_ATTACH:
                return duckdb.connect(str(db), read_only=read_only), tries
            eng = _engine_con()
            target = str(db).replace("'", "''")
            eng.execute(f"ATTACH '{target}' AS {_ALIAS}" + (" (READ_ONLY)" if read_only else ""))
            cur = eng.cursor()
            cur.execute(f"USE {_ALIAS}")
            return cur, tries
        except duckdb.Error as exc:
            if USE_ATTACH and "already" in str(exc) and _ALIAS in str(exc) and stale < 3:
                stale += 1  # left attached by a failed DETACH: clear it and go again
                _engine_con().execute(f"DETACH DATABASE IF EXISTS {_ALIAS}")
                continue
            if not _is_lock_error(exc):
                raise
            tries += 1
            _count(retries=1)
            if time.monotonic() >= deadline:
                _count(busy=1)
                raise StoreBusy() from None
            time.sleep(min(delay * random.uniform(0.5, 1.5), max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 0.1)


def _close_duckdb(con: duckdb.DuckDBPyConnection) -> None:
    try:
        con.close()  # rolls back a transaction left open
    finally:
        if USE_ATTACH:
            _engine_con().execute(f"DETACH DATABASE IF EXISTS {_ALIAS}")  # checkpoints a write


@contextlib.contextmanager
def _raw_connect(db: Path, read_only: bool) -> Iterator[duckdb.DuckDBPyConnection]:
    if getattr(_local, "open", False):
        raise RuntimeError("store: nested connection in one thread (would wait on itself); "
                           "use the connection you already hold")
    start = time.monotonic()
    deadline = start + BUSY_TIMEOUT
    proc_lock = _proc_lock
    waited = not proc_lock.acquire(blocking=False)
    if waited and not proc_lock.acquire(timeout=BUSY_TIMEOUT):
        _count(busy=1)
        raise StoreBusy()
    _local.open = True
    try:
        with _sidecar(db, not read_only, deadline) as file_waited:
            con, tries = _open_duckdb(db, read_only, deadline)
            _count(opens=1, **{"read_opens" if read_only else "write_opens": 1},
                   contended=int(bool(file_waited or tries)), thread_waits=int(waited),
                   wait_s=time.monotonic() - start)
            try:
                yield con
            finally:
                _close_duckdb(con)
    finally:
        _local.open = False
        proc_lock.release()


def _ensure_schema(db: Path) -> None:
    """Once per process and file: check the schema through a read-only connection (so a
    page starting up does not take the write lock), create or migrate it only if needed."""
    key = str(db)
    if key in _ready and db.exists():
        return
    with _ready_lock:
        if key in _ready and db.exists():
            return
        if not (db.exists() and _schema_complete(db)):
            _create_schema(db)
        _ready.add(key)


def _schema_complete(db: Path) -> bool:
    with _raw_connect(db, read_only=True) as con:
        have = set(con.execute("SELECT table_name, column_name FROM information_schema.columns "
                               "WHERE table_schema = 'main' AND table_catalog = current_database()").fetchall())
    return all((t, c) in have for t, cols in SCHEMA.items() for c, _ in cols)


def _create_schema(db: Path) -> None:
    with _raw_connect(db, read_only=False) as con:
        con.begin()
        have = set(con.execute("SELECT table_name, column_name FROM information_schema.columns "
                               "WHERE table_schema = 'main' AND table_catalog = current_database()").fetchall())
        for table, columns in SCHEMA.items():
            cols = ", ".join(f"{name} {typ}" for name, typ in columns)
            con.execute(f"CREATE TABLE IF NOT EXISTS {table} ({cols})")
            for name, typ in columns[1:]:
                if (table, name) not in have:
                    con.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {name} "
                                f"{typ.replace(' PRIMARY KEY', '')}")
        con.commit()


def init() -> None:
    """Create (or migrate) the schema now; idempotent, normally done lazily on first use."""
    db = paths.db_path()
    with _ready_lock:
        _create_schema(db)
        _ready.add(str(db))


@contextlib.contextmanager
def connect(read_only: bool = True) -> Iterator[duckdb.DuckDBPyConnection]:
    """A short-lived connection (schema ensured, lock conflicts retried). Close it fast:
    while open, a read-write connection blocks every other process."""
    db = paths.db_path()
    _ensure_schema(db)
    with _raw_connect(db, read_only) as con:
        yield con


@contextlib.contextmanager
def _write() -> Iterator[duckdb.DuckDBPyConnection]:
    """One write transaction."""
    try:
        with connect(read_only=False) as con:
            con.begin()
            try:
                yield con
            except BaseException:
                con.rollback()
                raise
            con.commit()
    except duckdb.Error as exc:
        from .disk import DiskFull, full_message, is_disk_full

        if is_disk_full(exc):  # DuckDB rolled back: the file is intact, this write is not in it
            raise DiskFull(full_message(paths.home(), "saving to the run database")) from exc
        raise


# --------------------------------------------------------------------------- helpers

def _dumps(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    return json.dumps(value, default=str)


def _loads(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def _rows(cur, table: str | None = None) -> list[dict]:
    cols = [d[0] for d in cur.description]
    out = [dict(zip(cols, row)) for row in cur.fetchall()]
    for col in _JSON_COLUMNS.get(table, ()):
        for row in out:
            if col in row:
                row[col] = _loads(row[col])
    return out


def _insert_columns(con, table: str, columns: list[str], rows: list[tuple]) -> None:
    """Bulk insert: one list parameter per column, unnested (5x faster than executemany)."""
    if not rows:
        return
    types = dict(SCHEMA[table])
    cols = list(zip(*rows))
    select = ", ".join(f"unnest(?::{types[c].split()[0]}[])" for c in columns)
    con.execute(f"INSERT INTO {table} ({', '.join(columns)}) SELECT {select}", [list(c) for c in cols])


def _str(value: Any) -> str | None:
    """Paths and other objects as text; None stays NULL."""
    return None if value is None else str(value)


def _new_id(prefix: str) -> str:
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(4)}"


# --------------------------------------------------------------------------- runs

def new_run_id() -> str:
    """Readable and sortable by creation second: 20261124-081530-a1b2."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def create_run(*, method: str, config: dict, model: str, data: str, name: str | None = None,
               parent_id: str | None = None, run_id: str | None = None,
               sweep_id: str | None = None, enqueue: bool = False) -> str:
    """Insert a `queued` run (with `enqueue`, last in the run queue: droidft.queue starts it);
    returns its id (a fresh one unless `run_id` is given)."""
    for attempt in range(20):
        rid = run_id or new_run_id()
        try:
            with _write() as con:
                con.execute("INSERT INTO runs (id, name, method, status, config, model, data, "
                            "parent_id, created_at, sweep_id, queue_order) VALUES (?, ?, ?, 'queued', "
                            "?, ?, ?, ?, ?, ?, CASE WHEN ? THEN (SELECT coalesce(max(queue_order), 0) + 1 "
                            "FROM runs WHERE status = 'queued') END)",
                            [rid, name, method, _dumps(config), _str(model), _str(data), parent_id,
                             time.time(), sweep_id, enqueue])
            return rid
        except duckdb.ConstraintException:
            if run_id is not None:
                raise ValueError(f"A run with id '{run_id}' already exists.") from None
    raise RuntimeError("could not find a free run id")  # pragma: no cover


def _run_assignments(fields: dict) -> tuple[str, list]:
    bad = [k for k in fields if k not in RUN_COLUMNS or k == "id"]
    if bad:
        raise ValueError(f"update_run: unknown run field(s) {bad}; columns are {RUN_COLUMNS}")
    if "status" in fields and fields["status"] not in RUN_STATUSES:
        raise ValueError(f"status must be one of {RUN_STATUSES}, not {fields['status']!r}")
    values = []
    for key, value in fields.items():
        if key in ("config", "extra"):
            value = _dumps(value)
        elif isinstance(value, Path):
            value = str(value)
        values.append(value)
    return ", ".join(f"{k} = ?" for k in fields), values


def update_run(run_id: str, **fields) -> None:
    """Set run columns (unknown names raise ValueError, so typos do not vanish)."""
    if not fields:
        return
    sets, values = _run_assignments(fields)
    with _write() as con:
        con.execute(f"UPDATE runs SET {sets} WHERE id = ?", values + [run_id])


def update_run_if(run_id: str, statuses: str | Iterable[str], **fields) -> bool:
    """Compare-and-set: update only while the run's status is one of `statuses`, so two
    processes (a reaper and the worker itself) cannot both end a run. True if updated."""
    statuses = [statuses] if isinstance(statuses, str) else list(statuses)
    sets, values = _run_assignments(fields)
    with _write() as con:
        hit = con.execute(f"UPDATE runs SET {sets} WHERE id = ? AND list_contains(?, status) "
                          "RETURNING id", values + [run_id, statuses]).fetchall()
    return bool(hit)


def heartbeat(run_id: str, at: float | None = None) -> None:
    update_run(run_id, heartbeat_at=time.time() if at is None else at)


def _get_run(con, run_id: str) -> dict | None:
    rows = _rows(con.execute("SELECT * FROM runs WHERE id = ?", [run_id]), "runs")
    return rows[0] if rows else None


def get_run(run_id: str) -> dict | None:
    with connect() as con:
        return _get_run(con, run_id)


def list_runs(status: str | tuple | None = None, method: str | None = None,
              limit: int | None = None) -> list[dict]:
    """Runs, newest first, optionally filtered by status (one or several) and method."""
    where, params = [], []
    if status is not None:
        where.append("list_contains(?, status)")
        params.append([status] if isinstance(status, str) else list(status))
    if method is not None:
        where.append("method = ?")
        params.append(method)
    sql = "SELECT * FROM runs" + (" WHERE " + " AND ".join(where) if where else "")
    sql += " ORDER BY created_at DESC, id DESC"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(int(limit))
    with connect() as con:
        return _rows(con.execute(sql, params), "runs")


def delete_run(run_id: str) -> None:
    """Forget a run everywhere in the database (its files are the caller's business)."""
    with _write() as con:
        for table in ("metrics", "events", "samples", "artifacts", "evaluations", "judgments"):  # not sweeps
            con.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])
        con.execute("DELETE FROM runs WHERE id = ?", [run_id])


# --------------------------------------------------------------------------- downloads

def create_download(*, repo_id: str, revision: str | None, **fields) -> str:
    """Insert a `queued` download job; returns its id."""
    did = _new_id("dl")
    fields = {"id": did, "repo_id": repo_id, "revision": revision, "status": "queued",
              "created_at": time.time(), **fields}
    _check_download_fields(fields)
    with _write() as con:
        con.execute(f"INSERT INTO downloads ({', '.join(fields)}) VALUES ({', '.join('?' * len(fields))})",
                    list(fields.values()))
    return did


def _check_download_fields(fields: dict) -> None:
    bad = [k for k in fields if k not in DOWNLOAD_COLUMNS]
    if bad:
        raise ValueError(f"unknown download field(s) {bad}; columns are {DOWNLOAD_COLUMNS}")
    if "status" in fields and fields["status"] not in DOWNLOAD_STATUSES:
        raise ValueError(f"status must be one of {DOWNLOAD_STATUSES}, not {fields['status']!r}")


def update_download(download_id: str, statuses: str | Iterable[str] | None = None, **fields) -> bool:
    """Set download columns; with `statuses`, only while the job's status is one of them
    (compare-and-set, so a reaper and the job cannot both end it). True if a row changed."""
    if not fields:
        return False
    _check_download_fields(fields)
    sql = f"UPDATE downloads SET {', '.join(f'{k} = ?' for k in fields)} WHERE id = ?"
    params = [str(v) if isinstance(v, Path) else v for v in fields.values()] + [download_id]
    if statuses is not None:
        sql += " AND list_contains(?, status)"
        params.append([statuses] if isinstance(statuses, str) else list(statuses))
    with _write() as con:
        return bool(con.execute(sql + " RETURNING id", params).fetchall())


def get_download(download_id: str) -> dict | None:
    with connect() as con:
        rows = _rows(con.execute("SELECT * FROM downloads WHERE id = ?", [download_id]))
    return rows[0] if rows else None


def list_downloads(status: str | tuple | None = None, repo_id: str | None = None,
                   limit: int | None = None) -> list[dict]:
    """Download jobs, newest first, optionally filtered by status (one or several) and repo."""
    where, params = [], []
    if status is not None:
        where.append("list_contains(?, status)")
        params.append([status] if isinstance(status, str) else list(status))
    if repo_id is not None:
        where.append("repo_id = ?")
        params.append(repo_id)
    sql = "SELECT * FROM downloads" + (" WHERE " + " AND ".join(where) if where else "")
    sql += " ORDER BY created_at DESC, id DESC"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(int(limit))
    with connect() as con:
        return _rows(con.execute(sql, params))


def delete_download(download_id: str) -> None:
    with _write() as con:
        con.execute("DELETE FROM downloads WHERE id = ?", [download_id])


# --------------------------------------------------------------------------- metrics

_METRIC_COLS = ["run_id", "step", "name", "value", "time"]
_EVENT_COLS = ["run_id", "time", "level", "message"]
_SAMPLE_COLS = ["run_id", "step", "time", "prompt", "completion", "reward", "meta"]


def add_metrics(rows: list[tuple]) -> None:
    """Insert (run_id, step, name, value, time) rows in one transaction."""
    with _write() as con:
        _insert_columns(con, "metrics", _METRIC_COLS, [_metric_row(*r) for r in rows])


def _metric_row(run_id, step, name, value, t=None) -> tuple:
    return (str(run_id), int(step), str(name), float(value), float(time.time() if t is None else t))


def _metrics(con, run_id: str, names: list[str] | None = None, since_time: float | None = None):
    sql, params = "SELECT run_id, step, name, value, time FROM metrics WHERE run_id = ?", [run_id]
    if names:
        sql += " AND list_contains(?, name)"
        params.append(list(names))
    if since_time is not None:
        sql += " AND time > ?"
        params.append(float(since_time))
    return _rows(con.execute(sql + " ORDER BY step, time", params))


def metrics(run_id: str, names: list[str] | None = None, since_time: float | None = None) -> list[dict]:
    """A run's metric rows by step then time; `since_time` (exclusive) for incremental polls."""
    with connect() as con:
        return _metrics(con, run_id, names, since_time)


def metrics_frame(run_ids: list[str], names: list[str] | None = None):
    """Metric rows of several runs as a pandas DataFrame (run_id, step, name, value, time)."""
    sql, params = "SELECT run_id, step, name, value, time FROM metrics WHERE list_contains(?, run_id)", [list(run_ids)]
    if names:
        sql += " AND list_contains(?, name)"
        params.append(list(names))
    with connect() as con:
        return con.execute(sql + " ORDER BY run_id, step, time", params).df()


def latest_metrics(run_id: str) -> dict[str, float]:
    """name -> value at the highest step (latest time breaks ties)."""
    with connect() as con:
        rows = con.execute("SELECT name, value FROM metrics WHERE run_id = ? QUALIFY row_number() "
                           "OVER (PARTITION BY name ORDER BY step DESC, time DESC) = 1",
                           [run_id]).fetchall()
    return dict(rows)


# --------------------------------------------------------------------------- events, samples

def add_events(rows: list[tuple]) -> None:
    """Insert (run_id, time, level, message) rows in one transaction."""
    with _write() as con:
        _insert_columns(con, "events", _EVENT_COLS, [_event_row(*r) for r in rows])


def _event_row(run_id, t, level, message) -> tuple:
    return (str(run_id), float(t), str(level), str(message))


def _events(con, run_id: str, limit: int) -> list[dict]:
    return _rows(con.execute(
        "SELECT * FROM (SELECT run_id, time, level, message FROM events WHERE run_id = ? "
        "ORDER BY time DESC LIMIT ?) ORDER BY time", [run_id, int(limit)]))


def events(run_id: str, limit: int = 200) -> list[dict]:
    """The last `limit` events of a run, oldest first."""
    with connect() as con:
        return _events(con, run_id, limit)


def add_samples(rows: list[tuple]) -> None:
    """Insert (run_id, step, time, prompt, completion, reward, meta) rows; meta dict or JSON."""
    with _write() as con:
        _insert_columns(con, "samples", _SAMPLE_COLS, [_sample_row(*r) for r in rows])


def _sample_row(run_id, step, t, prompt, completion, reward=None, meta=None) -> tuple:
    return (str(run_id), int(step), float(t), str(prompt), str(completion),
            None if reward is None else float(reward), _dumps(meta))


def _samples(con, run_id: str, limit: int) -> list[dict]:
    return _rows(con.execute(
        "SELECT * FROM (SELECT * FROM samples WHERE run_id = ? ORDER BY step DESC, time DESC "
        "LIMIT ?) ORDER BY step, time", [run_id, int(limit)]), "samples")


def samples(run_id: str, limit: int = 50) -> list[dict]:
    """The last `limit` generated samples of a run, oldest first, meta decoded."""
    with connect() as con:
        return _samples(con, run_id, limit)


# --------------------------------------------------------------------------- artifacts, evaluations

def add_artifact(*, kind: str, path: str, run_id: str | None = None, step: int | None = None,
                 meta: dict | None = None) -> str:
    """Record a file or folder a run produced; returns the artifact id."""
    aid = _new_id("art")
    with _write() as con:
        con.execute("INSERT INTO artifacts (id, run_id, kind, path, step, created_at, meta) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [aid, run_id, kind, str(path), None if step is None else int(step),
                     time.time(), _dumps(meta)])
    return aid


def _artifacts(con, run_id: str | None = None, kind: str | None = None) -> list[dict]:
    where, params = [], []
    if run_id is not None:
        where.append("run_id = ?")
        params.append(run_id)
    if kind is not None:
        where.append("kind = ?")
        params.append(kind)
    sql = "SELECT * FROM artifacts" + (" WHERE " + " AND ".join(where) if where else "")
    return _rows(con.execute(sql + " ORDER BY created_at, step", params), "artifacts")


def artifacts(run_id: str | None = None, kind: str | None = None) -> list[dict]:
    """Artifacts, oldest first, meta decoded."""
    with connect() as con:
        return _artifacts(con, run_id, kind)


def add_evaluation(*, suite: str, target: str, dataset: str, results: dict,
                   artifact_id: str | None = None, run_id: str | None = None) -> str:
    """Record one evaluation of `target` (a model/adapter path or id); returns its id."""
    eid = _new_id("eval")
    with _write() as con:
        con.execute("INSERT INTO evaluations (id, suite, target, dataset, artifact_id, run_id, "
                    "created_at, results) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [eid, suite, _str(target), _str(dataset), artifact_id, run_id, time.time(),
                     _dumps(results)])
    return eid


def evaluations(target: str | None = None, run_id: str | None = None) -> list[dict]:
    """Evaluations, newest first, results decoded."""
    where, params = [], []
    if target is not None:
        where.append("target = ?")
        params.append(str(target))
    if run_id is not None:
        where.append("run_id = ?")
        params.append(run_id)
    sql = "SELECT * FROM evaluations" + (" WHERE " + " AND ".join(where) if where else "")
    with connect() as con:
        return _rows(con.execute(sql + " ORDER BY created_at DESC", params), "evaluations")


def create_sweep(*, method: str, spec: dict, name: str | None = None) -> str:
    """Record a sweep (its base config, grid and ranges live in `spec`); returns its id."""
    sid = _new_id("sweep")
    with _write() as con:
        con.execute("INSERT INTO sweeps (id, name, method, created_at, spec) VALUES (?, ?, ?, ?, ?)",
                    [sid, name, method, time.time(), _dumps(spec)])
    return sid


def sweeps(sweep_id: str | None = None) -> list[dict]:
    """Sweeps, newest first, spec decoded (one, or none, when `sweep_id` is given)."""
    sql, params = "SELECT * FROM sweeps", []
    if sweep_id is not None:
        sql, params = sql + " WHERE id = ?", [sweep_id]
    with connect() as con:
        return _rows(con.execute(sql + " ORDER BY created_at DESC", params), "sweeps")


# --------------------------------------------------------------------------- human judgments

def add_judgments(run_id: str, step: int, pairs: list[tuple[str, str, str]], deadline: float) -> list[str]:
    """Pairs (prompt, completion a, completion b) a person is asked to judge; returns ids."""
    now, ids = time.time(), [_new_id("pair") for _ in pairs]
    with _write() as con:
        _insert_columns(con, "judgments", ["id", "run_id", "step", "created_at", "deadline", "prompt",
                                           "completion_a", "completion_b", "status"],
                        [(i, run_id, int(step), now, float(deadline), p, a, b, "pending")
                         for i, (p, a, b) in zip(ids, pairs)])
    return ids


def judgments(run_id: str | None = None, ids: list[str] | None = None, status: str | None = None,
              limit: int = 100) -> list[dict]:
    """Judgment rows (oldest first) of a run, or with these ids, optionally of one status."""
    where, params = [], []
    for cond, value in (("run_id = ?", run_id), ("list_contains(?, id)", ids), ("status = ?", status)):
        if value is not None:
            where.append(cond)
            params.append(value)
    sql = "SELECT * FROM judgments" + (" WHERE " + " AND ".join(where) if where else "")
    with connect() as con:
        return _rows(con.execute(sql + " ORDER BY created_at, id LIMIT ?", params + [int(limit)]))


def decide_judgment(judgment_id: str, choice: int | None, by: str) -> bool:
    """Record a person's choice (0 = a, 1 = b, None = cannot tell) while the pair is still
    pending and before its deadline; False when it was already decided or has expired."""
    with _write() as con:
        hit = con.execute(
            "UPDATE judgments SET status = ?, choice = ?, decided_by = ?, decided_at = ? "
            "WHERE id = ? AND status = 'pending' AND deadline > ? RETURNING id",
            ["decided" if choice is not None else "skipped", choice, by, time.time(), judgment_id,
             time.time()]).fetchall()
    return bool(hit)


def close_judgments(ids: list[str], status: str = "expired") -> int:
    """Close the still-pending ones of `ids` (the worker stopped waiting); returns how many."""
    with _write() as con:
        return len(con.execute("UPDATE judgments SET status = ?, decided_at = ? WHERE "
                               "list_contains(?, id) AND status = 'pending' RETURNING id",
                               [status, time.time(), list(ids)]).fetchall())


# --------------------------------------------------------------------------- export jobs

def create_export(*, source: str, target: str, options: dict) -> str:
    """Insert a `queued` export job; returns its id."""
    eid = _new_id("exp")
    with _write() as con:
        con.execute("INSERT INTO exports (id, source, target, status, phase, done, total, options, "
                    "created_at) VALUES (?, ?, ?, 'queued', 'starting', 0, 1, ?, ?)",
                    [eid, str(source), target, _dumps(options), time.time()])
    return eid


def update_export(export_id: str, statuses: str | Iterable[str] | None = None, **fields) -> bool:
    """Set export columns; with `statuses`, only while the job is in one of them. True if changed."""
    bad = [k for k in fields if k not in EXPORT_COLUMNS]
    if bad or not fields:
        raise ValueError(f"unknown export field(s) {bad}; columns are {EXPORT_COLUMNS}")
    sql = f"UPDATE exports SET {', '.join(f'{k} = ?' for k in fields)} WHERE id = ?"
    params = [_dumps(v) if k == "options" else (str(v) if isinstance(v, Path) else v)
              for k, v in fields.items()] + [export_id]
    if statuses is not None:
        sql += " AND list_contains(?, status)"
        params.append([statuses] if isinstance(statuses, str) else list(statuses))
    with _write() as con:
        return bool(con.execute(sql + " RETURNING id", params).fetchall())


def get_export(export_id: str) -> dict | None:
    with connect() as con:
        rows = _rows(con.execute("SELECT * FROM exports WHERE id = ?", [export_id]), "exports")
    return rows[0] if rows else None


def list_exports(source: str | None = None, limit: int = 50) -> list[dict]:
    """Export jobs, newest first (of one source when given)."""
    sql, params = "SELECT * FROM exports", []
    if source is not None:
        sql += " WHERE source = ?"
        params.append(str(source))
    with connect() as con:
        return _rows(con.execute(sql + " ORDER BY created_at DESC LIMIT ?", [*params, int(limit)]), "exports")


# --------------------------------------------------------------------------- page queries

_SUMMARY_SQL = """
SELECT r.id, r.name, r.method, r.status, r.model, r.data, r.created_at, r.started_at, r.ended_at,
       coalesce(r.ended_at, CASE WHEN r.status = 'running' THEN ? ELSE r.heartbeat_at END)
           - r.started_at AS duration_s,
       m.best_val_loss, m.last_train_loss, m.trained_tokens, m.steps,
       r.adapter_path, r.parent_id, r.sweep_id, r.queue_order
FROM runs r LEFT JOIN (
    SELECT run_id,
           min(value) FILTER (WHERE name = 'val_loss') AS best_val_loss,
           arg_max(value, step) FILTER (WHERE name = 'train_loss') AS last_train_loss,
           max(value) FILTER (WHERE name = 'trained_tokens') AS trained_tokens,
           max(step) AS steps
    FROM metrics GROUP BY run_id
) m ON m.run_id = r.id
ORDER BY r.created_at DESC, r.id DESC
"""


def run_summaries(limit: int | None = None):
    """One row per run for the Sessions page (a pandas DataFrame), newest first.

    A single aggregate over all metrics: ~25 ms at 1,000 runs / 1,000,000 rows, so no rollup
    table to keep consistent. duration_s runs to now for a running run."""
    sql, params = _SUMMARY_SQL, [time.time()]
    if limit is not None:
        sql += " LIMIT ?"
        params.append(int(limit))
    with connect() as con:
        return con.execute(sql, params).df()


def snapshot(run_id: str, since_time: float | None = None) -> dict:
    """Everything the Monitor page draws, read through one read-only connection."""
    with connect() as con:
        return {
            "run": _get_run(con, run_id),
            "metrics": _metrics(con, run_id, since_time=since_time),
            "events": _events(con, run_id, 50),
            "artifacts": _artifacts(con, run_id),
            "samples": _samples(con, run_id, 20),
        }


# --------------------------------------------------------------------------- the worker's writer

class BatchWriter:
    """Buffers a worker's metric, event and sample rows and writes them in one short
    transaction (with a heartbeat) at most once per `interval`, so the write lock is held
    ~15-20 ms a second per run and readers rarely wait. Rows survive a busy database: they
    stay buffered until a later flush gets through."""

    def __init__(self, run_id: str, interval: float = 1.0):
        self.run_id = run_id
        self.interval = float(interval)
        self._buf_lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._metrics: list[tuple] = []
        self._events: list[tuple] = []
        self._samples: list[tuple] = []
        self._last_flush = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.flushes = 0          # successful write transactions
        self.busy_flushes = 0     # flushes that met StoreBusy and kept their rows
        self.last_error: BaseException | None = None

    def metric(self, step: int, name: str, value: float, time: float | None = None) -> None:
        row = _metric_row(self.run_id, step, name, value, time)
        with self._buf_lock:
            self._metrics.append(row)

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
        while not self._stop.wait(self.interval):
            try:
                self.flush()
            except Exception as exc:  # keep beating; the rows are still buffered
                self.last_error = exc
                print(f"droidft.store: flush failed for run {self.run_id}: {exc!r}", file=sys.stderr)

    def start_background(self) -> None:
        """Flush (and beat the heartbeat) every `interval` from a daemon thread, even while a
        training step takes minutes."""
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
