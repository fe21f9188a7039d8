"""droidft.models.synthetic.random_llama: a bigger (or smaller) random model of the demo model's family."""

import json

import mlx_lm
from mlx.utils import tree_flatten

from droidft.models.synthetic import random_llama


def n_params(model) -> int:
    return sum(v.size for _, v in tree_flatten(model.parameters()))


def expected_params(hidden: int, layers: int, vocab: int) -> int:
    """Llama with tied embeddings, head dim 64, one KV head per 256 of hidden, MLP 2.75x."""
    heads, kv_heads, inter = max(1, hidden // 64), max(1, hidden // 256), int(hidden * 2.75)
    kv = kv_heads * (hidden // heads)
    attn = 2 * hidden * hidden + 2 * hidden * kv
    per_layer = attn + 3 * hidden * inter + 2 * hidden  # + two RMSNorms
    return vocab * hidden + layers * per_layer + hidden  # + final norm


def test_random_llama_loads_with_stock_mlx_lm_and_generates(tmp_path, demo_model):
    out = random_llama(tmp_path / "tiny", hidden_size=64, num_layers=2, like=demo_model)
    cfg = json.loads((out / "config.json").read_text())
    like = json.loads((demo_model / "config.json").read_text())
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"]) == (64, 2, like["vocab_size"])
    assert (out / "tokenizer.json").read_bytes() == (demo_model / "tokenizer.json").read_bytes()

    model, tokenizer = mlx_lm.load(str(out))
    assert n_params(model) == expected_params(64, 2, like["vocab_size"])
    steps = list(mlx_lm.stream_generate(model, tokenizer, "Hello", max_tokens=4))
    assert 1 <= steps[-1].generation_tokens <= 4
    assert all(0 <= s.token < like["vocab_size"] for s in steps)


def test_random_llama_params_grow_with_hidden_and_layers(tmp_path, demo_model):
    vocab = json.loads((demo_model / "config.json").read_text())["vocab_size"]
    sizes = [(64, 2), (64, 4), (128, 2)]
    counts = {}
    for hidden, layers in sizes:
        out = random_llama(tmp_path / f"h{hidden}l{layers}", hidden_size=hidden, num_layers=layers,
                           like=demo_model)
        model, _ = mlx_lm.load(str(out))
        counts[hidden, layers] = n_params(model)
        assert counts[hidden, layers] == expected_params(hidden, layers, vocab)
    # blocks scale linearly with depth, and roughly with hidden squared
    blocks = {k: v - vocab * k[0] - k[0] for k, v in counts.items()}
    assert blocks[64, 4] == 2 * blocks[64, 2]
    assert 3.5 < blocks[128, 2] / blocks[64, 2] < 4.5


def test_random_llama_is_deterministic_per_seed(tmp_path, demo_model):
    a = random_llama(tmp_path / "a", hidden_size=64, num_layers=1, like=demo_model, seed=1)
    b = random_llama(tmp_path / "b", hidden_size=64, num_layers=1, like=demo_model, seed=1)
    c = random_llama(tmp_path / "c", hidden_size=64, num_layers=1, like=demo_model, seed=2)
    data = [(p / "model.safetensors").read_bytes() for p in (a, b, c)]
    assert data[0] == data[1] != data[2]


def test_random_model_has_qwen_shape_and_loads_with_stock_mlx_lm(tmp_path, demo_model):
    """The 0.5B benchmark model's recipe, at 2 of its 24 layers (same widths, bfloat16, trimmed vocab)."""
    import mlx.core as mx

    from droidft.models.synthetic import QWEN2_5_0_5B, random_model

    out = random_model(tmp_path / "qwen", dict(QWEN2_5_0_5B, num_hidden_layers=2), like=demo_model,
                       dtype="bfloat16")
    model, tokenizer = mlx_lm.load(str(out))
    vocab = json.loads((demo_model / "config.json").read_text())["vocab_size"]
    layer = model.layers[0]
    assert layer.self_attn.q_proj.weight.shape == (896, 896)
    assert layer.self_attn.k_proj.weight.shape == (128, 896)  # 2 KV heads of 64
    assert layer.self_attn.q_proj.bias.shape == (896,)  # Qwen2 has q/k/v biases
    assert layer.mlp.gate_proj.weight.shape == (4864, 896)
    assert model.model.embed_tokens.weight.shape == (vocab, 896)
    assert layer.self_attn.q_proj.weight.dtype == mx.bfloat16
    per_layer = 896 * 896 * 2 + 896 * 128 * 2 + 896 + 128 * 2 + 3 * 896 * 4864 + 2 * 896
    assert n_params(model) == vocab * 896 + 2 * per_layer + 896
    steps = list(mlx_lm.stream_generate(model, tokenizer, "Hello", max_tokens=3))
    assert 1 <= steps[-1].generation_tokens <= 3
