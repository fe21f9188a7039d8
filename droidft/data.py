"""Datasets: formats, validation, preview, token statistics, splitting, sample data.

A dataset is a folder holding ``train.jsonl`` and ``valid.jsonl`` (and optionally
``test.jsonl``), one JSON object per line, exactly what mlx-lm and mlx-lm-lora load. Those
loaders pick a row format from the *first* line of each file and then index every other line
with the same keys, so a single odd line surfaces mid-training as a bare ``KeyError`` or
``JSONDecodeError``. This module checks everything up front and says, per line, what is
wrong and how to fix it.

Formats and the keys the loaders read (names configurable through the ``*_feature`` options
of both libraries; see :class:`Features`):

``chat``         ``{"messages": [{"role", "content"}, ...], "tools"?}``   (sft)
``completions``  ``{"prompt", "completion", "tools"?}``                   (sft)
``text``         ``{"text"}``                                             (sft)
``grpo``         ``{"prompt", "answer", "system"?, "type"?}``             (grpo family)
``preference``   ``{"prompt", "chosen", "rejected", "system"?}``          (dpo, orpo, cpo)

No Streamlit here: the dashboard and the CLI both call these functions.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from . import paths

FORMATS = ("chat", "completions", "text", "grpo", "preference")

METHOD_FORMATS: dict[str, tuple[str, ...]] = {
    "sft": ("chat", "completions", "text"),
    "grpo": ("grpo",),
    "gspo": ("grpo",),
    "dr_grpo": ("grpo",),
    "bnpo": ("grpo",),
    "dapo": ("grpo",),
    "dpo": ("preference",),
    "orpo": ("preference",),
    "cpo": ("preference",),
}

FORMAT_LABELS = {
    "chat": "chat (messages)",
    "completions": "prompt/completion",
    "text": "text",
    "grpo": "prompt/answer (GRPO)",
    "preference": "prompt/chosen/rejected (preference)",
}

# One valid line per format, for help texts and upload pages.
FORMAT_EXAMPLES = {
    "chat": '{"messages": [{"role": "user", "content": "Hi"}, '
    '{"role": "assistant", "content": "Hello!"}]}',
    "completions": '{"prompt": "What is 2 + 2?", "completion": "4"}',
    "text": '{"text": "Any plain text to continue-train on."}',
    "grpo": '{"prompt": "What is 2 + 2?", "answer": "4"}',
    "preference": '{"prompt": "What is 2 + 2?", "chosen": "4", "rejected": "5"}',
}

ROLES = ("system", "user", "assistant", "tool")
SPLITS = ("train", "valid", "test")

# A line longer than this is reported instead of parsed: nothing a small model trains on
# needs 16 MiB of JSON on one line, and parsing such a line costs several times its size.
MAX_LINE_BYTES = 16 * 1024 * 1024

# mlx-lm-lora's GRPODataset uses this system prompt when a row has no "system" key.
GRPO_DEFAULT_SYSTEM = (
    "You are given a problem. Think about the problem and provide your working out. "
    "Place it between <think> and </think>. Then, provide your solution between "
    "<answer> </answer>."
)

# Keys people commonly use instead of the ones the trainers read: used only for hints.
_SYNONYMS = {
    "completion": ("response", "output", "answer", "target", "reply", "assistant"),
    "prompt": ("instruction", "input", "question", "query", "user"),
    "chat": ("conversations", "conversation", "chat", "dialog", "dialogue"),
    "text": ("content", "body", "document", "sentence"),
    "answer": ("solution", "label", "target", "ground_truth", "completion", "output"),
    "chosen": ("accepted", "preferred", "good", "positive", "winner"),
    "rejected": ("dispreferred", "bad", "negative", "loser"),
}


class DataError(ValueError):
    """A dataset problem worth showing to a person: what is wrong and how to fix it."""

    def __init__(self, message: str, problems: list[Problem] | tuple = ()):
        super().__init__(message)
        self.problems = list(problems)


@dataclass
class Problem:
    """One finding. ``line`` is 1-based, None for a problem with a whole file."""

    file: str
    line: int | None
    message: str
    level: str = "error"  # "error" blocks training; "warning" is worth knowing

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where = f"{where} line {self.line}" if where else f"line {self.line}"
        return f"{where}: {self.message}" if where else self.message


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


@dataclass(frozen=True)
class Features:
    """The key names the loaders read; both libraries let a config rename them."""

    text: str = "text"
    chat: str = "messages"
    prompt: str = "prompt"
    completion: str = "completion"
    system: str = "system"
    chosen: str = "chosen"
    rejected: str = "rejected"
    answer: str = "answer"
    type: str = "type"
    preference_score: str = "preference_score"

    @classmethod
    def from_config(cls, config: Any) -> Features:
        """Read ``prompt_feature``-style attributes (or dict keys) of a training config."""
        get = config.get if isinstance(config, Mapping) else lambda k, d: getattr(config, k, d)
        values = {}
        for f in fields(cls):
            v = get(f"{f.name}_feature", None)
            if isinstance(v, str) and v:
                values[f.name] = v
        return cls(**values)

    @classmethod
    def coerce(cls, features: Features | Mapping | None) -> Features:
        """Accept None, a Features, or a mapping like {"prompt_feature": "question"}."""
        if features is None:
            return cls()
        if isinstance(features, Features):
            return features
        if isinstance(features, Mapping):
            names = {f.name for f in fields(cls)}
            values = {}
            for k, v in features.items():
                k = str(k).removesuffix("_feature")
                if k == "messages":
                    k = "chat"
                if k not in names:
                    raise DataError(f"unknown feature name {k!r}; known: {', '.join(sorted(names))}")
                if not isinstance(v, str) or not v:
                    raise DataError(f"feature {k!r} must be a non-empty key name, got {v!r}")
                values[k] = v
            return cls(**values)
        return cls.from_config(features)


# --------------------------------------------------------------------------- methods


def normalize_method(method: str) -> str:
    """'DR-GRPO' -> 'dr_grpo'; unknown names raise DataError listing the known ones."""
    m = str(method or "").strip().lower().replace("-", "_").replace(" ", "_")
    if m not in METHOD_FORMATS:
        raise DataError(
            f"unknown training method {method!r}; choose one of: {', '.join(METHOD_FORMATS)}"
        )
    return m


def methods_for_format(fmt: str) -> tuple[str, ...]:
    """Which methods can train on data of this format."""
    return tuple(m for m, fs in METHOD_FORMATS.items() if fmt in fs)


def _family_hint(fmt: str) -> str:
    ms = methods_for_format(fmt)
    return ", ".join(ms)


def _accepted_text(method: str) -> str:
    labels = [FORMAT_LABELS[f] for f in METHOD_FORMATS[method]]
    if len(labels) == 1:
        return f"{labels[0]} rows"
    return ", ".join(labels[:-1]) + f" or {labels[-1]} rows"


# --------------------------------------------------------------------------- formats


def _required(fmt: str, f: Features, method: str | None = None) -> tuple[str, ...]:
    if fmt == "chat":
        return (f.chat,)
    if fmt == "completions":
        return (f.prompt, f.completion)
    if fmt == "text":
        return (f.text,)
    if fmt == "grpo":
        return (f.prompt, f.answer)
    if fmt == "preference":
        if method == "orpo":  # ORPO falls back to "question", then ""
            return (f.chosen, f.rejected)
        return (f.prompt, f.chosen, f.rejected)
    raise KeyError(fmt)


def _optional(fmt: str, f: Features, method: str | None = None) -> tuple[str, ...]:
    if fmt in ("chat", "completions"):
        return ("tools",)
    if fmt == "grpo":
        return (f.system, f.type)
    if fmt == "preference":
        if method == "orpo":
            return (f.prompt, "question", f.system, f.preference_score)
        return (f.system,)
    return ()


def _formats_in_order(method: str | None) -> tuple[str, ...]:
    """The loaders' own precedence: prompt+completion beats messages beats text."""
    if method is None:
        return ("completions", "chat", "text", "preference", "grpo")
    return METHOD_FORMATS[method]


