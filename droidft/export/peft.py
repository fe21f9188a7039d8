"""PEFT export: an mlx-lm LoRA adapter in Hugging Face PEFT's layout, for transformers / vLLM.

mlx-lm computes y = x·Wᵀ + scale·(x·A)·B with A (in, r) and B (r, out), so its update of W
(out, in) is scale·Bᵀ·Aᵀ. PEFT computes W + (lora_alpha / r)·B'·A' with A' = lora_A (r, in) and
B' = lora_B (out, r). So A' = Aᵀ, B' = Bᵀ and lora_alpha = scale·r, written to
`adapter_model.safetensors` under PEFT's key names
(`base_model.model.<module>.lora_A.weight`), and `adapter_config.json` with `r`, `lora_alpha`,
`target_modules` (the adapted layers' leaf names), `layers_to_transform` (mlx-lm adapts the
last num_layers blocks), `base_model_name_or_path`. DoRA and full fine-tunes have no PEFT LoRA
form here and get a clear message.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from .source import ExportError, Source

_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def peft_tensors(adapter) -> tuple[dict[str, np.ndarray], dict]:
    """(PEFT tensors, facts: rank, scale, modules, leaf names, layer ids) of an mlx-lm adapter."""
    import mlx.core as mx

    kind = adapter.fine_tune_type
    if kind != "lora":
        what = "a DoRA adapter" if kind == "dora" else "a full fine-tune (whole weights)"
        raise ExportError(f"'{adapter.name}' is {what}; the PEFT export covers LoRA adapters. "
                          "Export the fused model (MLX, GGUF) instead.")
    raw = mx.load(str(adapter.weights_file))
    scale = adapter.scale
    out: dict[str, np.ndarray] = {}
    modules, ranks = set(), set()
    for key, value in raw.items():
        module, _, leaf = key.rpartition(".")
        if leaf not in ("lora_a", "lora_b"):
            raise ExportError(f"'{adapter.name}' holds {key}, which is not a LoRA factor.")
        if value.ndim != 2:
            raise ExportError(f"{module} is not a linear layer (mixture-of-experts adapters have no "
                              "PEFT LoRA form here).")
        dtype = mx.float16 if value.dtype == mx.float16 else mx.float32
        arr = np.ascontiguousarray(np.array(value.astype(dtype)).T)
        name = "lora_A" if leaf == "lora_a" else "lora_B"
        out[f"base_model.model.{module}.{name}.weight"] = arr
        modules.add(module)
        ranks.add(arr.shape[0] if leaf == "lora_a" else arr.shape[1])
    if not modules:
        raise ExportError(f"'{adapter.name}' holds no LoRA weights.")
    if len(ranks) != 1:
        raise ExportError(f"'{adapter.name}' mixes ranks {sorted(ranks)}; PEFT needs one rank per adapter.")
    layers = sorted({int(m.group(1)) for m in map(_LAYER.search, modules) if m})
    leaves = sorted({m.rsplit(".", 1)[-1] for m in modules})
    return out, {"rank": ranks.pop(), "scale": scale, "modules": sorted(modules), "leaves": leaves,
                 "layers": layers}


def peft_config(facts: dict, base_model: str | None, n_layers: int | None, dropout: float = 0.0) -> dict:
    r = int(facts["rank"])
    config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model,
        "r": r, "lora_alpha": float(facts["scale"]) * r, "lora_dropout": float(dropout),
        "target_modules": facts["leaves"], "bias": "none", "fan_in_fan_out": False,
        "inference_mode": True, "use_rslora": False, "use_dora": False, "modules_to_save": None,
        "init_lora_weights": True, "revision": None,
    }
    if n_layers is None or facts["layers"] != list(range(n_layers)):
        config["layers_to_transform"] = facts["layers"]
        config["layers_pattern"] = "layers"
    return config


def export_peft(src: Source, out: Path, *, quantize: int | None = None, progress=None) -> dict:
    from safetensors.numpy import save_file

    from .card import hub_id

    if quantize:
        raise ExportError("--quantize applies to models; a PEFT adapter keeps its own precision.")
    if src.adapter is None:
        raise ExportError(f"'{src.label}' is a model, not an adapter: the PEFT export needs a run or an "
                          "adapter folder (a fused model has no separate LoRA update left).")
    tensors, facts = peft_tensors(src.adapter)
    n_layers = None
    if src.base is not None:
        try:
            n_layers = json.loads((src.base / "config.json").read_text()).get("num_hidden_layers")
        except (OSError, ValueError):
            pass
    base = hub_id(src.base) or hub_id(src.base_name) or src.base_name or (str(src.base) if src.base else None)
    config = peft_config(facts, base, n_layers, src.adapter.lora_parameters.get("dropout", 0.0))
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2))
    return {"detail": f"PEFT LoRA, r={config['r']}, lora_alpha={config['lora_alpha']:g}",
            "peft": {k: config[k] for k in ("r", "lora_alpha", "target_modules")}}


def usage(base: str | None, folder: str) -> str:
    return ("```python\nfrom transformers import AutoModelForCausalLM\nfrom peft import PeftModel\n\n"
            f"base = AutoModelForCausalLM.from_pretrained(\"{base or 'BASE_MODEL'}\")\n"
            f"model = PeftModel.from_pretrained(base, \"{folder}\")\n```")
