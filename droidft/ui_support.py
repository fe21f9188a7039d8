"""Helpers the dashboard needs that are not UI: formatting, progress and ETA, memory/time
estimates, form field descriptions for any config dataclass, config diffs, the lineage graph
and plain-language explanations of engine errors.

Nothing here imports Streamlit; every function is usable (and tested) without it.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import time
import types
import typing
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# ---------------------------------------------------------------------------------------
# formatting


def fmt_duration(seconds: float | None) -> str:
    """12 s, 3 min 05 s, 2 h 04 min; '-' for unknown."""
    if seconds is None or not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        return "-"
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    minutes, sec = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    return f"{hours // 24} d {hours % 24} h"


def fmt_ago(ts: float | None, now: float | None = None) -> str:
    if not ts or not isinstance(ts, (int, float)) or not math.isfinite(ts):
        return "-"
    delta = (now or time.time()) - ts
    if delta < 5:
        return "just now"
    return fmt_duration(delta) + " ago"


def fmt_time(ts: float | None) -> str:
    if not ts or not isinstance(ts, (int, float)) or not math.isfinite(ts):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


def fmt_count(n: float | None) -> str:
    """1234 -> 1.2k, 2_500_000 -> 2.5M."""
    if n is None or not isinstance(n, (int, float)) or not math.isfinite(n):
        return "-"
    for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.1f}{suffix}"
    return f"{n:.0f}" if float(n).is_integer() else f"{n:.3g}"


def fmt_number(x: float | None, digits: int = 4) -> str:
    if x is None or not isinstance(x, (int, float)) or not math.isfinite(x):
        return "-"
    return f"{x:.{digits}g}"


_ANSI = None


def strip_ansi(text: str) -> str:
    """Text without terminal colour codes (trainer output written for a terminal)."""
    import re

    global _ANSI
    _ANSI = _ANSI or re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
    return _ANSI.sub("", text or "")


def short_path(path) -> str:
    """The last part of a model or dataset path ('demo' stays 'demo')."""
    text = str(path or "?")
    return Path(text).name or text


def short_blas(note: str | None) -> str:
    """'openblas (/usr/lib/.../libopenblas.so.0)' -> 'openblas'; keeps a warning after ' - '."""
    text = str(note or "?")
    head, _, warning = text.partition(" - ")
    return head.split(" (")[0] + (f" ({warning})" if warning else "")


def fmt_device(device) -> str:
    """'Device(gpu, 0)' -> 'GPU (Metal)', 'Device(cpu, 0)' -> 'CPU'."""
    text = str(device or "?")
    if text.startswith("Device("):
        text = text[len("Device("):].split(",")[0].strip(" )")
    return {"gpu": "GPU (Metal)", "cpu": "CPU"}.get(text, text)


# Streamlit material icons (render everywhere, unlike emoji on machines without an emoji font)
STATUS_ICONS = {"queued": ":material/schedule:", "running": ":material/directions_run:",
                "completed": ":material/check_circle:", "stopped": ":material/stop_circle:",
                "failed": ":material/error:"}
STATUS_COLORS = {"queued": "gray", "running": "blue", "completed": "green", "stopped": "orange",
                 "failed": "red"}


# ---------------------------------------------------------------------------------------
# metrics frames


def metrics_frame(rows) -> "Any":
    """Metric rows (a list of dicts or a DataFrame) as a DataFrame with step, time, name, value."""
    import pandas as pd

    if rows is None:
        return pd.DataFrame(columns=["step", "time", "name", "value"])
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    for col in ("step", "time", "name", "value"):
        if col not in frame.columns:
            frame[col] = pd.Series(dtype="float64" if col != "name" else "object")
    return frame


def merge_metrics(old, new):
    """Append newly polled rows to what a page already holds, dropping repeats of (name, step).

    Polls overlap on purpose (they ask for a little before the last time seen), so a row written
    in the same instant as the previous poll is never missed; the overlap is removed here."""
    import pandas as pd

    new = metrics_frame(new)
    if old is None or len(old) == 0:
        out = new
    elif len(new) == 0:
        return old
    else:
        out = pd.concat([old, new], ignore_index=True)
    keys = [c for c in ("run_id", "name", "step") if c in out.columns]
    out = out.drop_duplicates(subset=keys, keep="last")
    return out.sort_values(["step", "time"], kind="stable").reset_index(drop=True)


def downsample(frame, max_points: int = 1500, by=("run_id", "name")):
    """At most `max_points` rows per series (evenly spaced, always keeping the last one), so
    a chart of a million-row history stays light in the browser."""
    import numpy as np

    if frame is None or len(frame) == 0:
        return frame
    keys = [c for c in by if c in frame.columns]
    if not keys:
        groups = [frame]
    else:
        groups = [g for _, g in frame.groupby(keys, sort=False)]
    parts = []
    for group in groups:
        if len(group) > max_points:
            idx = np.unique(np.linspace(0, len(group) - 1, max_points).round().astype(int))
            group = group.iloc[idx]
        parts.append(group)
    import pandas as pd

    return pd.concat(parts, ignore_index=True) if parts else frame


def latest_values(frame) -> dict[str, float]:
    """The newest value of every metric name in a frame."""
    if frame is None or len(frame) == 0:
        return {}
    last = frame.sort_values(["step", "time"], kind="stable").groupby("name").tail(1)
    return {str(r.name): float(r.value) for r in last.itertuples(index=False)
            if r.value is not None and not (isinstance(r.value, float) and math.isnan(r.value))}


def chart_groups(names) -> list[tuple[str, list[str], str]]:
    """Which charts a run's metrics make, as (title, metric names, y-axis title): loss, the RL
    rewards (total, per reward function), preference rewards, KL, completion lengths,
    clipping, then learning rate, speed and memory, then anything else reported.
    Spreads (`_std`), coverage and raw log-probabilities are left out."""
    import re

    names = set(names)
    used: set[str] = set()
    groups: list[tuple[str, list[str], str]] = []

    def take(title: str, members, y_title: str) -> None:
        members = [n for n in members if n in names and n not in used]
        if members:
            groups.append((title, members, y_title))
            used.update(members)

    def matching(pattern: str) -> list[str]:
        return sorted(n for n in names if re.fullmatch(pattern, n))

    take("Loss", ["train_loss", "val_loss"], "loss")
    take("Reward", matching(r"(train_|val_)?total_rewards_mean") + ["reward_mean", "reward"], "reward")
    take("Reward per function", [n for n in matching(r"(train|val)_.+_mean") if not re.search(
        r"grouped_rewards|generated_tokens|logits|logps|kl", n)], "reward")
    take("Preference rewards", matching(r"(train|val)_(chosen|rejected)_reward"), "reward")
    take("Preference accuracy and margin", matching(r"(train|val)_(accuracies|margins)"), "value")
    take("KL divergence", matching(r"(train_|val_)?kl"), "KL")
    take("Completion length", matching(r"(train|val)_(average|min|max)_generated_tokens"), "tokens")
    take("Clipping", matching(r".*clip_ratio.*"), "share clipped")
    take("Learning rate", ["learning_rate"], "learning rate")
    take("Tokens per second", ["tokens_per_second"], "tokens/s")
    take("Peak memory", ["peak_memory_gb"], "GB")
    hidden = {"iterations_per_second", "trained_tokens", "val_time", "step_time"}
    rest: dict[str, list[str]] = {}  # anything else: train_X and val_X share a chart
    for n in sorted(names - used - hidden):
        if not re.search(r"_std$|_coverage$|logps|logits", n):
            rest.setdefault(re.sub(r"^(train|val)_", "", n), []).append(n)
    for key, members in rest.items():
        take(key.replace("_", " ").capitalize(), members, "")
    return groups


def series_labels(names: list[str]) -> dict[str, str]:
    """Short legend labels for the metrics of one chart: the words they all share go (the
    chart's title says them), e.g. train_loss/val_loss -> train/val."""
    words = [n.split("_") for n in names]
    common = set(words[0]).intersection(*words[1:]) if len(words) > 1 else set()
    out = {}
    for name, parts in zip(names, words):
        kept = [w for w in parts if w not in common]
        out[name] = " ".join(kept) or name.replace("_", " ")
    return out


# ---------------------------------------------------------------------------------------
# progress and ETA


@dataclass
class Progress:
    step: int  # steps this run has done (not counting a resumed parent's)
    total: int | None
    fraction: float
    eta_s: float | None
    steps_per_s: float | None
    elapsed_s: float | None

    @property
    def text(self) -> str:
        if self.total:
            out = f"step {self.step} / {self.total}"
        else:
            out = f"step {self.step}"
        if self.eta_s is not None:
            out += f" · about {fmt_duration(self.eta_s)} left"
        return out


def run_progress(run: dict, frame=None, now: float | None = None) -> Progress:
    """Progress of a run from its record and metrics: fraction done, speed and time left.

    Steps in the store are global (a resumed run continues its parent's numbering), the
    config's `iters` counts this run's own steps."""
    now = now or time.time()
    config = run.get("config") or {}
    offset = int(config.get("start_step") or 0)
    total = config.get("iters")
    total = int(total) if isinstance(total, (int, float)) and total > 0 else None
    frame = metrics_frame(frame)
    step = 0
    if len(frame):
        step = max(0, int(frame["step"].max()) - offset)
    if run.get("status") == "completed" and total:
        step = max(step, total)
    started = run.get("started_at")
    end = run.get("ended_at") or now
    elapsed = (end - started) if started else None
    rate = None
    if len(frame) and started:
        # speed from the progress reports themselves: robust to model load time
        steps = frame[frame["name"] == "train_loss"] if "train_loss" in set(frame["name"]) else frame
        pts = steps.groupby("step")["time"].max().sort_index()
        if len(pts) >= 2 and pts.iloc[-1] > pts.iloc[0]:
            rate = (pts.index[-1] - pts.index[0]) / (pts.iloc[-1] - pts.iloc[0])
        if not rate:
            its = frame[frame["name"] == "iterations_per_second"]["value"]
            if len(its):
                rate = float(its.iloc[-1]) or None
    eta = None
    if total and rate and run.get("status") in ("running", "queued"):
        eta = max(0.0, (total - step) / rate)
    fraction = min(1.0, step / total) if total else 0.0
    return Progress(step=step, total=total, fraction=fraction, eta_s=eta,
                    steps_per_s=rate, elapsed_s=elapsed)


# ---------------------------------------------------------------------------------------
# memory and time estimate


@dataclass
class Estimate:
    params_m: float  # base model parameters, millions
    trainable_m: float  # trained parameters, millions
    memory_gb: float
    tokens: int  # tokens the run will process
    seconds: float | None
    basis: str  # where the speed figure comes from
    breakdown: dict = field(default_factory=dict)


def _model_shape(cfg: dict) -> dict:
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
    s = _model_shape(model_config)
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
    bytes_per = (bits / 8 + 0.0625) if bits else (4 if "32" in dtype else 2)

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
    act_per_token_layer = h * 34 + 5 * s["heads"] * seq  # bytes, the usual transformer rule of thumb
    act_layers = 2 if getattr(config, "grad_checkpoint", False) else tuned_layers
    activations = batch * seq * act_per_token_layer * act_layers
    logits = batch * seq * s["vocab"] * 4 * 2
    weights = params * bytes_per
    train_state = trainable * 4 * 4  # weights, gradients, two Adam moments in fp32
    total = (weights + train_state + activations + logits) * 1.15  # allocator slack

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


# ---------------------------------------------------------------------------------------
# forms from config dataclasses

HELP = {
    "model": "The base model to fine-tune. 'demo' is the tiny built-in model that trains in seconds.",
    "data": "A dataset folder holding train.jsonl (and valid.jsonl), or 'demo'.",
    "name": "A name to find this run by later. Leave empty for an automatic one.",
    "fine_tune_type": "lora trains small adapter matrices (fast, small files); dora is LoRA with "
                      "a learned magnitude (a little better, a little slower); full trains every weight.",
    "num_layers": "How many of the last transformer layers get adapters. -1 means all of them.",
    "seed": "Random seed for data order and initialisation; the same seed repeats a run exactly.",
    "quantize_bits": "QLoRA: quantise the base model to this many bits first to save memory. "
                     "Empty = keep the model's own precision.",
    "quantize_group_size": "Quantisation group size (smaller = more accurate, slightly larger).",
    "resume_adapter_file": "Start from these adapter weights instead of fresh ones.",
    "start_step": "Step number the run starts counting from (set by resume).",
    "blas": "CPU math library for the worker on Linux: auto picks OpenBLAS when installed "
            "(7x faster than the reference BLAS on the demo model, ~20x on bigger ones).",
    "optimizer": "adam is the safe default; adamw adds weight decay; sgd/adafactor/muon for experiments.",
    "optimizer_config": "Extra optimizer settings as YAML, e.g. {adamw: {weight_decay: 0.01}}.",
    "batch_size": "Examples per step. Larger is smoother but needs more memory.",
    "iters": "Training steps. More steps learn more and take longer.",
    "epochs": "Passes over the training set; when set, it decides the number of steps instead of iters.",
    "learning_rate": "Step size of the optimizer. 1e-4 suits LoRA; full fine-tuning wants ~1e-5.",
    "lr_schedule": "A learning-rate schedule in mlx-lm's YAML form, e.g. "
                   "{name: cosine_decay, arguments: [1e-5, 1000], warmup: 100}.",
    "warmup_steps": "Steps over which the learning rate ramps up from 0 (then cosine decay). 0 = constant.",
    "val_batches": "Validation batches per evaluation. -1 uses the whole validation set.",
    "steps_per_report": "Report training loss and speed every this many steps (the chart's resolution).",
    "steps_per_eval": "Compute validation loss every this many steps.",
    "save_every": "Save a checkpoint every this many steps (what stop/resume restarts from).",
    "max_seq_length": "Longer examples are cut to this many tokens.",
    "grad_accumulation_steps": "Add up gradients over this many batches before each update "
                               "(a larger effective batch without more memory).",
    "grad_checkpoint": "Recompute activations in the backward pass: much less memory, ~30% slower.",
    "mask_prompt": "Train only on the answer (the assistant turn), not on the prompt.",
    "lora_parameters.rank": "Adapter rank: capacity of the adapter. 8 is typical; 16-64 for bigger changes.",
    "lora_parameters.scale": "Adapter scale (alpha): how strongly the adapter changes the output.",
    "lora_parameters.dropout": "Dropout inside the adapter, against overfitting small datasets.",
    "lora_parameters.keys": "Which linear layers in each block get adapters. None = all of them.",
    # RL / preference (names used by mlx-lm-lora)
    "beta": "Strength of the KL penalty that keeps the policy near the reference model.",
    "epsilon": "Clipping range of the policy ratio.",
    "epsilon_high": "Upper clipping range (asymmetric clipping); empty = same as epsilon.",
    "group_size": "Completions sampled per prompt; rewards are compared within the group.",
    "max_completion_length": "Longest completion the policy generates during training, in tokens.",
    "temperature": "Sampling temperature for the completions generated during training.",
    "reward_functions": "Which reward functions score the completions.",
    "reward_weights": "Weight of each reward function in the total reward.",
    "reference_model": "Frozen model the KL penalty compares against; empty = the base model.",
    "importance_sampling_level": "token (GRPO) or sequence (GSPO) level importance ratios.",
    "grpo_loss_type": "grpo, bnpo or dr_grpo: how token losses are normalised.",
    "loss_type": "Preference loss variant (sigmoid, hinge, ipo, ...).",
    "delta": "Margin for the hinge / DPOP loss variants.",
    "hosts": "Machines to train on together, e.g. [127.0.0.1, 10.0.0.7] (the first is this one: it "
             "writes the run). Empty = this machine only. Needs passwordless ssh and the same paths.",
    "hostfile": "An mlx.launch hostfile (JSON) instead of a host list.",
    "ranks_per_host": "Training processes per machine (mlx.launch -n). 2 on one machine checks a "
                      "multi-machine setup; it is not faster on the same cores.",
    "distributed_backend": "ring (TCP, works everywhere) or mpi (needs MPI installed).",
}

GROUPS = {
    "Model": ("model", "data", "name"),
    "Adapter": ("fine_tune_type", "num_layers", "lora_parameters", "quantize_bits", "quantize_group_size"),
    "Training": ("iters", "epochs", "batch_size", "learning_rate", "optimizer", "warmup_steps",
                 "grad_accumulation_steps", "max_seq_length", "mask_prompt", "grad_checkpoint"),
    "Evaluation and saving": ("steps_per_report", "steps_per_eval", "val_batches", "save_every"),
    "Machines": ("hosts", "hostfile", "ranks_per_host", "distributed_backend"),
}
# set by the app itself (pickers, resume), not typed into the generic form
MANAGED_FIELDS = ("model", "data", "name", "resume_adapter_file", "start_step")


def _choices_for(name: str, config_class, tp=str) -> list | None:
    from . import config as cfg

    known = {"fine_tune_type": list(cfg.FINE_TUNE_TYPES), "optimizer": list(cfg.OPTIMIZERS),
             "blas": ["auto", "openblas", "reference"], "quantize_bits": [None, 2, 3, 4, 5, 6, 8],
             "quantize_group_size": [32, 64, 128], "distributed_backend": ["ring", "mpi"]}
    if name in known:
        return known[name]
    # a method module may declare its own: UPPER_NAME + "S" tuples (e.g. LOSS_TYPES) or
    # dataclass field metadata {"choices": [...]}
    if tp not in (str, int) and typing.get_origin(tp) is not list:
        return None
    module = __import__(config_class.__module__, fromlist=["_"])
    for attr in (name.upper() + "S", name.upper() + "_CHOICES", name.upper()):
        value = getattr(module, attr, None)
        if isinstance(value, (tuple, list)) and value and all(isinstance(v, (str, int)) for v in value):
            return list(value)
    return None


@dataclass
class FieldSpec:
    """One form field derived from a config dataclass field."""

    name: str  # dotted for nested (lora_parameters.rank)
    label: str
    kind: str  # bool | int | float | str | choice | multichoice | yaml
    default: Any
    optional: bool = False  # None is allowed (an empty input)
    help: str = ""
    choices: list | None = None
    group: str = "Advanced"


def _unwrap_optional(tp):
    args = typing.get_args(tp)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else tp), True
    return tp, False


