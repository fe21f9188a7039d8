"""Rows as the model will see them: the chat template applied, token counts, and token-length
statistics of a split (preview and token_stats)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .checks import check_row, foreign_format, no_keys_message
from .formats import (FORMAT_LABELS, FTPO_KEYS, GRPO_DEFAULT_SYSTEM, DataError, Features, accepted_text,
                      detect_format, normalize_method)
from .jsonl import raise_problems, read_numbered, split_file
from .resolve import resolve_dataset

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
    if fmt == "prompt":
        prompt = row[f.prompt]
        messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": str(prompt)}]
        if f.answer in row:
            out["answer"] = str(row[f.answer])
        if tok is None:
            out["text"] = _render_plain(messages)
            return out
        text = _template(tok, messages, add_generation_prompt=True)
        n = len(_encode(tok, text, special=False))
        out.update(text=text, tokens=n, prompt_tokens=n)
        return out
    if fmt == "ftpo":
        out.update(text=row[FTPO_KEYS[0]], rejected_text=row[FTPO_KEYS[1]],
                   chosen_text=" | ".join(row[FTPO_KEYS[2]]))
        if tok is not None:
            n = len(_encode(tok, row[FTPO_KEYS[0]], special=True))
            out.update(tokens=n, prompt_tokens=n)
        return out
    raise KeyError(fmt)


def _rows_for(data, split: str, limit: int | None, method: str | None = None) -> tuple[Path, list[tuple[int, dict]]]:
    root = resolve_dataset(data, method=method)
    path = split_file(root, split)
    rows, problems = read_numbered(path, limit=limit)
    if problems:
        raise_problems(path, problems)
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
        problems = check_row(row, fmt, m, f, mask_prompt) if fmt else []
        errors = [msg for level, msg in problems if level == "error"]
        if fmt is None:
            other = foreign_format(row, m, f)
            item["error"] = (f"a {FORMAT_LABELS[other]} row; {m} trains on {accepted_text(m)}" if other
                             else no_keys_message(row, m, f))
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
        if fmt is None or any(level == "error" for level, _ in check_row(row, fmt, m, f, False)):
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
