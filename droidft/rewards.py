"""Reward functions for the GRPO family, chosen by name with weights.

Three sources, one signature (mlx-lm-lora's: `f(prompts, completions, answer, types=None)`
returning one float per completion, or None where a reward does not apply):

- mlx-lm-lora's built-ins (`r1_accuracy_reward_func`, `r1_int_reward_func`,
  `r1_strict_format_reward_func`, `r1_soft_format_reward_func`, `r1_count_xml`, and anything
  else in its registry);
- droidft's own: `answer_similarity` and `exact_answer`, and `droidft_demo_reward`, the
  partial-credit reward that gives the tiny demo model a learning signal;
- custom functions from a Python file the user points to. Loading that file executes user
  code, so it is refused while the dashboard is shared on a LAN (`DROIDFT_LAN` set) unless
  the owner allows it with `DROIDFT_ALLOW_CUSTOM_CODE=1`. Validation never executes the file:
  it reads the function names with `ast`.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import re
import sys
from pathlib import Path
from typing import Callable

RewardFunction = Callable[..., list]

LAN_REFUSAL = (
    "custom reward functions run arbitrary Python code, so they are refused while droidft is "
    "shared on a LAN (DROIDFT_LAN is set); the owner can allow them by starting droidft with "
    "DROIDFT_ALLOW_CUSTOM_CODE=1, or pick built-in reward functions instead"
)

# mlx-lm-lora's default GRPO rewards (R1-style <think>/<answer> format and exact answers).
MLX_LM_LORA_DEFAULTS = (
    "r1_accuracy_reward_func", "r1_int_reward_func", "r1_strict_format_reward_func",
    "r1_soft_format_reward_func", "r1_count_xml",
)
DEMO_REWARDS = ("droidft_demo_reward",)

DESCRIPTIONS = {
    "r1_accuracy_reward_func": "2.0 when the text inside <answer></answer> equals the answer exactly",
    "r1_int_reward_func": "0.5 when the text inside <answer></answer> is a whole number",
    "r1_strict_format_reward_func": "0.5 for the exact '<think> ... </think> <answer> ... </answer>' layout",
    "r1_soft_format_reward_func": "0.5 for non-empty <think> then <answer> sections in order",
    "r1_count_xml": "up to 0.5 for each R1 tag appearing once, minus text after </answer>",
    "exact_answer": "1.0 when the answer (inside <answer></answer>, else the first line) equals "
                    "the expected answer, ignoring case, spaces and final punctuation",
    "answer_similarity": "0..1 character similarity between the answer and the expected answer",
    "droidft_demo_reward": "partial credit for the demo task (name three items of a category): "
                           "0.4 for a list of three, 0.2 per acceptable item; single answers: "
                           "1.0 exact, else 0.8 x similarity",
}


class RewardError(ValueError):
    """Reward functions that cannot be used; the message says what to do."""


def custom_code_allowed() -> bool:
    """May user-supplied Python (a reward file) run here? (security's rule: the same test of
    LAN mode as everywhere else, so DROIDFT_LAN=0 means local here too)."""
    from .security import custom_code_allowed as allowed

    return allowed()


# -- droidft's own reward functions -----------------------------------------------------

_ANSWER_RE = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.S)


def extract_answer(text: str) -> str:
    """The answer part of a completion: inside <answer>...</answer> if present, else the
    first non-empty line."""
    text = text or ""
    found = _ANSWER_RE.search(text)
    if found:
        return found.group(1).strip()
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def normalize(text: str) -> str:
    return " ".join(str(text).lower().strip().rstrip(".!?").split())


def similarity(a: str, b: str) -> float:
    """Character-level similarity in [0, 1] (difflib's ratio; 1.0 only when equal)."""
    a, b = normalize(a), normalize(b)
    if not a and not b:
        return 1.0
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def exact_answer(prompts, completions, answer, types=None) -> list[float]:
    return [1.0 if normalize(extract_answer(c)) == normalize(a) else 0.0
            for c, a in zip(completions, answer)]


def answer_similarity(prompts, completions, answer, types=None) -> list[float]:
    return [similarity(extract_answer(c), a) for c, a in zip(completions, answer)]


def list_items(text: str) -> list[str]:
    """The items of a one-line list answer: 'apple, fig and kiwi.' -> ['apple', 'fig', 'kiwi']."""
    line = extract_answer(text).rstrip(".!")
    return [w.strip().lower() for w in re.split(r",|\band\b", line) if w.strip()]


def droidft_demo_reward(prompts, completions, answer, types=None) -> list[float]:
    """Partial credit, so a weak model still sees which of its attempts were better.

    The demo task is "Name three fruits." with the acceptable items as the answer, separated
    by "|" ("apple|banana|cherry|..."): up to 0.4 for answering with a list of three items
    (0.2 for two), plus 0.2 for each distinct acceptable item named (at most three), so
    "apple, fig and kiwi." scores 1.0, "apple, car and kiwi." 0.8, "blorp, fim and zad." 0.4
    and "I like tea." 0. An answer without "|" is one expected answer: 1.0 when it matches
    exactly, else 0.8 x character similarity."""
    out = []
    for completion, expected in zip(completions, answer):
        expected = str(expected)
        if "|" not in expected:
            got = extract_answer(completion)
            out.append(1.0 if normalize(got) == normalize(expected) else 0.8 * similarity(got, expected))
            continue
        accepted = {normalize(w) for w in expected.split("|") if w.strip()}
        items = list_items(completion)
        shape = {2: 0.2, 3: 0.4}.get(len(items), 0.0)
        right = len({w for w in items if w in accepted})
        out.append(round(shape + 0.2 * min(right, 3), 6))
    return out


DROIDFT_REWARDS: dict[str, RewardFunction] = {
    "exact_answer": exact_answer,
    "answer_similarity": answer_similarity,
    "droidft_demo_reward": droidft_demo_reward,
}


def _register_with_mlx_lm_lora() -> None:
    """Put droidft's rewards in mlx-lm-lora's registry too, so stock `mlx_lm_lora.train
    --reward-functions-file <this file> --reward-functions droidft_demo_reward` finds them."""
    try:
        from mlx_lm_lora.trainer.grpo_reward_functions import register_reward_function
    except ImportError:
        return
    for name, func in DROIDFT_REWARDS.items():
        register_reward_function(name)(func)


_register_with_mlx_lm_lora()


# -- the registry ------------------------------------------------------------------------


def builtin_rewards() -> dict[str, RewardFunction]:
    """Every reward function available by name without a file: mlx-lm-lora's, then droidft's."""
    from mlx_lm_lora.trainer.grpo_reward_functions import REWARD_REGISTRY

    return {**REWARD_REGISTRY, **DROIDFT_REWARDS}


def available(reward_file: str | None = None) -> list[dict]:
    """Name, source and description of each selectable reward (file names read, not run)."""
    out = [{"name": name, "source": "droidft" if name in DROIDFT_REWARDS else "mlx-lm-lora",
            "description": DESCRIPTIONS.get(name, (func.__doc__ or "").strip().split("\n")[0])}
           for name, func in builtin_rewards().items()]
    if reward_file:
        out += [{"name": name, "source": str(reward_file), "description": "custom"}
                for name in function_names_in_file(reward_file)]
    return out


def function_names_in_file(path: str | Path) -> list[str]:
    """Public top-level function names a reward file defines, read without executing it."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise RewardError(f"reward file not found: {path}")
    if path.suffix != ".py":
        raise RewardError(f"reward file must be a Python file ending in .py (got {path.name})")
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except SyntaxError as exc:
        raise RewardError(f"reward file {path} line {exc.lineno}: syntax error: {exc.msg}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RewardError(f"cannot read reward file {path}: {exc}") from None
    names = [node.name for node in tree.body
             if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_")]
    if not names:
        raise RewardError(f"reward file {path} defines no public functions; define "
                          "`def my_reward(prompts, completions, answer, types=None) -> list[float]`")
    return names


def load_reward_file(path: str | Path) -> dict[str, RewardFunction]:
    """Execute a user's reward file and return its public functions by name.

    Refused in LAN mode unless the owner allowed custom code."""
    if not custom_code_allowed():
        raise RewardError(LAN_REFUSAL)
    names = function_names_in_file(path)
    path = Path(path).expanduser().resolve()
    module_name = f"droidft_custom_rewards_{abs(hash(str(path)))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise RewardError(f"reward file {path} failed to load: {type(exc).__name__}: {exc}") from None
    found = {}
    for name in names:
        func = getattr(module, name, None)
        if callable(func):
            found[name] = _named(func, name)
    return found


def _named(func: RewardFunction, name: str) -> RewardFunction:
    """The trainer names metrics after `__name__`; make it the name the user selected."""
    if getattr(func, "__name__", None) == name:
        return func

    def wrapper(*args, **kwargs):
        return func(*args, **kwargs)

    wrapper.__name__ = name
    return wrapper


def default_names(reward_file: str | None, demo_data: bool) -> list[str]:
    """What an unset `reward_functions` means: every function of the reward file if one is
    given, else the demo reward on the demo task, else mlx-lm-lora's R1 defaults."""
    if reward_file:
        return function_names_in_file(reward_file)
    return list(DEMO_REWARDS if demo_data else MLX_LM_LORA_DEFAULTS)


def problems(names: list[str] | None, weights: list[float] | None, reward_file: str | None,
             demo_data: bool = False) -> list[str]:
    """Validation for a config's reward choice, without executing any user code."""
    out: list[str] = []
    file_names: list[str] = []
    if reward_file is not None:
        if not isinstance(reward_file, str) or not reward_file.strip():
            out.append("reward_file must be the path of a Python file")
            reward_file = None
        elif not custom_code_allowed():
            out.append(LAN_REFUSAL)
            reward_file = None
        else:
            try:
                file_names = function_names_in_file(reward_file)
            except RewardError as exc:
                out.append(str(exc))
                reward_file = None
    if names is not None:
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
            out.append("reward_functions must be a non-empty list of reward function names "
                       f"(built-in: {', '.join(builtin_rewards())})")
            return out
        known = set(builtin_rewards()) | set(file_names)
        unknown = [n for n in names if n not in known]
        if unknown:
            where = f" or the functions of {reward_file}" if file_names else ""
            out.append(f"unknown reward function(s) {', '.join(unknown)}: choose from "
                       f"{', '.join(builtin_rewards())}{where}")
        if len(set(names)) != len(names):
            out.append("reward_functions lists a function twice; give it a larger weight instead")
        count = len(names)
    else:
        count = len(file_names) if file_names else len(DEMO_REWARDS if demo_data else MLX_LM_LORA_DEFAULTS)
    if weights is not None:
        import math

        if not isinstance(weights, list) or not all(
                isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) for w in weights):
            out.append(f"reward_weights must be a list of finite numbers (got {weights!r})")
        elif len(weights) != count:
            shown = names if names is not None else default_names(reward_file, demo_data) if (
                reward_file is None or file_names) else []
            out.append(f"reward_weights has {len(weights)} value(s) but there are {count} reward "
                       f"function(s) ({', '.join(shown)}): give one weight per function")
        elif not any(w != 0 for w in weights):
            out.append("reward_weights are all zero, so every completion would get the same reward")
    return out


def resolve(names: list[str] | None, reward_file: str | None = None,
            demo_data: bool = False) -> list[RewardFunction]:
    """The reward callables a run trains with, in order (loads the reward file if given)."""
    custom = load_reward_file(reward_file) if reward_file else {}
    names = names if names is not None else default_names(reward_file, demo_data)
    table = {**builtin_rewards(), **custom}
    missing = [n for n in names if n not in table]
    if missing:
        raise RewardError(f"unknown reward function(s) {', '.join(missing)}: choose from {', '.join(table)}")
    return [_named(table[n], n) for n in names]

