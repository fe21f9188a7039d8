"""The GRPO family through mlx-lm-lora's GRPO trainer: GRPO, Dr.GRPO, BNPO, GSPO, DAPO-style.

Each is a registered method with its own validated config; they differ in the loss
normalisation (`grpo_loss_type`: grpo per sequence, bnpo per token, dr_grpo by a constant),
the importance-sampling level (GSPO: sequence) and defaults (DAPO-style: clip-higher with
`epsilon_high`, token-level loss, no KL term).

`mlx_lm_lora.trainer.grpo_trainer.train_grpo` runs in-process. It hands the training-report
metrics to our `TrainingCallback`; what it only prints or keeps local is caught at the
narrowest point instead of parsing text:
- `evaluate_grpo` is wrapped so validation reward/KL/length metrics are stored too;
- `_rollout_rewards` and each reward function are wrapped so the completions of the latest
  step, with each function's reward, land in the `samples` table at every report;
- the batch iterator is wrapped so a stop request ends training between two steps.
The model is never fused: the run's output is the adapter (or full weights), as with SFT.

What the other mlx-lm-lora methods share with GRPO (`RLTrainingConfig`, model and adapter
setup, the reference model, the optimizer, the store callback, the stop handling and
`train_with_store`) lives in rl_training.py; klpo.py also reuses the rollout recorder and
the datasets below.

Metric names (as stored): `train_loss`, `train_total_rewards_mean|std`,
`train_grouped_rewards_mean|std`, `train_<reward>_mean|std|coverage` for each reward
function, `train_kl`, `train_kl_clip_ratio`, `train_clip_ratio_low|high|total`,
`train_average_generated_tokens`, `train_min_generated_tokens`, `train_max_generated_tokens`,
`train_hit_max_tokens_ratio`, `learning_rate`, `iterations_per_second`, `tokens_per_second`,
`trained_tokens`, `peak_memory_gb`; the same reward/KL/length names with a `val_` prefix
plus `val_loss`, `val_time` at each evaluation.
"""

from __future__ import annotations

import json
import math
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from .. import rewards
from ..config import _finite, _positive_int
from ..reporting import RunContext
from . import Method, register
from .rl_training import (
    RLCallback, RLTrainingConfig, build_optimizer, load_reference, load_starting_policy, loop_args,
    output_dir, read_jsonl, resolve_data, seed_everything, train_with_store, warm_start_file,
    write_adapter_config)

GRPO_LOSS_TYPES = ("grpo", "bnpo", "dr_grpo")
IMPORTANCE_SAMPLING_LEVELS = ("token", "sequence")
# Choices the dashboard offers for these fields (it looks for FIELD_NAME + "S").
REWARD_FUNCTIONS = tuple(rewards.MLX_LM_LORA_DEFAULTS) + tuple(rewards.DROIDFT_REWARDS)


# -- configs ------------------------------------------------------------------------------