def detect_format(
    row: Any, method: str | None = None, features: Features | Mapping | None = None
) -> str | None:
    """The format a row has, by key presence and in the loaders' precedence order.

    With ``method`` only that method's formats are considered (as its loader would do).
    """
    if not isinstance(row, dict):
        return None
    f = Features.coerce(features)
    m = normalize_method(method) if method is not None else None
    for fmt in _formats_in_order(m):
        if all(k in row for k in _required(fmt, f, m)):
            return fmt
    return None


# --------------------------------------------------------------------------- paths


def _demo_dir(method: str | None) -> Path:
    fmt = "chat"
    if method is not None:
        fmt = {"grpo": "grpo", "preference": "preference"}.get(
            METHOD_FORMATS[normalize_method(method)][0], "chat"
        )
    return paths.DATA_DIR / "demo" / fmt


def resolve_dataset(data: str | os.PathLike, method: str | None = None) -> Path:
    """Turn what a user typed or picked into a dataset path, or say clearly why not.

    ``"demo"`` is the bundled demo set (``data/demo/chat``; ``data/demo/grpo`` or
    ``data/demo/preference`` when ``method`` needs those), generated on first use.
    A folder must hold ``train.jsonl``. A single ``.jsonl`` file is returned as is: it is
    treated as the train split, and validate_dataset will ask for a validation split.
    """
    if data is None or (isinstance(data, str) and not data.strip()):
        raise DataError("no dataset given: pick a folder with train.jsonl and valid.jsonl, or 'demo'")
    if isinstance(data, str) and data.strip().lower() == "demo":
        target = _demo_dir(method)
        if not (target / "train.jsonl").is_file():
            m = method or "sft"
            try:
                sample_data(m, target)
            except OSError:  # read-only install: build it in the state folder instead
                target = paths.home() / "demo" / target.name
                if not (target / "train.jsonl").is_file():
                    sample_data(m, target)
        return target
    raw = str(data).strip() if isinstance(data, str) else data
    if "\x00" in str(raw):
        raise DataError(f"{str(data)!r} is not a usable path (it contains a NUL character)")
    p = Path(raw).expanduser()
    try:
        exists = p.exists()
    except (OSError, ValueError) as e:  # e.g. embedded NUL, name too long
        raise DataError(f"{str(data)!r} is not a usable path ({e})") from None
    if not exists:
        parent_hint = ""
        if p.suffix == "" and p.with_suffix(".jsonl").is_file():
            parent_hint = f" (did you mean {p.with_suffix('.jsonl')}?)"
        raise DataError(
            f"dataset not found: {p}{parent_hint}. Give a folder holding train.jsonl and "
            "valid.jsonl, a single .jsonl file, or 'demo'."
        )
    if p.is_dir():
        if (p / "train.jsonl").is_file():
            return p
        if (p / "train.jsonl").exists():
            raise DataError(f"{p / 'train.jsonl'} is not a regular file")
        try:
            present = sorted(x.name for x in p.iterdir() if x.is_file())
        except OSError as e:
            raise DataError(f"cannot read the folder {p}: {e}") from None
        jsonl = [n for n in present if n.endswith(".jsonl")]
        if jsonl:
            hint = (
                f" It holds {', '.join(jsonl[:5])}: rename the training file to train.jsonl, "
                f"or run split_dataset on {jsonl[0]} to make train.jsonl and valid.jsonl."
            )
        elif any(n in ("train.json", "train.csv", "train.parquet") for n in present):
            hint = " It holds train in another format: convert it to JSON Lines (one JSON object per line) named train.jsonl."
        elif present:
            hint = f" It holds {', '.join(present[:5])}{'...' if len(present) > 5 else ''}."
        else:
            hint = " The folder is empty."
        raise DataError(f"{p} has no train.jsonl.{hint}")
    if p.is_file():
        if p.suffix.lower() != ".jsonl":
            extra = ""
            if p.suffix.lower() == ".json":
                extra = " A .json file holding one array must become one object per line (JSON Lines)."
            raise DataError(
                f"{p.name} is not a .jsonl file: datasets are JSON Lines files (.jsonl), one JSON "
                f"object per line.{extra}"
            )
        return p
    raise DataError(f"{p} is neither a file nor a folder")


