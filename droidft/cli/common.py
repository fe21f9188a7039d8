"""Small helpers every command group shares: JSON output, times, comma-separated lists, and
following a started run."""

from __future__ import annotations

import json
import sys
import time

from .. import jobs


def print_json(value) -> None:
    print(json.dumps(value, indent=2, default=str))


def fmt_time(ts) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def split_list(text: str | None) -> list[str]:
    return [p.strip() for p in (text or "").split(",") if p.strip()]


def floats(text: str | None, what: str) -> list[float] | None:
    if text is None:
        return None
    out = []
    for part in split_list(text):
        try:
            out.append(float(part))
        except ValueError:
            raise ValueError(f"{what}: {part!r} is not a number (give e.g. 0.7,0.3)") from None
    if not out:
        raise ValueError(f"{what}: no numbers given")
    return out


def follow(run_id: str, wait: bool) -> int:
    if wait:
        print(f"run {run_id} started; waiting for it to end", file=sys.stderr)
        run = jobs.wait(run_id)
        print(f"run {run_id} {run['status']}" + (f": {run['error'].splitlines()[0]}" if run.get("error") else ""),
              file=sys.stderr)
        print(run_id)
        return 0 if run["status"] == "completed" else 1
    print(run_id)
    return 0
