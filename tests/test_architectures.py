"""The tiny models of the real architectures: stock mlx_lm.load opens each, the chat template
follows the family's turn format, the family's end-of-turn token stops generation, and the
quantised base is really quantised."""

import json

import pytest

from droidft.models.architectures import FAMILIES, build_matrix_model, matrix_names

CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello!"}]

# The turn each family wraps the last answer in, exactly as the released templates render it.
LAST_TURN = {
    "llama": "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>",
    "qwen2": "<|im_start|>assistant\nHello!<|im_end|>\n",
    "qwen3": "<|im_start|>assistant\n<think>\n\n</think>\n\nHello!<|im_end|>\n",
    "qwen3-4bit": "<|im_start|>assistant\n<think>\n\n</think>\n\nHello!<|im_end|>\n",
    "gemma3": "<start_of_turn>model\nHello!<end_of_turn>\n",
    "phi3": "<|assistant|>\nHello!<|end|>\n<|endoftext|>",
}
END_OF_TURN = {"llama": "<|eot_id|>", "qwen2": "<|im_end|>", "qwen3": "<|im_end|>",
               "qwen3-4bit": "<|im_end|>", "gemma3": "<end_of_turn>", "phi3": "<|end|>"}


@pytest.fixture(scope="module")
def built(tmp_path_factory, demo_model):
    root = tmp_path_factory.mktemp("arch")
    return {name: build_matrix_model(name, root / name, like=demo_model) for name in matrix_names()}


@pytest.mark.parametrize("name", matrix_names())
def test_stock_mlx_lm_opens_it_with_the_family_template(built, name):
    from mlx_lm import load

    path = built[name]
    config = json.loads((path / "config.json").read_text())
    family = FAMILIES[name.split("-")[0]]
    assert config["model_type"] == family.model_type
    model, tokenizer = load(str(path))
    assert type(model).__module__ == f"mlx_lm.models.{family.model_type}"
    text = tokenizer.apply_chat_template(CHAT, tokenize=False)
    assert text.endswith(LAST_TURN[name])
    prompt = tokenizer.apply_chat_template(CHAT[:-1], tokenize=False, add_generation_prompt=True)
    assert text.startswith(prompt)  # the prompt is a prefix: mask_prompt masks exactly it
    assert tokenizer.convert_tokens_to_ids(END_OF_TURN[name]) in tokenizer.eos_token_ids
    ids = tokenizer.encode(LAST_TURN[name], add_special_tokens=False)
    assert tokenizer.convert_tokens_to_ids(END_OF_TURN[name]) in ids  # one token, not pieces


def test_generation_stops_at_the_end_of_turn_token(built):
    """Make the end-of-turn token the likeliest after two tokens: generation must stop there."""
    import mlx.core as mx
    from mlx_lm import generate, load

    model, tokenizer = load(str(built["gemma3"]))
    stop = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    plain = tokenizer.encode("Hi", add_special_tokens=False)[0]  # an ordinary BPE token
    prompt = tokenizer.apply_chat_template(CHAT[:-1], add_generation_prompt=True)

    def steer(tokens, logits):
        want = stop if len(tokens) >= len(prompt) + 2 else plain
        return mx.where(mx.arange(logits.shape[-1]) == want, 1e9, logits)

    text = generate(model, tokenizer, prompt, max_tokens=8, logits_processors=[steer])
    assert text == tokenizer.decode([plain, plain])


def test_quantised_base_is_4_bit(built):
    config = json.loads((built["qwen3-4bit"] / "config.json").read_text())
    assert config["quantization"]["bits"] == 4
    size = (built["qwen3-4bit"] / "model.safetensors").stat().st_size
    assert size < (built["qwen3"] / "model.safetensors").stat().st_size / 3


# -- the matrix: every architecture through every kind of training, generation and fusion ------

from droidft import jobs, paths  # noqa: E402

PREF_DEMO = paths.DATA_DIR / "demo" / "preference"
TINY = dict(iters=2, batch_size=2, steps_per_report=1, steps_per_eval=2, save_every=2, val_batches=1,
            learning_rate=1e-3)


def _tiny_configs(model: str):
    from droidft.config import LoraParameters, SFTConfig
    from droidft.methods.grpo import GRPOConfig
    from droidft.methods.preference import DPOConfig

    lora = LoraParameters(rank=4, scale=10.0)
    return {"sft": SFTConfig(model=model, data="demo", mask_prompt=True, lora_parameters=lora, **TINY),
            "dpo": DPOConfig(model=model, data=str(PREF_DEMO), lora_parameters=lora, **TINY),
            "grpo": GRPOConfig(model=model, data="demo", group_size=2, max_completion_length=6,
                               lora_parameters=lora, **TINY)}


def _training_tokens(model_path, config, row: int = 0):
    """(tokens, prompt length) of one training row exactly as the SFT worker builds them."""
    import types

    from mlx_lm.tuner.datasets import load_dataset
    from mlx_lm.utils import load_tokenizer

    from droidft.data import resolve_dataset

    data_dir = resolve_dataset(config.data, method="sft")
    args = types.SimpleNamespace(**config.mlx_lm_args(str(model_path), str(data_dir), "/nonexistent"))
    train_set, _, _ = load_dataset(args, load_tokenizer(model_path))
    return train_set.process(train_set[row]), train_set[row]


@pytest.mark.parametrize("name", matrix_names())
def test_matrix_sft_dpo_grpo_generate_fuse(built, name):
    import mlx.core as mx

    from droidft import fusion, inference, store

    path = built[name]
    runs = {method: jobs.start(config) for method, config in _tiny_configs(str(path)).items()}
    for method, run_id in runs.items():  # three workers at once: the matrix stays a few minutes
        run = jobs.wait(run_id, timeout=600)
        assert run["status"] == "completed", (name, method, run.get("error"), jobs.log_tail(run_id))
        assert any(m["name"] == "train_loss" for m in store.metrics(run_id)), (name, method)
        assert run["adapter_path"], (name, method)

    # The prompt Compare sends is exactly the prompt part the SFT run trained on (mask_prompt).
    config = _tiny_configs(str(path))["sft"]
    (tokens, offset), row = _training_tokens(path, config)
    loaded = inference.load(str(path), [runs["sft"]])
    prompt = inference.prompt_tokens(loaded.tokenizer, row["messages"][:-1])
    assert 0 < offset == len(prompt) < len(tokens) and tokens[:offset] == prompt
    results = inference.compare(str(path), [runs["sft"], runs["dpo"], runs["grpo"]], row["messages"][:-1],
                                sampling=inference.Sampling.greedy(), max_tokens=6)
    assert [r.target for r in results][0] == "base" and len(results) == 4
    assert all(r.generation_tokens >= 1 for r in results)

    # Fusing the SFT adapter into the weights gives the same logits as base + adapter.
    fused = fusion.fuse([runs["sft"]], to="model", out=paths.home() / f"fused-{name}", record=False)
    from mlx_lm import load

    model, _ = load(str(fused.out))
    x = mx.array([prompt])
    want, got = loaded.model(x), model(x)
    assert mx.allclose(want, got, atol=2e-3, rtol=2e-3).item(), float(mx.abs(want - got).max())