# --------------------------------------------------------------------------- reading lines


def _iter_raw_lines(fh, max_line_bytes: int) -> Iterator[tuple[int, bytes | None, int]]:
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


def _kind(v: Any) -> str:
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


def _decode_line(raw: bytes, lineno: int) -> tuple[str | None, str | None, bool]:
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


def _parse_json(text: str) -> tuple[Any, str | None]:
    try:
        return json.loads(text), None
    except json.JSONDecodeError as e:
        return None, f"is not valid JSON ({e.msg} at column {e.colno})"
    except RecursionError:
        return None, "is not usable JSON (nested too deeply)"
    except ValueError as e:  # e.g. a number with more digits than Python will convert
        return None, f"is not usable JSON ({e})"


def _not_object_message(value: Any) -> str:
    example = '{"prompt": "...", "completion": "..."}'
    return f"is {_kind(value)}, not a JSON object; each line must be one object like {example}"


def _read_numbered(
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
        for lineno, raw, size in _iter_raw_lines(fh, max_line_bytes):
            if limit is not None and len(rows) >= limit:
                break
            if raw is None:
                problems.append(Problem(name, lineno, f"is {human_bytes(size)} long, over the {human_bytes(max_line_bytes)} limit for one row"))
                continue
            text, err, blank = _decode_line(raw, lineno)
            if blank:
                continue
            if err:
                problems.append(Problem(name, lineno, err))
                continue
            value, err = _parse_json(text)
            if err:
                problems.append(Problem(name, lineno, err))
            elif not isinstance(value, dict):
                problems.append(Problem(name, lineno, _not_object_message(value)))
            else:
                rows.append((lineno, value))
    return rows, problems


def _raise_problems(path: Path, problems: list[Problem]) -> None:
    shown = "\n".join(f"  {p}" for p in problems[:10])
    more = f"\n  ... and {len(problems) - 10} more." if len(problems) > 10 else ""
    raise DataError(f"{path} has {len(problems)} unreadable line(s):\n{shown}{more}", problems)


def _split_file(path: Path, split: str) -> Path:
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
        p = _split_file(p, "train")
    if not p.exists():
        raise DataError(f"file not found: {p}")
    rows, problems = _read_numbered(p, limit=limit)
    if problems:
        _raise_problems(p, problems)
    return [r for _, r in rows]


# --------------------------------------------------------------------------- row checks


def _bad_str(s: str) -> bool:
    """A string with a lone surrogate (from a JSON escape like \\ud800) breaks tokenizers."""
    try:
        s.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


def _check_string(row: dict, key: str, out: list, *, required_nonempty: bool = False,
                  allow_numbers: bool = False, empty_note: str = "") -> None:
    v = row[key]
    if allow_numbers and isinstance(v, (int, float)) and not isinstance(v, bool):
        if isinstance(v, float) and not math.isfinite(v):
            out.append(("error", f"'{key}' is {v!r}; use a string"))
        return
    if not isinstance(v, str):
        what = "a string (or a number)" if allow_numbers else "a string"
        out.append(("error", f"'{key}' must be {what}, got {_kind(v)}"))
        return
    if _bad_str(v):
        out.append(("error", f"'{key}' contains an invalid character escape (a lone \\ud800-style surrogate); fix the text"))
        return
    if not v.strip():
        if required_nonempty:
            out.append(("error", f"'{key}' is empty{empty_note}"))
        else:
            out.append(("warning", f"'{key}' is empty{empty_note}"))


def _check_messages(msgs: Any, key: str, out: list, *, need_assistant: bool = True,
                    mask_prompt: bool = False) -> None:
    if not isinstance(msgs, list):
        out.append(("error", f"'{key}' must be a list of {{\"role\", \"content\"}} objects, got {_kind(msgs)}"))
        return
    if not msgs:
        out.append(("error", f"'{key}' is an empty list; add at least a user and an assistant message"))
        return
    roles = []
    for i, m in enumerate(msgs, 1):
        if not isinstance(m, dict):
            out.append(("error", f"message {i} in '{key}' is {_kind(m)}, not an object with 'role' and 'content'"))
            continue
        role = m.get("role")
        if "role" not in m:
            out.append(("error", f"message {i} in '{key}' has no 'role' (one of {', '.join(ROLES)})"))
        elif not isinstance(role, str) or role not in ROLES:
            shown = repr(role) if isinstance(role, str) else _kind(role)
            out.append(("error", f"message {i} in '{key}' has role {shown}; use one of {', '.join(ROLES)}"))
        else:
            roles.append(role)
        label = f"message {i} ({role})" if isinstance(role, str) and role in ROLES else f"message {i}"
        has_calls = bool(m.get("tool_calls")) and role == "assistant"
        if "content" not in m:
            if not has_calls:
                out.append(("error", f"{label} in '{key}' has no 'content'"))
        else:
            c = m["content"]
            if c is None and has_calls:
                pass
            elif not isinstance(c, str):
                out.append(("error", f"{label} in '{key}': 'content' must be a string, got {_kind(c)}"))
            elif _bad_str(c):
                out.append(("error", f"{label} in '{key}': 'content' contains an invalid character escape (a lone surrogate)"))
    if need_assistant and "assistant" not in roles and len(roles) == len(msgs):
        out.append(("error", f"'{key}' has no assistant message, so there is nothing to learn; add the reply the model should give"))
    if mask_prompt and roles and len(roles) == len(msgs) and roles[-1] != "assistant":
        out.append(("error", f"with prompt masking the last message in '{key}' must be the assistant's reply (it is '{roles[-1]}')"))


def _check_tools(row: dict, out: list) -> None:
    if "tools" in row and row["tools"] is not None and not isinstance(row["tools"], list):
        out.append(("error", f"'tools' must be a list of tool definitions, got {_kind(row['tools'])}"))


def _check_pref_side(row: dict, key: str, method: str, out: list) -> None:
    """dpo/cpo put chosen/rejected straight into a message: strings only. orpo also takes
    {"messages": [...]}, {"content": ...} or a list of messages."""
    v = row[key]
    if isinstance(v, str) or method != "orpo":
        _check_string(row, key, out, empty_note=" (an empty reply teaches little)")
        return
    if isinstance(v, dict):
        if "messages" in v:
            _check_messages(v["messages"], f"{key}.messages", out, need_assistant=False)
        elif "content" in v:
            if not isinstance(v["content"], str):
                out.append(("error", f"'{key}.content' must be a string, got {_kind(v['content'])}"))
        else:
            out.append(("error", f"'{key}' is an object without 'messages' or 'content'"))
    elif isinstance(v, list):
        _check_messages(v, key, out, need_assistant=False)
    else:
        out.append(("error", f"'{key}' must be a string, a list of messages, or an object with 'messages'; got {_kind(v)}"))


def _check_row(row: dict, fmt: str, method: str, f: Features, mask_prompt: bool) -> list[tuple[str, str]]:
    """Value checks for a row already known to have ``fmt``'s keys."""
    out: list[tuple[str, str]] = []
    if fmt == "chat":
        _check_messages(row[f.chat], f.chat, out, mask_prompt=mask_prompt)
        _check_tools(row, out)
    elif fmt == "completions":
        _check_string(row, f.prompt, out)
        _check_string(row, f.completion, out, empty_note=" (nothing to learn from this row)")
        _check_tools(row, out)
    elif fmt == "text":
        if mask_prompt:
            out.append(("error", "prompt masking is not supported for text rows (there is no prompt); turn mask_prompt off or use prompt/completion rows"))
        _check_string(row, f.text, out, required_nonempty=True, empty_note=" (the trainer cannot use an empty text)")
    elif fmt == "grpo":
        _check_string(row, f.prompt, out, empty_note=" (GRPO needs a question to generate answers for)")
        _check_string(row, f.answer, out, allow_numbers=True,
                      empty_note=" (the reward functions compare generations against it)")
        a = row[f.answer]
        if isinstance(a, float) and math.isfinite(a):
            out.append(("warning", f"'{f.answer}' is the number {a!r}, which the trainer turns into "
                        f"the text {str(a)!r}; rewards compare text exactly, so write it as a string"))
        if f.system in row:
            _check_string(row, f.system, out)
    elif fmt == "preference":
        if f.prompt in row:
            _check_string(row, f.prompt, out)
        elif method == "orpo":
            if "question" in row:
                _check_string(row, "question", out)
            else:
                out.append(("warning", f"no '{f.prompt}' (nor 'question'): ORPO will use an empty prompt"))
        _check_pref_side(row, f.chosen, method, out)
        _check_pref_side(row, f.rejected, method, out)
        if f.system in row:
            _check_string(row, f.system, out)
        if isinstance(row.get(f.chosen), str) and row.get(f.chosen) == row.get(f.rejected):
            out.append(("warning", f"'{f.chosen}' and '{f.rejected}' are identical, so this pair teaches nothing"))
        if method == "orpo" and f.preference_score in row:
            s = row[f.preference_score]
            if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s):
                out.append(("error", f"'{f.preference_score}' must be a number, got {_kind(s)}"))
    return out


