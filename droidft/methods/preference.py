"""Preference optimisation through mlx-lm-lora's trainers: DPO (sigmoid, hinge, ipo, dpop),
ORPO and CPO, each with LoRA, DoRA or full training.

Data: `prompt`, `chosen`, `rejected` (optional `system`; ORPO also `preference_score` and
chat-style chosen/rejected). DPO trains against a frozen reference model (`reference_model`,
default the base model itself); ORPO and CPO need none.

`train_dpo` / `train_orpo` / `train_cpo` run in-process and report through our callback
every metric they compute. Stored names: `train_loss`, `train_chosen_reward`,
`train_rejected_reward`, `train_accuracies`, `train_margins`, `train_policy_chosen_logps`,
`train_policy_rejected_logps`, `train_chosen_logits_mean`, `train_rejected_logits_mean`,
`learning_rate`, `iterations_per_second`,
`tokens_per_second`, `trained_tokens`, `peak_memory_gb`; the same with `val_` at each
evaluation plus `val_loss`, `val_time`. The best adapter is kept by validation loss.
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import ClassVar

from ..config import _finite
from ..reporting import RunContext
from . import Method, register
from .rl_training import (
    RLCallback, RLTrainingConfig, build_optimizer, load_reference, load_starting_policy, loop_args,
    patched, read_jsonl, resolve_data, seed_everything, train_with_store, write_adapter_config)

DPO_LOSS_TYPES = ("sigmoid", "hinge", "ipo", "dpop")
LOSS_TYPES = DPO_LOSS_TYPES  # the dashboard looks for FIELD_NAME + "S"


@dataclass
class PreferenceConfig(RLTrainingConfig):
    method: ClassVar[str] = "preference"
    learning_rate: float = 5e-5
    beta: float = 0.1

    def problems(self) -> list[str]:
        out = super().problems()
        if out and self.type_problems():
            return out  # the checks below assume each field has its declared type
        if isinstance(self.beta, (int, float)) and not isinstance(self.beta, bool) and self.beta == 0:
            out.append(f"beta must be > 0 for {self.method}: it scales the preference term, "
                       "and 0 would switch the preference signal off")
        return out


@dataclass
class _PairLossConfig(PreferenceConfig):
    """What DPO and CPO share: mlx-lm-lora's `dpo_cpo_loss_type` and the DPOP `delta`."""

    loss_type: str = "sigmoid"  # sigmoid | hinge | ipo | dpop
    delta: float = 50.0  # DPOP: weight of the penalty for lowering the chosen likelihood

    def mlx_lm_lora_args(self, model_path, data_path, adapter_path):
        args, notes = super().mlx_lm_lora_args(model_path, data_path, adapter_path)
        args.update(dpo_cpo_loss_type=self.loss_type, delta=self.delta)
        return args, notes

    def problems(self) -> list[str]:
        out = super().problems()
        if out and self.type_problems():
            return out  # the checks below assume each field has its declared type
        if self.loss_type not in DPO_LOSS_TYPES:
            out.append(f"loss_type must be one of {', '.join(DPO_LOSS_TYPES)} (got {self.loss_type!r})")
        _finite(out, "delta", self.delta, low=0)
        return out


@dataclass
class DPOConfig(_PairLossConfig):
    """Direct Preference Optimization against a frozen reference model."""

    method: ClassVar[str] = "dpo"
    TRAIN_MODE: ClassVar[str] = "dpo"

    def mlx_lm_lora_args(self, model_path, data_path, adapter_path):
        args, notes = super().mlx_lm_lora_args(model_path, data_path, adapter_path)
        if self.loss_type != "sigmoid":
            notes.append("mlx-lm-lora 5.10's train_model does not pass the loss type on to "
                         "train_dpo, so the stock DPO run uses sigmoid (droidft passes it)")
        return args, notes


@dataclass
class CPOConfig(_PairLossConfig):
    """Contrastive Preference Optimization: DPO's loss without a reference model."""

    method: ClassVar[str] = "cpo"
    TRAIN_MODE: ClassVar[str] = "cpo"

    def problems(self) -> list[str]:
        out = super().problems()
        if self.reference_model and not (out and self.type_problems()):
            out.append("cpo uses no reference model: unset reference_model, or use dpo")
        return out


@dataclass
class ORPOConfig(PreferenceConfig):
    """Odds Ratio Preference Optimization: SFT on chosen plus an odds-ratio preference term,
    no reference model. Rows may carry a `preference_score` weighting the chosen side."""

    method: ClassVar[str] = "orpo"
    TRAIN_MODE: ClassVar[str] = "orpo"

    def problems(self) -> list[str]:
        out = super().problems()
        if out and self.type_problems():
            return out  # the checks below assume each field has its declared type
        if self.reference_model:
            out.append("orpo uses no reference model: unset reference_model, or use dpo")
        return out