@dataclass
class GRPOConfig(RLTrainingConfig):
    """Group Relative Policy Optimization: sample `group_size` completions per prompt, score
    them with reward functions, and push the policy toward the better ones of each group."""

    method: ClassVar[str] = "grpo"
    DEMO_FOLDER: ClassVar[str] = "grpo"
    DISTRIBUTED_REFUSAL: ClassVar[str | None] = None

    group_size: int = 4
    max_completion_length: int = 64
    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 20
    min_p: float = 0.0
    epsilon: float = 0.2
    epsilon_high: float | None = None  # clip-higher (DAPO); None = epsilon
    grpo_loss_type: str = "grpo"
    importance_sampling_level: str = "token"
    # None = every function of reward_file if given, else the demo reward on the demo data,
    # else mlx-lm-lora's R1 defaults (accuracy, int, strict/soft format, xml count).
    reward_functions: list[str] | None = None
    reward_weights: list[float] | None = None
    reward_file: str | None = None  # custom reward functions (refused on a LAN unless allowed)
    end_answer_token: str = "</answer>"  # generation also stops here
    system_prompt: str | None = None  # for rows without `system`; None = mlx-lm-lora's R1 prompt
    samples_per_report: int = 4  # completions stored in the samples table per report
    # Adapter weights to start from (e.g. an SFT run's adapter: "SFT then GRPO"); the KL
    # reference carries them too, so the KL term measures drift from this starting point.
    warm_start: str | None = None

    def mlx_lm_lora_args(self, model_path, data_path, adapter_path):
        args, notes = super().mlx_lm_lora_args(model_path, data_path, adapter_path)
        args.update(
            group_size=self.group_size, epsilon=self.epsilon, epsilon_high=self.epsilon_high,
            max_completion_length=self.max_completion_length, temperature=self.temperature,
            grpo_loss_type=self.grpo_loss_type, importance_sampling_level=self.importance_sampling_level,
        )
        reward_args(self, args, notes)
        if (self.top_p, self.top_k, self.min_p) != (0.95, 20, 0.0):
            notes.append("mlx-lm-lora always samples with top_p 0.95, top_k 20, min_p 0")
        if self.end_answer_token != "</answer>":
            notes.append("mlx-lm-lora always stops generation at '</answer>'")
        if self.system_prompt is not None:
            notes.append("put the system prompt in each data row's 'system' for mlx-lm-lora")
        if self.warm_start:
            args["resume_adapter_file"] = args.get("resume_adapter_file") or warm_start_file(self)
            notes.append("mlx-lm-lora's KL reference is the base model, not the warm-start adapter")
        return args, notes

    def problems(self) -> list[str]:
        out = super().problems()
        if out and self.type_problems():
            return out  # the checks below assume each field has its declared type
        if isinstance(self.group_size, int) and not isinstance(self.group_size, bool) and self.group_size == 1:
            out.append("group_size must be >= 2: GRPO learns by comparing completions of the same "
                       "prompt, and one completion has nothing to be compared with")
        else:
            _positive_int(out, "group_size", self.group_size, minimum=2)
        _positive_int(out, "max_completion_length", self.max_completion_length)
        _finite(out, "temperature", self.temperature, low=0, low_open=True, high=5)
        _finite(out, "top_p", self.top_p, low=0, low_open=True, high=1)
        _positive_int(out, "top_k", self.top_k, minimum=0)
        _finite(out, "min_p", self.min_p, low=0, high=0.99)
        _finite(out, "epsilon", self.epsilon, low=0, high=0.99)
        if self.epsilon_high is not None:
            _finite(out, "epsilon_high", self.epsilon_high, low=0, high=10)
            if _num(self.epsilon_high) and _num(self.epsilon) and self.epsilon_high < self.epsilon:
                out.append(f"epsilon_high ({self.epsilon_high}) must be >= epsilon ({self.epsilon}): "
                           "it widens the upper clip range (clip-higher), it cannot narrow it")
        if self.grpo_loss_type not in GRPO_LOSS_TYPES:
            out.append(f"grpo_loss_type must be one of {', '.join(GRPO_LOSS_TYPES)} (got {self.grpo_loss_type!r})")
        if self.importance_sampling_level not in IMPORTANCE_SAMPLING_LEVELS:
            out.append("importance_sampling_level must be token or sequence (sequence = GSPO) "
                       f"(got {self.importance_sampling_level!r})")
        out += rewards.problems(self.reward_functions, self.reward_weights, self.reward_file,
                                demo_data=self.is_demo_data())
        if not isinstance(self.end_answer_token, str):
            out.append("end_answer_token must be text such as '</answer>' (or '' for none)")
        if self.system_prompt is not None and not isinstance(self.system_prompt, str):
            out.append("system_prompt must be text or unset")
        _positive_int(out, "samples_per_report", self.samples_per_report, minimum=0)
        if self.warm_start is not None:
            path = Path(str(self.warm_start)).expanduser()
            if path.is_dir():
                path = path / "adapters.safetensors"
            if not isinstance(self.warm_start, str) or not path.is_file():
                out.append(f"warm_start adapter not found: {self.warm_start!r} (give an adapters.safetensors "
                           "file or an adapter folder, e.g. an SFT run's adapters, or leave it unset)")
        return out


def reward_args(config, args: dict, notes: list[str]) -> None:
    """The reward options of a stock mlx_lm_lora.train command (GRPO, KLPO)."""
    names = config.reward_functions if config.reward_functions is not None else \
        rewards.default_names(config.reward_file, config.is_demo_data())
    args["reward_functions"] = ",".join(names)
    if config.reward_weights is not None:
        args["reward_weights"] = "[" + ", ".join(str(float(w)) for w in config.reward_weights) + "]"
    ours = [n for n in names if n in rewards.DROIDFT_REWARDS]
    if config.reward_file:
        args["reward_functions_file"] = str(Path(config.reward_file).expanduser().resolve())
        notes.append("the reward file's functions must be decorated with mlx-lm-lora's "
                     "@register_reward_function() for the stock trainer to find them")
        if ours:
            notes.append(f"{', '.join(ours)} live in {rewards.__file__}: import it from the reward file")
    elif ours:
        args["reward_functions_file"] = rewards.__file__  # registers droidft's rewards on import