def _missing_message(row: dict, fmt: str, method: str, f: Features) -> str:
    req = _required(fmt, f, method)
    missing = [k for k in req if k not in row]
    why = {
        "completions": "a prompt/completion row needs both",
        "grpo": "a GRPO row needs the prompt and the answer the rewards check against",
        "preference": "a preference row needs prompt, chosen and rejected",
        "chat": "a chat row keeps its conversation there",
        "text": "a text row keeps its text there",
    }[fmt]
    keys = " and ".join(f"'{k}'" for k in missing)
    msg = f"missing key{'s' if len(missing) > 1 else ''} {keys} ({why})"
    hints = []
    for k in missing:
        canon = {f.completion: "completion", f.prompt: "prompt", f.chat: "chat", f.text: "text",
                 f.answer: "answer", f.chosen: "chosen", f.rejected: "rejected"}.get(k)
        for syn in _SYNONYMS.get(canon or "", ()):
            if syn in row and syn not in req:
                hints.append(f"found '{syn}': rename it to '{k}' or set {canon}_feature='{syn}'")
                break
    if hints:
        msg += "; " + "; ".join(hints)
    return msg


def _closest_format(row: dict, method: str, f: Features) -> str | None:
    best, best_score = None, 0
    for fmt in METHOD_FORMATS[method]:
        req = _required(fmt, f, method)
        score = sum(k in row for k in req) / len(req)
        if score > best_score:
            best, best_score = fmt, score
    return best


