"""The run database: every query droidft makes, behind one import
(`from droidft import store; store.get_run(run_id)`).

This module holds the runs and what they produce (metrics, events, samples, artifacts,
evaluations, sweeps, human judgments) and the pages' queries, and re-exports the rest:

- store_db.py: the schema and how every access opens, locks and closes the DuckDB file
  (why each access is short, measured figures, the BUSY_TIMEOUT / USE_ATTACH tunables);
- store_rows.py: how rows go in and out (JSON columns, bulk inserts, filtered selects,
  compare-and-set updates);
- store_jobs.py: Hub download and export jobs;
- store_writer.py: BatchWriter, the training worker's buffered writer.
"""

from __future__ import annotations

import secrets
import time
from typing import Iterable

import duckdb

from .store_db import SCHEMA, StoreBusy, _write, connect, init, reset_stats, stats
from .store_jobs import (
    DOWNLOAD_STATUSES, create_download, create_export, delete_download, get_download, get_export,
    list_downloads, list_exports, update_download, update_export)
from .store_rows import (
    _EVENT_COLS, _METRIC_COLS, _SAMPLE_COLS, _dumps, _event_row, _insert_columns, _metric_row,
    _new_id, _one_or_more, _rows, _sample_row, _select, _str, _update_if)
from .store_writer import BatchWriter

__all__ = [
    # the database (store_db)
    "SCHEMA", "StoreBusy", "connect", "init", "reset_stats", "stats",
    # runs and what they produce (here)
    "RUN_STATUSES", "new_run_id", "create_run", "update_run", "update_run_if", "heartbeat",
    "get_run", "list_runs", "delete_run", "add_metrics", "metrics", "metrics_frame",
    "latest_metrics", "add_events", "events", "add_samples", "samples", "add_artifact",
    "artifacts", "add_evaluation", "evaluations", "create_sweep", "sweeps", "add_judgments",
    "judgments", "decide_judgment", "close_judgments", "run_summaries", "snapshot",
    # jobs (store_jobs) and the worker's writer (store_writer)
    "DOWNLOAD_STATUSES", "create_download", "update_download", "get_download", "list_downloads",
    "delete_download", "create_export", "update_export", "get_export", "list_exports",
    "BatchWriter",
]

RUN_STATUSES = ("queued", "running", "completed", "failed", "stopped")
RUN_COLUMNS = tuple(c for c, _ in SCHEMA["runs"])


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


def _check_run_fields(fields: dict) -> None:
    bad = [k for k in fields if k not in RUN_COLUMNS or k == "id"]
    if bad:
        raise ValueError(f"update_run: unknown run field(s) {bad}; columns are {RUN_COLUMNS}")
    if "status" in fields and fields["status"] not in RUN_STATUSES:
        raise ValueError(f"status must be one of {RUN_STATUSES}, not {fields['status']!r}")


def update_run(run_id: str, **fields) -> None:
    """Set run columns (unknown names raise ValueError, so typos do not vanish)."""
    if not fields:
        return
    _check_run_fields(fields)
    _update_if("runs", run_id, fields)


def update_run_if(run_id: str, statuses: str | Iterable[str], **fields) -> bool:
    """Compare-and-set: update only while the run's status is one of `statuses`, so two
    processes (a reaper and the worker itself) cannot both end a run. True if updated."""
    _check_run_fields(fields)
    return _update_if("runs", run_id, fields, statuses)


def heartbeat(run_id: str, at: float | None = None) -> None:
    update_run(run_id, heartbeat_at=time.time() if at is None else at)


def _get_run(con, run_id: str) -> dict | None:
    rows = _select(con, "runs", [("id = ?", run_id)])
    return rows[0] if rows else None


def get_run(run_id: str) -> dict | None:
    with connect() as con:
        return _get_run(con, run_id)


def list_runs(status: str | tuple | None = None, method: str | None = None,
              limit: int | None = None) -> list[dict]:
    """Runs, newest first, optionally filtered by status (one or several) and method."""
    with connect() as con:
        return _select(con, "runs", [("list_contains(?, status)", _one_or_more(status)),
                                     ("method = ?", method)], "created_at DESC, id DESC", limit)


def delete_run(run_id: str) -> None:
    """Forget a run everywhere in the database (its files are the caller's business)."""
    with _write() as con:
        for table in ("metrics", "events", "samples", "artifacts", "evaluations", "judgments"):  # not sweeps
            con.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])
        con.execute("DELETE FROM runs WHERE id = ?", [run_id])


# --------------------------------------------------------------------------- metrics

def add_metrics(rows: list[tuple]) -> None:
    """Insert (run_id, step, name, value, time) rows in one transaction."""
    with _write() as con:
        _insert_columns(con, "metrics", _METRIC_COLS, [_metric_row(*r) for r in rows])


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
    return _select(con, "artifacts", [("run_id = ?", run_id), ("kind = ?", kind)], "created_at, step")


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
    with connect() as con:
        return _select(con, "evaluations", [("target = ?", _str(target)), ("run_id = ?", run_id)],
                       "created_at DESC")


def create_sweep(*, method: str, spec: dict, name: str | None = None) -> str:
    """Record a sweep (its base config, grid and ranges live in `spec`); returns its id."""
    sid = _new_id("sweep")
    with _write() as con:
        con.execute("INSERT INTO sweeps (id, name, method, created_at, spec) VALUES (?, ?, ?, ?, ?)",
                    [sid, name, method, time.time(), _dumps(spec)])
    return sid


def sweeps(sweep_id: str | None = None) -> list[dict]:
    """Sweeps, newest first, spec decoded (one, or none, when `sweep_id` is given)."""
    with connect() as con:
        return _select(con, "sweeps", [("id = ?", sweep_id)], "created_at DESC")


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
    with connect() as con:
        return _select(con, "judgments", [("run_id = ?", run_id), ("list_contains(?, id)", ids),
                                          ("status = ?", status)], "created_at, id", limit)


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
