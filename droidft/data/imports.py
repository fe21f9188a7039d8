"""Import a dataset: a local .jsonl/.json/.csv/.parquet file or a Hugging Face Hub dataset,
mapped to one of droidft's formats, validated row by row, split and saved with its provenance.

Local files are read by DuckDB (``read_json_objects``, ``read_csv`` with its rejects table,
``read_parquet``); Hub datasets by the ``datasets`` package (see :mod:`droidft.data.hub`).
Nothing here parses a format by hand: when a reader fails, the message names the line or row
it failed on, with the same wording droidft's JSONL validator uses. The saved folder is a
normal droidft dataset (train/valid[/test].jsonl) plus ``provenance.json``: where the rows
came from, the column mapping, and row counts. No Streamlit here.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .formats import (FORMAT_EXAMPLES, FORMAT_LABELS, METHOD_FORMATS, SPLITS, DataError, Problem,
                      methods_for_format, normalize_method)
from .jsonl import MAX_LINE_BYTES, human_bytes, load_rows, write_jsonl
from .library import datasets_dir, unique_path
from .mapping import ColumnMap, RowProblem, map_row, map_rows
from .split import split_indices
from .validate import DatasetReport, validate_dataset

SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "csv",
            ".parquet": "parquet"}
PROVENANCE_FILE = "provenance.json"
SHOWN_PROBLEMS = 200  # problems a page lists; the rest are counted


@dataclass
class Source:
    """Rows read from a file or the Hub, with what provenance records about their origin."""

    label: str  # a file name or repo id, for messages
    columns: list[str]
    rows: list[dict]
    origin: dict = field(default_factory=dict)


@dataclass
class ImportResult:
    path: Path
    report: DatasetReport
    provenance: dict
    notes: list[Problem] = field(default_factory=list)  # warnings worth knowing (empty replies, ...)


def one_line(label: str, problems: list[Problem], what: str = "problem") -> str:
    """'data.csv row 3: ... (and 4 more problems)': the CLI's single line, the page's headline."""
    if not problems:
        return f"{label}: no usable rows"
    more = len(problems) - 1
    return f"{problems[0]}" + (f" (and {more} more {what}{'s' if more != 1 else ''})" if more else "")


def fail(label: str, problems: list[Problem]) -> DataError:
    return DataError(one_line(label, problems), problems)


# --------------------------------------------------------------------------- local files


def file_kind(path: str | Path) -> str:
    """'jsonl', 'json', 'csv' or 'parquet' from the file name, or DataError naming the choices."""
    kind = SUFFIXES.get(Path(path).suffix.lower())
    if kind is None:
        raise DataError(f"{Path(path).name}: cannot import {Path(path).suffix or 'a file without an extension'}; "
                        "give a .jsonl, .json, .csv or .parquet file")
    return kind


def read_file(path: str | Path, limit: int | None = None) -> Source:
    """Every row of a local file (the first ``limit`` with a limit) as dicts."""
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"file not found: {p}")
    if not p.is_file():
        raise DataError(f"{p} is not a file: give a .jsonl, .json, .csv or .parquet file")
    kind = file_kind(p)
    stat = p.stat()
    if stat.st_size == 0:
        raise DataError(f"{p.name} is empty; it needs one row per record, e.g. "
                        + FORMAT_EXAMPLES["completions"])
    import duckdb

    con = duckdb.connect()
    try:
        reader = {"jsonl": _read_json, "json": _read_json, "csv": _read_csv, "parquet": _read_parquet}[kind]
        columns, rows = reader(con, p, kind, limit)
    except duckdb.Error as exc:
        raise DataError(f"{p.name}: cannot be read as {kind.upper()} ({_first_line(exc)})") from None
    finally:
        con.close()
    if not rows:
        raise DataError(f"{p.name} has no rows" + (" (only a header)" if kind == "csv" and columns else ""))
    origin = {"kind": "file", "path": str(p.resolve()), "file_format": kind, "bytes": stat.st_size,
              "modified": stat.st_mtime, "sha256": _sha256(p)}
    return Source(p.name, columns, rows, origin)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return re.sub(r"^(Invalid Input|IO|Conversion|Binder) Error: ", "", text)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _limit_sql(limit: int | None) -> str:
    return f" LIMIT {int(limit)}" if limit is not None else ""


def _columns_of(rows: list[dict]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        for key in row:
            seen.setdefault(key, None)
    return list(seen)


def _read_json(con, path: Path, kind: str, limit: int | None) -> tuple[list[str], list[dict]]:
    """JSON Lines (one object per line) or a .json array of objects, one object per row."""
    import duckdb

    fmt = "newline_delimited" if kind == "jsonl" else "auto"
    try:
        texts = con.execute(f"SELECT json FROM read_json_objects(?, format='{fmt}', "
                            f"maximum_object_size={2 * MAX_LINE_BYTES}){_limit_sql(limit)}", [str(path)]).fetchall()
    except duckdb.Error as exc:
        raise _explain_json(path, kind, exc) from None
    rows, problems = [], []
    for number, (text,) in enumerate(texts, 1):
        if len(text) > MAX_LINE_BYTES:
            problems.append(RowProblem(path.name, number, f"is {human_bytes(len(text))} long, over the "
                                       f"{human_bytes(MAX_LINE_BYTES)} limit for one row; split or shorten it"))
            continue
        try:
            value = json.loads(text)
        except ValueError as exc:
            problems.append(RowProblem(path.name, number, f"is not valid JSON ({exc})"))
            continue
        if not isinstance(value, dict):
            kind_of = "a list" if isinstance(value, list) else "a string" if isinstance(value, str) else "a number"
            problems.append(RowProblem(path.name, number, f"is {kind_of}, not a JSON object; each row must be "
                                       'one object like {"prompt": "...", "completion": "..."}'))
            continue
        rows.append(value)
    if problems:
        raise fail(path.name, problems)
    if kind == "json" and len(rows) == 1:
        nested = [k for k, v in rows[0].items() if isinstance(v, list) and v and all(isinstance(x, dict) for x in v)]
        if nested and len(rows[0]) <= 3:
            raise DataError(f"{path.name} holds one object whose '{nested[0]}' is a list of "
                            f"{len(rows[0][nested[0]])} records; save that list as the file (a JSON array "
                            "of row objects) or as JSON Lines")
    return _columns_of(rows), rows


def _explain_json(path: Path, kind: str, exc: Exception) -> DataError:
    """DuckDB's parse error, made exact: the validator's line-numbered messages for JSON Lines,
    the first bad UTF-8 line or json's line/column for a .json file."""
    if kind == "jsonl":
        try:
            load_rows(path)
        except DataError as found:
            if found.problems:
                return fail(path.name, found.problems)
    else:
        bad = _first_bad_utf8(path)
        if bad:
            return fail(path.name, [bad])
        try:
            with open(path, encoding="utf-8") as fh:
                json.load(fh)
        except ValueError as err:
            where = getattr(err, "lineno", None)
            msg = getattr(err, "msg", str(err))
            col = getattr(err, "colno", None)
            return fail(path.name, [Problem(path.name, where, f"is not valid JSON ({msg}"
                                            + (f" at column {col})" if col else ")"))])
        except (OSError, RecursionError):
            pass
    return DataError(f"{path.name}: cannot be read as JSON ({_first_line(exc)})")


