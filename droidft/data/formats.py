"""Dataset formats: which row shapes exist, which methods train on which, and how a row's
format is detected (by key presence, in the loaders' own precedence order).

The key names are configurable (the ``*_feature`` options of mlx-lm and mlx-lm-lora); see
:class:`Features`. DataError and Problem are the errors every part of ``droidft.data`` reports.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

FORMATS = ("chat", "completions", "text", "grpo", "preference", "prompt", "ftpo")

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
    "dsla": ("preference",),
    "klpo": ("grpo",),
    "online_dpo": ("prompt",),
    "xpo": ("prompt",),
    "ppo": ("prompt",),
    "rlhf_reinforce": ("prompt",),
    "ftpo": ("ftpo",),
}
FTPO_KEYS = ("context_with_chat_template", "rejected_decoded", "multi_chosen_decoded")
# data/demo/<folder> holds the demo set of each format the RL methods read
DEMO_FOLDERS = {"grpo": "grpo", "preference": "preference", "prompt": "online", "ftpo": "ftpo"}

FORMAT_LABELS = {
    "chat": "chat (messages)",
    "completions": "prompt/completion",
    "text": "text",
    "grpo": "prompt/answer (GRPO)",
    "preference": "prompt/chosen/rejected (preference)",
    "prompt": "prompt only (online: the model writes the answers)",
    "ftpo": "context/rejected/chosen next token (FTPO)",
}

# One valid line per format, for help texts and upload pages.
FORMAT_EXAMPLES = {
    "chat": '{"messages": [{"role": "user", "content": "Hi"}, '
    '{"role": "assistant", "content": "Hello!"}]}',
    "completions": '{"prompt": "What is 2 + 2?", "completion": "4"}',
    "text": '{"text": "Any plain text to continue-train on."}',
    "grpo": '{"prompt": "What is 2 + 2?", "answer": "4"}',
    "preference": '{"prompt": "What is 2 + 2?", "chosen": "4", "rejected": "5"}',
    "prompt": '{"prompt": "Name three fruits.", "answer": "apple|fig|kiwi"}',
    "ftpo": '{"context_with_chat_template": "<|user|>\\nHi<|end|>\\n<|assistant|>\\n", '
            '"rejected_decoded": "I", "multi_chosen_decoded": ["My", "Yes"]}',
}

ROLES = ("system", "user", "assistant", "tool")
SPLITS = ("train", "valid", "test")

# mlx-lm-lora's GRPODataset uses this system prompt when a row has no "system" key.
GRPO_DEFAULT_SYSTEM = (
    "You are given a problem. Think about the problem and provide your working out. "
    "Place it between <think> and </think>. Then, provide your solution between "
    "<answer> </answer>."
)


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


def accepted_text(method: str) -> str:
    labels = [FORMAT_LABELS[f] for f in METHOD_FORMATS[method]]
    if len(labels) == 1:
        return f"{labels[0]} rows"
    return ", ".join(labels[:-1]) + f" or {labels[-1]} rows"


def required_keys(fmt: str, f: Features, method: str | None = None) -> tuple[str, ...]:
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
    if fmt == "prompt":
        return (f.prompt,)
    if fmt == "ftpo":
        return FTPO_KEYS
    raise KeyError(fmt)


def optional_keys(fmt: str, f: Features, method: str | None = None) -> tuple[str, ...]:
    if fmt in ("chat", "completions"):
        return ("tools",)
    if fmt == "grpo":
        return (f.system, f.type)
    if fmt == "preference":
        if method == "orpo":
            return (f.prompt, "question", f.system, f.preference_score)
        return (f.system,)
    if fmt == "prompt":
        return (f.answer, f.type)
    return ()


def formats_in_order(method: str | None) -> tuple[str, ...]:
    """The loaders' own precedence: prompt+completion beats messages beats text."""
    if method is None:
        return ("completions", "chat", "text", "preference", "grpo", "ftpo", "prompt")
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
    for fmt in formats_in_order(m):
        if all(k in row for k in required_keys(fmt, f, m)):
            return fmt
    return None
