"""Rows of the background jobs that are not training runs: Hub downloads
(droidft.models.download) and exports (droidft.export.jobs). Each is a job like a run: created
`queued`, moved on by compare-and-set updates, listed newest first. Callers use
`droidft.store`, which re-exports these.
"""

from __future__ import annotations

import time
from typing import Iterable

from .store_db import SCHEMA, _write, connect
from .store_rows import _dumps, _new_id, _one_or_more, _select, _update_if

DOWNLOAD_STATUSES = ("queued", "running", "completed", "failed", "cancelled")
DOWNLOAD_COLUMNS = tuple(c for c, _ in SCHEMA["downloads"])
EXPORT_COLUMNS = tuple(c for c, _ in SCHEMA["exports"])

_NEWEST_FIRST = "created_at DESC, id DESC"


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
    return _update_if("downloads", download_id, fields, statuses)


def get_download(download_id: str) -> dict | None:
    with connect() as con:
        rows = _select(con, "downloads", [("id = ?", download_id)])
    return rows[0] if rows else None


def list_downloads(status: str | tuple | None = None, repo_id: str | None = None,
                   limit: int | None = None) -> list[dict]:
    """Download jobs, newest first, optionally filtered by status (one or several) and repo."""
    with connect() as con:
        return _select(con, "downloads", [("list_contains(?, status)", _one_or_more(status)),
                                          ("repo_id = ?", repo_id)], _NEWEST_FIRST, limit)


def delete_download(download_id: str) -> None:
    with _write() as con:
        con.execute("DELETE FROM downloads WHERE id = ?", [download_id])


# --------------------------------------------------------------------------- exports

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
    return _update_if("exports", export_id, fields, statuses)


def get_export(export_id: str) -> dict | None:
    with connect() as con:
        rows = _select(con, "exports", [("id = ?", export_id)])
    return rows[0] if rows else None


def list_exports(source: str | None = None, limit: int = 50) -> list[dict]:
    """Export jobs, newest first (of one source when given)."""
    with connect() as con:
        return _select(con, "exports", [("source = ?", None if source is None else str(source))],
                       "created_at DESC", limit)