def _foreign_format(row: dict, method: str, f: Features) -> str | None:
    for fmt in _formats_in_order(None):
        if fmt in METHOD_FORMATS[method]:
            continue
        if all(k in row for k in _required(fmt, f)):
            return fmt
    return None


def _no_keys_message(row: dict, method: str, f: Features) -> str:
    expected = []
    for fmt in METHOD_FORMATS[method]:
        keys = " + ".join(f"'{k}'" for k in _required(fmt, f, method))
        expected.append(f"{keys} ({FORMAT_LABELS[fmt]})")
    found = ", ".join(f"'{k}'" for k in list(row)[:8]) or "no keys at all"
    if len(row) > 8:
        found += ", ..."
    msg = f"has none of the keys {method} reads: expected {' or '.join(expected)}; found {found}"
    for canon, syns in _SYNONYMS.items():
        for syn in syns:
            if syn in row:
                target = {"chat": f.chat, "text": f.text, "prompt": f.prompt, "completion": f.completion,
                          "answer": f.answer, "chosen": f.chosen, "rejected": f.rejected}[canon]
                if any(target in _required(fmt, f, method) for fmt in METHOD_FORMATS[method]):
                    return msg + f" (rename '{syn}' to '{target}'?)"
    return msg


# --------------------------------------------------------------------------- validation


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
            for lineno, raw, nbytes in _iter_raw_lines(fh, max_line_bytes):
                if raw is None:
                    rows += 1
                    col.add(name, lineno, f"is {human_bytes(nbytes)} long, over the {human_bytes(max_line_bytes)} limit for one row; split or shorten it")
                    continue
                text, err, blank = _decode_line(raw, lineno)
                if blank:
                    blank_lines.append(lineno)
                    continue
                rows += 1
                if err:
                    col.add(name, lineno, err)
                    continue
                value, err = _parse_json(text)
                if err:
                    col.add(name, lineno, err)
                    continue
                if not isinstance(value, dict):
                    col.add(name, lineno, _not_object_message(value))
                    continue
                row = value
                if file_fmt is not None and all(k in row for k in _required(file_fmt, f, method)):
                    fmt = file_fmt
                else:
                    fmt = detect_format(row, method, f)
                    if fmt is None:
                        other = _foreign_format(row, method, f)
                        if other is not None:
                            if foreign != other:
                                foreign = other
                                col.add(name, lineno, (
                                    f"this is a {FORMAT_LABELS[other]} row, but {method} trains on "
                                    f"{_accepted_text(method)}. Use this data with {_family_hint(other)}, "
                                    f"or convert it (e.g. {FORMAT_EXAMPLES[METHOD_FORMATS[method][0]]})"
                                ))
                            continue
                        closest = _closest_format(row, method, f) if file_fmt is None else file_fmt
                        if closest is None:
                            col.add(name, lineno, _no_keys_message(row, method, f))
                        else:
                            col.add(name, lineno, _missing_message(row, closest, method, f))
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
                for level, msg in _check_row(row, fmt, method, f, mask_prompt):
                    col.add(name, lineno, msg, level)
                allowed = allowed_cache.get(fmt)
                if allowed is None:
                    allowed = set(_required(fmt, f, method)) | set(_optional(fmt, f, method))
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


# --------------------------------------------------------------------------- rendering


def _render_plain(messages: list[dict]) -> str:
    """What a chat looks like without a tokenizer: one 'role: content' block per message."""
    parts = []
    for msg in messages:
        if isinstance(msg, dict):
            parts.append(f"{msg.get('role', '?')}: {msg.get('content', '')}")
    return "\n".join(parts)


def _template(tokenizer, messages, **kw) -> str:
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, **kw)
    except Exception as e:  # jinja errors, a missing chat_template, role order rules
        raise DataError(
            f"the model's chat template could not render this row ({type(e).__name__}: {e}); "
            "chat, prompt/completion, GRPO and preference data need a tokenizer with a chat "
            "template that accepts these roles"
        ) from None


def _encode(tokenizer, text: str, special: bool) -> list[int]:
    try:
        return list(tokenizer.encode(text, add_special_tokens=special))
    except TypeError:  # a tokenizer whose encode takes no add_special_tokens
        return list(tokenizer.encode(text))


def _eos_id(tokenizer):
    return getattr(tokenizer, "eos_token_id", None)


def _orpo_side_messages(row: dict, key: str, f: Features) -> tuple[list[dict], list[dict]]:
    """(prompt messages, full messages) exactly as mlx-lm-lora's ORPODataset builds them."""
    prompt = row.get(f.prompt, row.get("question", ""))
    v = row[key]
    if f.system in row:
        base = [{"role": "system", "content": row[f.system]}, {"role": "user", "content": prompt}]
        full = list(base)
        if isinstance(v, str):
            full.append({"role": "assistant", "content": v})
        elif isinstance(v, dict):
            if "messages" in v:
                full.extend(v["messages"])
            else:
                full.append({"role": "assistant", "content": v.get("content", "")})
        elif isinstance(v, list):
            full.extend(v)
        return base, full
    if isinstance(v, dict):
        if "messages" in v and v["messages"]:
            last = v["messages"][-1]
            content = last.get("content", "") if isinstance(last, dict) else ""
        else:
            content = v.get("content", "")
    elif isinstance(v, list) and v:
        last = v[-1]
        content = last.get("content", "") if isinstance(last, dict) else (last if isinstance(last, str) else "")
    else:
        content = v if isinstance(v, str) else ""
    base = [{"role": "user", "content": prompt}]
    return base, base + [{"role": "assistant", "content": content}]


