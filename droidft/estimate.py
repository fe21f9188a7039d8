"""Memory, time and disk estimates for a training run, before it starts.

Used by the engine (`jobs.start` refuses a run whose checkpoints would not fit) and by the
pages (the setup forms show memory and time). Rough by design: the rules of thumb are in the
docstrings; speed comes from earlier runs on the same model when there are any.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Estimate:
    params_m: float  # base model parameters, millions
    trainable_m: float  # trained parameters, millions
    memory_gb: float
    tokens: int  # tokens the run will process
    seconds: float | None
    basis: str  # where the speed figure comes from
    breakdown: dict = field(default_factory=dict)


def model_shape(cfg: dict) -> dict:
    """The sizes an estimate needs from a model's config.json, with defaults for missing keys
    (names differ between families: hidden_size / n_embd / d_model, ...)."""
    h = int(cfg.get("hidden_size") or cfg.get("n_embd") or cfg.get("d_model") or 512)
    layers = int(cfg.get("num_hidden_layers") or cfg.get("n_layer") or cfg.get("num_layers") or 8)
    inter = int(cfg.get("intermediate_size") or 4 * h)
    heads = int(cfg.get("num_attention_heads") or max(1, h // 64))
    kv = int(cfg.get("num_key_value_heads") or heads)
    head_dim = int(cfg.get("head_dim") or h // heads)
    vocab = int(cfg.get("vocab_size") or 32000)
    tied = bool(cfg.get("tie_word_embeddings", False))
    return dict(h=h, layers=layers, inter=inter, heads=heads, kv=kv, head_dim=head_dim,
                vocab=vocab, tied=tied)


def estimate_run(config, model_config: dict, *, avg_tokens: float | None = None,
                 measured_tokens_per_s: float | None = None,
                 gflops: float | None = None) -> Estimate:
    """A rough memory and time estimate for a training config on a model (its config.json).

    Memory: weights + trainable weights with gradients and Adam moments (fp32) + activations.
    Time: tokens / tokens-per-second, where the speed is what earlier runs on this model
    measured when there are any, else a FLOP count over an assumed machine speed."""
    s = model_shape(model_config)
    h, L, inter, kvd = s["h"], s["layers"], s["inter"], s["kv"] * s["head_dim"]
    per_layer = {
        "self_attn.q_proj": (h, s["heads"] * s["head_dim"]), "self_attn.k_proj": (h, kvd),
        "self_attn.v_proj": (h, kvd), "self_attn.o_proj": (s["heads"] * s["head_dim"], h),
        "mlp.gate_proj": (h, inter), "mlp.up_proj": (h, inter), "mlp.down_proj": (inter, h),
    }
    layer_params = sum(i * o for i, o in per_layer.values())
    embed = s["vocab"] * h * (1 if s["tied"] else 2)
    params = embed + L * layer_params
    quant = model_config.get("quantization") or model_config.get("quantization_config") or {}
    bits = quant.get("bits") or getattr(config, "quantize_bits", None)
    dtype = str(model_config.get("torch_dtype") or "bfloat16")
    # Off macOS MLX computes on the CPU, where droidft casts half-precision weights (and
    # quantisation scales) to float32 (blas.float32_on_cpu).
    on_cpu = sys.platform != "darwin"
    if bits:
        group = int(quant.get("group_size") or getattr(config, "quantize_group_size", 64) or 64)
        bytes_per = bits / 8 + (8 if on_cpu else 4) / group  # + a scale and a bias per group
    else:
        bytes_per = 4 if ("32" in dtype or on_cpu) else 2

    ftt = getattr(config, "fine_tune_type", "lora")
    n_layers = getattr(config, "num_layers", -1)
    tuned_layers = L if n_layers in (-1, None) else min(L, int(n_layers))
    lora = getattr(config, "lora_parameters", None)
    rank = getattr(lora, "rank", 8) or 8
    keys = getattr(lora, "keys", None) or list(per_layer)
    if ftt == "full":
        trainable = tuned_layers * layer_params
    else:
        dims = [per_layer.get(k, (h, h)) for k in keys]
        trainable = tuned_layers * sum(rank * (i + o) for i, o in dims)
        if ftt == "dora":
            trainable += tuned_layers * sum(o for _, o in dims)

    batch = int(getattr(config, "batch_size", 1) or 1)
    max_len = int(getattr(config, "max_seq_length", 2048) or 2048)
    seq = min(max_len, int(avg_tokens)) if avg_tokens else min(max_len, 512)
    # Activations kept for the backward pass, per token and layer: the block's inputs and
    # norms, q/k/v, attention output (8h + 3 kv widths), the MLP's gate, up, SiLU and product
    # (4 x intermediate) and the attention probabilities (heads x sequence). Fitted to MLX's
    # measured peaks (bench/bench_sizes.py, demo and Qwen2.5-0.5B widths, batch 4 x 512):
    # backward holds about one layer more; with gradient checkpointing only each layer's input
    # stays, and recomputing a layer holds about 2.5 layers' worth.
    act_bytes = 4 if (on_cpu or "32" in dtype) else 2
    per_layer = batch * seq * act_bytes * (8 * h + 3 * kvd + 4 * inter + s["heads"] * seq)
    if getattr(config, "grad_checkpoint", False):
        activations = batch * seq * act_bytes * h * L + 2.5 * per_layer
    else:
        activations = (tuned_layers + 1) * per_layer
    logits = batch * seq * s["vocab"] * 4 * 3  # logits, their softmax and its gradient, fp32
    weights = params * bytes_per
    train_state = trainable * 4 * 4  # weights, gradients, two Adam moments in fp32
    total = (weights + train_state + activations + logits) * 1.15  # the compiled step, allocator slack

    iters = int(getattr(config, "iters", 0) or 0)
    tokens = iters * batch * seq
    if measured_tokens_per_s and measured_tokens_per_s > 0:
        seconds = tokens / measured_tokens_per_s
        basis = f"measured speed of earlier runs on this model ({measured_tokens_per_s:,.0f} tokens/s)"
    else:
        flops_per_token = (6 if ftt == "full" else 4) * params
        speed = (gflops or 50.0) * 1e9
        seconds = tokens * flops_per_token / speed
        basis = f"FLOP count at an assumed {(gflops or 50.0):.0f} GFLOP/s (no earlier runs on this model)"
    return Estimate(
        params_m=params / 1e6, trainable_m=trainable / 1e6, memory_gb=total / 2**30,
        tokens=tokens, seconds=seconds, basis=basis,
        breakdown={"weights_gb": weights / 2**30, "training_state_gb": train_state / 2**30,
                   "activations_gb": (activations + logits) / 2**30, "sequence_tokens": seq},
    )


def measured_tokens_per_s(model_path: str, limit: int = 5) -> float | None:
    """Median training speed of the last completed runs on this model, if any."""
    from . import store

    runs = [r for r in store.list_runs(status="completed", limit=200) if r.get("model") == str(model_path)]
    if not runs:
        return None
    frame = store.metrics_frame([r["id"] for r in runs[:limit]], names=["tokens_per_second"])
    if frame is None or len(frame) == 0:
        return None
    return float(frame["value"].median())


def run_needs_bytes(config, model_path: str | os.PathLike) -> int:
    """Roughly what a run writes: its checkpoints (every `save_every` steps, all kept) and
    the final and best adapters, each the size of the trained weights in fp32, plus a
    quantised copy of the base for QLoRA."""
    model_path = Path(model_path)
    try:
        model_config = json.loads((model_path / "config.json").read_text())
    except (OSError, ValueError):
        return 0
    per_save = int(estimate_run(config, model_config).trainable_m * 1e6 * 4)
    iters = int(getattr(config, "iters", 0) or 0)
    save_every = int(getattr(config, "save_every", 0) or 0)
    saves = (iters // save_every if save_every > 0 else 0) + 2
    extra = 0
    if getattr(config, "quantize_bits", None):
        extra = sum(f.stat().st_size for f in model_path.glob("*.safetensors"))
    return per_save * saves + extra
