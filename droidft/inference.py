"""Cached model + adapter loading, streaming generation, side-by-side comparison.

- Adapters are resolved and checked against the base before loading by `droidft.adapters`
  (`resolve_adapter`, `check_adapter`); loading here starts from their `AdapterSpec`.
- `ModelCache` keeps loaded bases and adapter "views" in memory, least recently used first
  out, bounded by bytes. A view shares every base array (no copy): only the adapter
  weights cost memory, so base + N adapters compare without N copies of the model.
  One adapter is applied exactly as stock `mlx_lm.load(model, adapter_path=...)` does;
  several are stacked exactly (their A factors concatenated, B factors weighted), so the
  view computes W x + sum_i w_i s_i B_i A_i x.
- `stream` / `generate` / `compare` drive mlx-lm's own `stream_generate` with its
  `make_sampler` and `make_logits_processors`, seeded per call so base and adapters see
  the same random stream.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from .adapters import AdapterError, AdapterSpec, check_adapter, resolve_adapter, stale_base_warning


class GenerationError(ValueError):
    """Generation settings or prompts that cannot be used."""


# --------------------------------------------------------------------------- loading and caching

def _clone_structure(value):
    """A new module tree whose leaves are the *same* arrays: adapters can be attached
    to the clone without touching (or copying) the cached base model."""
    import mlx.nn as nn

    if isinstance(value, nn.Module):
        new = value.__class__.__new__(value.__class__)
        new.__dict__.update(value.__dict__)
        if "_no_grad" in new.__dict__:
            new.__dict__["_no_grad"] = set(value.__dict__["_no_grad"])
        for k, v in value.items():
            dict.__setitem__(new, k, _clone_structure(v))
        return new
    if isinstance(value, list):
        return [_clone_structure(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_clone_structure(v) for v in value)
    if isinstance(value, dict):
        return {k: _clone_structure(v) for k, v in value.items()}
    return value


def _nbytes(tree) -> int:
    from mlx.utils import tree_flatten

    return sum(v.nbytes for _, v in tree_flatten(tree) if hasattr(v, "nbytes"))


def apply_adapter(model, spec: AdapterSpec):
    """Attach one adapter the way stock `mlx_lm.tuner.utils.load_adapters` does (same
    layers, same checks), reading `spec.weights_file` (so checkpoints work too)."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.tuner.utils import linear_to_lora_layers

    if spec.fine_tune_type != "full":
        linear_to_lora_layers(model, spec.num_layers, {"dropout": 0.0, **spec.lora_parameters},
                              use_dora=spec.fine_tune_type == "dora")
    weights = mx.load(str(spec.weights_file))
    params = dict(tree_flatten(model.parameters()))
    leaves = {"lora_a", "lora_b", "m"}
    bad = [k for k, w in weights.items()
           if k not in params or (spec.fine_tune_type != "full" and k.rsplit(".", 1)[-1] not in leaves)
           or params[k].shape != w.shape]
    if bad:
        raise AdapterError(f"Adapter '{spec.name}' has tensors the model cannot take: {', '.join(bad[:4])}")
    model.load_weights(list(weights.items()), strict=False)
    return model


def stack_adapters(model, specs: Sequence[AdapterSpec], weights: Sequence[float] | None = None):
    """Attach several LoRA adapters at once, exactly: for each adapted linear layer a single
    LoRALinear with A = [A_1 | A_2 | ...] and B = [w_1 s_1 B_1; w_2 s_2 B_2; ...], scale 1,
    so the layer computes W x + sum_i w_i s_i B_i A_i x (for any base, quantised too)."""
    import mlx.core as mx
    from mlx.utils import tree_unflatten
    from mlx_lm.tuner.lora import LoRALinear

    weights = list(weights) if weights is not None else [1.0] * len(specs)
    if len(weights) != len(specs):
        raise AdapterError(f"{len(specs)} adapters but {len(weights)} weights.")
    for s in specs:
        if s.fine_tune_type != "lora":
            raise AdapterError(f"Adapter '{s.name}' is a {s.fine_tune_type} adapter; only LoRA adapters "
                               "can be stacked. Use it on its own, or fuse it into a model first "
                               "(`droidft fuse --to model`).")
    factors: dict[str, list] = {}
    for s, w in zip(specs, weights):
        tensors = mx.load(str(s.weights_file))
        for key, a in tensors.items():
            if key.endswith(".lora_a"):
                module = key[: -len(".lora_a")]
                b = tensors[module + ".lora_b"]
                factors.setdefault(module, []).append((a, (w * s.scale) * b))
    modules = dict(model.named_modules())
    updates = []
    for module, pairs in factors.items():
        base = modules.get(module)
        if base is None:
            raise AdapterError(f"Layer {module} does not exist in the model.")
        if isinstance(base, LoRALinear):
            base = base.linear
        a = mx.concatenate([p[0] for p in pairs], axis=1)
        b = mx.concatenate([p[1] for p in pairs], axis=0)
        layer = LoRALinear.from_base(base, r=a.shape[1], scale=1.0, dropout=0.0)
        layer.lora_a, layer.lora_b = a.astype(b.dtype), b
        updates.append((module, layer))
    model.update_modules(tree_unflatten(updates))
    return model