def _render_row(row: dict, fmt: str, method: str, f: Features, tokenizer, mask_prompt: bool) -> dict:
    """Text and token counts for one row, built the way the trainer builds them."""
    out: dict[str, Any] = {}
    tok = tokenizer
    if fmt in ("chat", "completions"):
        if fmt == "chat":
            messages = row[f.chat]
        else:
            messages = [{"role": "user", "content": row[f.prompt]},
                        {"role": "assistant", "content": row[f.completion]}]
        tools = row.get("tools")
        if tok is None:
            out["text"] = _render_plain(messages)
            return out
        text = _template(tok, messages, tools=tools)
        ids = _encode(tok, text, special=False)
        out.update(text=text, tokens=len(ids))
        # mlx-lm's prompt offset: everything before the last message (+ generation prompt)
        prompt_text = _template(tok, messages[:-1], tools=tools,
                                add_generation_prompt=messages[-1].get("role") == "assistant")
        out["prompt_tokens"] = len(_encode(tok, prompt_text, special=False))
        out["trained_tokens"] = len(ids) - (out["prompt_tokens"] if mask_prompt else 0)
        return out
    if fmt == "text":
        text = row[f.text]
        out["text"] = text
        if tok is not None:
            ids = _encode(tok, text, special=True)
            eos = _eos_id(tok)
            if eos is not None and (not ids or ids[-1] != eos):
                ids.append(eos)
            out.update(tokens=len(ids), prompt_tokens=0, trained_tokens=len(ids))
        return out
    if fmt == "grpo":
        system = row.get(f.system, GRPO_DEFAULT_SYSTEM)
        messages = [{"role": "system", "content": system},
                    {"role": "user", "content": str(row[f.prompt])}]
        out["answer"] = str(row[f.answer])
        if tok is None:
            out["text"] = _render_plain(messages)
            return out
        text = _template(tok, messages, add_generation_prompt=True)
        n = len(_encode(tok, text, special=False))
        out.update(text=text, tokens=n, prompt_tokens=n,
                   answer_tokens=len(_encode(tok, out["answer"], special=True)))
        return out
    if fmt == "preference":
        sides = {}
        for side in ("chosen", "rejected"):
            key = getattr(f, side)
            if method == "orpo":
                base, full = _orpo_side_messages(row, key, f)
            else:
                base = ([{"role": "system", "content": row[f.system]}] if f.system in row else [])
                base.append({"role": "user", "content": row[f.prompt]})
                full = base + [{"role": "assistant", "content": row[key]}]
            sides[side] = (base, full)
        base = sides["chosen"][0]
        if tok is None:
            out["text"] = _render_plain(base)
            out["chosen_text"] = _render_plain(sides["chosen"][1][len(base):])
            out["rejected_text"] = _render_plain(sides["rejected"][1][len(base):])
            return out
        for side, (_, full) in sides.items():
            t = _template(tok, full, add_generation_prompt=False)
            out[f"{side}_text"] = t
            out[f"{side}_tokens"] = len(_encode(tok, t, special=False))
        prompt_text = _template(tok, base, add_generation_prompt=True)
        out["text"] = out["chosen_text"]
        out["prompt_tokens"] = len(_encode(tok, prompt_text, special=False))
        out["tokens"] = max(out["chosen_tokens"], out["rejected_tokens"])
        return out
    raise KeyError(fmt)


def _rows_for(data, split: str, limit: int | None, method: str | None = None) -> tuple[Path, list[tuple[int, dict]]]:
    root = resolve_dataset(data, method=method)
    path = _split_file(root, split)
    rows, problems = _read_numbered(path, limit=limit)
    if problems:
        _raise_problems(path, problems)
    return path, rows


def preview(
    data: str | os.PathLike,
    tokenizer=None,
    n: int = 5,
    method: str = "sft",
    *,
    split: str = "train",
    features: Features | Mapping | None = None,
    mask_prompt: bool = False,
) -> list[dict]:
    """The first ``n`` rows as the model will see them.

    Each item: ``line``, ``format``, ``text`` (the rendered prompt/conversation), ``tokens``
    (None without a tokenizer), ``prompt_tokens`` (tokens before the reply), ``row`` (the
    raw object) and, per format, ``answer`` (GRPO) or ``chosen_text``/``rejected_text`` and
    their token counts (preference). A row the method cannot use has an ``error`` instead.
    """
    m = normalize_method(method)
    f = Features.coerce(features)
    _, rows = _rows_for(data, split, max(0, int(n)), m)
    items = []
    for lineno, row in rows:
        fmt = detect_format(row, m, f)
        item: dict[str, Any] = {"line": lineno, "split": split, "format": fmt, "row": row,
                                "text": None, "tokens": None, "prompt_tokens": None}
        problems = _check_row(row, fmt, m, f, mask_prompt) if fmt else []
        errors = [msg for level, msg in problems if level == "error"]
        if fmt is None:
            other = _foreign_format(row, m, f)
            item["error"] = (f"a {FORMAT_LABELS[other]} row; {m} trains on {_accepted_text(m)}" if other
                             else _no_keys_message(row, m, f))
        elif errors:
            item["error"] = "; ".join(errors)
        else:
            item.update(_render_row(row, fmt, m, f, tokenizer, mask_prompt))
        items.append(item)
    return items


def _percentile(sorted_vals: list[int], q: float) -> float:
    if not sorted_vals:
        return 0.0
    k = (len(sorted_vals) - 1) * q / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    if lo == hi:
        return float(sorted_vals[lo])
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (k - lo)


