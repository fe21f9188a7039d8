"""Judges for the online methods (online_dpo, xpo, ppo, rlhf_reinforce): which of two
completions the policy just sampled is better, or how good each one is.

Each judge answers `compare(pairs) -> [Verdict]`; a `Pair` carries the prompt as the user
wrote it, the data row's `answer` (if any) and the two completions:

- `RewardJudge`: droidft's / mlx-lm-lora's reward functions (the ones GRPO uses), weighted;
  a tie is no preference, so the pair is skipped.
- `ModelJudge`: a local model (the base model itself, the demo model, any folder or
  downloaded hub id) read through its next-token probabilities of "0" and "1" after
  mlx-lm-lora's own pairwise judge prompt, asked in both orders and averaged. mlx-lm-lora's
  `LLMPairwiseJudge` instead generates text and accepts only an exact "0" or "1"; anything
  else comes back as -1, which its trainers then count as "the second one won". A small
  model almost never answers with one bare digit, so every pair would be decided by that
  fallback; the probabilities always give an answer, from any model size.
- `HumanJudge`: a person in the browser. The worker writes the pairs to the store
  (`store.add_judgments`) and polls them; the Monitor shows them to whoever `may_judge`;
  at the deadline (or a stop request) the pairs still open go to the run's fallback judge,
  or are skipped. Nothing waits forever.

A skipped pair (`Verdict.preferred is None`) is taken out of the training step by the
method module (droidft/methods/online.py), so it teaches nothing.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

from . import store

JUDGE_KINDS = ("reward", "model", "human")
HUMAN_FALLBACKS = ("skip", "model", "reward")
POLL_SECONDS = 0.5


@dataclass
class Pair:
    prompt: str  # as the user wrote it (the chat-templated text when the row is unknown)
    first: str
    second: str
    answer: str | None = None
    type: str | None = None


@dataclass
class Verdict:
    preferred: int | None  # 0 = first, 1 = second, None = skip this pair
    scores: tuple[float, float]  # on the judge's own scale (rewards, 10 x probability, 1/0)
    judge: str  # who decided: reward, model, human, or "<fallback> (fallback)"


class JudgeError(ValueError):
    """A judge that cannot be used; the message says what to change."""


# -- reward functions --------------------------------------------------------------------


class RewardJudge:
    """Scores each completion with weighted reward functions (signature of mlx-lm-lora's)."""

    name = "reward"

    def __init__(self, reward_funcs: list[Callable], weights: list[float] | None = None):
        self.funcs = list(reward_funcs)
        self.weights = list(weights) if weights else [1.0] * len(self.funcs)
        self.last_scores: list[float] = []

    def score(self, pairs: list[Pair]) -> list[float]:
        texts = [c for p in pairs for c in (p.first, p.second)]
        prompts = [p.prompt for p in pairs for _ in (0, 1)]
        answers = [p.answer or "" for p in pairs for _ in (0, 1)]
        types = [p.type for p in pairs for _ in (0, 1)]
        totals = [0.0] * len(texts)
        for func, weight in zip(self.funcs, self.weights):
            values = func(prompts=prompts, completions=texts, answer=answers, types=types)
            for i, value in enumerate(values or []):
                if value is not None and not (isinstance(value, float) and math.isnan(value)):
                    totals[i] += weight * float(value)
        self.last_scores = totals
        return totals

    def compare(self, pairs: list[Pair]) -> list[Verdict]:
        s = self.score(pairs)
        out = []
        for i in range(len(pairs)):
            a, b = s[2 * i], s[2 * i + 1]
            out.append(Verdict(None if a == b else (0 if a > b else 1), (a, b), self.name))
        return out


# -- a model -------------------------------------------------------------------------------


class ModelJudge:
    """P(first is better) from a model's next-token logits for "0" vs "1" (see module doc)."""

    name = "model"

    def __init__(self, model, tokenizer, system_prompt: str | None = None):
        from mlx_lm_lora.chat_template import ensure_chat_template
        from mlx_lm_lora.trainer.judge import DEFAULT_PAIRWISE_SYSTEM_PROMPT

        ensure_chat_template(tokenizer)
        self.model, self.tokenizer = model, tokenizer
        self.template = system_prompt or DEFAULT_PAIRWISE_SYSTEM_PROMPT
        self.ids = []
        for digit in ("0", "1"):
            ids = tokenizer.encode(digit, add_special_tokens=False)
            if not ids:
                raise JudgeError(f"the judge model's tokenizer has no token for {digit!r}")
            self.ids.append(ids[-1])
        if self.ids[0] == self.ids[1]:
            raise JudgeError("the judge model's tokenizer cannot tell '0' from '1'")

    def prob_first(self, prompt: str, first: str, second: str) -> float:
        import mlx.core as mx

        content = self.template.format(prompt=prompt, response0=first, response1=second)
        text = self.tokenizer.apply_chat_template([{"role": "user", "content": content}],
                                                  tokenize=False, add_generation_prompt=True)
        tokens = self.tokenizer.encode(text, add_special_tokens=False)
        logits = self.model(mx.array([tokens]))[0, -1]
        pair = logits[mx.array(self.ids)].astype(mx.float32)
        return float(mx.softmax(pair).tolist()[0])

    def compare(self, pairs: list[Pair]) -> list[Verdict]:
        out = []
        for p in pairs:
            # both orders: a small model's position bias cancels out
            prob = 0.5 * (self.prob_first(p.prompt, p.first, p.second)
                          + 1.0 - self.prob_first(p.prompt, p.second, p.first))
            preferred = None if prob == 0.5 else (0 if prob > 0.5 else 1)
            out.append(Verdict(preferred, (10 * prob, 10 * (1 - prob)), self.name))
        return out


# -- a person --------------------------------------------------------------------------------


def may_judge(role: str | None, run_config: dict | None) -> bool:
    """May a dashboard visitor with `role` judge this run's pairs? Locally anyone (the owner);
    on a LAN the owner, and viewers only if the run's config says `viewers_may_judge`."""
    from .security import lan_mode

    if not lan_mode() or role == "owner":
        return True
    return role == "viewer" and bool((run_config or {}).get("viewers_may_judge"))


def submit(judgment_id: str, choice: int | None, role: str | None, run_config: dict | None,
           who: str = "") -> bool:
    """A visitor's choice for a pair (0 = A, 1 = B, None = cannot tell), checked against the
    visitor's role here, whatever the page showed. False if the pair was no longer open."""
    from .security import AccessDenied

    if not may_judge(role, run_config):
        raise AccessDenied("Only the owner can judge this run's pairs (the owner can let viewers "
                           "judge with viewers_may_judge).")
    if choice not in (0, 1, None):
        raise ValueError("choice must be 0 (A), 1 (B) or None (cannot tell)")
    return store.decide_judgment(judgment_id, choice, by=(role or "owner") + (f" · {who}" if who else ""))


class StopWaiting(Exception):
    """The run was asked to stop while a person was judging."""


class HumanJudge:
    """Pairs go to the store; a person decides in the Monitor; the rest go to `fallback`
    (None = skip) once `timeout` seconds have passed or the run stops."""

    name = "human"

    def __init__(self, run_id: str, timeout: float, fallback=None,
                 should_stop: Callable[[], bool] = lambda: False, step: Callable[[], int] = lambda: 0,
                 log: Callable[[str], None] = print):
        self.run_id, self.timeout, self.fallback = run_id, float(timeout), fallback
        self.should_stop, self.step, self.log = should_stop, step, log
        self.waited_s = 0.0
        self.decided = self.timed_out = 0

    def compare(self, pairs: list[Pair]) -> list[Verdict]:
        started = time.time()
        ids = store.add_judgments(self.run_id, self.step(),
                                  [(p.prompt, p.first, p.second) for p in pairs], started + self.timeout)
        self.log(f"waiting up to {self.timeout:g} s for a person to judge {len(pairs)} pair(s) "
                 "in the Monitor")
        rows = self._wait(ids, started)
        self.waited_s += time.time() - started
        verdicts: list[Verdict | None] = []
        undecided = []
        for i, row in enumerate(rows):
            if row["status"] == "decided":
                choice = int(row["choice"])
                verdicts.append(Verdict(choice, (1.0 - choice, float(choice)), self.name))
                self.decided += 1
            else:
                verdicts.append(None)
                undecided.append(i)
        if undecided:
            self.timed_out += sum(rows[i]["status"] == "expired" for i in undecided)
            rest = self.fallback.compare([pairs[i] for i in undecided]) if self.fallback else \
                [Verdict(None, (math.nan, math.nan), "human") for _ in undecided]
            for i, verdict in zip(undecided, rest):
                if self.fallback:
                    verdict.judge = f"{verdict.judge} (fallback)"
                verdicts[i] = verdict
            self.log(f"{len(undecided)} pair(s) not judged by a person: "
                     + ("decided by the fallback judge" if self.fallback else "skipped"))
        return verdicts  # type: ignore[return-value]

    def _wait(self, ids: list[str], started: float) -> list[dict]:
        while True:
            try:
                rows = {r["id"]: r for r in store.judgments(ids=ids)}
            except store.StoreBusy:
                rows = {}
            if rows and all(r["status"] != "pending" for r in rows.values()):
                return [rows[i] for i in ids]
            if self.should_stop():
                store.close_judgments(ids, "cancelled")
                raise StopWaiting()
            if time.time() >= started + self.timeout:
                store.close_judgments(ids, "expired")
                return [{**r} for r in store.judgments(ids=ids)]
            time.sleep(POLL_SECONDS)


def open_pairs(run_id: str) -> list[dict]:
    """The pairs of a run waiting for a person, oldest first (for the Monitor)."""
    now = time.time()
    return [r for r in store.judgments(run_id=run_id, status="pending") if r["deadline"] > now]
