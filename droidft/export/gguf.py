"""GGUF export (llama.cpp, Ollama, LM Studio's llama.cpp runtime) of a fused MLX model folder.

mlx-lm's own `--export-gguf` covers llama/mistral/mixtral with an SPM vocabulary only; this
writes llama (and mistral), qwen2, qwen3, gemma3 (text) and phi3 through the `gguf` package:
its GGUFWriter, its tensor-name maps (`get_tensor_name_map`) and its metadata keys, following
llama.cpp's convert_hf_to_gguf.py per architecture:

- llama/mistral: q_proj and k_proj rows permuted from Hugging Face's rotate-half layout to
  GGML's interleaved rope; Llama 3.1's rope scaling as a `rope_freqs` tensor;
- qwen2 (q/k/v biases), qwen3 (q/k norms): names only, NEOX rope needs no permutation;
- gemma3: every norm weight stored as `1 + w` (Gemma's RMSNorm multiplies by 1 + w);
  the sqrt(hidden) embedding scale is applied by llama.cpp itself, so it is not baked in;
- phi3: fused qkv_proj and gate_up_proj map to attn_qkv and ffn_up as they are.

The tokenizer goes in as llama.cpp's byte-level BPE ("gpt2": tokens, token types, merges,
bos/eos/pad ids, add_bos) with the pre-tokenizer named from the split regex in tokenizer.json
(GPT-2, Llama 3, Qwen 2), and the Jinja chat template as is. Weights are read one tensor at a
time from the safetensors (quantised MLX weights de-quantised on the way), so memory stays
at one tensor; `progress(done_bytes, total_bytes, tensor)` reports as they are written.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .gguf_vocab import GGUFExportError, add_tokenizer, tokenizer_pre

__all__ = ["ARCHS", "OUTTYPES", "GGUFExportError", "GGUFResult", "read_gguf", "tokenizer_pre",
           "unsupported_reason", "write_gguf"]

OUTTYPES = ("f16", "q8_0", "q4_0", "f32")


def _block_types() -> tuple:
    """GGML types stored in blocks of 32 values (quantised by the gguf package's quants)."""
    import gguf

    return (gguf.GGMLQuantizationType.Q8_0, gguf.GGMLQuantizationType.Q4_0)


@dataclass(frozen=True)
class ArchSpec:
    arch: str  # the gguf.MODEL_ARCH member name
    permute_qk: bool = False  # llama: Hugging Face rotate-half rows -> GGML interleaved
    norm_shift: float = 0.0  # gemma: norm weights are applied as (shift + w)
    output_required: bool = False  # no tied-embedding fallback in llama.cpp for this arch


ARCHS: dict[str, ArchSpec] = {
    "llama": ArchSpec("LLAMA", permute_qk=True),
    "mistral": ArchSpec("LLAMA", permute_qk=True),
    "qwen2": ArchSpec("QWEN2"),
    "qwen3": ArchSpec("QWEN3"),
    "gemma3_text": ArchSpec("GEMMA3", norm_shift=1.0),
    "phi3": ArchSpec("PHI3", output_required=True),
}


def unsupported_reason(config: dict) -> str | None:
    """None when `config` (a model's config.json) can be written as GGUF, else why not."""
    model_type = config.get("model_type")
    if model_type not in ARCHS:
        covered = ", ".join(sorted(ARCHS))
        return (f"GGUF export covers {covered}; this model is '{model_type}'. Export it as an MLX "
                "folder, or convert that folder with llama.cpp's convert_hf_to_gguf.py.")
    if config.get("num_local_experts") or config.get("num_experts"):
        return "Mixture-of-experts models are not covered by droidft's GGUF export."
    return None


@dataclass
class GGUFResult:
    path: Path
    outtype: str
    arch: str
    tensors: int
    bytes_written: int
    bytes_read: int
    seconds: float
    tokenizer_pre: str
    notes: list[str] = field(default_factory=list)

    @property
    def gb_per_s(self) -> float:
        return self.bytes_written / 1e9 / self.seconds if self.seconds > 0 else 0.0


# --------------------------------------------------------------------------- weights

def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k permutation: each head's rows from [first half | second half] of the
    rotary pairs to interleaved pairs."""
    return np.ascontiguousarray(
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape))


_NP_DTYPES = {"F16": np.float16, "F32": np.float32}


class _Weights:
    """The model's tensors by Hugging Face name. float16/float32 tensors are read straight from
    the memory-mapped safetensors (no copy until written); bfloat16 and MLX quantised linears
    (weight + scales + biases, de-quantised to float32) go through MLX."""

    def __init__(self, folder: Path, config: dict):
        self.files = sorted(folder.glob("*.safetensors"))
        if not self.files:
            raise GGUFExportError(f"{folder} holds no *.safetensors weights.")
        self.index: dict[str, tuple[Path, dict, int]] = {}  # name -> (file, header entry, data offset)
        for f in self.files:
            with open(f, "rb") as fh:
                n = int.from_bytes(fh.read(8), "little")
                header = json.loads(fh.read(n))
            for name, info in header.items():
                if name != "__metadata__":
                    self.index[name] = (f, info, 8 + n)
        self._maps: dict[Path, np.memmap] = {}
        self._mlx: dict[Path, dict] = {}
        self.quant = config.get("quantization") or config.get("quantization_config") or {}
        self.bytes_read = sum(f.stat().st_size for f in self.files)

    def names(self) -> list[str]:
        """Tensor names, without the scales/biases of quantised layers."""
        out = []
        for name in self.index:
            stem = name.rsplit(".", 1)[0]
            if name.endswith((".scales", ".biases")) and f"{stem}.scales" in self.index \
                    and f"{stem}.weight" in self.index:
                continue
            out.append(name)
        return out

    def _quantized(self, name: str) -> bool:
        return name.endswith(".weight") and f"{name.rsplit('.', 1)[0]}.scales" in self.index

    def shape(self, name: str) -> tuple[int, ...]:
        shape = tuple(self.index[name][1]["shape"])
        if self._quantized(name):
            bits = self._quant_for(name.rsplit(".", 1)[0])["bits"]
            return (*shape[:-1], shape[-1] * 32 // bits)
        return shape

    def _quant_for(self, stem: str) -> dict:
        own = self.quant.get(stem)
        q = own if isinstance(own, dict) else self.quant
        if "bits" not in q:
            raise GGUFExportError(f"{stem} is quantised but config.json does not say how "
                                  "(no quantization.bits).")
        return {"bits": int(q["bits"]), "group_size": int(q.get("group_size", 64)),
                "mode": q.get("mode", "affine")}

    def _raw(self, name: str) -> np.ndarray | None:
        f, info, base = self.index[name]
        dtype = _NP_DTYPES.get(info["dtype"])
        if dtype is None:
            return None
        if f not in self._maps:
            self._maps[f] = np.memmap(f, dtype=np.uint8, mode="r")
        start, end = info["data_offsets"]
        return self._maps[f][base + start:base + end].view(dtype).reshape(info["shape"])

    def load(self, name: str, dtype) -> np.ndarray:
        """One tensor as a numpy array of `dtype` (float16 or float32); a read-only view of the
        file when it is stored that way already."""
        raw = None if self._quantized(name) else self._raw(name)
        if raw is not None:
            return raw if raw.dtype == dtype else raw.astype(dtype)
        import mlx.core as mx

        f = self.index[name][0]
        if f not in self._mlx:
            self._mlx[f] = mx.load(str(f))
        arrays = self._mlx[f]
        stem = name.rsplit(".", 1)[0]
        a = arrays[name]
        if self._quantized(name):
            q = self._quant_for(stem)
            a = mx.dequantize(a, arrays[f"{stem}.scales"], arrays.get(f"{stem}.biases"),
                              group_size=q["group_size"], bits=q["bits"], mode=q["mode"])
        return np.array(a.astype(mx.float16 if dtype == np.float16 else mx.float32))


# --------------------------------------------------------------------------- metadata

def _head_dim(config: dict) -> int:
    return int(config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"])


def _llama3_rope_factors(config: dict) -> np.ndarray | None:
    """Llama 3.1's frequency-dependent rope scaling as llama.cpp's rope_freqs tensor."""
    scaling = config.get("rope_scaling") or {}
    if (scaling.get("rope_type") or scaling.get("type")) != "llama3":
        return None
    dim = _head_dim(config)
    base = float(config.get("rope_theta", 10000.0))
    factor = float(scaling.get("factor", 8.0))
    low = float(scaling.get("low_freq_factor", 1.0))
    high = float(scaling.get("high_freq_factor", 4.0))
    old_ctx = float(scaling.get("original_max_position_embeddings", 8192))
    low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
    factors = []
    for freq in 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float64) / dim)):
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            factors.append(1.0)
        elif wavelen > low_wavelen:
            factors.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            factors.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.array(factors, dtype=np.float32)


def _add_hparams(writer, spec: ArchSpec, config: dict, n_vocab: int, notes: list[str]) -> None:
    import gguf

    c = config
    writer.add_context_length(int(c.get("max_position_embeddings", 2048)))
    writer.add_embedding_length(int(c["hidden_size"]))
    writer.add_block_count(int(c["num_hidden_layers"]))
    writer.add_feed_forward_length(int(c["intermediate_size"]))
    writer.add_head_count(int(c["num_attention_heads"]))
    writer.add_head_count_kv(int(c.get("num_key_value_heads") or c["num_attention_heads"]))
    writer.add_layer_norm_rms_eps(float(c.get("rms_norm_eps", 1e-6)))
    writer.add_vocab_size(n_vocab)
    head_dim = _head_dim(c)
    if c.get("head_dim"):
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    rope_dim = int(head_dim * float(c.get("partial_rotary_factor", 1.0)))
    writer.add_rope_dimension_count(rope_dim)
    default_theta = 1_000_000.0 if spec.arch == "GEMMA3" else 10_000.0
    writer.add_rope_freq_base(float(c.get("rope_theta", default_theta)))
    scaling = c.get("rope_scaling") or {}
    kind = scaling.get("rope_type") or scaling.get("type")
    if kind == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(scaling["factor"]))
    elif kind == "yarn":
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        writer.add_rope_scaling_factor(float(scaling["factor"]))
        writer.add_rope_scaling_orig_ctx_len(int(scaling["original_max_position_embeddings"]))
    elif kind in ("longrope", "su"):
        orig = int(c.get("original_max_position_embeddings") or c["max_position_embeddings"])
        scale = c["max_position_embeddings"] / orig
        attn = 1.0 if scale <= 1.0 else math.sqrt(1 + math.log(scale) / math.log(orig))
        writer.add_rope_scaling_attn_factors(attn)
    elif kind not in (None, "default", "llama3"):
        notes.append(f"rope_scaling type '{kind}' is not written; long contexts may differ.")
    if spec.arch == "PHI3":
        orig = c.get("original_max_position_embeddings")
        if orig:
            writer.add_rope_scaling_orig_ctx_len(int(orig))
    if spec.arch in ("PHI3", "GEMMA3") and c.get("sliding_window"):
        writer.add_sliding_window(int(c["sliding_window"]))
    if spec.arch == "GEMMA3":
        pattern = int(c.get("sliding_window_pattern") or 6)
        # True = sliding-window layer; every pattern-th layer attends globally (mlx-lm, HF)
        writer.add_sliding_window_pattern([(i + 1) % pattern != 0 for i in range(int(c["num_hidden_layers"]))])
        if pattern != 6:
            notes.append(f"Gemma 3 with a global layer every {pattern} layers: llama.cpp builds "
                         "before the sliding_window_pattern key assume every 6th.")
        for key, add in (("attn_logit_softcapping", writer.add_attn_logit_softcapping),
                         ("final_logit_softcapping", writer.add_final_logit_softcapping)):
            if c.get(key):
                add(float(c[key]))


# --------------------------------------------------------------------------- the file

@dataclass
class _Planned:
    name: str  # GGUF tensor name
    source: str | None  # Hugging Face name (None: computed, see `data`)
    shape: tuple[int, ...]
    qtype: object  # gguf.GGMLQuantizationType
    nbytes: int
    transform: Callable[[np.ndarray], np.ndarray] | None = None
    data: np.ndarray | None = None
    shift_free: bool = False  # the transform only reorders values


def _plan(weights: _Weights, spec: ArchSpec, config: dict, outtype: str) -> list[_Planned]:
    import gguf

    arch = getattr(gguf.MODEL_ARCH, spec.arch)
    n_layers = int(config["num_hidden_layers"])
    names = gguf.get_tensor_name_map(arch, n_layers)
    wanted = gguf.MODEL_TENSORS[arch]
    Q = gguf.GGMLQuantizationType
    out_q = {"f16": Q.F16, "f32": Q.F32, "q8_0": Q.Q8_0, "q4_0": Q.Q4_0}[outtype]
    n_head = int(config["num_attention_heads"])
    n_kv = int(config.get("num_key_value_heads") or n_head)
    plan: list[_Planned] = []
    unknown = []

    def qtype_for(shape, gguf_name: str):
        if len(shape) < 2 or gguf_name.startswith("rope_"):
            return Q.F32
        if out_q in _block_types() and shape[-1] % gguf.GGML_QUANT_SIZES[out_q][0] != 0:
            return Q.F16  # rows that do not fill whole blocks stay f16, as llama.cpp's converter does
        return out_q

    for hf_name in weights.names():
        if hf_name.endswith("rotary_emb.inv_freq"):
            continue
        found = names.get_type_and_name(hf_name, try_suffixes=(".weight", ".bias"))
        if found is None:
            unknown.append(hf_name)
            continue
        kind, gguf_name = found
        if kind not in wanted:
            unknown.append(hf_name)
            continue
        shape = weights.shape(hf_name)
        transform = None
        if spec.permute_qk and kind in (gguf.MODEL_TENSOR.ATTN_Q, gguf.MODEL_TENSOR.ATTN_K):
            heads = n_head if kind == gguf.MODEL_TENSOR.ATTN_Q else n_kv
            transform = (lambda w, h=heads: _permute(w, h))
        if spec.norm_shift and hf_name.endswith("norm.weight"):
            transform = (lambda w, s=spec.norm_shift: w + np.float32(s))
        plan.append(_Planned(gguf_name, hf_name, shape, qtype_for(shape, gguf_name), 0, transform,
                             shift_free=transform is not None and not (spec.norm_shift and hf_name.endswith("norm.weight"))))
    if unknown:
        raise GGUFExportError(f"{len(unknown)} tensor(s) have no GGUF name for {spec.arch.lower()} "
                              f"({', '.join(unknown[:3])}{', ...' if len(unknown) > 3 else ''}).")
    have = {p.name for p in plan}
    if "output.weight" not in have and spec.output_required:
        embd = next(p for p in plan if p.name == "token_embd.weight")
        plan.append(_Planned("output.weight", embd.source, embd.shape, embd.qtype, 0))
    factors = _llama3_rope_factors(config) if spec.arch == "LLAMA" else None
    if factors is not None:
        plan.append(_Planned("rope_freqs.weight", None, factors.shape, Q.F32, 0, data=factors))
    scaling = config.get("rope_scaling") or {}
    if spec.arch == "PHI3" and (scaling.get("rope_type") or scaling.get("type")) in ("longrope", "su"):
        for key, gname in (("long_factor", "rope_factors_long.weight"), ("short_factor", "rope_factors_short.weight")):
            arr = np.array(scaling[key], dtype=np.float32)
            plan.append(_Planned(gname, None, arr.shape, Q.F32, 0, data=arr))
    for p in plan:
        if p.qtype in _block_types():
            from gguf.quants import quant_shape_to_byte_shape

            p.nbytes = int(np.prod(quant_shape_to_byte_shape(p.shape, p.qtype)))
        else:
            p.nbytes = int(np.prod(p.shape)) * (2 if p.qtype == Q.F16 else 4)
    return plan


def _tensor_data(p: _Planned, weights: _Weights) -> np.ndarray:
    import gguf
    from gguf.quants import quantize

    Q = gguf.GGMLQuantizationType
    if p.data is not None:
        return p.data
    exact = p.transform is None or p.shift_free  # a reordering is exact in float16
    w = weights.load(p.source, np.float16 if p.qtype == Q.F16 and exact else np.float32)
    if p.transform is not None:
        w = p.transform(w)
    if p.qtype == Q.F16:
        return w.astype(np.float16, copy=False)
    if p.qtype in _block_types():
        return quantize(w, p.qtype)
    return w.astype(np.float32, copy=False)


def write_gguf(model_dir, out_file, *, outtype: str = "f16", name: str | None = None,
               progress: Callable[[int, int, str], None] | None = None) -> GGUFResult:
    """Write the model in `model_dir` (an MLX / Hugging Face folder) as one GGUF file."""
    import gguf

    t0 = time.perf_counter()
    if outtype not in OUTTYPES:
        raise GGUFExportError(f"GGUF type '{outtype}' is not offered: choose {', '.join(OUTTYPES)}.")
    model_dir, out_file = Path(model_dir), Path(out_file)
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise GGUFExportError(f"Cannot read {model_dir}/config.json ({exc}).") from None
    reason = unsupported_reason(config)
    if reason:
        raise GGUFExportError(reason)
    spec = ARCHS[config["model_type"]]
    weights = _Weights(model_dir, config)
    embed = weights.shape("model.embed_tokens.weight") if "model.embed_tokens.weight" in weights.index else None
    n_vocab = embed[0] if embed else int(config["vocab_size"])
    plan = _plan(weights, spec, config, outtype)
    notes: list[str] = []

    out_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_file.with_name(f".{out_file.name}.partial")
    writer = gguf.GGUFWriter(path=None, arch=gguf.MODEL_ARCH_NAMES[getattr(gguf.MODEL_ARCH, spec.arch)])
    try:
        writer.add_name(name or model_dir.name)
        file_type = {"f16": gguf.LlamaFileType.MOSTLY_F16, "f32": gguf.LlamaFileType.ALL_F32,
                     "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0}[outtype]
        writer.add_file_type(int(file_type))
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        _add_hparams(writer, spec, config, n_vocab, notes)
        pre = add_tokenizer(writer, model_dir, n_vocab)
        Q = gguf.GGMLQuantizationType
        for p in plan:
            if p.qtype in _block_types():
                from gguf.quants import quant_shape_to_byte_shape

                writer.add_tensor_info(p.name, quant_shape_to_byte_shape(p.shape, p.qtype), np.dtype(np.uint8),
                                       p.nbytes, raw_dtype=p.qtype)
            else:
                writer.add_tensor_info(p.name, p.shape, np.dtype(np.float16 if p.qtype == Q.F16 else np.float32),
                                       p.nbytes)
        writer.write_header_to_file(tmp)
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        total = sum(p.nbytes for p in plan)
        done = 0
        for p in plan:
            data = _tensor_data(p, weights)
            if data.nbytes != p.nbytes:
                raise GGUFExportError(f"{p.name}: {data.nbytes} bytes, planned {p.nbytes}.")
            writer.write_tensor_data(data)
            done += p.nbytes
            if progress:
                progress(done, total, p.name)
        writer.close()
        tmp.replace(out_file)
    finally:
        writer.close()
        tmp.unlink(missing_ok=True)
    return GGUFResult(out_file, outtype, gguf.MODEL_ARCH_NAMES[getattr(gguf.MODEL_ARCH, spec.arch)],
                      len(plan), out_file.stat().st_size, weights.bytes_read, time.perf_counter() - t0,
                      pre, notes)


# --------------------------------------------------------------------------- reading back

def read_gguf(path) -> dict:
    """What a GGUF file holds, read with the `gguf` package: metadata (scalars and strings;
    arrays as their length, except the chat template) and tensors (name -> (shape, type))."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    meta: dict = {}
    for key, f in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        if f.types and f.types[0] == gguf.GGUFValueType.ARRAY:
            meta[key] = len(f.data)
        else:
            meta[key] = f.contents()
    tensors = {t.name: (tuple(int(d) for d in reversed(t.shape)), t.tensor_type.name)
               for t in reader.tensors}
    return {"metadata": meta, "tensors": tensors}
