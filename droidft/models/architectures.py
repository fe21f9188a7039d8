"""Tiny random-initialised models of the architectures people fine-tune, for tests and benches.

Each family (llama, qwen2, qwen3, gemma3 text, phi3) gets the real `model_type` and config keys
its mlx-lm model class reads, and a tokenizer whose chat template follows that family's real
turn format (Llama-3 headers, ChatML for Qwen with Qwen3's think block, Gemma turns, Phi-3 tags)
and whose end-of-turn token stops generation, as in the released checkpoints. Stock
`mlx_lm.load` opens every one; `build_family("qwen3", out, quantize_bits=4)` makes a 4-bit
quantised base like the mlx-community ones.

The weights are random, so what a test can check is the plumbing (shapes, LoRA keys, templates,
masking, stop tokens, fuse, quantised bases), not what the model says. The tokenizer is the demo
model's byte-level BPE with the family's special tokens added, so any text encodes.

    python -m droidft.models.architectures OUT_DIR   # build them all, print one folder per line
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

# Turn formats, trimmed to system/user/assistant (no tool calls) from the families' released
# tokenizer_config.json templates; quirks kept: Llama 3.1's dated system header, Qwen2.5's
# default system prompt, Qwen3's empty think block on the last answer, Gemma's system text
# folded into the first user turn and "model" role, Phi-3's eos after a finished conversation.
LLAMA3_TEMPLATE = (
    "{{- bos_token }}"
    "{%- if not date_string is defined %}{%- set date_string = \"26 Jul 2024\" %}{%- endif %}"
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- set system_message = messages[0]['content']|trim %}{%- set messages = messages[1:] %}"
    "{%- else %}{%- set system_message = \"\" %}{%- endif %}"
    "{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}"
    "{{- \"Cutting Knowledge Date: December 2023\\n\" }}"
    "{{- \"Today Date: \" + date_string + \"\\n\\n\" }}"
    "{{- system_message }}{{- \"<|eot_id|>\" }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)

QWEN2_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) or (message.role == \"assistant\") %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

QWEN3_TEMPLATE = (
    "{%- if messages[0].role == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- set ns = namespace(last_query_index=messages|length - 1, found=false) %}"
    "{%- for message in messages[::-1] %}"
    "{%- set index = (messages|length - 1) - loop.index0 %}"
    "{%- if not ns.found and message.role == \"user\" %}"
    "{%- set ns.found = true %}{%- set ns.last_query_index = index %}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- for message in messages %}"
    "{%- set content = message.content if message.content is string else '' %}"
    "{%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) %}"
    "{{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>' + '\\n' }}"
    "{%- elif message.role == \"assistant\" %}"
    "{%- set reasoning_content = '' %}"
    "{%- if message.reasoning_content is string %}{%- set reasoning_content = message.reasoning_content %}"
    "{%- elif '</think>' in content %}"
    "{%- set reasoning_content = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}"
    "{%- set content = content.split('</think>')[-1].lstrip('\\n') %}"
    "{%- endif %}"
    "{%- if loop.index0 > ns.last_query_index and (loop.last or reasoning_content) %}"
    "{{- '<|im_start|>' + message.role + '\\n<think>\\n' + reasoning_content.strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n') }}"
    "{%- else %}{{- '<|im_start|>' + message.role + '\\n' + content }}{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}"
)

GEMMA3_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = \"\" -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception(\"Conversation roles must alternate user/assistant/user/assistant/...\") }}"
    "{%- endif -%}"
    "{%- set role = \"model\" if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else \"\") }}"
    "{{ message['content'] | trim }}{{ '<end_of_turn>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{'<start_of_turn>model\\n'}}{%- endif -%}"
)

PHI3_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{'<|system|>\\n' + message['content'] + '<|end|>\\n'}}"
    "{% elif message['role'] == 'user' %}{{'<|user|>\\n' + message['content'] + '<|end|>\\n'}}"
    "{% elif message['role'] == 'assistant' %}{{'<|assistant|>\\n' + message['content'] + '<|end|>\\n'}}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}"
)

LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")

# Sized so every family trains a step in well under a second on 2 CPU cores, and every
# quantisable matrix has a multiple of 64 columns (hidden 64, MLP 128).
_SMALL = {"hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128,
          "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-6,
          "max_position_embeddings": 2048}


@dataclass(frozen=True)
class Family:
    """What makes one architecture family: its config keys and its tokenizer's special tokens."""

    model_type: str
    architectures: str
    template: str
    bos: str | None
    eos: str  # the tokenizer's eos_token
    pad: str
    stop: tuple[str, ...]  # generation_config eos_token_id: tokens that end a reply
    extra_tokens: tuple[str, ...] = ()
    config: dict = field(default_factory=dict)

    def special_tokens(self) -> list[str]:
        tokens = [self.bos, self.eos, self.pad, *self.stop, *self.extra_tokens]
        return list(dict.fromkeys(t for t in tokens if t))


