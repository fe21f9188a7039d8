"""The tiny models of the real architectures: stock mlx_lm.load opens each, the chat template
follows the family's turn format, the family's end-of-turn token stops generation, and the
quantised base is really quantised."""

import json

import pytest

from droidft.architectures import FAMILIES, build_matrix_model, matrix_names

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
