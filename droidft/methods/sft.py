"""Supervised fine-tuning (LoRA, DoRA, full, QLoRA) through mlx-lm's own trainer.

Runs `mlx_lm.lora.train_model` in-process (so adapters, adapter_config.json and
checkpoints are exactly what stock `mlx_lm lora` writes) with two additions:
a `StoreCallback` for metrics, and a stoppable batch iterator for clean stops.
"""

from __future__ import annotations

import functools
import types
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .. import data as datasets
from .. import store
from ..blas import float32_on_cpu
from ..config import SFTConfig, continued_schedule
from ..models import quantized_copy, resolve_model
from ..reporting import ReportEvery, RunContext, StoreCallback, checkpoint_recorder, stoppable
from . import Method, register


@contextmanager
def _patched_train(iterate_wrapper, start_step: int = 0):
    """`mlx_lm.lora.train_model` takes no batch iterator; hand one to its `train` call.
    A resumed run's learning-rate schedule continues from `start_step`."""
    import mlx_lm.lora as lora
    from mlx_lm.tuner.trainer import iterate_batches

    original, original_schedule = lora.train, lora.build_schedule
    lora.train = functools.partial(original, iterate_batches=iterate_wrapper(iterate_batches))
    lora.build_schedule = lambda schedule: continued_schedule(schedule, start_step)
    try:
        yield
    finally:
        lora.train, lora.build_schedule = original, original_schedule


def model_for(config) -> Path:
    """The base model folder a config trains on (a quantised copy for QLoRA)."""
    path = resolve_model(config.model)
    if config.quantize_bits:
        path = quantized_copy(path, config.quantize_bits, config.quantize_group_size)
    return path


def run(config: SFTConfig, ctx: RunContext) -> None:
    from mlx_lm.lora import train_model
    from mlx_lm.tuner.datasets import load_dataset
    from mlx_lm.utils import load

    data_dir = datasets.resolve_dataset(config.data, method="sft")
    model_path = model_for(config)
    if config.quantize_bits and ctx.rank == 0:
        store.update_run(ctx.run_id, model=str(model_path))  # the base its adapter loads on
    iters = config.iters
    ctx.log(f"model {model_path}, data {data_dir}, {iters} iterations, {config.fine_tune_type}")

    np.random.seed(config.seed)  # batch order, as stock mlx_lm lora does (and equal on every rank)
    args = types.SimpleNamespace(**config.mlx_lm_args(str(model_path), str(data_dir), str(ctx.adapter_dir)))
    args.steps_per_report = ReportEvery(args.steps_per_report)  # the first point right after step 1
    model, tokenizer = load(str(model_path))
    cast = float32_on_cpu(model)
    if cast:
        ctx.log(f"weights cast from {cast} to float32: MLX's CPU backend has no fast half-precision matmul")
    train_set, valid_set, _ = load_dataset(args, tokenizer)
    if config.num_layers > len(model.layers):
        raise ValueError(f"num_layers is {config.num_layers} but {model_path.name} has only "
                         f"{len(model.layers)} layers: use -1 for all of them")

    callback = StoreCallback(ctx, model=model, adapter_config=ctx.adapter_dir / "adapter_config.json")
    save_every = config.save_every

    on_step = checkpoint_recorder(ctx, save_every)

    with _patched_train(lambda ib: stoppable(ib, ctx, on_step=on_step), config.start_step):
        train_model(args, model, train_set, valid_set, callback)

    last = ctx.state.get("stopped_at", iters)
    ckpt = ctx.adapter_dir / f"{last:07d}_adapters.safetensors"
    if last % save_every == 0 and ckpt.exists():
        ctx.artifact(kind="checkpoint", path=str(ckpt), step=last + ctx.step_offset)
    ctx.artifact(kind="final_adapter", path=str(ctx.adapter_dir), step=last + ctx.step_offset,
                        meta={"fine_tune_type": config.fine_tune_type, "base_model": str(model_path)})
    if "best" in ctx.state:
        step, val = ctx.state["best"]
        ctx.artifact(kind="best_adapter", path=str(ctx.adapter_dir / "best"), step=step,
                            meta={"val_loss": val})
    ctx.state["iters"] = iters


register(Method(
    name="sft", family="sft", config_class=SFTConfig, run=run, distributed=True,
    description="Supervised fine-tuning with mlx-lm: LoRA, DoRA, full, or QLoRA on a quantised base.",
))