def _first_bad_utf8(path: Path) -> Problem | None:
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as e:
                return Problem(path.name, lineno, f"is not valid UTF-8 (byte 0x{raw[e.start:e.start + 1].hex()} at "
                                                  f"byte {e.start + 1} of the line); save the file as UTF-8")
    return None


CSV_REJECTS = {
    "INVALID ENCODING": "is not valid UTF-8; save the file as UTF-8",
    "LINE SIZE OVER MAXIMUM": f"is over the {human_bytes(MAX_LINE_BYTES)} limit for one row; split or shorten it",
    "UNQUOTED VALUE": "has a quote that is never closed",
}


def _read_csv(con, path: Path, kind: str, limit: int | None) -> tuple[list[str], list[dict]]:
    """A CSV file with a header row; every value read as text (no '007' -> 7). Rows DuckDB
    rejects (wrong number of values, bad UTF-8, an unclosed quote) are reported by line."""
    delim = "\t" if path.suffix.lower() == ".tsv" else _delimiter(path)
    with open(path, encoding="utf-8", errors="replace", newline="") as fh:
        header = next(csv.reader(fh, delimiter=delim), [])
    header = [h.lstrip("\ufeff").strip() for h in header]
    if not header or not any(header):
        raise DataError(f"{path.name} line 1: needs a header row naming the columns")
    blank = [i for i, h in enumerate(header, 1) if not h]
    if blank:
        raise DataError(f"{path.name} line 1: column {blank[0]} of the header has no name")
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise DataError(f"{path.name} line 1: the header names column '{dupes[0]}' twice")
    cursor = con.execute(
        "SELECT * FROM read_csv(?, header=true, auto_detect=false, delim=?, quote='\"', escape='\"', "
        f"columns=?, store_rejects=true, max_line_size={MAX_LINE_BYTES}){_limit_sql(limit)}",
        [str(path), delim, {h: "VARCHAR" for h in header}])
    names = [d[0] for d in cursor.description]
    rows = [dict(zip(names, values)) for values in cursor.fetchall()]
    rejects = con.execute("SELECT line, error_type, error_message FROM reject_errors ORDER BY line").fetchall()
    if rejects:
        problems, seen = [], set()
        for line, error_type, message in rejects:
            if line in seen:
                continue
            seen.add(line)
            found = re.search(r"Expected Number of Columns: (\d+) Found: (\d+)", message or "")
            text = (f"has {found.group(2)} values but the header names {found.group(1)} columns" if found
                    else CSV_REJECTS.get(error_type, message))
            problems.append(Problem(path.name, int(line), text))
        raise fail(path.name, problems)
    return names, rows