@dataclass
class Loaded:
    """A ready-to-generate model: the base plus the adapters attached to it."""

    model: object
    tokenizer: object
    config: dict
    model_path: Path
    adapters: tuple = ()
    weights: tuple | None = None
    nbytes: int = 0
    load_seconds: float = 0.0

    @property
    def label(self) -> str:
        if not self.adapters:
            return "base"
        return "+".join(a.label() for a in self.adapters)


def _default_cache_bytes() -> int:
    env = os.environ.get("DROIDFT_MODEL_CACHE_GB")
    if env:
        try:
            return int(float(env) * 1e9)
        except ValueError:
            pass
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 8 * 10**9
    return int(total * 0.5)


class ModelCache:
    """Loaded bases and adapter views, bounded by bytes, least recently used evicted.

    Bases are keyed by folder (and file times, so a rebuilt model reloads); a view by its
    base, adapter files (with their times) and weights. A view costs only its adapter
    weights: it shares the base arrays. Evicting a base evicts its views."""

    def __init__(self, max_bytes: int | None = None):
        self.max_bytes = max_bytes if max_bytes is not None else _default_cache_bytes()
        self._entries: OrderedDict[tuple, Loaded] = OrderedDict()
        self._lock = threading.RLock()
        self.loads = 0  # how many times a base was read from disk (tests, stats)

    @staticmethod
    def _base_key(model_path: Path) -> tuple:
        files = sorted(model_path.glob("*.safetensors")) + [model_path / "config.json"]
        return ("base", str(model_path.resolve()),
                tuple(f.stat().st_mtime_ns for f in files if f.exists()))

    def _evict(self, keep: tuple) -> None:
        total = sum(e.nbytes for e in self._entries.values())
        for key in list(self._entries):
            if total <= self.max_bytes:
                break
            if key == keep or (keep[0] == "view" and key == keep[1]):
                continue
            entry = self._entries.pop(key, None)
            if entry is None:
                continue
            total -= entry.nbytes
            if key[0] == "base":  # its views share its arrays: drop them too
                for vk in [k for k in self._entries if k[0] == "view" and k[1] == key]:
                    total -= self._entries.pop(vk).nbytes

    def base(self, model_path: Path) -> Loaded:
        import mlx.core as mx
        from mlx_lm.utils import load_model, load_tokenizer

        model_path = Path(model_path)
        key = self._base_key(model_path)
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
            for old in [k for k in self._entries if k[0] == "base" and k[1] == key[1]]:
                self._entries.pop(old)  # a stale copy of the same folder
            t0 = time.perf_counter()
            model, config = load_model(model_path)
            from .blas import float32_on_cpu

            float32_on_cpu(model)  # half precision runs ~1000x slower on MLX's CPU backend
            model.eval()
            mx.eval(model.parameters())
            tokenizer = load_tokenizer(model_path, eos_token_ids=config.get("eos_token_id"))
            entry = Loaded(model, tokenizer, config, model_path, nbytes=_nbytes(model.parameters()),
                           load_seconds=time.perf_counter() - t0)
            self.loads += 1
            self._entries[key] = entry
            self._evict(key)
            return entry

    def get(self, model_path: Path, adapters: Sequence = (), weights: Sequence[float] | None = None,
            *, check: bool = True, model_name: str | None = None) -> Loaded:
        """The base with `adapters` attached (one: stock; several: stacked), cached."""
        import mlx.core as mx

        model_path = Path(model_path)
        specs = tuple(resolve_adapter(a) for a in adapters)
        if weights is not None:
            weights = tuple(float(w) for w in weights)
            if len(weights) != len(specs):
                raise AdapterError(f"{len(specs)} adapters but {len(weights)} weights.")
        if check:
            for s in specs:
                check_adapter(model_path, s, model_name=model_name)
        base = self.base(model_path)
        if not specs:
            return base
        base_key = self._base_key(model_path)
        key = ("view", base_key, tuple(s.cache_key() for s in specs), weights)
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(base_key)
                self._entries.move_to_end(key)
                return self._entries[key]
            t0 = time.perf_counter()
            model = _clone_structure(base.model)
            if len(specs) == 1 and weights in (None, (1.0,)):
                apply_adapter(model, specs[0])
            else:
                stack_adapters(model, specs, weights)
            model.eval()
            mx.eval(model.parameters())
            extra = _nbytes(model.parameters()) - base.nbytes
            entry = Loaded(model, base.tokenizer, base.config, model_path, specs, weights,
                           nbytes=max(extra, 0), load_seconds=time.perf_counter() - t0)
            self._entries[key] = entry
            self._entries.move_to_end(base_key)  # using a view uses its base
            self._evict(key)
            return entry

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def info(self) -> list[dict]:
        with self._lock:
            return [{"kind": k[0], "model": str(e.model_path), "label": e.label,
                     "mb": round(e.nbytes / 1e6, 2)} for k, e in self._entries.items()]

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(e.nbytes for e in self._entries.values())


