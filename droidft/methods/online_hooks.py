"""How droidft hooks into mlx-lm-lora's online trainers (online_dpo, xpo, ppo, rlhf_reinforce).

Those trainers build their judge inside every step from module-level classes, pass the
judged pairs to module-level helpers, and report through the `TrainingCallback`. droidft
swaps in, for the length of a run (`online.run_online`):

- the judge classes (`LLMPairwiseJudge`, `HumanPairwiseJudge`, `LLMPPOJudge`) -> classes
  that ask a `droidft.judges` judge through a `JudgeSession`, which also writes each judged
  pair to the samples table and counts for the metrics;
- `_preference_microbatches` / `_rlhf_value_and_grad` -> the same, minus the pairs the judge
  skipped (a tie, a person who did not answer); every value of the step goes to a
  `StepMeter`, because the trainers' own per-report averages are wrong: online_dpo and xpo
  never reset their metric sums between reports (the second report averages two reports'
  sums over one report's steps), and none reports the chosen/rejected rewards it computes;
- the `evaluate_*` functions -> the same, with the validation rewards (online_dpo, xpo,
  ppo) or metrics (rlhf_reinforce) put back on their scale: the trainers divide a sum of
  per-batch means by the token count instead of the batch count.

`GatedOptimizer` keeps a step whose pairs were all skipped from moving the weights (Adam
would still move them on its momentum).
"""

from __future__ import annotations

import math
from typing import Callable

from ..judges import Pair, StopWaiting, Verdict
from ..reporting import RunContext


class StepMeter:
    """Per-step values (floats or MLX scalars) averaged over the steps since the last take."""

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.steps = 0

    def add(self, values: dict) -> None:
        for key, value in values.items():
            try:
                value = float(value.item() if hasattr(value, "item") else value)
            except (TypeError, ValueError):
                continue
            self.sums[key] = self.sums.get(key, 0.0) + value
        self.steps += 1

    def take(self) -> dict[str, float]:
        out = {k: v / self.steps for k, v in self.sums.items()} if self.steps else {}
        self.sums, self.steps = {}, 0
        return out


class GatedOptimizer:
    """The run's optimizer, except that an update over only skipped pairs does nothing."""

    def __init__(self, optimizer):
        object.__setattr__(self, "_inner", optimizer)
        self.pending = 0  # pairs (or completions) trained since the last update

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def update(self, model, gradients):
        if self.pending:
            self._inner.update(model, gradients)
        self.pending = 0


class JudgeSession:
    """What the trainers' judge classes call during a run."""

    def __init__(self, ctx: RunContext, judge, eval_judge, rows: dict[str, dict],
                 samples_per_step: int, record_all: bool = False):
        self.ctx, self.judge, self.eval_judge = ctx, judge, eval_judge
        self.rows = rows  # chat-templated prompt text -> data row
        self.samples_per_step = samples_per_step
        self.record_all = record_all  # write every judged pair (a person judged them)
        self.skipped: list[int] = []  # pairs of the current training step to leave out
        self.in_eval, self.eval_batches, self.eval_scores = False, 0, []
        self.counts = StepMeter()

    def pairs(self, prompt_texts: list[str], completions: list[list[str]]) -> list[Pair]:
        out = []
        for text, (first, second) in zip(prompt_texts, completions):
            row = self.rows.get(text) or {}
            prompt = row.get("prompt", text)
            if isinstance(prompt, list):  # chat messages: the last user turn
                prompt = next((m.get("content", "") for m in reversed(prompt) if m.get("role") == "user"), text)
            answer = row.get("answer")
            out.append(Pair(str(prompt), first, second, None if answer is None else str(answer), row.get("type")))
        return out

    def verdicts(self, prompt_texts, completions) -> list[Verdict]:
        pairs = self.pairs(prompt_texts, completions)
        if self.in_eval:
            self.eval_batches += 1
            verdicts = self.eval_judge.compare(pairs)
            if getattr(self.eval_judge, "name", "") == "reward":
                self.eval_scores += [s for v in verdicts for s in v.scores]
            return verdicts
        try:
            verdicts = self.judge.compare(pairs)
        except StopWaiting:
            from .rl_training import StopTraining

            raise StopTraining(int(self.ctx.state.get("step", 0))) from None
        self.skipped = [i for i, v in enumerate(verdicts) if v.preferred is None]
        self._record(pairs, verdicts)
        return verdicts

    def pairwise(self, prompt_texts, completions) -> list[int]:
        """0/1 per pair for the pairwise trainers; a skipped pair is left out of training
        (`skipped`), and in validation a tie counts for the first."""
        return [v.preferred or 0 for v in self.verdicts(prompt_texts, completions)]

    def scores(self, prompt_texts, completions) -> list[list[float]]:
        """[score a, score b] per pair for rlhf_reinforce; NaN = skipped (left out of training)."""
        return [list(v.scores) if v.preferred is not None or self.in_eval else [math.nan, math.nan]
                for v in self.verdicts(prompt_texts, completions)]

    def _record(self, pairs: list[Pair], verdicts: list[Verdict]) -> None:
        step = int(self.ctx.state.get("step", 0)) + 1 + self.ctx.step_offset
        judged = [v for v in verdicts if v.preferred is not None]
        values = {"pairs_judged": len(judged), "pairs_skipped": len(verdicts) - len(judged),
                  "judge_fallbacks": sum("(fallback)" in v.judge for v in verdicts)}
        if getattr(self.judge, "name", "") == "reward" and verdicts:
            values["judge_reward_mean"] = sum(s for v in verdicts for s in v.scores) / (2 * len(verdicts))
        if getattr(self.judge, "name", "") == "human":
            values["human_judged"] = sum(v.judge == "human" and v.preferred is not None for v in verdicts)
        self.counts.add(values)
        limit = len(pairs) if self.record_all else min(self.samples_per_step, len(pairs))
        for k, (pair, verdict) in enumerate(list(zip(pairs, verdicts))[:limit]):
            for side, text in enumerate((pair.first, pair.second)):
                outcome = "skipped" if verdict.preferred is None else (
                    "chosen" if verdict.preferred == side else "rejected")
                score = verdict.scores[side]
                self.ctx.writer.sample(step, pair.prompt, text, None if math.isnan(score) else score,
                                       {"pair": k, "side": "AB"[side], "verdict": outcome,
                                        "judge": verdict.judge, "answer": pair.answer})

    def begin_eval(self) -> None:
        self.in_eval, self.eval_batches, self.eval_scores = True, 0, []

    def end_eval(self) -> int:
        self.in_eval = False
        return self.eval_batches


