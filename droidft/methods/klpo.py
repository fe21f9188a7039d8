"""KLPO (KL-regularised policy optimisation) through mlx-lm-lora's KLPO trainer.

One completion per prompt (no groups), scored by the same reward functions as GRPO; the
sampler records the behaviour distribution so the loss can estimate the KL to it (`mc`
samples, a `topk` head, the `binary` complement or the `full` distribution) on a `token` or
`sequence` route. Data and demo set as GRPO's (prompt + answer, data/demo/grpo).

`train_klpo` runs in-process. What it only prints or never reports is caught at the
narrowest point: `evaluate_klpo` is wrapped (validation reward/KL/length metrics are only
printed), `_rollout_rewards` and each reward function are wrapped for the samples table,
and `TimedCallback` adds the learning rate, iterations/s, tokens/s and peak memory its
training report leaves out.

Stored: `train_loss`, `train_reward_mean|std`, `train_<reward>_mean|std|coverage`, `train_kl`,
`train_regression_loss`, `train_floored_tokens`, `train_mc_samples`,
`train_average|min|max_generated_tokens`, `train_hit_max_tokens_ratio`, `trained_tokens`,
`learning_rate`, `iterations_per_second`, `tokens_per_second`, `peak_memory_gb`; at each
evaluation `val_loss`, `val_tokens` and the same reward/KL/length names with `val_`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar

from .. import rewards
from ..config import _finite, _positive_int
from ..reporting import RunContext
from . import Method, register
from .grpo import RolloutRecorder, grpo_datasets, reward_args
from .rl_training import (
    RLCallback, RLTrainingConfig, build_optimizer, load_starting_policy, loop_args, output_dir,
    patched, resolve_data, seed_everything, train_with_store, write_adapter_config)

ROUTES = ("token", "sequence")
KL_ESTIMATORS = ("mc", "topk", "binary", "full")
REWARD_FUNCTIONS = tuple(rewards.MLX_LM_LORA_DEFAULTS) + tuple(rewards.DROIDFT_REWARDS)


@dataclass
class KLPOConfig(RLTrainingConfig):
    """KL-regularised policy optimisation: rewards minus an estimated KL to the sampler."""

    method: ClassVar[str] = "klpo"
    TRAIN_MODE: ClassVar[str] = "klpo"
    DEMO_FOLDER: ClassVar[str] = "grpo"
    DISTRIBUTED_REFUSAL: ClassVar[str | None] = None  # GRPO's rank-sharded iterator, averaged gradients

    max_completion_length: int = 32
    temperature: float = 1.0
    route: str = "token"
    kl_estimator: str = "mc"
    mc_samples: int = 32
    top_k: int = 128
    tail_floor: float = 1e-6
    reward_functions: list[str] | None = None
    reward_weights: list[float] | None = None
    reward_file: str | None = None
    end_answer_token: str = "</answer>"
    system_prompt: str | None = None
    samples_per_report: int = 4

    def problems(self) -> list[str]:
        out = super().problems()
        if out and self.type_problems():
            return out
        _finite(out, "beta", self.beta, low=0, low_open=True)
        _positive_int(out, "max_completion_length", self.max_completion_length)
        _finite(out, "temperature", self.temperature, low=0, low_open=True, high=5)
        if self.route not in ROUTES:
            out.append(f"route must be token or sequence (got {self.route!r})")
        if self.kl_estimator not in KL_ESTIMATORS:
            out.append(f"kl_estimator must be one of {', '.join(KL_ESTIMATORS)} (got {self.kl_estimator!r})")
        _positive_int(out, "mc_samples", self.mc_samples, minimum=2 if self.route == "sequence" else 1)
        _positive_int(out, "top_k", self.top_k)
        _finite(out, "tail_floor", self.tail_floor, low=0, low_open=True, high=0.5)
        _positive_int(out, "samples_per_report", self.samples_per_report, minimum=0)
        out += rewards.problems(self.reward_functions, self.reward_weights, self.reward_file,
                                demo_data=self.is_demo_data())
        return out

    def mlx_lm_lora_args(self, model_path, data_path, adapter_path):
        args, notes = super().mlx_lm_lora_args(model_path, data_path, adapter_path)
        args.update(max_completion_length=self.max_completion_length, temperature=self.temperature,
                    klpo_route=self.route, klpo_kl_estimator=self.kl_estimator,
                    klpo_mc_samples=self.mc_samples, klpo_top_k=self.top_k,
                    klpo_tail_floor=self.tail_floor)
        reward_args(self, args, notes)
        if self.system_prompt is not None:
            notes.append("put the system prompt in each data row's 'system' for mlx-lm-lora")
        return args, notes


class TimedCallback(RLCallback):
    """Adds what a trainer's training report leaves out: learning rate, iterations/s,
    tokens/s (from its trained_tokens) and peak memory, measured between two reports."""

    def __init__(self, ctx, model, adapter_config, optimizer, **kwargs):
        super().__init__(ctx, model, adapter_config, **kwargs)
        self.optimizer = optimizer
        self.mark = (time.perf_counter(), 0, 0.0)

    def on_train_loss_report(self, info: dict):
        import mlx.core as mx

        now, it = time.perf_counter(), int(info.get("iteration", 0))
        then, last_it, last_tokens = self.mark
        elapsed = max(now - then, 1e-9)
        extra = {"learning_rate": float(self.optimizer.learning_rate.item()),
                 "iterations_per_second": (it - last_it) / elapsed,
                 "peak_memory": mx.get_peak_memory() / 1e9}
        tokens = float(info.get("trained_tokens", last_tokens))
        if "trained_tokens" in info:
            extra["tokens_per_second"] = (tokens - last_tokens) / elapsed
        self.mark = (now, it, tokens)
        super().on_train_loss_report({**extra, **info})


def run_klpo(config: KLPOConfig, ctx: RunContext) -> None:
    from mlx_lm_lora.trainer import klpo_trainer as kt

    from .sft import model_for

    data_dir = resolve_data(config)
    model_path = model_for(config)
    seed_everything(config.seed)
    reward_funcs = rewards.resolve(config.reward_functions, config.reward_file, demo_data=config.is_demo_data())
    ctx.log(f"klpo: model {model_path}, data {data_dir}, {config.iters} iterations, {config.fine_tune_type}, "
            f"route {config.route}, KL estimator {config.kl_estimator}, rewards "
            + ", ".join(f.__name__ for f in reward_funcs))

    model, tokenizer, _ = load_starting_policy(config, ctx, model_path)
    adapter_config = write_adapter_config(config, output_dir(ctx), model_path)
    train_set, valid_set = grpo_datasets(config, data_dir, tokenizer)
    optimizer = build_optimizer(config)
    callback = TimedCallback(ctx, model, adapter_config, optimizer, best_metric="val_reward_mean",
                             higher_is_better=True)
    recorder = RolloutRecorder.for_run(ctx, config, reward_funcs, callback)
    args = kt.KLPOTrainingArgs(
        **loop_args(config, ctx), max_completion_length=config.max_completion_length, beta=config.beta, route=config.route, kl_estimator=config.kl_estimator,
        mc_samples=config.mc_samples, top_k=config.top_k, tail_floor=config.tail_floor,
        temperature=config.temperature, reward_weights=config.reward_weights)

    def train(wrap):
        with patched(kt, "iterate_grpo_batches", wrap(kt.iterate_grpo_batches)):
            kt.train_klpo(model=model, tokenizer=tokenizer, optimizer=optimizer, train_dataset=train_set,
                          val_dataset=valid_set, reward_funcs=[recorder.wrap_reward(f) for f in reward_funcs],
                          args=args, training_callback=callback, end_answer_token=config.end_answer_token)

    evaluate = recorder.wrap_evaluate(kt.evaluate_klpo, callback)

    def timed_evaluate(*a, **kw):  # the trainer reports no val_time
        started = time.perf_counter()
        out = evaluate(*a, **kw)
        callback.extra_val["time"] = time.perf_counter() - started
        return out

    patches = [(kt, "_rollout_rewards", recorder.wrap_rollout(kt._rollout_rewards)),
               (kt, "evaluate_klpo", timed_evaluate)]
    train_with_store(config, ctx, model, model_path, train, patches)


register(Method(name="klpo", family="klpo", config_class=KLPOConfig, run=run_klpo, distributed=True,
                description="KLPO: rewards minus an estimated KL to the sampling policy, one answer per prompt."))