def _num(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class DrGRPOConfig(GRPOConfig):
    """Dr.GRPO: the loss is normalised by a constant (max completion length), removing GRPO's
    length bias toward long wrong answers and short right ones."""

    method: ClassVar[str] = "dr_grpo"
    LOCKED: ClassVar[dict[str, Any]] = {"grpo_loss_type": "dr_grpo"}
    grpo_loss_type: str = "dr_grpo"


@dataclass
class BNPOConfig(GRPOConfig):
    """BNPO: the loss is averaged over every completion token of the batch (token-level)."""

    method: ClassVar[str] = "bnpo"
    LOCKED: ClassVar[dict[str, Any]] = {"grpo_loss_type": "bnpo"}
    grpo_loss_type: str = "bnpo"


@dataclass
class GSPOConfig(GRPOConfig):
    """GSPO: sequence-level importance sampling (one ratio per completion, not per token)."""

    method: ClassVar[str] = "gspo"
    LOCKED: ClassVar[dict[str, Any]] = {"importance_sampling_level": "sequence"}
    importance_sampling_level: str = "sequence"


@dataclass
class DAPOConfig(GRPOConfig):
    """DAPO-style: clip-higher (epsilon_high > epsilon), token-level loss, no KL penalty.
    (DAPO's dynamic sampling and overlong shaping are not in mlx-lm-lora.)"""

    method: ClassVar[str] = "dapo"
    LOCKED: ClassVar[dict[str, Any]] = {"grpo_loss_type": "bnpo"}
    grpo_loss_type: str = "bnpo"
    beta: float = 0.0
    epsilon: float = 0.2
    epsilon_high: float | None = 0.28


# -- GRPO ----------------------------------------------------------------------------------




class RolloutRecorder:
    """Keeps the latest training rollout (prompts, completions, each reward) for samples."""

    def __init__(self, ctx: RunContext, reward_funcs, weights, per_report: int):
        self.ctx = ctx
        self.names = [f.__name__ for f in reward_funcs]
        self.weights = list(weights) if weights else [1.0] * len(reward_funcs)
        self.per_report = per_report
        self.values: dict[str, list] = {}
        self.in_eval = False
        self.latest: dict | None = None
        self.rank_note = False  # under mlx.launch: log which prompts this rank trains first

    @classmethod
    def for_run(cls, ctx: RunContext, config, reward_funcs, callback: RLCallback) -> "RolloutRecorder":
        """A recorder whose latest rollout the callback writes as samples after each report."""
        recorder = cls(ctx, reward_funcs, config.reward_weights, config.samples_per_report)
        recorder.rank_note = ctx.world_size > 1
        callback.after_train_report = recorder.write_samples
        return recorder

    def wrap_reward(self, func):
        name = func.__name__

        def reward(prompts, completions, answer, types=None):
            out = func(prompts=prompts, completions=completions, answer=answer, types=types)
            self.values[name] = list(out) if out is not None else [None] * len(completions)
            return out

        reward.__name__ = name
        return reward

    def wrap_rollout(self, original):
        def rollout_rewards(batch, texts, indices, reward_funcs, reward_weights):
            self.values = {}
            advantages, metrics = original(batch, texts, indices, reward_funcs, reward_weights)
            if not self.in_eval and self.rank_note:
                self.rank_note = False
                self.ctx.log(f"rank {self.ctx.rank}/{self.ctx.world_size} first batch: "
                             + json.dumps(sorted({batch[2][i] for i in indices})))
            if not self.in_eval:
                self.latest = {"prompts": [batch[2][i] for i in indices],
                               "answers": [batch[3][i] for i in indices],
                               "groups": list(indices), "texts": list(texts),
                               "rewards": dict(self.values), "advantages": advantages}
            return advantages, metrics

        return rollout_rewards

    def wrap_evaluate(self, original, callback: RLCallback):
        def evaluate_grpo(*args, **kwargs):
            self.in_eval = True
            try:
                loss, ntokens, metrics = original(*args, **kwargs)
            finally:
                self.in_eval = False
            callback.extra_val = dict(metrics)
            return loss, ntokens, metrics

        return evaluate_grpo

    def total(self, i: int) -> float:
        total = 0.0
        for name, weight in zip(self.names, self.weights):
            value = self.values_of(name)[i]
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                total += weight * float(value)
        return total

    def values_of(self, name: str) -> list:
        return self.latest["rewards"].get(name) or [None] * len(self.latest["texts"])

    def write_samples(self, step: int) -> None:
        latest = self.latest
        if not latest or self.per_report <= 0:
            return
        # Spread the picks over the groups: first completion of each group, then second, ...
        by_group: dict[int, list[int]] = {}
        for i, g in enumerate(latest["groups"]):
            by_group.setdefault(g, []).append(i)
        order, depth = [], 0
        while len(order) < min(self.per_report, len(latest["texts"])):
            for members in by_group.values():
                if depth < len(members) and len(order) < self.per_report:
                    order.append(members[depth])
            depth += 1
        try:
            advantages = latest["advantages"].tolist()
        except AttributeError:
            advantages = [None] * len(latest["texts"])
        for i in order:
            meta = {"answer": latest["answers"][i], "group": int(latest["groups"][i]),
                    "advantage": advantages[i],
                    "rewards": {n: _plain(self.values_of(n)[i]) for n in self.names}}
            self.ctx.writer.sample(step + self.ctx.step_offset, latest["prompts"][i],
                                   latest["texts"][i], self.total(i), meta)


def _plain(value):
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def grpo_datasets(config: GRPOConfig, data_dir: Path, tokenizer):
    from mlx_lm_lora.trainer.datasets import CacheDataset, create_dataset

    spec = types.SimpleNamespace(train_mode="grpo")

    def build(name: str):
        rows = read_jsonl(data_dir / f"{name}.jsonl")
        if not rows:
            return None
        if config.system_prompt is not None:
            rows = [r if "system" in r else {**r, "system": config.system_prompt} for r in rows]
        return CacheDataset(create_dataset(rows, tokenizer, spec))

    train_set, valid_set = build("train"), build("valid")
    if train_set is None or len(train_set) < config.batch_size:
        raise ValueError(f"{data_dir}/train.jsonl has {0 if train_set is None else len(train_set)} rows "
                         f"but batch_size is {config.batch_size}: add rows or lower batch_size")
    if valid_set is not None and len(valid_set) < config.batch_size:
        raise ValueError(f"{data_dir}/valid.jsonl has {len(valid_set)} rows but batch_size is "
                         f"{config.batch_size}: add rows or lower batch_size")
    return train_set, valid_set


def run_grpo(config: GRPOConfig, ctx: RunContext) -> None:
    from mlx_lm_lora.trainer import grpo_trainer as gt

    from .sft import model_for

    data_dir = resolve_data(config)
    model_path = model_for(config)
    seed_everything(config.seed)
    reward_funcs = rewards.resolve(config.reward_functions, config.reward_file,
                                   demo_data=config.is_demo_data())
    ctx.log(f"{config.method}: model {model_path}, data {data_dir}, {config.iters} iterations, "
            f"{config.fine_tune_type}, group {config.group_size}, loss {config.grpo_loss_type}, "
            f"importance sampling {config.importance_sampling_level}, rewards "
            + ", ".join(f.__name__ for f in reward_funcs))

    model, tokenizer, reference_weights = load_starting_policy(config, ctx, model_path)
    ref_model = None
    if config.beta != 0:
        ref_model = load_reference(config, model_path, reference_weights)
    adapter_config = write_adapter_config(config, output_dir(ctx), model_path)
    train_set, valid_set = grpo_datasets(config, data_dir, tokenizer)
    optimizer = build_optimizer(config)

    callback = RLCallback(ctx, model, adapter_config, best_metric="val_total_rewards_mean",
                          higher_is_better=True)
    recorder = RolloutRecorder.for_run(ctx, config, reward_funcs, callback)
    args = gt.GRPOTrainingArgs(
        **loop_args(config, ctx), group_size=config.group_size, beta=config.beta, epsilon=config.epsilon,
        epsilon_high=config.epsilon_high, max_completion_length=config.max_completion_length,
        reference_model_path=config.reference_model, temperature=config.temperature,
        top_p=config.top_p, top_k=config.top_k, min_p=config.min_p,
        grpo_loss_type=config.grpo_loss_type, reward_weights=config.reward_weights,
        importance_sampling_level=config.importance_sampling_level,
    )

    def train(wrap):
        gt.train_grpo(
            model=model, ref_model=ref_model, tokenizer=tokenizer, optimizer=optimizer,
            train_dataset=train_set, val_dataset=valid_set,
            reward_funcs=[recorder.wrap_reward(f) for f in reward_funcs], args=args,
            iterate_batches=wrap(gt.iterate_grpo_batches), training_callback=callback,
            end_answer_token=config.end_answer_token,
        )

    patches = [(gt, "_rollout_rewards", recorder.wrap_rollout(gt._rollout_rewards)),
               (gt, "evaluate_grpo", recorder.wrap_evaluate(gt.evaluate_grpo, callback))]
    train_with_store(config, ctx, model, model_path, train, patches)


for _cls, _desc in (
    (GRPOConfig, "GRPO: group-relative policy optimisation with reward functions (mlx-lm-lora)."),
    (DrGRPOConfig, "Dr.GRPO: GRPO without the length bias (constant loss normalisation)."),
    (BNPOConfig, "BNPO: GRPO with the loss averaged over all completion tokens of the batch."),
    (GSPOConfig, "GSPO: GRPO with sequence-level importance sampling."),
    (DAPOConfig, "DAPO-style: clip-higher (epsilon_high), token-level loss, no KL term."),
):
    register(Method(name=_cls.method, family="grpo", config_class=_cls, run=run_grpo,
                    description=_desc, distributed=True))
