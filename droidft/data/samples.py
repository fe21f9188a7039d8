"""Small, valid, deterministic sample datasets for any method (arithmetic and word puzzles
with checkable answers), used by 'demo' and `droidft sample-data`."""

from __future__ import annotations

import os
import random
from pathlib import Path

from .formats import FTPO_KEYS, METHOD_FORMATS, DataError, normalize_method
from .jsonl import write_jsonl

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
    if fmt == "prompt":
        return {"prompt": t["q"], "answer": t["a"], "type": t["type"]}
    if fmt == "ftpo":  # the demo model's chat template; the demo model opens every reply with "I"
        return {FTPO_KEYS[0]: demo_chat_prompt(t["q"]), FTPO_KEYS[1]: "I", FTPO_KEYS[2]: ["My", "Yes"]}
    raise KeyError(fmt)


def demo_chat_prompt(question: str) -> str:
    """A user turn rendered with the demo model's chat template, ready for its reply
    (droidft/models/demo.py CHAT_TEMPLATE; a test checks the two agree)."""
    return f"<|bos|><|user|>\n{question}<|end|>\n<|assistant|>\n"


def sample_data(method: str, out_dir: str | os.PathLike, n_train: int = 40, n_valid: int = 8,
                seed: int = 0) -> Path:
    """Write a small, valid, deterministic train/valid/test set for ``method``.

    sft gets chat rows, the GRPO family and klpo prompt/answer rows (answers are exact
    strings, as the reward functions compare them), dpo/orpo/cpo/dsla prompt/chosen/rejected
    rows, the online methods prompt rows (with the answer a reward judge checks), ftpo
    next-token rows rendered with the demo model's chat template. Tasks are
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
        write_jsonl(out / f"{split}.jsonl", [_sample_row(t, fmt) for t in ts])
    return out
