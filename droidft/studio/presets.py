"""Ready-made settings for the SFT form, and the one-click demo fine-tune."""

from __future__ import annotations

from .forms import build_config

def sft_presets() -> dict[str, dict]:
    """SFT presets as dotted field values: the demo preset comes from the engine."""
    try:
        from ..models.demo import DEMO_SFT_DEFAULTS

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
    from ..config import SFTConfig

    values = {k: v for k, v in sft_presets()["quick demo"].items()}
    values.update(model="demo", data="demo", name="Demo fine-tune")
    config, problems = build_config(SFTConfig, values)
    if config is None:
        from ..config import ConfigError

        raise ConfigError(problems)
    return config
