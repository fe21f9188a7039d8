"""Machine-wide settings kept in the droidft home (`settings.json`), read by every process.

A file rather than a table: the queue reads it on every start and every end of a run, and a
user can read and edit it by hand. Only known keys are accepted, each validated; a value of
`auto` (or no entry) means droidft decides. `droidft settings [set KEY VALUE]` edits it.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from typing import Callable

from . import paths

FILE = "settings.json"


class SettingsError(ValueError):
    """An unknown setting or a value it cannot take; the message says what it can."""


def _runs_at_once(value) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        raise SettingsError(f"max_concurrent_runs must be a whole number from 1 to 64, or auto "
                            f"(got {value!r})") from None
    if not 1 <= number <= 64:
        raise SettingsError(f"max_concurrent_runs must be from 1 to 64, or auto (got {number})")
    return number


@dataclass(frozen=True)
class Setting:
    name: str
    parse: Callable  # raw text or value -> stored value (raises SettingsError)
    help: str


KNOWN = {s.name: s for s in (
    Setting("max_concurrent_runs", _runs_at_once,
            "training runs at once; more wait in the queue (auto: what this machine holds)"),
)}


def _path():
    return paths.home() / FILE


def read() -> dict:
    """Every stored setting (an unreadable file counts as empty: defaults apply)."""
    try:
        values = json.loads(_path().read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in values.items() if k in KNOWN} if isinstance(values, dict) else {}


def get(name: str):
    """A setting's stored value, or None for auto / not set."""
    if name not in KNOWN:
        raise SettingsError(f"unknown setting '{name}' (known: {', '.join(KNOWN)})")
    return read().get(name)


def set(name: str, value) -> object:  # noqa: A001 - `droidft settings set` reads naturally
    """Store a setting (`auto` or None clears it); returns the stored value."""
    if name not in KNOWN:
        raise SettingsError(f"unknown setting '{name}' (known: {', '.join(KNOWN)})")
    values = read()
    if value is None or str(value).strip().lower() == "auto":
        values.pop(name, None)
        parsed = None
    else:
        parsed = values[name] = KNOWN[name].parse(value)
    home = paths.home()
    fd, tmp = tempfile.mkstemp(dir=home, prefix=".settings-", suffix=".json")
    with os.fdopen(fd, "w") as fh:  # write then rename: a reader never sees half a file
        json.dump(values, fh, indent=2)
    os.replace(tmp, home / FILE)
    return parsed
