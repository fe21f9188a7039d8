"""Online preference and RL methods through mlx-lm-lora's trainers: online DPO, XPO, PPO and
RLHF-REINFORCE. Each step samples two completions per prompt from the policy itself, asks a
judge (droidft.judges: reward functions, a local model, or a person in the browser) which is
better (how good each is, for rlhf_reinforce), and trains on the verdicts.

Data: `{"prompt": "..."}` (or chat messages), optionally `"answer"` for the reward judge;
the demo set is data/demo/online. The trainers run in-process with droidft's hooks
(online_hooks.py) and, for PPO and RLHF-REINFORCE, corrected losses (online_losses.py);
the model is never fused.

Stored metrics: `train_loss`, `train_chosen_reward`, `train_rejected_reward`,
`train_accuracies`, `train_margins`, `train_policy_chosen_logps`, `train_policy_rejected_logps`,
`train_chosen_logits_mean`, `train_rejected_logits_mean` (online_dpo, xpo, ppo), plus
`train_exploration_bonus`, `train_chosen_kl`, `train_rejected_kl` (xpo), `train_policy_loss`,
`train_kl_penalty`, `train_advantages_mean`, `train_ratios_mean`, `train_clip_fraction`,
`train_reference_chosen_logps`, `train_reference_rejected_logps` (ppo), `train_rewards`,
`train_kl_penalty`, `train_advantages`, `train_policy_logps`, `train_ref_logps`
(rlhf_reinforce); the judge's `train_pairs_judged`, `train_pairs_skipped`,
`train_judge_fallbacks`, `train_judge_reward_mean` (reward judge), `train_human_judged`;
`learning_rate`, `iterations_per_second`, `tokens_per_second`, `trained_tokens`,
`peak_memory_gb`; the same trainer values with `val_` at each evaluation, `val_time`, and
`val_judge_reward_mean` (reward judge: the mean score of the validation samples).
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from .. import rewards
from ..config import _finite, _positive_int
from ..judges import HUMAN_FALLBACKS, JUDGE_KINDS, HumanJudge, ModelJudge, RewardJudge
from ..reporting import RunContext
from . import Method, register
from .online_hooks import (GatedOptimizer, JudgeSession, StepMeter, evaluation, judge_classes,
                           preference_microbatches, rlhf_value_and_grad)
from .online_losses import ppo_loss, rlhf_reinforce_logp_loss
from .preference import DPO_LOSS_TYPES
from .rl_training import (
    RLCallback, RLTrainingConfig, build_optimizer, load_reference, load_starting_policy, loop_args,
    patched, read_jsonl, resolve_data, seed_everything, train_with_store, write_adapter_config)

# Choices the dashboard offers (it looks for FIELD_NAME + "S").
JUDGES = JUDGE_KINDS
REWARD_FUNCTIONS = tuple(rewards.MLX_LM_LORA_DEFAULTS) + tuple(rewards.DROIDFT_REWARDS)
LOSS_TYPES = DPO_LOSS_TYPES
SAME_ROWS = ("mlx-lm-lora's iterate_online_dpo_batches gives every rank the same rows (it has no "
             "rank offset), so N ranks would average N copies of one part of the batch, and a "
             "human judge would be asked once per rank")


@dataclass
class OnlineConfig(RLTrainingConfig):
    """What every online method shares: sampling, the judge, and its fallbacks."""

    method: ClassVar[str] = "online"
    DEMO_FOLDER: ClassVar[str] = "online"
    DISTRIBUTED_REFUSAL: ClassVar[str | None] = SAME_ROWS

    batch_size: int = 2
    iters: int = 40
    learning_rate: float = 5e-5
    steps_per_eval: int = 20
    val_batches: int = 1
    max_completion_length: int = 24
    temperature: float = 0.8
    judge: str = field(default="reward", metadata={"help": (
        "Who decides which completion is better: reward (the reward functions below), model "
        "(a local model, judge_model), or human (you, in the Monitor).")})
    judge_model: str | None = field(default=None, metadata={"help": (
        "The model judge (and a person's fallback): 'demo', a folder or a downloaded hub id; "
        "empty = the base model itself.")})
    judge_system_prompt: str | None = field(default=None, metadata={"help": (
        "The model judge's prompt, with {prompt}, {response0} and {response1}; empty = "
        "mlx-lm-lora's pairwise judge prompt.")})
    reward_functions: list[str] | None = None
    reward_weights: list[float] | None = None
    reward_file: str | None = None
    human_timeout: float = field(default=120.0, metadata={"help": (
        "Seconds to wait for a person to judge a step's pairs; then the fallback decides.")})
    human_fallback: str = field(default="skip", metadata={"help": (
        "What decides pairs nobody judged in time, and validation pairs: skip (they teach "
        "nothing; no validation), model, or reward.")})
    viewers_may_judge: bool = field(default=False, metadata={"help": (
        "On a LAN, let signed-in viewers judge too (the owner always may).")})
    samples_per_report: int = 2  # judged pairs stored in the samples table per step

    def problems(self) -> list[str]:
        out = super().problems()
        if out and self.type_problems():
            return out
        _positive_int(out, "max_completion_length", self.max_completion_length)
        _finite(out, "temperature", self.temperature, low=0, low_open=True, high=5)
        _finite(out, "human_timeout", self.human_timeout, low=1, high=86400)
        _positive_int(out, "samples_per_report", self.samples_per_report, minimum=0)
        if self.judge not in JUDGE_KINDS:
            out.append(f"judge must be one of {', '.join(JUDGE_KINDS)} (got {self.judge!r})")
        if self.human_fallback not in HUMAN_FALLBACKS:
            out.append(f"human_fallback must be one of {', '.join(HUMAN_FALLBACKS)} (got {self.human_fallback!r})")
        if self.judge_model is not None and not self.judge_model.strip():
            out.append("judge_model must be a model ('demo', a folder or a downloaded hub id) or unset")
        if self.judge_system_prompt:
            try:
                self.judge_system_prompt.format(prompt="", response0="", response1="")
            except (KeyError, IndexError, ValueError) as exc:
                out.append(f"judge_system_prompt may only use {{prompt}}, {{response0}} and "
                           f"{{response1}} (braces doubled elsewhere): {exc!r}")
        if self.uses_rewards():
            out += rewards.problems(self.reward_functions, self.reward_weights, self.reward_file,
                                    demo_data=self.is_demo_data())
        return out

    def uses_rewards(self) -> bool:
        return self.judge == "reward" or (self.judge == "human" and self.human_fallback == "reward")

    def mlx_lm_lora_args(self, model_path, data_path, adapter_path):
        args, notes = super().mlx_lm_lora_args(model_path, data_path, adapter_path)
        args.update(max_completion_length=self.max_completion_length, temperature=self.temperature)
        if self.judge == "human":
            args["judge"] = "human"
            notes.append("stock mlx_lm_lora.train 5.10 loads --judge human as a model and fails; "
                         "its human judge asks on the terminal")
        else:
            from ..models import resolve_model

            args["judge"] = str(resolve_model(self.judge_model)) if self.judge_model else model_path
            if self.judge == "reward":
                notes.append("mlx-lm-lora's online trainers have no reward-function judge: the "
                             "stock command judges with the base model")
            notes.append("mlx-lm-lora's model judge generates text: for rlhf_reinforce JSON scores "
                         "(unparsable -> 0.5 and 1.0), otherwise a digit (anything but a bare '0' "
                         "counts as the second completion winning); droidft reads the model's "
                         "probabilities of '0' and '1' in both orders")
        if self.judge_system_prompt:
            args["judge_config"] = {"system_prompt": self.judge_system_prompt}
        return args, notes


@dataclass
class _PairwiseConfig(OnlineConfig):
    loss_type: str = "sigmoid"
    delta: float = 50.0

    def problems(self) -> list[str]:
        out = super().problems()
        if out and self.type_problems():
            return out
        if self.loss_type not in DPO_LOSS_TYPES:
            out.append(f"loss_type must be one of {', '.join(DPO_LOSS_TYPES)} (got {self.loss_type!r})")
        _finite(out, "delta", self.delta, low=0)
        if self.beta == 0:
            out.append(f"beta must be > 0 for {self.method}: it scales the preference term")
        return out

    def mlx_lm_lora_args(self, model_path, data_path, adapter_path):
        args, notes = super().mlx_lm_lora_args(model_path, data_path, adapter_path)
        args.update(dpo_cpo_loss_type=self.loss_type, delta=self.delta)
        return args, notes


@dataclass
class OnlineDPOConfig(_PairwiseConfig):
    """Online DPO: DPO on pairs the policy samples and the judge orders, step by step."""

    method: ClassVar[str] = "online_dpo"
    TRAIN_MODE: ClassVar[str] = "online_dpo"


@dataclass
class XPOConfig(_PairwiseConfig):
    """XPO: online DPO plus an exploration bonus (alpha) for moving away from the reference."""

    method: ClassVar[str] = "xpo"
    TRAIN_MODE: ClassVar[str] = "xpo"
    alpha: list[float] = field(default_factory=lambda: [1e-5], metadata={"help": (
        "Exploration bonus weight; several values = one per equal part of the run.")})

    def problems(self) -> list[str]:
        out = super().problems()
        if not (out and self.type_problems()):
            if not self.alpha or not all(isinstance(a, (int, float)) and a >= 0 for a in self.alpha):
                out.append("alpha must be a non-empty list of numbers >= 0, e.g. [1e-5]")
            elif isinstance(self.iters, int) and len(self.alpha) > self.iters:
                # mlx-lm-lora divides the run into len(alpha) parts: more parts than steps divide by 0
                out.append(f"alpha has {len(self.alpha)} values but the run has {self.iters} steps: "
                           "give at most one value per step")
        return out

    def mlx_lm_lora_args(self, model_path, data_path, adapter_path):
        args, notes = super().mlx_lm_lora_args(model_path, data_path, adapter_path)
        notes.append("stock mlx_lm_lora.train 5.10 cannot set alpha (its --alpha splits the text "
                     "into characters, and the YAML value loses to the flag's default [1e-5])")
        return args, notes


@dataclass
class PPOConfig(_PairwiseConfig):
    """PPO-style: a clipped policy-ratio objective on judged pairs, with a KL penalty."""

    method: ClassVar[str] = "ppo"
    TRAIN_MODE: ClassVar[str] = "ppo"
    epsilon: float = 0.2

    def problems(self) -> list[str]:
        out = super().problems()
        if not (out and self.type_problems()):
            _finite(out, "epsilon", self.epsilon, low=0, low_open=True, high=0.99)
        return out

    def mlx_lm_lora_args(self, model_path, data_path, adapter_path):
        args, notes = super().mlx_lm_lora_args(model_path, data_path, adapter_path)
        args["epsilon"] = self.epsilon
        return args, notes


@dataclass
class RLHFReinforceConfig(OnlineConfig):
    """RLHF with REINFORCE: the judge scores each completion and the policy gradient follows
    the score minus a KL penalty (beta) against the reference."""

    method: ClassVar[str] = "rlhf_reinforce"
    TRAIN_MODE: ClassVar[str] = "rlhf_reinforce"
    # The penalty is the whole answer's log-ratio (several nats) against rewards of 0..1 on the
    # demo: at mlx-lm-lora's 0.1 it outweighs them (docs/BENCHMARKS.md, methods).
    beta: float = 0.01


TRAINERS = {  # method -> (trainer module, train function, training args class, evaluate function)
    "online_dpo": ("online_dpo_trainer", "train_online_dpo", "OnlineDPOTrainingArgs", "evaluate_online_dpo"),
    "xpo": ("xpo_trainer", "train_xpo", "XPOTrainingArgs", "evaluate_xpo"),
    "ppo": ("ppo_trainer", "train_ppo", "PPOTrainingArgs", "evaluate_ppo"),
    "rlhf_reinforce": ("rlhf_reinforce_trainer", "train_rlhf_reinforce", "RLHFReinforceTrainingArgs",
                       "evaluate_rlhf_reinforce"),
}


def prompt_rows(config: OnlineConfig, data_dir: Path, tokenizer):
    """Datasets as mlx-lm-lora builds them, and each row by its chat-templated prompt text
    (what the trainer hands the judge), so the judge sees the row's prompt and answer."""
    import types

    from mlx_lm_lora.trainer.datasets import CacheDataset, create_dataset

    spec = types.SimpleNamespace(train_mode=config.method)
    sets, rows = [], {}
    for name in ("train", "valid"):
        data = read_jsonl(data_dir / f"{name}.jsonl")
        ds = CacheDataset(create_dataset(data, tokenizer, spec)) if data else None
        if ds is not None and len(ds) < config.batch_size:
            raise ValueError(f"{data_dir}/{name}.jsonl has {len(ds)} rows but batch_size is "
                             f"{config.batch_size}: add rows or lower batch_size")
        for i, row in enumerate(data):
            rows[ds[i]["prompt_text"]] = row
        sets.append(ds)
    if sets[0] is None:
        raise ValueError(f"{data_dir}/train.jsonl has no rows")
    return sets[0], sets[1], rows


