"""Line-by-line validation of a dataset for a training method: every problem with its file,
line number and a fix, collected into a DatasetReport (never raised for bad contents).

mlx-lm and mlx-lm-lora pick a row format from the *first* line of each file and then index
every other line with the same keys, so one odd line would surface mid-training as a bare
KeyError; this checks everything up front.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .checks import check_row, closest_format, foreign_format, missing_message, no_keys_message
from .formats import (FORMAT_EXAMPLES, FORMAT_LABELS, METHOD_FORMATS, SPLITS, DataError, Features,
                      Problem, accepted_text, detect_format, methods_for_format, normalize_method,
                      optional_keys, required_keys)
from .jsonl import (MAX_LINE_BYTES, decode_line, human_bytes, iter_raw_lines, not_object_message,
                    parse_json)
from .resolve import resolve_dataset

@dataclass
class DatasetReport:
    """What validate_dataset found; ``ok`` means nothing blocks training."""

    path: str
    format: str | None
    splits: dict[str, int]
    problems: list[Problem] = field(default_factory=list)
    method: str = "sft"
    omitted: int = 0  # problems beyond max_problems, counted but not listed
    omitted_errors: int = 0  # how many of those were errors (they still block training)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.level == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.level != "error"]

    @property
    def ok(self) -> bool:
        return not self.errors and not self.omitted_errors

    def summary(self) -> str:
        """A few human lines: counts per split, then the problems."""
        counts = ", ".join(f"{k}: {v} rows" for k, v in self.splits.items()) or "no rows"
        fmt = FORMAT_LABELS.get(self.format or "", "unknown format")
        head = f"{self.path} ({fmt}; {counts})"
        if self.ok and not self.problems:
            return f"{head}: ready for {self.method}."
        lines = [head + (": ready, with notes." if self.ok else ": not ready.")]
        lines += [f"  {'ERROR' if p.level == 'error' else 'note'}: {p}" for p in self.problems]
        if self.omitted:
            lines.append(f"  ... and {self.omitted} more problems not listed.")
        return "\n".join(lines)

    def raise_if_failed(self) -> DatasetReport:
        """Raise DataError listing the errors; return self when the data is usable."""
        if self.ok:
            return self
        errors = self.errors
        shown = "\n".join(f"  {p}" for p in errors[:10])
        more = len(errors) - 10 + self.omitted_errors
        if more > 0:
            shown += f"\n  ... and {more} more."
        n = len(errors) + self.omitted_errors
        raise DataError(
            f"{self.path} is not ready for {self.method}: {n} problem"
            f"{'s' if n != 1 else ''}:\n{shown}",
            self.problems,
        )

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "format": self.format,
            "method": self.method,
            "splits": dict(self.splits),
            "ok": self.ok,
            "omitted": self.omitted,
            "problems": [asdict(p) for p in self.problems],
        }


def _family_hint(fmt: str) -> str:
    ms = methods_for_format(fmt)
    return ", ".join(ms)


class _Collector:
    def __init__(self, max_problems: int):
        self.max = max(0, int(max_problems))
        self.problems: list[Problem] = []
        self.omitted = 0
        self.omitted_errors = 0

    def add(self, file: str, line: int | None, message: str, level: str = "error", force: bool = False):
        if force or len(self.problems) < self.max:
            self.problems.append(Problem(file, line, message, level))
        else:
            self.omitted += 1
            if level == "error":
                self.omitted_errors += 1


def _scan_file(path: Path, method: str, f: Features, mask_prompt: bool, col: _Collector,
               max_line_bytes: int) -> tuple[int, str | None]:
    """Check every line of one split file. Returns (rows, the file's format)."""
    name = path.name
    try:
        size = path.stat().st_size
        fh = open(path, "rb")
    except OSError as e:
        col.add(name, None, f"cannot be read: {e.strerror or e}", force=True)
        return 0, None
    if size == 0:
        fh.close()
        col.add(name, None, "is empty; add one JSON object per line, e.g. " + FORMAT_EXAMPLES[METHOD_FORMATS[method][0]], force=True)
        return 0, None

    rows = 0
    file_fmt: str | None = None  # set by the first row that has an accepted format
    fmt_line = 0
    foreign: str | None = None
    extras: dict[str, list[int]] = {}  # key -> [first line, count]
    allowed_cache: dict[str, set] = {}
    blank_lines: list[int] = []
    with fh:
        try:
            for lineno, raw, nbytes in iter_raw_lines(fh, max_line_bytes):
                if raw is None:
                    rows += 1
                    col.add(name, lineno, f"is {human_bytes(nbytes)} long, over the {human_bytes(max_line_bytes)} limit for one row; split or shorten it")
                    continue
                text, err, blank = decode_line(raw, lineno)
                if blank:
                    blank_lines.append(lineno)
                    continue
                rows += 1
                if err:
                    col.add(name, lineno, err)
                    continue
                value, err = parse_json(text)
                if err:
                    col.add(name, lineno, err)
                    continue
                if not isinstance(value, dict):
                    col.add(name, lineno, not_object_message(value))
                    continue
                row = value
                if file_fmt is not None and all(k in row for k in required_keys(file_fmt, f, method)):
                    fmt = file_fmt
                else:
                    fmt = detect_format(row, method, f)
                    if fmt is None:
                        other = foreign_format(row, method, f)
                        if other is not None:
                            if foreign != other:
                                foreign = other
                                col.add(name, lineno, (
                                    f"this is a {FORMAT_LABELS[other]} row, but {method} trains on "
                                    f"{accepted_text(method)}. Use this data with {_family_hint(other)}, "
                                    f"or convert it (e.g. {FORMAT_EXAMPLES[METHOD_FORMATS[method][0]]})"
                                ))
                            continue
                        closest = closest_format(row, method, f) if file_fmt is None else file_fmt
                        if closest is None:
                            col.add(name, lineno, no_keys_message(row, method, f))
                        else:
                            col.add(name, lineno, missing_message(row, closest, method, f))
                        continue
                    if file_fmt is None:
                        file_fmt, fmt_line = fmt, lineno
                    elif fmt != file_fmt:
                        col.add(name, lineno, (
                            f"this is a {FORMAT_LABELS[fmt]} row, but line {fmt_line} made this file "
                            f"{FORMAT_LABELS[file_fmt]}; every line of a file must use one format "
                            "(the trainer picks it from the first line)"
                        ))
                        continue
                for level, msg in check_row(row, fmt, method, f, mask_prompt):
                    col.add(name, lineno, msg, level)
                allowed = allowed_cache.get(fmt)
                if allowed is None:
                    allowed = set(required_keys(fmt, f, method)) | set(optional_keys(fmt, f, method))
                    allowed_cache[fmt] = allowed
                for k in row:
                    if k not in allowed:
                        e = extras.setdefault(k, [lineno, 0])
                        e[1] += 1
        except OSError as e:
            col.add(name, None, f"could not be read to the end: {e.strerror or e}", force=True)

    if rows == 0:
        col.add(name, None, "has only blank lines; add one JSON object per line", force=True)
        return 0, None
    if blank_lines:
        shown = ", ".join(str(n) for n in blank_lines[:5]) + (", ..." if len(blank_lines) > 5 else "")
        col.add(name, blank_lines[0], (
            f"is blank ({len(blank_lines)} blank line{'s' if len(blank_lines) > 1 else ''}: {shown}); "
            "the trainers parse every line as JSON and stop at a blank one, so delete them"
        ))
    for k, (first, count) in sorted(extras.items(), key=lambda kv: kv[1][0])[:10]:
        col.add(name, first, (
            f"extra key '{k}' is not read by the trainer and will be ignored"
            f" (on {count} of {rows} lines)"
        ), level="warning")
    if len(extras) > 10:
        col.add(name, None, f"{len(extras) - 10} more extra keys are ignored", level="warning")
    return rows, (file_fmt or foreign)


def validate_dataset(
    data: str | os.PathLike,
    method: str = "sft",
    max_problems: int = 50,
    *,
    features: Features | Mapping | None = None,
    mask_prompt: bool = False,
    require_valid: bool = True,
    batch_size: int | None = None,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> DatasetReport:
    """Check a dataset for ``method`` line by line; never raises for bad *contents*.

    DataError is raised only for structural path problems (missing path, a folder without
    train.jsonl, a non-.jsonl file) and unknown method names. Everything else becomes a
    Problem; ``report.ok`` is True when no error-level problem was found.
    ``batch_size``: the trainers refuse splits with fewer rows than one batch.
    """
    m = normalize_method(method)
    f = Features.coerce(features)
    root = resolve_dataset(data, method=m)
    col = _Collector(max_problems)
    splits: dict[str, int] = {}
    formats: dict[str, str | None] = {}

    if root.is_file():
        files = {"train": root}
        col.add(root.name, None, (
            "is a single file, so it is used as the training split and there is no validation "
            "split; the trainer needs valid.jsonl next to train.jsonl. Run "
            f"split_dataset('{root}', OUT_FOLDER) to make train.jsonl and valid.jsonl"
        ), level="error" if require_valid else "warning", force=True)
    else:
        files = {s: root / f"{s}.jsonl" for s in SPLITS if (root / f"{s}.jsonl").exists()}
        if "valid" not in files:
            col.add("valid.jsonl", None, (
                f"is missing from {root}; the trainer needs a validation split to measure "
                "progress. Add valid.jsonl, or run split_dataset on train.jsonl to carve one out"
            ), level="error" if require_valid else "warning", force=True)

    for split, path in files.items():
        if not path.is_file():
            col.add(path.name, None, "is not a regular file", force=True)
            continue
        n, fmt = _scan_file(path, m, f, mask_prompt, col, max_line_bytes)
        splits[split] = n
        formats[split] = fmt

    train_fmt = formats.get("train")
    for split, fmt in formats.items():
        if split != "train" and fmt and train_fmt and fmt != train_fmt:
            col.add(files[split].name, None, (
                f"uses {FORMAT_LABELS[fmt]} rows while train.jsonl uses {FORMAT_LABELS[train_fmt]} rows; "
                "the numbers will not be comparable"
            ), level="warning", force=True)
    if batch_size:
        for split in ("train", "valid"):
            n = splits.get(split)
            if n is not None and 0 < n < batch_size:
                col.add(files[split].name, None, (
                    f"has {n} row{'s' if n != 1 else ''} but the batch size is {batch_size}; "
                    f"the trainer needs at least one full batch: add rows or lower the batch size"
                ), force=True)

    fmt = train_fmt or next((x for x in formats.values() if x), None)
    return DatasetReport(path=str(root), format=fmt, splits=splits, problems=col.problems,
                         method=m, omitted=col.omitted, omitted_errors=col.omitted_errors)