FAMILIES: dict[str, Family] = {
    "llama": Family(
        "llama", "LlamaForCausalLM", LLAMA3_TEMPLATE, bos="<|begin_of_text|>", eos="<|eot_id|>",
        pad="<|finetune_right_pad_id|>", stop=("<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"),
        extra_tokens=("<|start_header_id|>", "<|end_header_id|>"),
        config={"rope_theta": 500000.0, "tie_word_embeddings": True, "head_dim": 16,
                "attention_bias": False, "mlp_bias": False}),
    "qwen2": Family(
        "qwen2", "Qwen2ForCausalLM", QWEN2_TEMPLATE, bos=None, eos="<|im_end|>", pad="<|endoftext|>",
        stop=("<|im_end|>", "<|endoftext|>"), extra_tokens=("<|im_start|>",),
        config={"rope_theta": 1000000.0, "tie_word_embeddings": True, "use_sliding_window": False}),
    "qwen3": Family(
        "qwen3", "Qwen3ForCausalLM", QWEN3_TEMPLATE, bos=None, eos="<|im_end|>", pad="<|endoftext|>",
        stop=("<|im_end|>", "<|endoftext|>"), extra_tokens=("<|im_start|>", "<think>", "</think>"),
        config={"rope_theta": 1000000.0, "tie_word_embeddings": True, "head_dim": 16}),
    "gemma3": Family(
        "gemma3_text", "Gemma3ForCausalLM", GEMMA3_TEMPLATE, bos="<bos>", eos="<eos>", pad="<pad>",
        stop=("<eos>", "<end_of_turn>"), extra_tokens=("<start_of_turn>",),
        config={"head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 32,
                "sliding_window_pattern": 2, "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0,
                "num_key_value_heads": 1, "hidden_activation": "gelu_pytorch_tanh"}),
    "phi3": Family(
        "phi3", "Phi3ForCausalLM", PHI3_TEMPLATE, bos="<s>", eos="<|endoftext|>", pad="<|endoftext|>",
        stop=("<|endoftext|>", "<|assistant|>", "<|end|>"), extra_tokens=("<|system|>", "<|user|>"),
        config={"rope_theta": 10000.0, "tie_word_embeddings": False, "num_key_value_heads": 4,
                "original_max_position_embeddings": 2048}),
}

# The 4-bit base of the matrix: what `mlx_lm.convert -q` makes and mlx-community publishes.
QUANTIZED = {"qwen3-4bit": ("qwen3", 4)}


def _demo_tokenizer_dir() -> Path:
    from .demo import demo_model_path

    return demo_model_path()


