"""JSON Lines files: read line by line with line numbers (never more than one line's worth of
memory for a huge line), and write atomically (a temp file renamed into place)."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .formats import DataError, Problem

# A line longer than this is reported instead of parsed: nothing a small model trains on
# needs 16 MiB of JSON on one line, and parsing such a line costs several times its size.
MAX_LINE_BYTES = 16 * 1024 * 1024


def iter_raw_lines(fh, max_line_bytes: int) -> Iterator[tuple[int, bytes | None, int]]:
    """Yield (line number, bytes or None when too long, byte length) from a binary file.

    Never holds more than ``max_line_bytes`` (+1 MiB) of one line in memory: an over-long
    line is skipped in 1 MiB chunks, only its length counted.
    """
    lineno = 0
    while True:
        chunk = fh.readline(max_line_bytes + 1)
        if not chunk:
            return
        lineno += 1
        if len(chunk) > max_line_bytes and not chunk.endswith(b"\n"):
            total = len(chunk)
            while True:
                more = fh.readline(1 << 20)
                if not more:
                    break
                total += len(more)
                if more.endswith(b"\n"):
                    break
            yield lineno, None, total
            continue
        yield lineno, chunk, len(chunk)


def human_bytes(n: float) -> str:
    """1000 bytes, 4.9 KB, 16.0 MB, 2.0 GB."""
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n}"


def json_kind(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true/false"
    if isinstance(v, (int, float)):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, dict):
        return "an object"
    return type(v).__name__


def decode_line(raw: bytes, lineno: int) -> tuple[str | None, str | None, bool]:
    """(text, error message, blank). Mirrors what mlx-lm's ``json.loads(line)`` would hit."""
    body = raw.rstrip(b"\n")
    if body.endswith(b"\r"):
        body = body[:-1]
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        bad = body[e.start : e.start + 1]
        return None, (
            f"is not valid UTF-8 (byte 0x{bad.hex()} at byte {e.start + 1} of the line); "
            "save the file as UTF-8"
        ), False
    if lineno == 1 and text.startswith("\ufeff"):
        return None, (
            "the file starts with a UTF-8 byte-order mark (BOM), which the trainers' JSON "
            "reader rejects; save it as UTF-8 without BOM"
        ), False
    if not text.strip():
        return None, None, True
    if "\r" in text:
        return None, (
            "contains a bare carriage return (\\r) inside the line; the trainers read it "
            "as a line break, splitting this row in two. Use \\n line endings"
        ), False
    return text, None, False


def parse_json(text: str) -> tuple[Any, str | None]:
    try:
        return json.loads(text), None
    except json.JSONDecodeError as e:
        return None, f"is not valid JSON ({e.msg} at column {e.colno})"
    except RecursionError:
        return None, "is not usable JSON (nested too deeply)"
    except ValueError as e:  # e.g. a number with more digits than Python will convert
        return None, f"is not usable JSON ({e})"


def not_object_message(value: Any) -> str:
    example = '{"prompt": "...", "completion": "..."}'
    return f"is {json_kind(value)}, not a JSON object; each line must be one object like {example}"


def read_numbered(
    path: Path, limit: int | None = None, max_line_bytes: int = MAX_LINE_BYTES
) -> tuple[list[tuple[int, dict]], list[Problem]]:
    """Objects with their line numbers, plus problems for lines that are not objects."""
    rows: list[tuple[int, dict]] = []
    problems: list[Problem] = []
    name = path.name
    try:
        fh = open(path, "rb")
    except OSError as e:
        raise DataError(f"cannot open {path}: {e.strerror or e}") from None
    with fh:
        for lineno, raw, size in iter_raw_lines(fh, max_line_bytes):
            if limit is not None and len(rows) >= limit:
                break
            if raw is None:
                problems.append(Problem(name, lineno, f"is {human_bytes(size)} long, over the {human_bytes(max_line_bytes)} limit for one row"))
                continue
            text, err, blank = decode_line(raw, lineno)
            if blank:
                continue
            if err:
                problems.append(Problem(name, lineno, err))
                continue
            value, err = parse_json(text)
            if err:
                problems.append(Problem(name, lineno, err))
            elif not isinstance(value, dict):
                problems.append(Problem(name, lineno, not_object_message(value)))
            else:
                rows.append((lineno, value))
    return rows, problems


def raise_problems(path: Path, problems: list[Problem]) -> None:
    shown = "\n".join(f"  {p}" for p in problems[:10])
    more = f"\n  ... and {len(problems) - 10} more." if len(problems) > 10 else ""
    raise DataError(f"{path} has {len(problems)} unreadable line(s):\n{shown}{more}", problems)


def split_file(path: Path, split: str) -> Path:
    if path.is_dir():
        f = path / f"{split}.jsonl"
        if not f.is_file():
            raise DataError(f"{path} has no {split}.jsonl")
        return f
    if split != "train":
        raise DataError(f"{path.name} is a single file (used as train); it has no {split} split")
    return path


def load_rows(path: str | os.PathLike, limit: int | None = None) -> list[dict]:
    """The JSON objects of a .jsonl file (or a dataset folder's train.jsonl).

    Blank lines are skipped; any unreadable line raises DataError naming its line number.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        p = split_file(p, "train")
    if not p.exists():
        raise DataError(f"file not found: {p}")
    rows, problems = read_numbered(p, limit=limit)
    if problems:
        raise_problems(p, problems)
    return [r for _, r in rows]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    """Write JSON Lines via a temp file + rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # os.open with 0o666 honours the umask (mkstemp would leave the file owner-only).
    tmp = path.parent / f".{path.name}.{os.getpid()}.{random.getrandbits(40):x}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            for row in rows:
                try:
                    line = json.dumps(row, ensure_ascii=False)
                    line.encode("utf-8")
                except UnicodeEncodeError:  # lone surrogates survive only as \u escapes
                    line = json.dumps(row, ensure_ascii=True)
                fh.write(line + "\n")
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
