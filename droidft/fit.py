"""'Fits this machine?': memory for LoRA, QLoRA and full fine-tuning of a model against this
machine's RAM, with the change that makes it fit.

Built on `estimate_run` (weights + trained weights with gradients and Adam state + activations).
The budget is 75% of RAM: on a Mac that is about what Metal lets MLX keep resident of the
unified memory, and on Linux it leaves the system and the dashboard room.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

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
    from .ui_support import estimate_run

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