def cpo_loss(**kwargs):
    """mlx-lm-lora's CPO loss, with two fixes at the loss boundary:
    - its compiled training step fails in MLX ("IndexError: _Map_base::at") when metric
      outputs are the very nodes the loss also uses; fresh copies of them avoid that;
    - the trainer reports `rejected_logits_mean` but the loss never computes it (it would
      always be 0): compute it like `chosen_logits_mean` (mean rejected sequence score)."""
    import mlx.core as mx
    from mlx_lm_lora.trainer.cpo_trainer import cpo_loss as original

    loss, reward, tokens, metrics = original(**kwargs)
    metrics = {k: v + 0.0 for k, v in metrics.items()}
    rejected = kwargs["policy_rejected_score"]
    metrics["rejected_logits_mean"] = mx.sum(rejected) / rejected.size
    return loss, reward, tokens, metrics


def preference_datasets(config: PreferenceConfig, data_dir: Path, tokenizer):
    from mlx_lm_lora.trainer.datasets import CacheDataset, create_dataset

    spec = types.SimpleNamespace(train_mode=config.method)

    def build(name: str):
        rows = read_jsonl(data_dir / f"{name}.jsonl")
        return CacheDataset(create_dataset(rows, tokenizer, spec)) if rows else None

    train_set, valid_set = build("train"), build("valid")
    for name, ds in (("train", train_set), ("valid", valid_set)):
        if ds is not None and len(ds) < config.batch_size:
            raise ValueError(f"{data_dir}/{name}.jsonl has {len(ds)} rows but batch_size is "
                             f"{config.batch_size}: add rows or lower batch_size")
    if train_set is None:
        raise ValueError(f"{data_dir}/train.jsonl has no rows")
    return train_set, valid_set


def run(config: PreferenceConfig, ctx: RunContext) -> None:
    from mlx_lm_lora.trainer import cpo_trainer, dpo_trainer, orpo_trainer

    from .sft import model_for

    data_dir = resolve_data(config)
    model_path = model_for(config)
    seed_everything(config.seed)
    detail = f", loss {config.loss_type}" if hasattr(config, "loss_type") else ""
    ctx.log(f"{config.method}: model {model_path}, data {data_dir}, {config.iters} iterations, "
            f"{config.fine_tune_type}, beta {config.beta}{detail}")

    model, tokenizer, reference_weights = load_starting_policy(config, ctx, model_path)
    adapter_config = write_adapter_config(config, ctx.adapter_dir, model_path)
    train_set, valid_set = preference_datasets(config, data_dir, tokenizer)
    optimizer = build_optimizer(config)
    callback = RLCallback(ctx, model, adapter_config, best_metric="val_loss")
    common = dict(loop_args(config, ctx), beta=config.beta)

    if config.method == "dpo":
        ref_model = load_reference(config, model_path, reference_weights)
        args = dpo_trainer.DPOTrainingArgs(**common, loss_type=config.loss_type, delta=config.delta,
                                           reference_model_path=config.reference_model)
        # train_dpo reads the loss type from its own argument, not from args.loss_type.
        call = partial(dpo_trainer.train_dpo, model=model, ref_model=ref_model, loss_type=config.loss_type)
        module, name = dpo_trainer, "iterate_dpo_batches"
    elif config.method == "cpo":
        args = cpo_trainer.CPOTrainingArgs(**common, loss_type=config.loss_type, delta=config.delta)
        call = partial(cpo_trainer.train_cpo, model=model, loss_fn=cpo_loss)
        module, name = cpo_trainer, "iterate_cpo_batches"
    else:
        args = orpo_trainer.ORPOTrainingArgs(**common)
        call = partial(orpo_trainer.train_orpo, model=model)
        module, name = orpo_trainer, "iterate_orpo_batches"

    def train(wrap):
        # These trainers make a fresh batch generator per step from a module-level function:
        # swap in a stop-aware one for the duration of the run.
        with patched(module, name, wrap(getattr(module, name))):
            call(optimizer=optimizer, train_dataset=train_set, val_dataset=valid_set, args=args,
                 training_callback=callback)

    train_with_store(config, ctx, model, model_path, train)


for _cls, _desc in (
    (DPOConfig, "DPO: direct preference optimisation (sigmoid, hinge, ipo or dpop loss) against a reference model."),
    (ORPOConfig, "ORPO: odds-ratio preference optimisation, no reference model."),
    (CPOConfig, "CPO: contrastive preference optimisation, no reference model."),
):
    register(Method(name=_cls.method, family="preference", config_class=_cls, run=run,
                    description=_desc))