def build_tokenizer(family: Family, out: Path, like: Path | None = None) -> dict[str, int]:
    """The demo's byte-level BPE plus the family's special tokens, with the family's template;
    writes tokenizer.json, tokenizer_config.json, special_tokens_map.json; returns token ids."""
    from tokenizers import Regex, Tokenizer, pre_tokenizers

    tokenizer = Tokenizer.from_file(str(Path(like or _demo_tokenizer_dir()) / "tokenizer.json"))
    # Split text the way Llama 3 and Qwen 2/3 do (runs of newlines stay one piece, so a prompt
    # ending in "\n\n" tokenizes as the start of the conversation that continues it); the demo's
    # GPT-2 split would cut "\n\nHi" differently from "\n\n".
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tokenizer.add_special_tokens(family.special_tokens())
    ids = {t: tokenizer.token_to_id(t) for t in family.special_tokens()}
    tokenizer.save(str(out / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": family.bos, "eos_token": family.eos,
        "pad_token": family.pad, "unk_token": None, "model_max_length": _SMALL["max_position_embeddings"],
        "clean_up_tokenization_spaces": False, "chat_template": family.template,
        "added_tokens_decoder": {
            str(i): {"content": t, "special": True, "lstrip": False, "rstrip": False,
                     "normalized": False, "single_word": False} for t, i in ids.items()},
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    special = {"bos_token": family.bos, "eos_token": family.eos, "pad_token": family.pad}
    (out / "special_tokens_map.json").write_text(json.dumps({k: v for k, v in special.items() if v}, indent=2))
    return {**ids, "__vocab__": tokenizer.get_vocab_size()}


def build_family(name: str, out, *, quantize_bits: int | None = None, group_size: int = 64,
                 seed: int = 0, like=None) -> Path:
    """Write a tiny random `name` model (a key of FAMILIES) to `out`; `quantize_bits` makes a
    quantised base of it (mlx-lm's own quantize_model and save). Returns `out`."""
    import importlib

    import mlx.core as mx
    from mlx.utils import tree_flatten

    family = FAMILIES[name]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ids = build_tokenizer(family, out, like)
    vocab = -(-ids.pop("__vocab__") // 64) * 64  # room for every token, a multiple of 64
    config = {**_SMALL, **family.config, "model_type": family.model_type,
              "architectures": [family.architectures], "vocab_size": vocab, "torch_dtype": "float32",
              "bos_token_id": ids.get(family.bos), "eos_token_id": [ids[t] for t in family.stop],
              "pad_token_id": ids[family.pad]}
    module = importlib.import_module(f"mlx_lm.models.{family.model_type}")
    mx.random.seed(seed)
    model = module.Model(module.ModelArgs.from_dict(config))
    weights = dict(tree_flatten(model.parameters()))
    if family.model_type == "gemma3_text":
        weights.pop("lm_head.weight", None)  # Gemma ties its output to the embedding, as released
    mx.save_safetensors(str(out / "model.safetensors"), weights, metadata={"format": "mlx"})
    (out / "config.json").write_text(json.dumps(config, indent=2))
    generation = {"bos_token_id": ids.get(family.bos), "eos_token_id": [ids[t] for t in family.stop],
                  "pad_token_id": ids[family.pad]}
    (out / "generation_config.json").write_text(json.dumps(generation, indent=2))
    if quantize_bits:
        _quantize_in_place(out, quantize_bits, group_size)
    return out


def _quantize_in_place(path: Path, bits: int, group_size: int) -> None:
    import shutil
    import tempfile

    from mlx_lm.utils import load, quantize_model, save

    model, tokenizer, config = load(str(path), return_config=True)
    model, config = quantize_model(model, config, group_size, bits)
    tmp = Path(tempfile.mkdtemp(prefix=path.name + ".q", dir=path.parent))
    try:
        save(tmp, path, model, tokenizer, config)
        for f in tmp.iterdir():
            shutil.move(str(f), path / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def matrix_names() -> list[str]:
    """Every model of the test matrix: the five families and the quantised base."""
    return [*FAMILIES, *QUANTIZED]


def build_matrix_model(name: str, out, *, like=None) -> Path:
    """One model of the matrix by name (a family, or a quantised one such as 'qwen3-4bit')."""
    if name in QUANTIZED:
        family, bits = QUANTIZED[name]
        return build_family(family, out, quantize_bits=bits, like=like)
    return build_family(name, out, like=like)


def build_all(root, *, like=None) -> dict[str, Path]:
    """Every model of the matrix under `root` (one folder per name)."""
    root = Path(root)
    return {name: build_matrix_model(name, root / name, like=like) for name in matrix_names()}


if __name__ == "__main__":
    for path in build_all(sys.argv[1] if len(sys.argv) > 1 else "architectures").values():
        print(path)
