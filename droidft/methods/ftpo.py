"""FTPO (final-token preference optimisation, Liquid AI's Antidoom method) through
mlx-lm-lora's FTPO trainer: at a given context, move probability from one next token
(`rejected_decoded`) to preferred alternatives (`multi_chosen_decoded`), while two MSE terms
keep every other logit near the frozen reference model's.

Data (model-specific, rendered with the model's chat template):
`{"context_with_chat_template", "rejected_decoded", "multi_chosen_decoded"}`. mlx-lm-lora
silently drops rows whose rejected text is not exactly one token, whose chosen texts are
not single tokens, or whose context is too long; droidft says which lines and why, and
refuses the run when fewer than one batch is left. Demo set: data/demo/ftpo (the demo model
opens every reply with "I"; FTPO teaches "My").

Worked around in mlx-lm-lora 5.10: `train_ftpo` saves no numbered checkpoints (droidft
copies `adapters.safetensors` to `NNNNNNN_adapters.safetensors` at each save step), never
validates after the last step (droidft does), and reports neither learning rate, speed nor
memory (`TimedCallback`).

Stored: `train_loss`, `train_pref_loss`, `train_mse_elem`, `train_mse_tgt_tokenwise`,
`train_chosen_win`, `train_margin_win`, `train_mean_delta`, `train_active_weight`,
`learning_rate`, `iterations_per_second`, `peak_memory_gb`; `val_loss`, `val_time` and the
same names with `val_` at each evaluation.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from ..config import _finite
from ..reporting import RunContext
from . import Method, register
from .klpo import TimedCallback
from .rl_training import (
    RLTrainingConfig, build_optimizer, load_reference, load_starting_policy, loop_args, output_dir,
    patched, read_jsonl, resolve_data, seed_everything, train_with_store, write_adapter_config)


@dataclass
class FTPOConfig(RLTrainingConfig):
    """Final-token preference optimisation: prefer other next tokens at a given context."""

    method: ClassVar[str] = "ftpo"
    TRAIN_MODE: ClassVar[str] = "ftpo"
    DEMO_FOLDER: ClassVar[str] = "ftpo"
    DISTRIBUTED_REFUSAL: ClassVar[str | None] = (
        "mlx-lm-lora's iterate_ftpo_batches does not split rows over ranks: every rank would "
        "train the same batch")

    iters: int = 40
    learning_rate: float = 1e-4
    steps_per_eval: int = 10
    save_every: int = 20
    lambda_mse_target: float = 0.05
    tau_mse_target: float = 1.0
    lambda_mse: float = 0.4
    clip_epsilon_logits: float = 2.0

    def problems(self) -> list[str]:
        out = super().problems()
        if out and self.type_problems():
            return out
        for name in ("lambda_mse_target", "tau_mse_target", "lambda_mse"):
            _finite(out, name, getattr(self, name), low=0)
        _finite(out, "clip_epsilon_logits", self.clip_epsilon_logits, low=0, low_open=True)
        return out

    def mlx_lm_lora_args(self, model_path, data_path, adapter_path):
        args, notes = super().mlx_lm_lora_args(model_path, data_path, adapter_path)
        args.update(lambda_mse_target=self.lambda_mse_target, tau_mse_target=self.tau_mse_target,
                    lambda_mse=self.lambda_mse, clip_epsilon_logits=self.clip_epsilon_logits)
        notes.append("stock FTPO writes no numbered checkpoints and does not validate after the last step")
        return args, notes


def ftpo_datasets(config: FTPOConfig, data_dir: Path, tokenizer, log=print):
    """mlx-lm-lora's FTPODataset per split, with the rows it would drop named by line."""
    from mlx_lm_lora.trainer.datasets import CacheDataset, FTPODataset

    sets = []
    for name in ("train", "valid"):
        rows = read_jsonl(data_dir / f"{name}.jsonl")
        kept, dropped = [], []
        for line, row in enumerate(rows, start=1):
            if len(FTPODataset([row], tokenizer, max_seq_length=config.max_seq_length)):
                kept.append(row)
            else:
                dropped.append(f"line {line} ({_why_dropped(row, tokenizer, config.max_seq_length)})")
        if dropped:
            log(f"{name}.jsonl: the FTPO trainer cannot use {len(dropped)} row(s): " + "; ".join(dropped[:5])
                + (" ..." if len(dropped) > 5 else ""))
        if rows and len(kept) < config.batch_size:
            raise ValueError(f"{data_dir / (name + '.jsonl')}: only {len(kept)} usable row(s) for batch_size "
                             f"{config.batch_size}; " + "; ".join(dropped[:5]))
        sets.append(CacheDataset(FTPODataset(kept, tokenizer, max_seq_length=config.max_seq_length))
                    if kept else None)
    if sets[0] is None:
        raise ValueError(f"{data_dir}/train.jsonl has no rows")
    return sets[0], sets[1]