def token_stats(
    data: str | os.PathLike,
    tokenizer,
    split: str = "train",
    limit: int = 2000,
    max_seq_length: int | None = None,
    *,
    method: str = "sft",
    features: Features | Mapping | None = None,
) -> dict:
    """Token-length statistics of the first ``limit`` rows of a split.

    Length is what the trainer feeds the model: the whole conversation for sft, the prompt
    for GRPO (completions are generated), the longer of chosen/rejected for preference data.
    ``over_max`` counts rows longer than ``max_seq_length`` (the trainer truncates those).
    Rows the method cannot use are counted in ``skipped``.
    """
    if tokenizer is None:
        raise DataError("token statistics need a tokenizer (load the model first)")
    m = normalize_method(method)
    f = Features.coerce(features)
    _, rows = _rows_for(data, split, max(0, int(limit)) + 1, m)
    sampled = len(rows) > limit
    rows = rows[:limit]
    lengths: list[int] = []
    skipped = 0
    for _, row in rows:
        fmt = detect_format(row, m, f)
        if fmt is None or any(level == "error" for level, _ in _check_row(row, fmt, m, f, False)):
            skipped += 1
            continue
        lengths.append(int(_render_row(row, fmt, m, f, tokenizer, False)["tokens"]))
    s = sorted(lengths)
    stats = {
        "split": split,
        "count": len(lengths),
        "min": s[0] if s else 0,
        "max": s[-1] if s else 0,
        "mean": (sum(s) / len(s)) if s else 0.0,
        "p50": _percentile(s, 50),
        "p95": _percentile(s, 95),
        "total": sum(s),
        "lengths": lengths,
        "skipped": skipped,
        "sampled": sampled,  # True when the split has more rows than ``limit``
        "max_seq_length": max_seq_length,
        "over_max": sum(1 for x in s if max_seq_length and x > max_seq_length),
    }
    return stats


# --------------------------------------------------------------------------- writing


def _atomic_write_lines(path: Path, rows: list[dict]) -> None:
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


def split_dataset(
    src: str | os.PathLike,
    out_dir: str | os.PathLike,
    valid_fraction: float = 0.1,
    test_fraction: float = 0.0,
    seed: int = 0,
    *,
    method: str | None = None,
    overwrite: bool = False,
) -> DatasetReport:
    """One .jsonl file (or a folder's train.jsonl) -> a folder with train/valid[/test].jsonl.

    Rows are shuffled with ``seed`` and keep their original order inside each split; blank
    lines are dropped and every row is re-written as clean UTF-8 JSON. At least one row goes
    to each requested split. Existing split files in ``out_dir`` are only replaced when
    ``overwrite`` is set or the file is ``src`` itself (splitting a train.jsonl in place).
    Returns the validation report of the result (for ``method``, else one that fits the data).
    """
    if not (0.0 <= valid_fraction < 1.0) or not (0.0 <= test_fraction < 1.0):
        raise DataError("valid_fraction and test_fraction must be between 0 and 1")
    if valid_fraction + test_fraction >= 1.0:
        raise DataError("valid_fraction + test_fraction must leave some rows for training (sum < 1)")
    src_p = Path(src).expanduser()
    if not src_p.exists():
        raise DataError(f"file not found: {src_p}")
    if src_p.is_dir():
        src_p = _split_file(src_p, "train")
    if src_p.suffix.lower() != ".jsonl":
        raise DataError(f"{src_p.name} is not a .jsonl file (one JSON object per line)")
    rows = load_rows(src_p)
    n = len(rows)
    n_valid = max(1, round(n * valid_fraction)) if valid_fraction > 0 else 0
    n_test = max(1, round(n * test_fraction)) if test_fraction > 0 else 0
    if n - n_valid - n_test < 1:
        raise DataError(
            f"{src_p.name} has {n} row{'s' if n != 1 else ''}: too few to split into "
            f"{'train, valid and test' if n_test else 'train and valid'}; add rows"
        )
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise DataError(f"{out} exists and is not a folder")
    if not overwrite:
        clash = [s for s in SPLITS if (out / f"{s}.jsonl").exists()
                 and (out / f"{s}.jsonl").resolve() != src_p.resolve()]
        if clash:
            raise DataError(
                f"{out} already holds {', '.join(c + '.jsonl' for c in clash)}; pick an empty "
                "folder or pass overwrite=True"
            )
    order = list(range(n))
    random.Random(seed).shuffle(order)
    valid_idx = sorted(order[:n_valid])
    test_idx = sorted(order[n_valid:n_valid + n_test])
    train_idx = sorted(order[n_valid + n_test:])
    _atomic_write_lines(out / "train.jsonl", [rows[i] for i in train_idx])
    if n_valid:
        _atomic_write_lines(out / "valid.jsonl", [rows[i] for i in valid_idx])
    if n_test:
        _atomic_write_lines(out / "test.jsonl", [rows[i] for i in test_idx])
    elif (out / "test.jsonl").exists() and (out / "test.jsonl").resolve() != src_p.resolve():
        os.unlink(out / "test.jsonl")  # a stale test split from an earlier run would mislead
    if method is None:
        fmt = detect_format(rows[train_idx[0]])
        method = methods_for_format(fmt)[0] if fmt else "sft"
    return validate_dataset(out, method=method)


# --------------------------------------------------------------------------- sample data

_WORDS = (
    "apple", "river", "garden", "planet", "candle", "window", "forest", "silver", "rocket",
    "pencil", "bridge", "castle", "dragon", "guitar", "harbor", "island", "jungle", "kitten",
    "lemon", "mirror", "orange", "pepper", "rabbit", "sunset", "tomato", "violet", "winter",
    "yellow", "button", "cookie", "desert", "engine", "flower", "helmet", "basket", "marble",
)
_SFT_SYSTEM = "You are a concise, helpful assistant."


