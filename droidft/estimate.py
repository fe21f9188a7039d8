"""Memory, time and disk estimates for a training run, before it starts.

Used by the engine (`jobs.start` refuses a run whose checkpoints would not fit) and by the
pages (the setup forms show memory and time; the Models page says whether a model fits this
machine, as LoRA, QLoRA or full fine-tuning, and what makes it fit). Rough by design: the
rules of thumb are in the docstrings; speed comes from earlier runs on the same model when
there are any.
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


# --------------------------------------------------------------------------- fits this machine?
# Memory for LoRA, QLoRA and full fine-tuning against this machine's RAM. The budget is 75% of
# RAM: on a Mac about what Metal lets MLX keep resident of the unified memory; on Linux it leaves
# the system and the dashboard room.

BUDGET_SHARE = 0.75

# Tried in this order, each on top of the ones before, until the estimate fits.
ADVICE = [{"grad_checkpoint": True}, {"batch_size": 1}, {"num_layers": 8}, {"max_seq_length": 1024},
          {"max_seq_length": 512}]


def describe_changes(changes: dict) -> str:
    """{'grad_checkpoint': True, 'batch_size': 1} -> 'gradient checkpointing, batch size 1'."""
    words = {"grad_checkpoint": lambda v: "gradient checkpointing",
             "batch_size": lambda v: f"batch size {v}",
             "num_layers": lambda v: f"LoRA on the last {v} layers only",
             "max_seq_length": lambda v: f"max sequence length {v}"}
    return ", ".join(words[k](v) for k, v in changes.items() if k in words)


def machine_memory_gb() -> float | None:
    """Physical RAM (unified memory on a Mac), in GiB."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
    except (ValueError, OSError, AttributeError):
        return None


@dataclass
class FitOption:
    method: str  # LoRA | QLoRA (4-bit base) | Full fine-tune
    memory_gb: float
    fits: bool
    changes: dict = field(default_factory=dict)  # config changes that make it fit (when needed)
    advice: str = ""  # one line: fits as is / fits with ... / does not fit


@dataclass
class FitReport:
    total_gb: float | None
    budget_gb: float | None
    options: list[FitOption]
    params_m: float

    @property
    def best(self) -> FitOption | None:
        """The first option that fits as set up, else the first that fits with changes."""
        return next((o for o in self.options if o.fits and not o.changes), None) or \
            next((o for o in self.options if o.fits), None)


def _modes(quantized: bool) -> list[tuple[str, dict]]:
    if quantized:  # already quantised: LoRA on it is QLoRA; full fine-tuning needs real weights
        return [("LoRA (on this quantised base)", {"fine_tune_type": "lora"})]
    return [("LoRA", {"fine_tune_type": "lora"}),
            ("QLoRA (4-bit base)", {"fine_tune_type": "lora", "quantize_bits": 4}),
            ("Full fine-tune", {"fine_tune_type": "full"})]


def fit_report(model_config: dict, *, batch_size: int = 4, max_seq_length: int = 2048,
               avg_tokens: float | None = None, total_gb: float | None = None) -> FitReport:
    """Memory of each way to fine-tune this model (its config.json) at this batch and length,
    against `total_gb` of RAM (this machine's by default), with advice for what does not fit."""
    from .config import SFTConfig

    total = machine_memory_gb() if total_gb is None else total_gb
    budget = total * BUDGET_SHARE if total else None
    quantized = bool(model_config.get("quantization") or model_config.get("quantization_config"))
    options, params_m = [], 0.0
    for method, mode in _modes(quantized):
        base = SFTConfig(model="demo", data="demo", batch_size=batch_size, max_seq_length=max_seq_length, **mode)
        est = estimate_run(base, model_config, avg_tokens=avg_tokens)
        params_m = est.params_m
        if budget is None or est.memory_gb <= budget:
            options.append(FitOption(method, est.memory_gb, True, {}, "fits as set up"))
            continue
        changes, fitted = {}, None
        for change in ADVICE:
            if "num_layers" in change and mode["fine_tune_type"] == "full":
                continue  # full fine-tuning trains every layer
            changes.update(change)
            est_c = estimate_run(base.replace(**changes), model_config, avg_tokens=avg_tokens)
            if est_c.memory_gb <= budget:
                fitted = est_c
                break
        if fitted is not None:
            options.append(FitOption(method, est.memory_gb, True, dict(changes),
                                     f"fits with {describe_changes(changes)} ({fitted.memory_gb:.1f} GB)"))
        else:
            smaller = "a 4-bit base (QLoRA) or a smaller model" if mode["fine_tune_type"] == "lora" \
                and not (quantized or mode.get("quantize_bits")) else "a smaller model"
            options.append(FitOption(method, est.memory_gb, False, {},
                                     f"does not fit, even with {describe_changes(changes)}: try {smaller}"))
    return FitReport(total, budget, options, params_m)


def fit_summary(report: FitReport) -> str:
    """One line for a table or the CLI."""
    best = report.best
    if report.budget_gb is None:
        return "unknown (this machine's memory could not be read)"
    if best is None:
        return f"too big for {report.total_gb:.0f} GB of RAM"
    return f"{best.method}: {best.advice}"


def fit_advice(config, model_config: dict, *, total_gb: float | None = None,
               avg_tokens: float | None = None) -> str | None:
    """For a training form: None when `config` fits this machine, else one line saying by how
    much it does not and the first set of changes (from ADVICE, then a 4-bit base) that fits."""
    total = machine_memory_gb() if total_gb is None else total_gb
    if not total:
        return None
    budget = total * BUDGET_SHARE
    need = estimate_run(config, model_config, avg_tokens=avg_tokens).memory_gb
    if need <= budget:
        return None
    line = (f"This may not fit: about {need:.1f} GB against a budget of {budget:.1f} GB "
            f"(75% of this machine's {total:.0f} GB).")
    quantized = bool(model_config.get("quantization") or model_config.get("quantization_config"))
    steps = list(ADVICE)
    if getattr(config, "fine_tune_type", "lora") != "full" and not quantized and not getattr(config, "quantize_bits", None):
        steps.insert(0, {"quantize_bits": 4})
    changes: dict = {}
    for change in steps:
        if "num_layers" in change and getattr(config, "fine_tune_type", "lora") == "full":
            continue
        changes.update(change)
        if estimate_run(config.replace(**changes), model_config, avg_tokens=avg_tokens).memory_gb <= budget:
            words = describe_changes(changes)
            if changes.get("quantize_bits"):
                words = ", ".join(filter(None, ["a 4-bit base (QLoRA: quantize_bits 4)", words]))
            return f"{line} It fits with {words}."
    return f"{line} Even the smallest settings do not fit: pick a smaller model."
