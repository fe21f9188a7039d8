"""DSLA (directional and similarity-aware latent alignment) through mlx-lm-lora's DSLA trainer:
a preference objective (DPO against a reference model, ORPO or CPO: `dsla_loss`) plus a
regulariser on the hidden states that pulls the chosen answer's representation toward the
prompt's (`similarity`) and along the batch's chosen-minus-rejected direction (`direction`).

Data: the preference format (`prompt`, `chosen`, `rejected`, optional `system`); the demo
set is data/demo/preference. mlx-lm-lora requires the rendered prompt to be an exact token
prefix of both rendered answers (it checks and raises); droidft names the file.

Runs data-parallel under mlx.launch: `iterate_dsla_batches` gives each rank its own rows and
the trainer averages gradients and reduces every reported number over ranks
(tests/test_distributed.py compares 2 ranks with 1).

Stored: `train_loss`, `train_chosen_reward`, `train_rejected_reward`, `train_preference_loss`,
`train_latent_loss`, `train_latent_sim_loss`, `train_latent_sim_margin`, `train_latent_dir_loss`,
`train_latent_dir_margin`, `train_accuracies`, `train_margins`, `train_policy_chosen_logps`,
`train_policy_rejected_logps`, `train_chosen_logits_mean`, `train_rejected_logits_mean`,
`learning_rate`, `iterations_per_second`, `tokens_per_second`, `trained_tokens`,
`peak_memory_gb`; `val_loss`, `val_time` and the same names with `val_`.
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from ..config import _finite
from ..reporting import RunContext
from . import Method, register
from .preference import DPO_LOSS_TYPES
from .rl_training import (
    RLCallback, RLTrainingConfig, build_optimizer, load_reference, load_starting_policy, loop_args,
    output_dir, patched, read_jsonl, resolve_data, seed_everything, train_with_store,
    write_adapter_config)

DSLA_LOSSES = ("dpo", "orpo", "cpo")
LOSS_TYPES = DPO_LOSS_TYPES
LATENT_VARIANTS = ("both", "similarity", "direction")
LATENT_POOLINGS = ("answer_mean", "last_token", "last_k_mean", "prompt_answer_mean")


@dataclass
class DSLAConfig(RLTrainingConfig):
    """A preference loss plus a latent (hidden-state) alignment term."""

    method: ClassVar[str] = "dsla"
    TRAIN_MODE: ClassVar[str] = "dsla"
    DISTRIBUTED_REFUSAL: ClassVar[str | None] = None

    learning_rate: float = 5e-5
    dsla_loss: str = "dpo"
    loss_type: str = "sigmoid"
    delta: float = 50.0
    latent_weight: float = 0.1
    latent_margin: float = 0.05
    latent_gamma: float = 10.0
    latent_variant: str = "both"
    latent_pooling: str = "answer_mean"
    latent_layer: str = "final"  # final | middle | late | a layer index

    def problems(self) -> list[str]:
        out = super().problems()
        if out and self.type_problems():
            return out
        if self.dsla_loss not in DSLA_LOSSES:
            out.append(f"dsla_loss must be one of {', '.join(DSLA_LOSSES)} (got {self.dsla_loss!r})")
        if self.loss_type not in DPO_LOSS_TYPES:
            out.append(f"loss_type must be one of {', '.join(DPO_LOSS_TYPES)} (got {self.loss_type!r})")
        if self.beta == 0:
            out.append("beta must be > 0 for dsla: it scales the preference term")
        _finite(out, "delta", self.delta, low=0)
        for name in ("latent_weight", "latent_margin"):
            _finite(out, name, getattr(self, name), low=0)
        _finite(out, "latent_gamma", self.latent_gamma, low=0, low_open=True)
        if self.latent_variant not in LATENT_VARIANTS:
            out.append(f"latent_variant must be one of {', '.join(LATENT_VARIANTS)} (got {self.latent_variant!r})")
        if self.latent_pooling not in LATENT_POOLINGS:
            out.append(f"latent_pooling must be one of {', '.join(LATENT_POOLINGS)} (got {self.latent_pooling!r})")
        if self.latent_layer not in ("final", "middle", "late") and not str(self.latent_layer).isdigit():
            out.append(f"latent_layer must be final, middle, late or a layer index (got {self.latent_layer!r})")
        if self.reference_model and self.dsla_loss != "dpo":
            out.append(f"dsla with dsla_loss {self.dsla_loss} uses no reference model: unset reference_model")
        return out

    def mlx_lm_lora_args(self, model_path, data_path, adapter_path):
        args, notes = super().mlx_lm_lora_args(model_path, data_path, adapter_path)
        args.update(dsla_loss=self.dsla_loss, dpo_cpo_loss_type=self.loss_type, delta=self.delta,
                    latent_weight=self.latent_weight, latent_margin=self.latent_margin,
                    latent_gamma=self.latent_gamma, latent_variant=self.latent_variant,
                    latent_pooling=self.latent_pooling, latent_layer=self.latent_layer)
        return args, notes


def dsla_datasets(config: DSLAConfig, data_dir: Path, tokenizer):
    from mlx_lm_lora.trainer.datasets import CacheDataset, create_dataset

    spec = types.SimpleNamespace(train_mode="dsla")
    sets = []
    for name in ("train", "valid"):
        rows = read_jsonl(data_dir / f"{name}.jsonl")
        try:
            ds = CacheDataset(create_dataset(rows, tokenizer, spec)) if rows else None
        except ValueError as exc:  # the rendered prompt is not a prefix of the answers
            raise ValueError(f"{data_dir / (name + '.jsonl')}: {exc}") from None
        if ds is not None and len(ds) < config.batch_size:
            raise ValueError(f"{data_dir}/{name}.jsonl has {len(ds)} rows but batch_size is "
                             f"{config.batch_size}: add rows or lower batch_size")
        sets.append(ds)
    if sets[0] is None:
        raise ValueError(f"{data_dir}/train.jsonl has no rows")
    return sets[0], sets[1]


def run_dsla(config: DSLAConfig, ctx: RunContext) -> None:
    from mlx_lm_lora.trainer import dsla_trainer as dt

    from .sft import model_for

    data_dir = resolve_data(config)
    model_path = model_for(config)
    seed_everything(config.seed)
    ctx.log(f"dsla: model {model_path}, data {data_dir}, {config.iters} iterations, {config.fine_tune_type}, "
            f"{config.dsla_loss} + latent {config.latent_variant} x {config.latent_weight}")
    model, tokenizer, _ = load_starting_policy(config, ctx, model_path)
    ref_model = load_reference(config, model_path) if config.dsla_loss == "dpo" else None
    adapter_config = write_adapter_config(config, output_dir(ctx), model_path)
    train_set, valid_set = dsla_datasets(config, data_dir, tokenizer)
    optimizer = build_optimizer(config)
    callback = RLCallback(ctx, model, adapter_config, best_metric="val_loss")
    args = dt.DSLATrainingArgs(
        **loop_args(config, ctx), loss_type=config.dsla_loss,
        dpo_cpo_loss_type=config.loss_type, beta=config.beta, delta=config.delta,
        latent_weight=config.latent_weight, latent_margin=config.latent_margin,
        latent_gamma=config.latent_gamma, latent_variant=config.latent_variant,
        latent_pooling=config.latent_pooling, latent_layer=config.latent_layer)

    def train(wrap):
        with patched(dt, "iterate_dsla_batches", wrap(dt.iterate_dsla_batches)):
            dt.train_dsla(model=model, optimizer=optimizer, train_dataset=train_set, val_dataset=valid_set,
                          args=args, ref_model=ref_model, training_callback=callback)

    train_with_store(config, ctx, model, model_path, train)


register(Method(name="dsla", family="preference", config_class=DSLAConfig, run=run_dsla, distributed=True,
                description="DSLA: a preference loss (DPO, ORPO or CPO) plus hidden-state alignment."))