def _why_dropped(row: dict, tokenizer, max_seq_length: int) -> str:
    context = tokenizer.encode(row["context_with_chat_template"])
    rejected = tokenizer.encode(row["rejected_decoded"])
    if not context or len(context) > max_seq_length:
        return f"the context is {len(context)} tokens, over max_seq_length {max_seq_length}"
    if len(rejected) != 1:
        return f"rejected_decoded {row['rejected_decoded']!r} is {len(rejected)} tokens, not one"
    return "no chosen text is a single token different from the rejected one"


def numbered_checkpoints(iterate_batches, adapter_file: Path, save_every: int):
    """FTPO saves only adapters.safetensors: copy it to the numbered checkpoint name every
    other trainer writes, before the next batch is handed out (after the save)."""

    def wrapped(*args, **kwargs):
        done = 0
        for batch in iterate_batches(*args, **kwargs):
            save_numbered(adapter_file, done, save_every)
            done += 1
            yield batch

    return wrapped


def save_numbered(adapter_file: Path, done: int, save_every: int) -> None:
    if done and done % save_every == 0 and adapter_file.exists():
        shutil.copyfile(adapter_file, adapter_file.parent / f"{done:07d}_adapters.safetensors")


def run_ftpo(config: FTPOConfig, ctx: RunContext) -> None:
    from mlx_lm_lora.trainer import ftpo_trainer as ft

    from .sft import model_for

    data_dir = resolve_data(config)
    model_path = model_for(config)
    seed_everything(config.seed)
    ctx.log(f"ftpo: model {model_path}, data {data_dir}, {config.iters} iterations, {config.fine_tune_type}")
    model, tokenizer, _ = load_starting_policy(config, ctx, model_path)
    ref_model = load_reference(config, model_path)
    adapter_config = write_adapter_config(config, output_dir(ctx), model_path)
    train_set, valid_set = ftpo_datasets(config, data_dir, tokenizer, ctx.log)
    optimizer = build_optimizer(config)
    callback = TimedCallback(ctx, model, adapter_config, optimizer, best_metric="val_loss")
    args = ft.FTPOTrainingArgs(
        **loop_args(config, ctx), lambda_mse_target=config.lambda_mse_target, tau_mse_target=config.tau_mse_target,
        lambda_mse=config.lambda_mse, clip_epsilon_logits=config.clip_epsilon_logits)
    adapter_file = Path(args.adapter_file)

    def evaluate(*a, **kw):  # timed: the trainer reports no val_time
        started = time.perf_counter()
        out = original_evaluate(*a, **kw)
        callback.extra_val = {"time": time.perf_counter() - started}
        return out

    original_evaluate = ft.evaluate_ftpo

    def train(wrap):
        iterate = wrap(numbered_checkpoints(ft.iterate_ftpo_batches, adapter_file, config.save_every))
        with patched(ft, "iterate_ftpo_batches", iterate):
            ft.train_ftpo(model=model, ref_model=ref_model, optimizer=optimizer, train_dataset=train_set,
                          val_dataset=valid_set, args=args, training_callback=callback)
        save_numbered(adapter_file, config.iters, config.save_every)
        if valid_set is not None and config.iters % config.steps_per_eval:
            loss, metrics = evaluate(model, ref_model, valid_set, config.batch_size, config.val_batches,
                                     config.max_seq_length, args)
            callback.on_val_loss_report({"iteration": config.iters + 1, "val_loss": loss,
                                         **{f"val_{k}": v for k, v in metrics.items()}})

    train_with_store(config, ctx, model, model_path, train, [(ft, "evaluate_ftpo", evaluate)])


register(Method(name="ftpo", family="ftpo", config_class=FTPOConfig, run=run_ftpo,
                description="FTPO: at a context, move probability from one next token to better ones."))