def _delimiter(path: Path) -> str:
    """The separator the header line uses most: ',', ';', tab or '|'."""
    with open(path, "rb") as fh:
        first = fh.readline(1 << 16)
    counts = {d: first.count(d.encode()) for d in (",", ";", "\t", "|")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _read_parquet(con, path: Path, kind: str, limit: int | None) -> tuple[list[str], list[dict]]:
    cursor = con.execute(f"SELECT * FROM read_parquet(?){_limit_sql(limit)}", [str(path)])
    names = [d[0] for d in cursor.description]
    return names, [dict(zip(names, values)) for values in cursor.fetchall()]


# --------------------------------------------------------------------------- any source


def looks_like_hub_id(text: str) -> bool:
    """'owner/name' or 'hf://datasets/owner/name' (not an existing path, no file extension)."""
    t = str(text).strip()
    if t.startswith("hf://datasets/"):
        return True
    return bool(re.fullmatch(r"[A-Za-z0-9][\w.-]{0,95}/[\w.-]{1,96}", t)) and Path(t).suffix.lower() not in SUFFIXES


def read_source(source: str, *, config: str | None = None, split: str | None = None,
                revision: str | None = None, limit: int | None = None) -> Source:
    """A local file when ``source`` names one (or has a file extension), else a Hub dataset id."""
    text = str(source or "").strip()
    if not text:
        raise DataError("no source given: a .jsonl, .json, .csv or .parquet file, or a Hub dataset id (owner/name)")
    p = Path(text).expanduser()
    if p.exists() or not looks_like_hub_id(text):
        if config or revision or split:
            raise DataError("--config, --source-split and --revision are for Hub datasets; "
                            f"{p.name} is a local file")
        return read_file(p, limit=limit)
    return read_hub(text.removeprefix("hf://datasets/"), config=config, split=split or "train",
                    revision=revision, limit=limit)


def read_hub(repo_id: str, *, config: str | None = None, split: str = "train", revision: str | None = None,
             limit: int | None = None) -> Source:
    """One split of a Hugging Face Hub dataset (network: only when a person asks)."""
    from .hub import load_hub_rows

    return Source(*load_hub_rows(repo_id, config=config, split=split, revision=revision, limit=limit))


# --------------------------------------------------------------------------- preview and import


def preview(source: Source, cmap: ColumnMap, n: int = 5) -> list[dict]:
    """The first ``n`` rows before and after mapping: {row, source, mapped, error}."""
    out = []
    for number, row in enumerate(source.rows[:max(0, int(n))], 1):
        item: dict[str, Any] = {"row": number, "source": row, "mapped": None, "error": None}
        try:
            item["mapped"] = map_row(row, cmap)
        except ValueError as exc:
            item["error"] = str(exc)
        out.append(item)
    return out


def parse_split(text: str | None) -> tuple[float, float]:
    """'90/10' or '80/10/10' (percent of rows for train/valid/test) -> (valid, test) fractions."""
    if text is None or not str(text).strip():
        return 0.1, 0.0
    parts = re.split(r"[/,:]", str(text).strip())
    try:
        numbers = [float(p) for p in parts]
    except ValueError:
        numbers = []
    if len(numbers) not in (2, 3) or any(x < 0 for x in numbers) or abs(sum(numbers) - 100) > 1e-6:
        raise DataError(f"--split {text!r}: give train/valid[/test] percentages adding up to 100, "
                        "e.g. 90/10 or 80/10/10")
    if numbers[0] <= 0 or numbers[1] <= 0:
        raise DataError(f"--split {text!r}: train and valid each need some rows")
    return numbers[1] / 100, (numbers[2] / 100 if len(numbers) == 3 else 0.0)


def _write_splits(folder: Path, rows: list[tuple[int, dict]], parts: dict[str, list[int]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for split, idx in parts.items():
        if idx:
            write_jsonl(folder / f"{split}.jsonl", [rows[i][1] for i in idx])


def _row_problems(report: DatasetReport, rows: list[tuple[int, dict]], parts: dict[str, list[int]],
                  label: str) -> tuple[list[Problem], list[Problem], set[int]]:
    """The validator's findings in the split files, numbered by source row instead:
    (errors, warnings, positions in ``rows`` of the rows with errors)."""
    errors, warnings, bad = [], [], set()
    for p in report.problems:
        split = p.file.removesuffix(".jsonl")
        if p.line is None or split not in parts:
            (errors if p.level == "error" else warnings).append(p)
            continue
        position = parts[split][p.line - 1]
        found = RowProblem(label, rows[position][0], p.message, p.level)
        if p.level == "error":
            errors.append(found)
            bad.add(position)
        else:
            warnings.append(found)
    return errors, warnings, bad


def import_dataset(source: Source, cmap: ColumnMap, name: str, *, method: str | None = None,
                   valid_fraction: float = 0.1, test_fraction: float = 0.0, seed: int = 0,
                   drop_bad: bool = False, datasets_root: str | Path | None = None) -> ImportResult:
    """Map, split, check and save ``source`` as a new dataset folder called ``name``.

    Every row goes through droidft's own validator (in the split files it will train from),
    and problems are reported by source row. Bad rows stop the import, unless ``drop_bad``
    leaves them out (the provenance lists them). The folder is built aside and appears under
    its name only once it validates.
    """
    cmap.check(source.columns)
    method = normalize_method(method) if method else methods_for_format(cmap.format)[0]
    if cmap.format not in METHOD_FORMATS[method]:
        raise DataError(f"{method} does not train on {FORMAT_LABELS[cmap.format]} rows")
    rows, errors = map_rows(source.rows, cmap, source.label)
    if errors and not drop_bad:
        raise fail(source.label, errors)
    root = Path(datasets_root) if datasets_root else datasets_dir()
    with tempfile.TemporaryDirectory(prefix=".import-", dir=root) as tmp:
        staging = Path(tmp) / "dataset"
        for attempt in (1, 2):  # a second pass only to leave out rows the validator refused
            if not rows:
                raise fail(source.label, errors or [Problem(source.label, None, "has no rows to import")])
            parts = split_indices(len(rows), valid_fraction, test_fraction, seed, name=source.label)
            _write_splits(staging, rows, parts)
            report = validate_dataset(staging, method, max_problems=len(rows) * 4 + 50)
            found, warnings, bad = _row_problems(report, rows, parts, source.label)
            if not found:
                break
            errors = sorted(errors + found, key=lambda p: p.line or 0)
            if not drop_bad or not bad or attempt == 2:
                raise fail(source.label, errors)
            rows = [r for i, r in enumerate(rows) if i not in bad]
            for stale in staging.glob("*.jsonl"):
                stale.unlink()
        folder = unique_path(root, name or "dataset", default="dataset")
        provenance = _provenance(source, cmap, method, folder, report, rows, errors,
                                 valid_fraction, test_fraction, seed)
        (staging / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2, default=str) + "\n")
        staging.rename(folder)
    report.path = str(folder)
    return ImportResult(folder, report, provenance, sorted(warnings, key=lambda p: p.line or 0))


def _provenance(source: Source, cmap: ColumnMap, method: str, folder: Path, report: DatasetReport,
                rows: list, dropped: list[Problem], valid: float, test: float, seed: int) -> dict:
    dropped_rows = sorted({p.line for p in dropped if p.line is not None})
    return {
        "name": folder.name,
        "source": source.origin,
        "schema": cmap.schema,
        "format": cmap.format,
        "method": method,
        "mapping": {k: list(v) for k, v in cmap.fields.items()},
        "rows": {"source": len(source.rows), "imported": len(rows), "dropped": len(dropped_rows),
                 **{s: report.splits.get(s, 0) for s in SPLITS}},
        "dropped_rows": dropped_rows[:1000],
        "split": {"valid_fraction": valid, "test_fraction": test, "seed": seed},
        "imported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def read_provenance(folder: str | Path) -> dict | None:
    """The provenance of an imported dataset folder, or None (not imported, or unreadable)."""
    try:
        p = Path(str(folder)).expanduser()
        value = json.loads((p / PROVENANCE_FILE).read_text(encoding="utf-8")) if p.is_dir() else None
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def source_label(provenance: dict) -> str:
    """'Hub: openai/gsm8k (main, train) @ e53f048' or 'file: alpaca.json' for lineage and pages."""
    src = provenance.get("source") or {}
    if src.get("kind") == "hub":
        extra = ", ".join(x for x in (src.get("config"), src.get("split")) if x)
        rev = str(src.get("revision") or "")[:7]
        return f"Hub: {src.get('repo')}" + (f" ({extra})" if extra else "") + (f" @ {rev}" if rev else "")
    return f"file: {Path(str(src.get('path') or '?')).name}"


def provenance_summary(provenance: dict) -> str:
    """One line for the Data page: where the rows came from, the mapping, how many, when."""
    mapping = ", ".join(f"{' + '.join(cols)} -> {name}" for name, cols in (provenance.get("mapping") or {}).items())
    rows = provenance.get("rows") or {}
    dropped = f" ({rows['dropped']} left out)" if rows.get("dropped") else ""
    return (f"Imported from {source_label(provenance)} on {str(provenance.get('imported_at', ''))[:10]}: "
            f"{rows.get('imported', '?')} rows{dropped}; {mapping}")