def _group_of(name: str) -> str:
    top = name.split(".")[0]
    for group, names in GROUPS.items():
        if top in names:
            return group
    from .config import BaseConfig, SFTConfig

    shared = {f.name for f in dataclasses.fields(SFTConfig)} | {f.name for f in dataclasses.fields(BaseConfig)}
    return "Advanced" if top in shared else "Method"


def field_specs(config_class, *, skip=MANAGED_FIELDS, prefix: str = "") -> list[FieldSpec]:
    """Form fields for every field of a config dataclass (nested dataclasses flattened with
    dotted names), with type, default, help text and choices. Works for any method's config
    class, so a new method gets a form without new page code."""
    hints = typing.get_type_hints(config_class)
    specs: list[FieldSpec] = []
    instance = config_class()
    for f in dataclasses.fields(config_class):
        if f.name in skip or not f.init:
            continue
        name = prefix + f.name
        tp, optional = _unwrap_optional(hints.get(f.name, str))
        default = getattr(instance, f.name)
        meta = dict(f.metadata or {})
        help_text = meta.get("help") or HELP.get(name) or HELP.get(f.name, "")
        label = meta.get("label") or f.name.replace("_", " ").capitalize()
        if dataclasses.is_dataclass(tp):
            specs += field_specs(tp, skip=(), prefix=name + ".")
            continue
        choices = meta.get("choices") or _choices_for(f.name, config_class, tp)
        origin = typing.get_origin(tp)
        if choices is not None:
            if origin is list:
                kind = "multichoice"
            else:
                kind = "choice"
                if optional and None not in choices:
                    choices = [None, *choices]
        elif tp is bool:
            kind = "bool"
        elif tp is int:
            kind = "int"
        elif tp is float:
            kind = "float"
        elif tp is str:
            kind = "str"
        else:
            kind = "yaml"  # dicts, lists, unions: typed as YAML
        specs.append(FieldSpec(name=name, label=label, kind=kind, default=default,
                               optional=optional, help=help_text, choices=choices,
                               group=meta.get("group") or _group_of(name)))
    return specs


