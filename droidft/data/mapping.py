"""Column mapping: rows of a public dataset's schema -> rows of one of droidft's formats.

A :class:`ColumnMap` says which source columns feed which droidft field (``prompt``,
``completion``, ``messages``, ...). Several columns feeding one field are joined with a blank
line (Alpaca's ``instruction`` + ``input`` become one prompt). Common schemas are recognised
by their column names so most imports need no mapping at all:

    schema           columns                                 formats it can become
    messages         messages (role/content)                 chat
    sharegpt         conversations (from/value)              chat
    preference       prompt / chosen / rejected              preference, completions, chat
    alpaca           instruction / input / output            completions, chat, grpo
    dolly            instruction / context / response        completions, chat, grpo
    qa               question / answer                       completions, chat, grpo
    prompt_response  prompt / response                       completions, chat, grpo
    grpo             prompt / answer                         grpo, completions, chat
    completions      prompt / completion                     completions, chat, grpo
    text             text (only when nothing else matches)   text

The first format listed is the schema's own; a training method picks another where it fits.
No Streamlit and no I/O here: the import module reads the rows, this one maps them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .formats import FORMAT_LABELS, FORMATS, METHOD_FORMATS, DataError, Problem, normalize_method

# droidft's row fields, in the order a person reads them.
FIELDS = ("system", "prompt", "messages", "completion", "answer", "chosen", "rejected", "text", "type",
          "tools")
REQUIRED = {"chat": ("messages",), "completions": ("prompt", "completion"), "text": ("text",),
            "grpo": ("prompt", "answer"), "preference": ("prompt", "chosen", "rejected")}
OPTIONAL = {"chat": ("system", "tools"), "completions": ("tools",), "text": (),
            "grpo": ("system", "type"), "preference": ("system",)}
FIELD_ALIASES = {"chat": "messages", "conversations": "messages", "output": "completion",
                 "response": "completion", "question": "prompt", "instruction": "prompt"}

# ShareGPT's "from" values (and a few other datasets' role names) -> chat roles.
ROLE_ALIASES = {
    "system": "system", "user": "user", "human": "user", "prompter": "user",
    "assistant": "assistant", "gpt": "assistant", "model": "assistant", "bot": "assistant",
    "chatgpt": "assistant", "bard": "assistant", "tool": "tool", "function": "tool",
    "observation": "tool", "ipython": "tool", "function_response": "tool",
}
MESSAGE_KEYS = ("role", "content", "tool_calls", "tool_call_id", "name")


@dataclass(frozen=True)
class Schema:
    """A well-known dataset layout: the columns that identify it and what it maps to."""

    name: str
    label: str
    needs: tuple[str, ...]
    maps: dict[str, dict[str, tuple[str, ...]]]  # format -> field -> columns (lower-case names)

    @property
    def formats(self) -> tuple[str, ...]:
        return tuple(self.maps)


def _qa_maps(prompt: tuple[str, ...], reply: str, system: tuple[str, ...] = ("system",)):
    return {"completions": {"prompt": prompt, "completion": (reply,)},
            "chat": {"system": system, "prompt": prompt, "completion": (reply,)},
            "grpo": {"system": system, "prompt": prompt, "answer": (reply,)}}


SCHEMAS = (
    Schema("messages", "messages (role/content)", ("messages",),
           {"chat": {"system": ("system",), "messages": ("messages",), "tools": ("tools",)}}),
    Schema("sharegpt", "ShareGPT (conversations with from/value)", ("conversations",),
           {"chat": {"system": ("system",), "messages": ("conversations",), "tools": ("tools",)}}),
    Schema("preference", "prompt/chosen/rejected", ("prompt", "chosen", "rejected"),
           {"preference": {"system": ("system",), "prompt": ("prompt",), "chosen": ("chosen",),
                           "rejected": ("rejected",)},
            "completions": {"prompt": ("prompt",), "completion": ("chosen",)},
            "chat": {"system": ("system",), "prompt": ("prompt",), "completion": ("chosen",)}}),
    Schema("alpaca", "Alpaca (instruction/input/output)", ("instruction", "output"),
           _qa_maps(("instruction", "input"), "output")),
    Schema("dolly", "Dolly (instruction/context/response)", ("instruction", "response"),
           _qa_maps(("instruction", "context"), "response")),
    Schema("qa", "question/answer", ("question", "answer"), _qa_maps(("question",), "answer")),
    Schema("prompt_response", "prompt/response", ("prompt", "response"), _qa_maps(("prompt",), "response")),
    Schema("grpo", "prompt/answer", ("prompt", "answer"),
           {"grpo": {"system": ("system",), "prompt": ("prompt",), "answer": ("answer",), "type": ("type",)},
            "completions": {"prompt": ("prompt",), "completion": ("answer",)},
            "chat": {"system": ("system",), "prompt": ("prompt",), "completion": ("answer",)}}),
    Schema("completions", "prompt/completion", ("prompt", "completion"),
           {"completions": {"prompt": ("prompt",), "completion": ("completion",), "tools": ("tools",)},
            "chat": {"system": ("system",), "prompt": ("prompt",), "completion": ("completion",)},
            "grpo": {"system": ("system",), "prompt": ("prompt",), "answer": ("completion",)}}),
    Schema("text", "text", ("text",), {"text": {"text": ("text",)}}),
)
SCHEMA_LABELS = {s.name: s.label for s in SCHEMAS}


@dataclass(frozen=True)
class ColumnMap:
    """Which source columns feed which droidft field, and the format the rows become."""

    format: str
    fields: dict[str, tuple[str, ...]] = field(default_factory=dict)
    schema: str | None = None  # the recognised schema, None when mapped by hand

    def to_dict(self) -> dict:
        return {"format": self.format, "schema": self.schema,
                "fields": {k: list(v) for k, v in self.fields.items()}}

    def describe(self) -> str:
        """'instruction + input -> prompt, output -> completion'."""
        return ", ".join(f"{' + '.join(cols)} -> {name}" for name, cols in self.fields.items())

    def check(self, columns: list[str]) -> None:
        """Raise DataError unless every mapped column exists and the format's fields are fed."""
        if self.format not in FORMATS:
            raise DataError(f"unknown format {self.format!r}; choose one of: {', '.join(FORMATS)}")
        missing = [c for cols in self.fields.values() for c in cols if c not in columns]
        if missing:
            raise DataError(f"no column {', '.join(repr(c) for c in missing)} in the data; its columns are "
                            f"{_column_list(columns)}")
        allowed = set(REQUIRED[self.format]) | set(OPTIONAL[self.format])
        if self.format == "chat":
            allowed |= {"prompt", "completion"}
        extra = [f for f in self.fields if f not in allowed]
        if extra:
            raise DataError(f"{FORMAT_LABELS[self.format]} rows have no field {', '.join(repr(f) for f in extra)}; "
                            f"map columns to {', '.join(sorted(allowed))}")
        needed = REQUIRED[self.format]
        if self.format == "chat" and "messages" not in self.fields:
            needed = ("prompt", "completion")
        lacking = [f for f in needed if not self.fields.get(f)]
        if lacking:
            raise DataError(f"{FORMAT_LABELS[self.format]} rows need {' and '.join(repr(f) for f in lacking)}: "
                            f"map a column to {'it' if len(lacking) == 1 else 'them'} with COLUMN={lacking[0]}")


