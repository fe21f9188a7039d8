"""Synthetic models and LoRA adapters in the stock mlx-lm / Hugging Face layouts.

For benchmarks (training, generation and fusion throughput) and tests (fusion numerics,
compatibility checks) that need an adapter without training one first, or a bigger model
of the demo model's family without pre-training one: throughput does not depend on what
the weights have learned, only on the shapes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

# Copied from `like` besides config.json, so tokenizers and stop tokens stay the same.
_TOKENIZER_FILES = ("tokenizer*", "special_tokens_map.json", "generation_config.json")


def random_llama(out, *, hidden_size: int, num_layers: int, like, seed: int = 0) -> Path:
    """Write a random-init Llama (`config.json`, `model.safetensors`, tokenizer files) to `out`.

    Takes config.json and the tokenizer from the model folder `like` (a Llama, e.g. the demo
    model) and rescales it: `hidden_size`, `num_layers`, intermediate size 2.75 x hidden,
    head dim 64 (one head per 64 of hidden), one KV head per 256 of hidden. Benchmarks use it
    to see how a cost grows with model size without pre-training a bigger model; throughput
    does not depend on trained weights. Stock `mlx_lm.load(out)` opens it."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models import llama

    like, out = Path(like), Path(out)
    cfg = json.loads((like / "config.json").read_text())
    cfg.pop("head_dim", None)  # derived from hidden_size / num_attention_heads
    cfg.update(hidden_size=hidden_size, num_hidden_layers=num_layers,
               intermediate_size=int(hidden_size * 2.75),
               num_attention_heads=max(1, hidden_size // 64),
               num_key_value_heads=max(1, hidden_size // 256))
    mx.random.seed(seed)
    model = llama.Model(llama.ModelArgs.from_dict(cfg))
    out.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(out / "model.safetensors"), dict(tree_flatten(model.parameters())))
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    for pattern in _TOKENIZER_FILES:
        for f in like.glob(pattern):
            shutil.copy(f, out)
    return out


# Qwen2.5-0.5B's shape (its config.json), for benchmarks at a size people fine-tune.
QWEN2_5_0_5B = {
    "model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "hidden_size": 896,
    "num_hidden_layers": 24, "intermediate_size": 4864, "num_attention_heads": 14,
    "num_key_value_heads": 2, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
    "max_position_embeddings": 32768, "tie_word_embeddings": True, "vocab_size": 151936,
    "torch_dtype": "bfloat16",
}


def random_model(out, config: dict, *, like, seed: int = 0, trim_vocab: bool = True,
                 dtype: str = "float32") -> Path:
    """Write a random-init model of any mlx-lm architecture with `config` (config.json values,
    e.g. QWEN2_5_0_5B) and the tokenizer of the model folder `like`.

    `trim_vocab` cuts the vocabulary to the tokenizer's (the embedding and output layer of
    a real 0.5B model are a quarter of its weights, but the demo tokenizer only ever uses
    its own 1,024 ids). `dtype` is what the weights are saved as (float32 or bfloat16, as
    real checkpoints are). Stock `mlx_lm.load(out)` opens it."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.utils import _get_classes

    like, out = Path(like), Path(out)
    cfg = dict(config)
    tok = json.loads((like / "config.json").read_text())
    if trim_vocab:
        cfg["vocab_size"] = tok["vocab_size"]
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if key in tok:
            cfg[key] = tok[key]
    cfg["torch_dtype"] = dtype
    model_class, args_class = _get_classes(cfg)
    mx.random.seed(seed)
    model = model_class(args_class.from_dict(cfg))
    if dtype != "float32":
        model.set_dtype(getattr(mx, dtype))
    out.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(out / "model.safetensors"), dict(tree_flatten(model.parameters())),
                        metadata={"format": "mlx"})
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    for pattern in _TOKENIZER_FILES:
        for f in like.glob(pattern):
            shutil.copy(f, out)
    return out


def random_lora_adapter(model_path, out, *, rank: int = 4, scale: float = 2.0, seed: int = 0,
                        b_std: float = 0.05, lazy: bool = False, dora: bool = False,
                        keys: list[str] | None = None) -> Path:
    """Write `adapters.safetensors` + `adapter_config.json` for LoRA (or DoRA, whose
    magnitudes get a random 0-10% nudge) on every block's linear layers, or on `keys` only;
    stock `mlx_lm.load(model, adapter_path=out)` opens it."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.tuner.utils import linear_to_lora_layers
    from mlx_lm.utils import load_model

    model, _ = load_model(Path(model_path), lazy=lazy)
    mx.random.seed(seed)
    params = {"rank": rank, "scale": scale, "dropout": 0.0}
    if keys:
        params["keys"] = list(keys)
    linear_to_lora_layers(model, len(model.layers), params, use_dora=dora)
    tensors = {}
    for key, value in tree_flatten(model.trainable_parameters()):
        leaf = key.rsplit(".", 1)[-1]
        if leaf == "lora_b":
            value = mx.random.normal(value.shape) * b_std
        elif leaf == "m":
            value = value * (1 + 0.1 * mx.random.uniform(shape=value.shape))
        if leaf in ("lora_a", "lora_b", "m"):
            tensors[key] = value
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(out / "adapters.safetensors"), tensors)
    (out / "adapter_config.json").write_text(json.dumps({
        "model": str(model_path), "fine_tune_type": "dora" if dora else "lora",
        "num_layers": len(model.layers), "lora_parameters": params}))
    return out