CACHE = ModelCache()


def _resolve_model_arg(model) -> tuple[Path, str]:
    from .models import resolve_model

    if isinstance(model, Path) and model.is_dir():
        return model, str(model)
    return resolve_model(str(model)), str(model)


def load(model="demo", adapters: str | Sequence | None = None, weights: Sequence[float] | None = None,
         *, cache: ModelCache | None = None) -> Loaded:
    """Load (or fetch from the cache) `model` with zero, one or several adapters.

    `model`: "demo", a model folder or a downloaded hub id; `adapters`: a run id / folder,
    or a list of them (stacked, optionally weighted)."""
    model_path, name = _resolve_model_arg(model)
    if adapters is None:
        adapters = ()
    elif isinstance(adapters, (str, os.PathLike, AdapterSpec)):
        adapters = (adapters,)
    return (cache or CACHE).get(model_path, tuple(adapters), weights, model_name=name)


# --------------------------------------------------------------------------- sampling and prompts

@dataclass
class Sampling:
    """Sampling settings; the defaults are the seed app's anti-repetition ones."""

    temperature: float = 0.7
    top_p: float = 0.9
    min_p: float = 0.05
    top_k: int = 0
    repetition_penalty: float | None = None
    repetition_context_size: int = 20
    seed: int | None = 0

    def validate(self) -> "Sampling":
        import math

        problems = []

        def num(name, v, lo, hi=None, lo_open=False):
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) \
                    or (v <= lo if lo_open else v < lo) or (hi is not None and v > hi):
                rng = f"{'>' if lo_open else '>='} {lo}" + (f" and <= {hi}" if hi is not None else "")
                problems.append(f"{name} must be a number {rng} (got {v!r})")

        num("temperature", self.temperature, 0)
        num("top_p", self.top_p, 0, 1)
        num("min_p", self.min_p, 0, 1)
        if not isinstance(self.top_k, int) or isinstance(self.top_k, bool) or self.top_k < 0:
            problems.append(f"top_k must be a whole number >= 0 (got {self.top_k!r})")
        if self.repetition_penalty is not None:
            num("repetition_penalty", self.repetition_penalty, 0, lo_open=True)
        if not isinstance(self.repetition_context_size, int) or self.repetition_context_size < 1:
            problems.append("repetition_context_size must be a whole number >= 1")
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool)
                                      or self.seed < 0):
            problems.append(f"seed must be a whole number >= 0 (got {self.seed!r})")
        if problems:
            raise GenerationError("; ".join(problems))
        return self

    @classmethod
    def greedy(cls, seed: int | None = 0) -> "Sampling":
        return cls(temperature=0.0, top_p=0.0, min_p=0.0, seed=seed)

    def sampler(self):
        from mlx_lm.sample_utils import make_sampler

        return make_sampler(temp=self.temperature, top_p=self.top_p, min_p=self.min_p,
                            top_k=self.top_k)

    def logits_processors(self):
        from mlx_lm.sample_utils import make_logits_processors

        return make_logits_processors(repetition_penalty=self.repetition_penalty,
                                      repetition_context_size=self.repetition_context_size)


def prompt_tokens(tokenizer, prompt, *, system: str | None = None, chat: bool | None = None) -> list[int]:
    """Token ids for a prompt: a string, or a list of chat messages. With a chat template
    (and `chat` not False) the prompt is wrapped as a user turn, as `mlx_lm generate` does."""
    if isinstance(prompt, (list, tuple)) and prompt and isinstance(prompt[0], dict):
        messages = [dict(m) for m in prompt]
    elif isinstance(prompt, str):
        messages = [{"role": "user", "content": prompt}]
    else:
        raise GenerationError("A prompt is a string or a list of {'role', 'content'} messages.")
    if system:
        messages = [{"role": "system", "content": system}] + messages
    use_chat = getattr(tokenizer, "chat_template", None) is not None if chat is None else chat
    if use_chat:
        if getattr(tokenizer, "chat_template", None) is None:
            raise GenerationError("This model's tokenizer has no chat template; generate with chat=False.")
        return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True))
    text = "\n".join(m["content"] for m in messages)
    if not text:
        raise GenerationError("The prompt is empty.")
    return list(tokenizer.encode(text))