def _column_list(columns: list[str], limit: int = 12) -> str:
    shown = ", ".join(repr(c) for c in columns[:limit]) or "none"
    return shown + (f" and {len(columns) - limit} more" if len(columns) > limit else "")


def format_for(method: str | None, fmt: str | None) -> str | None:
    """The target format from an explicit format or a training method (None: let the data say)."""
    if fmt:
        if fmt not in FORMATS:
            raise DataError(f"unknown format {fmt!r}; choose one of: {', '.join(FORMATS)}")
        if method and fmt not in METHOD_FORMATS[normalize_method(method)]:
            raise DataError(f"{normalize_method(method)} does not train on {FORMAT_LABELS[fmt]} rows")
        return fmt
    if method:
        formats = METHOD_FORMATS[normalize_method(method)]
        return formats[0] if len(formats) == 1 else None
    return None


def _lookup(columns: list[str]) -> dict[str, str]:
    """lower-case name -> the column's real name (the first one, if two differ only in case)."""
    out: dict[str, str] = {}
    for c in columns:
        out.setdefault(str(c).lower(), c)
    return out


def _schema_map(schema: Schema, fmt: str, columns: list[str]) -> ColumnMap:
    real = _lookup(columns)
    fields = {}
    for name, cols in schema.maps[fmt].items():
        present = tuple(real[c] for c in cols if c in real)
        if present:
            fields[name] = present
    return ColumnMap(fmt, fields, schema.name)


