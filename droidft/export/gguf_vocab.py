"""The tokenizer inside a GGUF: llama.cpp's byte-level BPE vocabulary ("gpt2": tokens, token
types, merges, bos/eos/pad ids, add_bos) with the pre-tokenizer named from the split regex in
tokenizer.json, and the Jinja chat template, through the `gguf` package's SpecialVocab."""

from __future__ import annotations

import json
from pathlib import Path


class GGUFExportError(ValueError):
    """A model this exporter cannot write; the message says why and what to use instead."""


_SPLIT_PRE = {  # tokenizer.json Split regex -> llama.cpp's pre-tokenizer name
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+": "llama-bpe",
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+": "qwen2",
}


# --------------------------------------------------------------------------- tokenizer

def tokenizer_pre(tokenizer_json: dict) -> str | None:
    """llama.cpp's pre-tokenizer name for a byte-level BPE tokenizer.json, or None."""
    pre = tokenizer_json.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    splits = [p.get("pattern", {}).get("Regex") for p in parts if p.get("type") == "Split"]
    byte_level = [p for p in parts if p.get("type") == "ByteLevel"]
    if not splits and len(byte_level) == 1 and byte_level[0].get("use_regex", True):
        return "gpt-2"
    if len(splits) == 1 and byte_level and not byte_level[0].get("use_regex", True):
        return _SPLIT_PRE.get(splits[0])
    return None


def add_tokenizer(writer, folder: Path, n_vocab: int) -> str:
    """Byte-level BPE vocabulary, merges, special ids, add_bos and the chat template."""
    import gguf
    from tokenizers import Tokenizer

    path = folder / "tokenizer.json"
    if not path.is_file():
        raise GGUFExportError(f"{folder} has no tokenizer.json; GGUF needs the tokenizer inside the file.")
    tok = json.loads(path.read_text(encoding="utf-8"))
    model = tok.get("model", {})
    if model.get("type") != "BPE" or model.get("byte_fallback") or (tok.get("decoder") or {}).get("type") != "ByteLevel":
        raise GGUFExportError(
            "GGUF export covers byte-level BPE tokenizers (Llama 3, Qwen, GPT-2 style); this model's "
            "tokenizer is SentencePiece-style. Convert the exported MLX folder with llama.cpp's "
            "convert_hf_to_gguf.py instead.")
    pre = tokenizer_pre(tok)
    if pre is None:
        raise GGUFExportError(
            "The tokenizer's pre-tokenizer (how text is split before BPE) is not one llama.cpp knows "
            "by name (GPT-2, Llama 3, Qwen 2); a guess would tokenize differently, so nothing was written.")
    by_id = {i: t for t, i in model["vocab"].items()}
    added = {a["id"]: a for a in tok.get("added_tokens", [])}
    top = max([*by_id, *added]) + 1
    if top > n_vocab:
        raise GGUFExportError(f"The tokenizer has {top} tokens but the embedding only {n_vocab} rows.")
    tokens, types = [], []
    for i in range(n_vocab):
        if i in added:
            tokens.append(added[i]["content"])
            types.append(gguf.TokenType.CONTROL if added[i].get("special") else gguf.TokenType.USER_DEFINED)
        elif i in by_id:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL)
        else:  # embedding rows past the vocabulary (padded to a multiple of 64 and the like)
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(folder, load_merges=True, n_vocab=n_vocab)
    special.add_to_gguf(writer, quiet=True)
    if "bos" not in special.add_special_token and "bos" in special.special_token_ids:
        # say it outright: does the Hugging Face tokenizer put bos before plain text?
        ids = Tokenizer.from_file(str(path)).encode("a").ids
        writer.add_add_bos_token(bool(ids) and ids[0] == special.special_token_ids["bos"])
    return pre