def build_judges(config: OnlineConfig, ctx: RunContext, ref_model, tokenizer, model_path: Path):
    """(judge for training pairs, judge for validation pairs or None = no validation)."""

    def model_judge():
        from mlx_lm.utils import load

        from ..models import resolve_model

        if config.judge_model is None and config.reference_model is None and ref_model is not None:
            return ModelJudge(ref_model, tokenizer, config.judge_system_prompt)  # the frozen base
        judge, judge_tokenizer = load(str(resolve_model(config.judge_model) if config.judge_model else model_path))
        judge.freeze()
        return ModelJudge(judge, judge_tokenizer, config.judge_system_prompt)

    def reward_judge():
        return RewardJudge(rewards.resolve(config.reward_functions, config.reward_file,
                                           demo_data=config.is_demo_data()), config.reward_weights)

    make = {"model": model_judge, "reward": reward_judge}
    if config.judge != "human":
        judge = make[config.judge]()
        return judge, judge
    fallback = make[config.human_fallback]() if config.human_fallback != "skip" else None
    human = HumanJudge(ctx.run_id, config.human_timeout, fallback, should_stop=ctx.stop_now,
                       step=lambda: int(ctx.state.get("step", 0)) + 1 + ctx.step_offset, log=ctx.log)
    return human, fallback