def matching_schemas(columns: list[str]) -> list[Schema]:
    """The schemas whose identifying columns are all present (case does not matter). A bare
    ``text`` column counts only when nothing more specific matches: Alpaca's own files carry a
    pre-rendered ``text`` beside instruction/input/output."""
    have = set(_lookup(columns))
    found = [s for s in SCHEMAS if all(c in have for c in s.needs)]
    specific = [s for s in found if s.name != "text"]
    return specific or found


def auto_map(columns: list[str], fmt: str | None = None, method: str | None = None) -> ColumnMap:
    """The mapping for recognised columns, or DataError saying what to map by hand.

    With a target format (or a method that trains on one format) the schemas that can produce
    it are considered; otherwise the schemas' own formats, which must agree.
    """
    target = format_for(method, fmt)
    found = matching_schemas(columns)
    allowed = METHOD_FORMATS[normalize_method(method)] if method else FORMATS
    if target:
        found = [s for s in found if target in s.formats]
    else:
        found = [s for s in found if any(f in allowed for f in s.formats)]
    if not found:
        hint = f" for {FORMAT_LABELS[target]} rows" if target else ""
        raise DataError(f"no known schema{hint} in the columns {_column_list(columns)}; map them by hand, "
                        f"e.g. --map {columns[0] if columns else 'COLUMN'}=prompt (fields: {', '.join(FIELDS)})")
    if target is None:
        own = {next(f for f in s.formats if f in allowed) for s in found}
        if len(own) > 1:
            raise DataError("the columns fit several formats: " + " or ".join(
                f"{FORMAT_LABELS[f]}" for f in sorted(own)) + "; choose one (--format or --method)")
        target = own.pop()
    maps = [_schema_map(s, target, columns) for s in found]
    distinct = {tuple(sorted(m.fields.items())) for m in maps}
    if len(distinct) > 1:
        raise DataError(f"the columns match several schemas ({', '.join(SCHEMA_LABELS[s.name] for s in found)}) "
                        f"that fill {FORMAT_LABELS[target]} rows differently; say which column is which with --map")
    maps[0].check(columns)
    return maps[0]


def parse_map(pairs: list[str], columns: list[str], fmt: str | None = None,
              method: str | None = None) -> ColumnMap:
    """``["instruction=prompt", "input=prompt", "output=completion"]`` -> a ColumnMap.

    The format is the one asked for, else the one the mapped fields imply (``answer`` means
    GRPO rows, ``chosen``/``rejected`` preference rows, ``messages`` chat, ``text`` text).
    """
    fields: dict[str, list[str]] = {}
    for pair in pairs:
        column, sep, name = str(pair).rpartition("=")
        column, name = column.strip(), FIELD_ALIASES.get(name.strip().lower(), name.strip().lower())
        if not sep or not column or not name:
            raise DataError(f"--map needs COLUMN=FIELD, got {pair!r}")
        if name not in FIELDS:
            raise DataError(f"unknown field {name!r} in --map {pair}; fields: {', '.join(FIELDS)}")
        fields.setdefault(name, []).append(column)
    target = format_for(method, fmt)
    if target is None:
        implied = ("preference" if "chosen" in fields or "rejected" in fields else "grpo" if "answer" in fields
                   else "chat" if "messages" in fields else "text" if "text" in fields else "completions")
        allowed = METHOD_FORMATS[normalize_method(method)] if method else FORMATS
        target = implied if implied in allowed else allowed[0]
    cmap = ColumnMap(target, {k: tuple(v) for k, v in fields.items()})
    cmap.check(columns)
    return cmap


# --------------------------------------------------------------------------- mapping rows


class RowError(ValueError):
    """A source row that cannot become a droidft row; the message names the column."""


def _messages_in(value: Any) -> list | None:
    """A list of message dicts, or None (a JSON string holding one counts, as CSV cells do)."""
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    if isinstance(value, list) and value and all(isinstance(m, dict) for m in value):
        return value
    return None


def _last(messages: list, role: str) -> str | None:
    for m in reversed(messages):
        if ROLE_ALIASES.get(str(m.get("role", m.get("from", ""))).lower()) == role:
            content = m.get("content", m.get("value"))
            return content if isinstance(content, str) else None
    return None


