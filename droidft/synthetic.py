"""Synthetic LoRA adapters: stock mlx-lm layout, random non-zero B factors.

For benchmarks (generation and fusion throughput) and tests (fusion numerics,
compatibility checks) that need an adapter without training one first."""

from __future__ import annotations

import json
from pathlib import Path


def random_lora_adapter(model_path, out, *, rank: int = 4, scale: float = 2.0, seed: int = 0,
                        b_std: float = 0.05, lazy: bool = False) -> Path:
    """Write `adapters.safetensors` + `adapter_config.json` for LoRA on every linear layer
    of every block; stock `mlx_lm.load(model, adapter_path=out)` opens it."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.tuner.utils import linear_to_lora_layers
    from mlx_lm.utils import load_model

    model, _ = load_model(Path(model_path), lazy=lazy)
    mx.random.seed(seed)
    params = {"rank": rank, "scale": scale, "dropout": 0.0}
    linear_to_lora_layers(model, len(model.layers), params)
    tensors = {k: (mx.random.normal(v.shape) * b_std if k.endswith("lora_b") else v)
               for k, v in tree_flatten(model.trainable_parameters()) if k.endswith((".lora_a", ".lora_b"))}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(out / "adapters.safetensors"), tensors)
    (out / "adapter_config.json").write_text(json.dumps({
        "model": str(model_path), "fine_tune_type": "lora", "num_layers": len(model.layers),
        "lora_parameters": params}))
    return out