def judge_classes(session: JudgeSession) -> tuple[type, type]:
    """(pairwise, scoring) judge classes with mlx-lm-lora's constructor and `judge` method."""

    class Pairwise:
        def __init__(self, *args, **kwargs):
            pass

        def judge(self, prompts, completions, shuffle_order=True):
            return session.pairwise(prompts, completions)

    class Scoring(Pairwise):
        def judge(self, prompts, completions, shuffle_order=True):
            return session.scores(prompts, completions)

    return Pairwise, Scoring


def _zero(grads):
    import mlx.core as mx
    from mlx.utils import tree_map

    return tree_map(mx.zeros_like, grads)


def preference_microbatches(original: Callable, session: JudgeSession, meter: StepMeter,
                            gate: GatedOptimizer) -> Callable:
    """`_preference_microbatches` without the skipped pairs (see module doc)."""

    def wrapped(loss_value_and_grad, model, chosen, rejected, micro_batch_size, loss_kwargs, *,
                with_grad=True):
        skip, session.skipped = set(session.skipped), []
        keep = [i for i in range(len(chosen)) if i not in skip]
        if not keep:  # nothing to learn from: a zero gradient, and no update (gate)
            result, grads = original(loss_value_and_grad, model, chosen[:1], rejected[:1],
                                     micro_batch_size, loss_kwargs, with_grad=True)
            return result, _zero(grads)
        out = original(loss_value_and_grad, model, [chosen[i] for i in keep], [rejected[i] for i in keep],
                       micro_batch_size, loss_kwargs, with_grad=with_grad)
        loss, reward, _, metrics = out[0] if with_grad else out
        meter.add({"loss": loss, "chosen_reward": reward[0], "rejected_reward": reward[1], **metrics})
        gate.pending += len(keep)
        return out

    return wrapped


def rlhf_value_and_grad(original: Callable, meter: StepMeter, gate: GatedOptimizer) -> Callable:
    """`_rlhf_value_and_grad` without the completions whose reward is NaN (skipped)."""

    def wrapped(loss_value_and_grad, model, sequences, rewards, micro_batch_size):
        import mlx.core as mx

        keep = [i for i, r in enumerate(rewards.tolist()) if not math.isnan(r)]
        if not keep:
            result, grads = original(loss_value_and_grad, model, sequences[:1], mx.zeros((1,)), micro_batch_size)
            return result, _zero(grads)
        if len(keep) < len(sequences):
            sequences, rewards = [sequences[i] for i in keep], rewards[mx.array(keep)]
        (loss, tokens, metrics), grads = original(loss_value_and_grad, model, sequences, rewards, micro_batch_size)
        meter.add({"loss": loss, **metrics})
        gate.pending += len(keep)
        return (loss, tokens, metrics), grads

    return wrapped


def evaluation(original: Callable, session: JudgeSession, rescale: str) -> Callable:
    """An `evaluate_*` whose rewards (`rescale="rewards"`) or metrics (`"metrics"`) are
    averaged over batches, as the trainer meant, instead of divided by the token count."""

    def evaluate(*args, **kwargs):
        session.begin_eval()
        try:
            loss, rewards, ntokens, metrics = original(*args, **kwargs)
        finally:
            batches = session.end_eval()
        factor = float(ntokens) / max(batches, 1)
        if rescale == "metrics":
            metrics = {k: v * factor for k, v in metrics.items()}
        else:
            rewards = [r * factor for r in rewards]
        if session.eval_scores:  # the reward judge's mean score of the validation samples
            metrics = {**metrics, "judge_reward_mean": sum(session.eval_scores) / len(session.eval_scores)}
        return loss, rewards, ntokens, metrics

    return evaluate