def parse_field(spec: FieldSpec, raw) -> Any:
    """A form input back to a config value. Raises ValueError with a message naming the field."""
    if spec.kind in ("bool", "choice", "multichoice"):
        return raw
    if spec.kind in ("int", "float"):
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            if spec.optional:
                return None
            raise ValueError(f"{spec.label} needs a value")
        if isinstance(raw, str):
            try:
                raw = float(raw.strip())
            except ValueError:
                raise ValueError(f"{spec.label} must be a number (got {raw!r})") from None
        if spec.kind == "int":
            if not float(raw).is_integer():
                raise ValueError(f"{spec.label} must be a whole number (got {raw!r})")
            return int(raw)
        return float(raw)
    if spec.kind == "str":
        raw = "" if raw is None else str(raw)
        return None if (spec.optional and not raw.strip()) else raw
    # yaml
    import yaml

    text = "" if raw is None else str(raw)
    if not text.strip():
        return None if spec.optional else (type(spec.default)() if spec.default is not None else None)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{spec.label} is not valid YAML: {str(exc).splitlines()[0]}") from None


def field_display_value(spec: FieldSpec, value) -> Any:
    """A config value as the form shows it (YAML text for structures, '' for None numbers)."""
    if spec.kind == "yaml":
        if value is None or value == {} or value == []:
            return ""
        import yaml

        return yaml.safe_dump(value, default_flow_style=True).strip()
    if spec.kind in ("int", "float", "str") and value is None:
        return ""
    if spec.kind in ("int", "float") and spec.optional:
        return str(value)  # optional numbers are typed as text (empty = none)
    return value