def _text(value: Any, column: str, name: str) -> str | None:
    """One cell as text: strings as they are, numbers as digits, a conversation as its last
    user turn (for a prompt) or assistant turn (for a reply). None for a missing value."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        if value != value or value in (float("inf"), float("-inf")):
            raise RowError(f"column '{column}' is {value!r}, not text")
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        raise RowError(f"column '{column}' holds binary data, not text")
    messages = _messages_in(value)
    if messages is not None:
        role = {"prompt": "user", "system": "system"}.get(name, "assistant")
        text = _last(messages, role)
        if text is None:
            raise RowError(f"column '{column}' is a conversation without a {role} message to use as the {name}")
        return text
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    kind = "a list" if isinstance(value, list) else "an object" if isinstance(value, dict) else type(value).__name__
    raise RowError(f"column '{column}' is {kind}, not text")


def _join(row: dict, columns: tuple[str, ...], name: str) -> str | None:
    parts = [_text(row.get(c), c, name) for c in columns]
    if all(p is None for p in parts):
        return None
    return "\n\n".join(p for p in parts if p and p.strip()) if len(parts) > 1 else parts[0] or ""


def _messages(value: Any, column: str) -> list[dict]:
    """role/content or ShareGPT from/value turns -> [{"role", "content"}, ...]."""
    messages = _messages_in(value)
    if messages is None:
        if value is None or value == []:
            raise RowError(f"column '{column}' is empty; a chat row needs a conversation")
        raise RowError(f"column '{column}' must be a list of messages (role/content or from/value)")
    out = []
    for i, m in enumerate(messages, 1):
        raw_role = m.get("role", m.get("from"))
        role = ROLE_ALIASES.get(str(raw_role).lower()) if isinstance(raw_role, str) else None
        if role is None:
            raise RowError(f"message {i} in '{column}' has {'role' if 'role' in m else 'from'} {raw_role!r}; "
                           f"known: {', '.join(sorted(ROLE_ALIASES))}")
        content = m.get("content", m.get("value"))
        msg = {"role": role, "content": content}
        msg.update({k: m[k] for k in MESSAGE_KEYS[2:] if m.get(k) is not None})
        if content is None and "tool_calls" not in msg:
            raise RowError(f"message {i} in '{column}' has no content")
        out.append(msg)
    return out


def _tools(value: Any, column: str) -> list | None:
    if value is None or isinstance(value, list):
        return value or None
    if isinstance(value, str):
        try:
            tools = json.loads(value) if value.strip() else None
        except ValueError:
            raise RowError(f"column '{column}' is not a JSON list of tools") from None
        if tools is None or isinstance(tools, list):
            return tools or None
    raise RowError(f"column '{column}' must be a list of tool definitions")


def map_row(row: dict, cmap: ColumnMap) -> dict:
    """One source row as a droidft row of ``cmap.format``; RowError when it cannot be."""
    f = cmap.fields
    out: dict[str, Any] = {}
    system = _join(row, f["system"], "system") if f.get("system") else None
    if cmap.format == "chat":
        if f.get("messages"):
            messages = _messages(row.get(f["messages"][0]), f["messages"][0])
        else:
            messages = [{"role": "user", "content": _required(row, f, "prompt")},
                        {"role": "assistant", "content": _required(row, f, "completion")}]
        if system and messages[0]["role"] != "system":
            messages.insert(0, {"role": "system", "content": system})
        out["messages"] = messages
    else:
        for name in REQUIRED[cmap.format]:
            out[name] = _required(row, f, name)
        if system and "system" in OPTIONAL[cmap.format]:
            out["system"] = system
        if f.get("type"):
            kind = _join(row, f["type"], "type")
            if kind:
                out["type"] = kind
    if f.get("tools") and cmap.format in ("chat", "completions"):
        tools = _tools(row.get(f["tools"][0]), f["tools"][0])
        if tools:
            out["tools"] = tools
    return out


def _required(row: dict, fields: dict, name: str) -> str:
    value = _join(row, fields[name], name)
    if value is None:
        cols = " and ".join(f"'{c}'" for c in fields[name])
        raise RowError(f"{cols} {'is' if len(fields[name]) == 1 else 'are'} empty (null), so the row has no {name}")
    return value


def map_rows(rows: list[dict], cmap: ColumnMap, label: str) -> tuple[list[tuple[int, dict]], list[Problem]]:
    """(row number, droidft row) for every row that maps, and a numbered Problem for each that
    does not. Row numbers count from 1 in the source's order."""
    mapped, problems = [], []
    for number, row in enumerate(rows, 1):
        try:
            mapped.append((number, map_row(row, cmap)))
        except RowError as exc:
            problems.append(RowProblem(label, number, str(exc)))
    return mapped, problems


@dataclass
class RowProblem(Problem):
    """A Problem numbered by row (a record of the source) rather than by line of a file."""

    def __str__(self) -> str:
        where = f"{self.file} row {self.line}" if self.line is not None else self.file
        return f"{where}: {self.message}" if where else self.message