class OnlineCallback(RLCallback):
    """The trainer's timing/memory numbers, the meter's per-step averages, the judge's counts."""

    KEEP = ("iteration", "learning_rate", "iterations_per_second", "tokens_per_second",
            "trained_tokens", "peak_memory")

    def __init__(self, ctx, model, adapter_config, session: JudgeSession, meter: StepMeter):
        super().__init__(ctx, model, adapter_config, best_metric="val_loss")
        self.session, self.meter = session, meter

    def on_train_loss_report(self, info: dict):
        values = {k: v for k, v in info.items() if k in self.KEEP}
        values.update({f"train_{k}": v for k, v in self.meter.take().items()})
        values.update({f"train_{k}": v for k, v in self.session.counts.take().items()})
        super().on_train_loss_report(values)


def run_online(config: OnlineConfig, ctx: RunContext) -> None:
    import importlib

    from .sft import model_for

    module = importlib.import_module(f"mlx_lm_lora.trainer.{TRAINERS[config.method][0]}")
    _, train_name, args_name, eval_name = TRAINERS[config.method]
    data_dir = resolve_data(config)
    model_path = model_for(config)
    seed_everything(config.seed)
    ctx.log(f"{config.method}: model {model_path}, data {data_dir}, {config.iters} iterations, "
            f"{config.fine_tune_type}, judge {config.judge}"
            + (f" (fallback {config.human_fallback}, {config.human_timeout:g} s)" if config.judge == "human" else ""))

    model, tokenizer, _ = load_starting_policy(config, ctx, model_path)
    ref_model = load_reference(config, model_path)
    adapter_config = write_adapter_config(config, ctx.adapter_dir, model_path)
    train_set, valid_set, rows = prompt_rows(config, data_dir, tokenizer)
    judge, eval_judge = build_judges(config, ctx, ref_model, tokenizer, model_path)
    if eval_judge is None and valid_set is not None:
        ctx.log("no validation: people judge training pairs only, and human_fallback is skip")
        valid_set = None
    session = JudgeSession(ctx, judge, eval_judge, rows, config.samples_per_report,
                           record_all=config.judge == "human")
    meter, optimizer = StepMeter(), GatedOptimizer(build_optimizer(config))
    callback = OnlineCallback(ctx, model, adapter_config, session, meter)

    args = dict(
        loop_args(config, ctx), beta=config.beta, judge="droidft", max_completion_length=config.max_completion_length,
        reference_model_path=config.reference_model)
    if isinstance(config, _PairwiseConfig):
        args.update(loss_type=config.loss_type, delta=config.delta, temperature=config.temperature)
    if isinstance(config, XPOConfig):
        args["alpha"] = list(config.alpha)  # its dataclass default is a lambda, not a list
    if isinstance(config, PPOConfig):
        args["epsilon"] = config.epsilon
    train_args = getattr(module, args_name)(**args)

    pairwise, scoring = judge_classes(session)
    patches = [(module, eval_name, evaluation(getattr(module, eval_name), session,
                                              "metrics" if config.method == "rlhf_reinforce" else "rewards"))]
    # DROIDFT_STOCK_LOSSES=1 keeps mlx-lm-lora's own PPO / RLHF losses (bench/bench_methods_demo.py compares)
    fixed = os.environ.get("DROIDFT_STOCK_LOSSES") != "1"
    if config.method == "rlhf_reinforce":
        patches += [(module, "LLMPPOJudge", scoring),
                    (module, "_rlhf_value_and_grad", rlhf_value_and_grad(module._rlhf_value_and_grad, meter, optimizer))]
        if fixed:
            patches.append((module, "_rlhf_reinforce_logp_loss", rlhf_reinforce_logp_loss))
    else:
        patches += [(module, "LLMPairwiseJudge", pairwise), (module, "HumanPairwiseJudge", pairwise),
                    (module, "_preference_microbatches",
                     preference_microbatches(module._preference_microbatches, session, meter, optimizer))]

    def train(wrap):
        with ExitStack() as stack:
            stack.enter_context(patched(module, "iterate_online_dpo_batches",
                                        wrap(module.iterate_online_dpo_batches)))
            getattr(module, train_name)(
                model=model, ref_model=ref_model, tokenizer=tokenizer, optimizer=optimizer,
                train_dataset=train_set, val_dataset=valid_set,
                judge_config={"system_prompt": config.judge_system_prompt} if config.judge_system_prompt else {},
                args=train_args, judge_model="droidft", judge_tokenizer=tokenizer, training_callback=callback,
                **({"loss_fn": ppo_loss} if config.method == "ppo" and fixed else {}))

    train_with_store(config, ctx, model, model_path, train, patches)


for _cls, _desc in (
    (OnlineDPOConfig, "Online DPO: the policy samples two answers, a judge (rewards, a model or you) picks one."),
    (XPOConfig, "XPO: online DPO with an exploration bonus."),
    (PPOConfig, "PPO-style: clipped policy ratios on judged pairs, with a KL penalty."),
    (RLHFReinforceConfig, "RLHF-REINFORCE: a judge scores each sampled answer; policy gradient with a KL penalty."),
):
    register(Method(name=_cls.method, family="online", config_class=_cls, run=run_online, description=_desc))