def get_dotted(values: dict, name: str):
    for part in name.split("."):
        if not isinstance(values, dict):
            return None
        values = values.get(part)
    return values


def set_dotted(values: dict, name: str, value) -> None:
    parts = name.split(".")
    for part in parts[:-1]:
        values = values.setdefault(part, {})
    values[parts[-1]] = value


def build_config(config_class, values: dict) -> tuple[Any | None, list[str]]:
    """A config from form values (dotted names allowed): (config, problems). Never raises
    for bad input: every problem comes back as a sentence."""
    from .config import ConfigError

    nested: dict = {}
    for key, value in values.items():
        set_dotted(nested, key, value)
    try:
        config = config_class.from_dict(nested)
    except ConfigError as exc:
        return None, list(exc.problems)
    except (TypeError, ValueError) as exc:
        return None, [str(exc)]
    return config, list(config.problems())


# ---------------------------------------------------------------------------------------
# presets


def sft_presets() -> dict[str, dict]:
    """SFT presets as dotted field values: the demo preset comes from the engine."""
    try:
        from .demo_model import DEMO_SFT_DEFAULTS

        demo = dict(DEMO_SFT_DEFAULTS)
    except Exception:  # the demo model module may not be importable yet
        demo = {"iters": 60, "batch_size": 4, "learning_rate": 2e-3, "steps_per_report": 5,
                "steps_per_eval": 20, "save_every": 20, "val_batches": 4, "max_seq_length": 256}
    flat = {}
    for key, value in demo.items():
        if isinstance(value, dict) and key == "lora_parameters":
            for k, v in value.items():
                flat[f"lora_parameters.{k}"] = v
        elif key not in ("model", "data", "name", "method"):
            flat[key] = value
    return {
        "quick demo": flat,
        "balanced": {"iters": 600, "batch_size": 4, "learning_rate": 1e-4, "warmup_steps": 30,
                     "lora_parameters.rank": 8, "lora_parameters.scale": 20.0,
                     "steps_per_report": 10, "steps_per_eval": 100, "save_every": 100,
                     "val_batches": 25, "max_seq_length": 2048, "mask_prompt": True},
        "quality": {"iters": 2000, "batch_size": 8, "learning_rate": 5e-5, "warmup_steps": 100,
                    "lora_parameters.rank": 32, "lora_parameters.scale": 20.0,
                    "lora_parameters.dropout": 0.05, "fine_tune_type": "dora",
                    "steps_per_report": 10, "steps_per_eval": 200, "save_every": 200,
                    "val_batches": -1, "max_seq_length": 4096, "mask_prompt": True,
                    "grad_checkpoint": True},
    }


