"""How rows go in and out of the run database: JSON columns, bulk inserts, the filtered
SELECT every list query is, and the guarded UPDATE every job table uses.

Private to the store modules (store.py, store_jobs.py, store_writer.py); callers use
`droidft.store`.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import time
from pathlib import Path
from typing import Any, Iterable

from .store_db import _JSON_COLUMNS, SCHEMA, _write


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


# The row shapes of the append-only tables (BatchWriter and the add_* functions build them).
_METRIC_COLS = ["run_id", "step", "name", "value", "time"]
_EVENT_COLS = ["run_id", "time", "level", "message"]
_SAMPLE_COLS = ["run_id", "step", "time", "prompt", "completion", "reward", "meta"]


def _metric_row(run_id, step, name, value, t=None) -> tuple:
    return (str(run_id), int(step), str(name), float(value), float(time.time() if t is None else t))


def _event_row(run_id, t, level, message) -> tuple:
    return (str(run_id), float(t), str(level), str(message))


def _sample_row(run_id, step, t, prompt, completion, reward=None, meta=None) -> tuple:
    return (str(run_id), int(step), float(t), str(prompt), str(completion),
            None if reward is None else float(reward), _dumps(meta))


def _one_or_more(value: str | Iterable[str] | None) -> list[str] | None:
    """A status filter (one or several) as a list parameter; None stays None (no filter)."""
    if value is None:
        return None
    return [value] if isinstance(value, str) else list(value)


def _select(con, table: str, where: Iterable[tuple[str, Any]] = (), order: str = "",
            limit: int | None = None) -> list[dict]:
    """`SELECT * FROM table` with each (condition, value) pair whose value is not None (one
    `?` per condition), in `order`, at most `limit` rows; JSON columns decoded."""
    conds = [(cond, value) for cond, value in where if value is not None]
    sql = f"SELECT * FROM {table}" + (" WHERE " + " AND ".join(c for c, _ in conds) if conds else "")
    params = [value for _, value in conds]
    if order:
        sql += f" ORDER BY {order}"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(int(limit))
    return _rows(con.execute(sql, params), table)


def _update_if(table: str, row_id: str, fields: dict, statuses: str | Iterable[str] | None = None) -> bool:
    """Set columns of one row (JSON columns encoded, paths as text); with `statuses`, only
    while its status is one of them (compare-and-set, so a reaper and the job itself cannot
    both end it). The caller has checked the names. True if the row changed."""
    json_cols = _JSON_COLUMNS.get(table, ())
    sql = f"UPDATE {table} SET {', '.join(f'{k} = ?' for k in fields)} WHERE id = ?"
    params = [_dumps(v) if k in json_cols else (str(v) if isinstance(v, Path) else v)
              for k, v in fields.items()] + [row_id]
    if statuses is not None:
        sql += " AND list_contains(?, status)"
        params.append(_one_or_more(statuses))
    with _write() as con:
        return bool(con.execute(sql + " RETURNING id", params).fetchall())