# --------------------------------------------------------------------------- generation

@dataclass
class Chunk:
    """One streamed piece of text with running statistics."""

    text: str
    generation_tokens: int
    tokens_per_second: float
    prompt_tokens: int
    prompt_tps: float
    finish_reason: str | None = None


@dataclass
class GenerationResult:
    target: str
    text: str
    prompt_tokens: int
    generation_tokens: int
    tokens_per_second: float
    prompt_tps: float
    finish_reason: str | None
    seconds: float
    peak_memory_gb: float
    seed: int | None
    sampling: dict
    warnings: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


_GENERATION_LOCK = threading.Lock()  # the seed is process-wide: one generation at a time


def stream(model="demo", prompt: str | list = "", adapters=None, *, sampling: Sampling | None = None,
           max_tokens: int = 256, system: str | None = None, chat: bool | None = None,
           weights: Sequence[float] | None = None, loaded: Loaded | None = None,
           cache: ModelCache | None = None) -> Iterator[Chunk]:
    """Stream a completion as `Chunk`s (mlx-lm's `stream_generate`, seeded sampling)."""
    import mlx.core as mx
    from mlx_lm.generate import stream_generate

    sampling = (sampling or Sampling()).validate()
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise GenerationError(f"max_tokens must be a whole number >= 1 (got {max_tokens!r})")
    if isinstance(prompt, str) and not prompt.strip():
        raise GenerationError("The prompt is empty.")
    loaded = loaded or load(model, adapters, weights, cache=cache)
    tokens = prompt_tokens(loaded.tokenizer, prompt, system=system, chat=chat)
    sampler, processors = sampling.sampler(), sampling.logits_processors()
    with _GENERATION_LOCK:
        if sampling.seed is not None:
            mx.random.seed(sampling.seed)
        for r in stream_generate(loaded.model, loaded.tokenizer, mx.array(tokens), max_tokens=max_tokens,
                                 sampler=sampler, logits_processors=processors):
            yield Chunk(r.text, r.generation_tokens, r.generation_tps, r.prompt_tokens, r.prompt_tps,
                        r.finish_reason)


def generate(model="demo", prompt: str | list = "", adapters=None, *, sampling: Sampling | None = None,
             max_tokens: int = 256, system: str | None = None, chat: bool | None = None,
             weights: Sequence[float] | None = None, on_text=None, target: str | None = None,
             cache: ModelCache | None = None) -> GenerationResult:
    """Generate a whole completion; `on_text(piece)` sees it as it streams."""
    import mlx.core as mx

    sampling = (sampling or Sampling()).validate()
    loaded = load(model, adapters, weights, cache=cache)
    pieces, last = [], None
    t0 = time.perf_counter()
    for chunk in stream(prompt=prompt, sampling=sampling, max_tokens=max_tokens, system=system,
                        chat=chat, loaded=loaded):
        pieces.append(chunk.text)
        if on_text and chunk.text:
            on_text(chunk.text)
        last = chunk
    warnings = [w for w in (stale_base_warning(loaded.model_path, a) for a in loaded.adapters) if w]
    return GenerationResult(
        target=target or loaded.label, text="".join(pieces), warnings=warnings,
        prompt_tokens=last.prompt_tokens if last else 0,
        generation_tokens=last.generation_tokens if last else 0,
        tokens_per_second=last.tokens_per_second if last else 0.0,
        prompt_tps=last.prompt_tps if last else 0.0,
        finish_reason=last.finish_reason if last else None,
        seconds=time.perf_counter() - t0, peak_memory_gb=mx.get_peak_memory() / 1e9,
        seed=sampling.seed, sampling=asdict(sampling))


def compare(model="demo", adapters: Sequence = (), prompt: str | list = "", *, include_base: bool = True,
            sampling: Sampling | None = None, max_tokens: int = 256, system: str | None = None,
            chat: bool | None = None, cache: ModelCache | None = None) -> list[GenerationResult]:
    """The same prompt through the base and each adapter, with the same seed.

    Each entry of `adapters` is one target: a run id / folder, or a list of them (stacked).
    Every adapter is checked before anything generates, so a bad one fails fast."""
    sampling = (sampling or Sampling()).validate()
    model_path, name = _resolve_model_arg(model)
    targets: list[tuple[str, tuple]] = [("base", ())] if include_base else []
    for a in adapters:
        group = tuple(a) if isinstance(a, (list, tuple)) else (a,)
        specs = tuple(check_adapter(model_path, x, model_name=name) for x in group)
        targets.append(("+".join(s.name for s in specs), specs))
    if not targets:
        raise GenerationError("Nothing to compare: give adapters, or include the base model.")
    return [generate(model_path, prompt, specs or None, sampling=sampling, max_tokens=max_tokens,
                     system=system, chat=chat, target=label, cache=cache)
            for label, specs in targets]