def demo_config():
    """The one-click demo fine-tune: the demo model on the demo data with the demo preset."""
    from .config import SFTConfig

    values = {k: v for k, v in sft_presets()["quick demo"].items()}
    values.update(model="demo", data="demo", name="Demo fine-tune")
    config, problems = build_config(SFTConfig, values)
    if config is None:
        from .config import ConfigError

        raise ConfigError(problems)
    return config


# ---------------------------------------------------------------------------------------
# config diff, exports


def flatten(values, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(values, dict):
        for key, value in values.items():
            if isinstance(value, dict) and value:
                out.update(flatten(value, f"{prefix}{key}."))
            else:
                out[f"{prefix}{key}"] = value
    return out


def config_diff(a: dict, b: dict, *, only_changed: bool = True) -> list[dict]:
    """Rows {setting, a, b} comparing two configs key by key (nested keys dotted)."""
    fa, fb = flatten(a or {}), flatten(b or {})
    rows = []
    for key in sorted(set(fa) | set(fb)):
        va, vb = fa.get(key), fb.get(key)
        if only_changed and va == vb:
            continue
        rows.append({"setting": key, "a": _show(va), "b": _show(vb)})
    return rows


def _show(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def config_yaml(config: dict) -> str:
    import yaml

    return yaml.safe_dump(config, sort_keys=False)


def command_for(config: dict) -> str:
    """The `droidft train` command that repeats a stored run's config."""
    import shlex

    flat = dict(config)
    method = flat.pop("method", "sft")
    parts = ["droidft", "train", method]
    for key in ("model", "data"):
        if flat.get(key):
            parts += [f"--{key}", str(flat[key])]
    parts += ["--config", "config.yaml"]
    return shlex.join(parts)


def adapter_zip(folder: str | Path) -> bytes:
    """The adapter weights and config of a folder zipped in memory (no checkpoints)."""
    folder = Path(folder)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in ("adapters.safetensors", "adapter_config.json"):
            path = folder / name
            if path.is_file():
                zf.write(path, arcname=f"{folder.parent.name}-{folder.name}/{name}")
    return buf.getvalue()


# ---------------------------------------------------------------------------------------
# lineage


def _dot_quote(text: str) -> str:
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def lineage_dot(runs: list[dict], artifacts: list[dict] | None = None,
                evaluations: list[dict] | None = None, max_runs: int = 60) -> str:
    """Graphviz DOT of dataset -> run -> adapter -> fused model -> evaluation.

    runs: dicts with id, name, status, data, parent_id, adapter_path.
    artifacts: dicts with kind, path, run_id and optional meta {sources: [...]}.
    evaluations: dicts with id/name, model/adapter and run_id."""
    runs = list(runs)[:max_runs]
    lines = ["digraph lineage {", "  rankdir=LR;",
             '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];']
    seen: set[str] = set()

    def node(key: str, label: str, color: str):
        if key not in seen:
            seen.add(key)
            lines.append(f"  {_dot_quote(key)} [label={_dot_quote(label)}, fillcolor={_dot_quote(color)}];")

    def edge(a: str, b: str, style: str = ""):
        lines.append(f"  {_dot_quote(a)} -> {_dot_quote(b)}{(' [style=' + style + ']') if style else ''};")

    run_ids = {r["id"] for r in runs}
    adapter_of: dict[str, str] = {}
    for run in runs:
        data = str(run.get("data") or "?")
        dkey = "data:" + data
        node(dkey, "dataset\n" + Path(data).name, "#fef3c7")
        rkey = "run:" + run["id"]
        node(rkey, f"{run.get('name') or run['id']}\n{run.get('method', '')} · {run.get('status', '')}",
             "#fee2e2" if run.get("status") == "failed" else "#dbeafe")
        edge(dkey, rkey)
        if run.get("parent_id") and run["parent_id"] in run_ids:
            edge("run:" + run["parent_id"], rkey, "dashed")
        if run.get("adapter_path"):
            akey = "adapter:" + str(run["adapter_path"])
            adapter_of[str(run["adapter_path"])] = akey
            node(akey, "adapter\n" + run["id"][:8], "#dcfce7")
            edge(rkey, akey)
    for art in artifacts or []:
        if art.get("kind") not in ("fused_adapter", "fused_model", "fusion"):
            continue
        fkey = "fused:" + str(art.get("path"))
        node(fkey, ("fused model" if art.get("kind") == "fused_model" else "fused adapter")
             + "\n" + Path(str(art.get("path"))).name, "#ede9fe")
        meta = art.get("meta") or {}
        if isinstance(meta, str):
            try:
                meta = json.loads(meta)
            except ValueError:
                meta = {}
        for src in meta.get("inputs") or meta.get("sources") or []:
            key = None
            if isinstance(src, dict):
                if src.get("run_id") in run_ids:
                    key = adapter_of.get(str(next((r.get("adapter_path") for r in runs
                                                   if r["id"] == src["run_id"]), None)))
                    key = key or "run:" + src["run_id"]
                src = src.get("path")
            key = key or adapter_of.get(str(src)) or adapter_of.get(str(Path(str(src)).parent))
            if key:
                edge(key, fkey)
    for ev in evaluations or []:
        ekey = "eval:" + str(ev.get("id") or ev.get("name"))
        score = ev.get("score")
        label = "evaluation\n" + str(ev.get("suite") or ev.get("name") or "")
        if isinstance(score, (int, float)):
            label += f"\n{score:.3g}"
        node(ekey, label, "#fce7f3")
        target = ev.get("target") or ev.get("adapter_path") or ev.get("model")
        src = None
        if target:
            src = adapter_of.get(str(target)) or ("fused:" + str(target) if "fused:" + str(target) in seen else None)
        if src is None and ev.get("run_id") in run_ids:
            src = "run:" + ev["run_id"]
        if src:
            edge(src, ekey)
    lines.append("}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# errors in plain language


@dataclass
class Explained:
    title: str
    details: list[str]
    fix: str
    unexpected: bool = False


def explain(exc: BaseException, doing: str = "") -> Explained:
    """An engine exception as (what went wrong, details, what to do), for a page to show."""
    name = type(exc).__name__
    doing = f"Could not {doing}" if doing else "Something went wrong"
    problems = getattr(exc, "problems", None)
    if name == "ConfigError" and problems:
        return Explained(f"{doing}: the settings cannot run.", list(problems),
                         "Change the settings named above and try again.")
    if name == "ModelError":
        return Explained(f"{doing}: {exc}", [], "Pick a model from the list (the demo model always works), "
                         "or give a folder holding config.json and *.safetensors.")
    if name == "DataError":
        return Explained(f"{doing}: {exc}", [], "Open the Data page to validate the dataset and see "
                         "each problem with its line number, or use the demo dataset.")
    if name == "RunError":
        return Explained(f"{doing}: {exc}", [], "Check the run's status on the Sessions page.")
    if name == "StoreBusy":
        return Explained("The run database is busy right now.", [],
                         "It retries on its own; wait a moment.")
    if isinstance(exc, FileNotFoundError):
        return Explained(f"{doing}: a file is missing ({exc.filename or exc}).", [],
                         "It may have been deleted or moved; pick another one or start a new run.")
    if isinstance(exc, PermissionError):
        return Explained(f"{doing}: no permission to use {exc.filename or 'a file'}.", [],
                         "Check the folder's permissions, or set DROIDFT_HOME to a folder you own.")
    if name == "DiskFull":
        return Explained(f"{doing}: not enough disk space.", [str(exc)],
                         "Free some space (Sessions can delete old runs), then try again.")
    if isinstance(exc, OSError) and getattr(exc, "errno", None) == 28:
        return Explained(f"{doing}: the disk is full.", [], "Free some space (Sessions can delete old runs).")
    if isinstance(exc, MemoryError):
        return Explained(f"{doing}: out of memory.", [], "Use a smaller batch size, a shorter max "
                         "sequence length, gradient checkpointing or a quantised (QLoRA) base.")
    if isinstance(exc, ValueError) and str(exc):
        return Explained(f"{doing}: {exc}", [], "Change the input named above and try again.")
    return Explained(f"{doing}: unexpected {name}: {exc}", [],
                     "This is a bug in droidft; the full traceback is in the terminal running the "
                     "dashboard. Please report it.", unexpected=True)


# ---------------------------------------------------------------------------------------
# the Sessions table


def filter_runs(summaries, *, statuses=None, methods=None, text: str = ""):
    """Rows of `store.run_summaries()` matching the chosen statuses, methods and a search text
    (in name, id, model or dataset; case-insensitive)."""
    out = summaries
    if statuses:
        out = out[out["status"].isin(list(statuses))]
    if methods:
        out = out[out["method"].isin(list(methods))]
    text = (text or "").strip().lower()
    if text:
        hay = (out["name"].fillna("") + " " + out["id"].fillna("") + " " + out["model"].fillna("")
               + " " + out["data"].fillna("")).str.lower()
        out = out[hay.str.contains(text, regex=False)]
    return out


def runs_table(summaries):
    """The Sessions table: readable columns (short model/dataset names, minutes, datetimes)."""
    import pandas as pd

    view = pd.DataFrame({
        "id": summaries["id"],
        "status": summaries["status"],
        "name": summaries["name"].fillna(summaries["id"]),
        "method": summaries["method"],
        "model": summaries["model"].fillna("").map(lambda p: Path(p).name if p else ""),
        "dataset": summaries["data"].fillna("").map(lambda p: Path(p).name if p else ""),
        "best_val_loss": summaries["best_val_loss"],
        "last_train_loss": summaries["last_train_loss"],
        "duration_min": summaries["duration_s"] / 60.0,
        "trained_tokens": summaries["trained_tokens"],
        "steps": summaries["steps"],
        "created": pd.to_datetime(summaries["created_at"], unit="s", utc=True)
                     .dt.tz_convert(_local_tz()).dt.tz_localize(None),
    })
    return view.reset_index(drop=True)


def _local_tz():
    import datetime as _dt

    return _dt.datetime.now().astimezone().tzinfo


def stock_command(run: dict) -> str | None:
    """The stock `mlx_lm lora` command equivalent to a stored run, when its method has one."""
    from . import methods, paths

    try:
        config = methods.config_from_dict(run.get("config") or {})
    except Exception:  # noqa: BLE001 - an old or foreign config: no command, no crash
        return None
    if not hasattr(config, "to_mlx_lm_command"):
        return None
    adapter = str(paths.run_dir(run["id"]) / "adapters")
    return config.to_mlx_lm_command(str(run.get("model")), str(run.get("data")), adapter)


# ---------------------------------------------------------------------------------------
# datasets and models the pickers offer


from .data import datasets_dir, list_datasets, new_dataset_dir, save_uploads, unique_path  # noqa: E402,F401










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


# ---------------------------------------------------------------------------------------
# what Compare, Fusion and Evaluate offer


def demo_prompt() -> str:
    """A held-out question from the demo chat data (its test split), so the demo fine-tune's
    new skill shows in Compare; a generic question if that file is missing."""
    from . import paths

    try:
        with open(paths.DATA_DIR / "demo" / "chat" / "test.jsonl", encoding="utf-8") as fh:
            row = json.loads(fh.readline())
        return next(m["content"] for m in reversed(row["messages"]) if m.get("role") == "user")
    except (OSError, ValueError, KeyError, StopIteration, TypeError):
        return "What is your favourite colour?"


def adapter_choices(runs: list[dict], fused: list[dict] | None = None) -> list[dict]:
    """Adapters to pick from: runs that saved one (newest first), then fused adapters and fused
    models. Each: {key, label, kind: adapter | model, value (run id or path), base, run_id}."""
    out = []
    names = {r["id"]: r.get("name") or r["id"] for r in runs}
    for run in sorted(runs, key=lambda r: r.get("created_at") or 0, reverse=True):
        if not run.get("adapter_path"):
            continue
        label = f"{run.get('name') or run['id']} · {run.get('method', '')} · {run['id'][-4:]}"
        out.append({"key": f"run:{run['id']}", "label": label, "kind": "adapter", "value": run["id"],
                    "base": run.get("model"), "run_id": run["id"], "path": run["adapter_path"]})
    for art in reversed(fused or []):
        meta = art.get("meta") if isinstance(art.get("meta"), dict) else {}
        kind = "model" if art.get("kind") == "fused_model" else "adapter"
        sources = " + ".join(names.get(i.get("run_id"), Path(str(i.get("name", "?"))).name)
                             for i in meta.get("inputs") or [])
        label = f"fused {kind} {Path(str(art['path'])).name}" + (f" ({sources})" if sources else "")
        out.append({"key": f"fused:{art['path']}", "label": label, "kind": kind, "value": str(art["path"]),
                    "base": meta.get("base_model"), "run_id": None, "path": str(art["path"])})
    return out


def same_base(choice: dict, model_path: str | None) -> bool:
    """Whether an adapter choice was trained on this base model (unknown bases pass)."""
    if not model_path or not choice.get("base"):
        return True
    try:
        return Path(str(choice["base"])).resolve() == Path(str(model_path)).resolve()
    except OSError:
        return str(choice["base"]) == str(model_path)


def weight_table_frame(table: list[list[float]], labels: list[str]):
    """A per-layer weight table (rows = layers) as a long frame for a chart."""
    import pandas as pd

    rows = [{"layer": i, "adapter": labels[j], "weight": w} for i, row in enumerate(table)
            for j, w in enumerate(row)]
    return pd.DataFrame(rows)


def normalized(weights: list[float]) -> list[float]:
    total = sum(weights)
    return [w / total for w in weights] if total else weights


SUITE_HEADLINE = {"loss": ("loss", "lower is better"), "accuracy": ("exact_match", "higher is better"),
                  "reward": ("total", "higher is better")}


def evaluation_rows(evaluations: list[dict]) -> list[dict]:
    """Stored evaluations (newest first) as table rows with each suite's headline number."""
    rows = []
    for ev in evaluations:
        results = ev.get("results") if isinstance(ev.get("results"), dict) else {}
        key, _ = SUITE_HEADLINE.get(ev.get("suite"), ("score", ""))
        value = results.get(key)
        rows.append({
            "when": fmt_time(ev.get("created_at")), "suite": ev.get("suite"),
            "target": results.get("label") or short_path(ev.get("target")),
            "metric": key, "value": float(value) if isinstance(value, (int, float)) else None,
            "examples": results.get("n") or results.get("examples"),
            "dataset": short_path(ev.get("dataset")), "run_id": ev.get("run_id"),
        })
    return rows
