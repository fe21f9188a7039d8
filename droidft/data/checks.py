"""Value checks of one row of a known format, and the messages for rows that have the wrong
keys (with hints when a common synonym such as 'response' is used instead of 'completion')."""

from __future__ import annotations

import math
from typing import Any

from .formats import (FORMAT_LABELS, FTPO_KEYS, METHOD_FORMATS, ROLES, Features, formats_in_order,
                      required_keys)
from .jsonl import json_kind

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
        out.append(("error", f"'{key}' must be {what}, got {json_kind(v)}"))
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
        out.append(("error", f"'{key}' must be a list of {{\"role\", \"content\"}} objects, got {json_kind(msgs)}"))
        return
    if not msgs:
        out.append(("error", f"'{key}' is an empty list; add at least a user and an assistant message"))
        return
    roles = []
    for i, m in enumerate(msgs, 1):
        if not isinstance(m, dict):
            out.append(("error", f"message {i} in '{key}' is {json_kind(m)}, not an object with 'role' and 'content'"))
            continue
        role = m.get("role")
        if "role" not in m:
            out.append(("error", f"message {i} in '{key}' has no 'role' (one of {', '.join(ROLES)})"))
        elif not isinstance(role, str) or role not in ROLES:
            shown = repr(role) if isinstance(role, str) else json_kind(role)
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
                out.append(("error", f"{label} in '{key}': 'content' must be a string, got {json_kind(c)}"))
            elif _bad_str(c):
                out.append(("error", f"{label} in '{key}': 'content' contains an invalid character escape (a lone surrogate)"))
    if need_assistant and "assistant" not in roles and len(roles) == len(msgs):
        out.append(("error", f"'{key}' has no assistant message, so there is nothing to learn; add the reply the model should give"))
    if mask_prompt and roles and len(roles) == len(msgs) and roles[-1] != "assistant":
        out.append(("error", f"with prompt masking the last message in '{key}' must be the assistant's reply (it is '{roles[-1]}')"))


def _check_tools(row: dict, out: list) -> None:
    if "tools" in row and row["tools"] is not None and not isinstance(row["tools"], list):
        out.append(("error", f"'tools' must be a list of tool definitions, got {json_kind(row['tools'])}"))


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
                out.append(("error", f"'{key}.content' must be a string, got {json_kind(v['content'])}"))
        else:
            out.append(("error", f"'{key}' is an object without 'messages' or 'content'"))
    elif isinstance(v, list):
        _check_messages(v, key, out, need_assistant=False)
    else:
        out.append(("error", f"'{key}' must be a string, a list of messages, or an object with 'messages'; got {json_kind(v)}"))


def check_row(row: dict, fmt: str, method: str, f: Features, mask_prompt: bool) -> list[tuple[str, str]]:
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
                out.append(("error", f"'{f.preference_score}' must be a number, got {json_kind(s)}"))
    elif fmt == "prompt":
        if isinstance(row[f.prompt], list):
            _check_messages(row[f.prompt], f.prompt, out, need_assistant=False)
        else:
            _check_string(row, f.prompt, out, required_nonempty=True,
                          empty_note=" (the model needs something to answer)")
        if f.answer in row:
            _check_string(row, f.answer, out, allow_numbers=True)
    elif fmt == "ftpo":
        _check_string(row, FTPO_KEYS[0], out, required_nonempty=True,
                      empty_note=" (the text before the token to change, chat template applied)")
        _check_string(row, FTPO_KEYS[1], out, required_nonempty=True,
                      empty_note=" (the one next token to move away from)")
        chosen = row[FTPO_KEYS[2]]
        if not isinstance(chosen, list) or not chosen or not all(isinstance(c, str) and c for c in chosen):
            out.append(("error", f"'{FTPO_KEYS[2]}' must be a non-empty list of non-empty strings "
                        f"(the preferred next tokens), got {json_kind(chosen)}"))
        elif row[FTPO_KEYS[1]] in chosen:
            out.append(("warning", f"'{FTPO_KEYS[1]}' is also among the chosen tokens; the trainer drops it there"))
    return out


def missing_message(row: dict, fmt: str, method: str, f: Features) -> str:
    req = required_keys(fmt, f, method)
    missing = [k for k in req if k not in row]
    why = {
        "completions": "a prompt/completion row needs both",
        "grpo": "a GRPO row needs the prompt and the answer the rewards check against",
        "preference": "a preference row needs prompt, chosen and rejected",
        "chat": "a chat row keeps its conversation there",
        "text": "a text row keeps its text there",
        "prompt": "an online row needs the prompt the model answers",
        "ftpo": "an FTPO row needs the context, the rejected next token and the chosen alternatives",
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


def closest_format(row: dict, method: str, f: Features) -> str | None:
    best, best_score = None, 0
    for fmt in METHOD_FORMATS[method]:
        req = required_keys(fmt, f, method)
        score = sum(k in row for k in req) / len(req)
        if score > best_score:
            best, best_score = fmt, score
    return best


def foreign_format(row: dict, method: str, f: Features) -> str | None:
    for fmt in formats_in_order(None):
        if fmt in METHOD_FORMATS[method] or (fmt == "prompt" and any(
                f.prompt in required_keys(other, f, method) for other in METHOD_FORMATS[method])):
            continue  # a row with a prompt but not all its keys: "missing key" says more
        if all(k in row for k in required_keys(fmt, f)):
            return fmt
    return None


def no_keys_message(row: dict, method: str, f: Features) -> str:
    expected = []
    for fmt in METHOD_FORMATS[method]:
        keys = " + ".join(f"'{k}'" for k in required_keys(fmt, f, method))
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
                if any(target in required_keys(fmt, f, method) for fmt in METHOD_FORMATS[method]):
                    return msg + f" (rename '{syn}' to '{target}'?)"
    return msg