def _task(rng: random.Random) -> dict:
    """One small task with a checkable answer, a good reply and a plausible bad one."""
    kind = rng.choice(("add", "sub", "mul", "reverse", "count", "upper", "length"))
    if kind in ("add", "sub", "mul"):
        a, b = rng.randint(2, 60), rng.randint(2, 30)
        if kind == "sub" and b > a:
            a, b = b, a
        op, val = {"add": ("+", a + b), "sub": ("-", a - b), "mul": ("*", a * b)}[kind]
        wrong = val + rng.choice((-3, -2, -1, 1, 2, 3, 10))
        return {"q": f"What is {a} {op} {b}?", "a": str(val),
                "good": f"{a} {op} {b} = {val}.", "bad": f"{a} {op} {b} = {wrong}.", "type": "math"}
    word = rng.choice(_WORDS)
    if kind == "reverse":
        return {"q": f"Spell the word '{word}' backwards.", "a": word[::-1],
                "good": f"'{word}' backwards is '{word[::-1]}'.", "bad": f"'{word}' backwards is '{word}'.",
                "type": "word"}
    if kind == "count":
        letter = rng.choice(sorted(set(word)))
        c = word.count(letter)
        return {"q": f"How many times does the letter '{letter}' appear in '{word}'?", "a": str(c),
                "good": f"The letter '{letter}' appears {c} time{'s' if c != 1 else ''} in '{word}'.",
                "bad": f"The letter '{letter}' appears {c + 1} times in '{word}'.", "type": "word"}
    if kind == "upper":
        return {"q": f"Write '{word}' in capital letters.", "a": word.upper(),
                "good": word.upper(), "bad": "I would rather not.", "type": "word"}
    return {"q": f"How many letters are in the word '{word}'?", "a": str(len(word)),
            "good": f"'{word}' has {len(word)} letters.", "bad": f"'{word}' has {len(word) + 2} letters.",
            "type": "word"}


def _unique_tasks(rng: random.Random, count: int) -> list[dict]:
    seen, tasks = set(), []
    attempts = 0
    while len(tasks) < count:
        t = _task(rng)
        attempts += 1
        if t["q"] in seen and attempts < count * 50:
            continue  # unique questions keep valid/test free of training rows
        seen.add(t["q"])
        tasks.append(t)
    return tasks


def _sample_row(t: dict, fmt: str) -> dict:
    if fmt == "chat":
        return {"messages": [
            {"role": "system", "content": _SFT_SYSTEM},
            {"role": "user", "content": t["q"]},
            {"role": "assistant", "content": t["good"]},
        ]}
    if fmt == "grpo":
        return {"prompt": t["q"], "answer": t["a"], "type": t["type"]}
    if fmt == "preference":
        return {"prompt": t["q"], "chosen": t["good"], "rejected": t["bad"]}
    raise KeyError(fmt)


def sample_data(method: str, out_dir: str | os.PathLike, n_train: int = 40, n_valid: int = 8,
                seed: int = 0) -> Path:
    """Write a small, valid, deterministic train/valid/test set for ``method``.

    sft gets chat rows, the GRPO family prompt/answer rows (answers are exact strings, as
    the reward functions compare them), dpo/orpo/cpo prompt/chosen/rejected rows. Tasks are
    simple arithmetic and word puzzles; no question repeats across splits. The test split
    has ``n_valid`` rows.
    """
    m = normalize_method(method)
    if n_train < 1 or n_valid < 1:
        raise DataError("sample data needs at least one train row and one valid row")
    fmt = METHOD_FORMATS[m][0]
    rng = random.Random(f"droidft-sample-{seed}")
    tasks = _unique_tasks(rng, n_train + 2 * n_valid)
    out = Path(out_dir).expanduser()
    parts = {"train": tasks[:n_train], "valid": tasks[n_train:n_train + n_valid],
             "test": tasks[n_train + n_valid:]}
    for split, ts in parts.items():
        _atomic_write_lines(out / f"{split}.jsonl", [_sample_row(t, fmt) for t in ts])
    return out


# --------------------------------------------------------------------------- uploads

_WINDOWS_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)),
                     *(f"lpt{i}" for i in range(1, 10))}


def safe_filename(name: Any, default: str = "upload") -> str:
    """A harmless file name for an uploaded file: no folders, no traversal, no odd chars.

    "../../etc/passwd" -> "passwd"; "my data (1).jsonl" -> "my_data_1.jsonl";
    "données.jsonl" -> "donnees.jsonl". Never empty, never hidden (no leading dot), never a
    Windows device name, at most 128 characters with the extension kept.
    """
    s = "" if name is None else str(name)
    s = s.replace("\x00", "")
    s = re.split(r"[\\/]", s)[-1]  # the last path component, for / and \ alike
    s = unicodedata.normalize("NFKD", s).encode("ascii", "ignore").decode("ascii")
    stem, dot, ext = s.rpartition(".")
    if not dot or not re.fullmatch(r"[A-Za-z0-9]{1,16}", ext):
        stem, ext = s, ""

    def clean(part: str) -> str:
        part = re.sub(r"[^A-Za-z0-9._-]+", "_", part)
        part = re.sub(r"\.{2,}", ".", part)
        return re.sub(r"_+", "_", part).strip("._- ")

    stem, ext = clean(stem), ext.lower() if ext.lower() in ("jsonl", "json", "csv", "txt") else ext
    if not stem:
        stem = default
    if stem.split(".")[0].lower() in _WINDOWS_RESERVED:
        stem = "_" + stem
    room = 128 - (len(ext) + 1 if ext else 0)
    stem = stem[:room].rstrip("._-") or default
    return f"{stem}.{ext}" if ext else stem
