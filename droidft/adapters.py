"""Adapters on disk: resolving what a user gave (a run id, a run folder, an adapter folder or
a checkpoint file) to an `AdapterSpec`, and checking one against a base model *before*
loading anything (architecture of the base it was trained on, layer keys and shapes, rank),
with an `AdapterError` that names the adapter, its base and what differs.

Shapes come from safetensors headers and config.json alone, so these checks are cheap;
`inference` (loading, generation) and `fusion` both build on them.
"""

from __future__ import annotations

import json
import os
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import paths

ADAPTER_FILE = "adapters.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
# Fields of config.json that must agree for an adapter to fit a base.
ARCH_FIELDS = ("model_type", "hidden_size", "num_hidden_layers", "intermediate_size",
               "num_attention_heads", "num_key_value_heads", "vocab_size")


class AdapterError(ValueError):
    """An adapter that cannot be used with a model; the message says what differs."""


# --------------------------------------------------------------------------- adapters

@dataclass(frozen=True)
class AdapterSpec:
    """One adapter on disk: its folder (with adapter_config.json) and weights file."""

    name: str                 # what the user gave (run id or path), for messages and labels
    path: Path                # folder holding adapter_config.json
    weights_file: Path        # adapters.safetensors, best/adapters.safetensors or a checkpoint
    config: dict = field(hash=False, compare=False)
    run_id: str | None = None

    @property
    def fine_tune_type(self) -> str:
        return self.config.get("fine_tune_type", "lora")

    @property
    def lora_parameters(self) -> dict:
        return dict(self.config.get("lora_parameters") or {})

    @property
    def rank(self) -> int | None:
        return self.lora_parameters.get("rank")

    @property
    def scale(self) -> float:
        return float(self.lora_parameters.get("scale", 20.0))

    @property
    def num_layers(self) -> int:
        return int(self.config.get("num_layers", 16))

    @property
    def base_model(self) -> str | None:
        """The base model the adapter was trained on (mlx-lm writes it as `model`)."""
        return self.config.get("model")

    def cache_key(self) -> tuple:
        st = self.weights_file.stat()
        return (str(self.weights_file.resolve()), st.st_mtime_ns, st.st_size)

    def label(self) -> str:
        return self.name


def _read_adapter_config(folder: Path, name: str) -> dict:
    cfg_path = folder / ADAPTER_CONFIG
    if not cfg_path.is_file():
        raise AdapterError(f"Adapter '{name}': {folder} has no {ADAPTER_CONFIG}, so it is not an "
                           "adapter folder (mlx-lm writes adapters.safetensors and adapter_config.json).")
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, ValueError) as exc:
        raise AdapterError(f"Adapter '{name}': cannot read {cfg_path}: {exc}") from None
    if not isinstance(cfg, dict):
        raise AdapterError(f"Adapter '{name}': {cfg_path} does not hold a JSON object.")
    return cfg


def _run_adapter_folder(run_id: str) -> Path | None:
    """The adapter folder of a run id, from the store, else the run folder layout."""
    try:
        from . import store

        run = store.get_run(run_id)
    except Exception:  # no database yet, or an id-shaped path: fall back to the layout
        run = None
    if run and run.get("adapter_path"):
        return Path(run["adapter_path"])
    folder = paths.runs_dir() / run_id / "adapters"
    if run or folder.is_dir():
        return folder
    return None


CHECKPOINTS = ("best", "last")


def adapter_ref(run_id: str, which: str = "best") -> str:
    """What to pass as a run's adapter: `RUN@best` when the run kept a best adapter and
    `which` is best, else the run id (its last adapter)."""
    if which not in CHECKPOINTS:
        raise AdapterError(f"checkpoint must be best or last (got {which!r})")
    folder = _run_adapter_folder(run_id)
    if which == "best" and folder is not None and (folder / "best" / ADAPTER_FILE).is_file():
        return f"{run_id}@best"
    return run_id


def _split_checkpoint(name: str) -> tuple[str, str | None]:
    """`RUN@best` / `RUN@last` -> (RUN, which); anything else -> (name, None)."""
    head, sep, tail = name.rpartition("@")
    if sep and tail in CHECKPOINTS and head and not Path(name).expanduser().exists():
        return head, tail
    return name, None


def resolve_adapter(adapter: str | os.PathLike | AdapterSpec) -> AdapterSpec:
    """A run id (`RUN@best` for the run's best adapter, `RUN@last` or `RUN` for its last),
    run folder, adapter folder or checkpoint `.safetensors` -> AdapterSpec."""
    if isinstance(adapter, AdapterSpec):
        return adapter
    if adapter is None or not str(adapter).strip():
        raise AdapterError("No adapter given: use a run id or an adapter folder.")
    name = str(adapter).strip()
    bare, which = _split_checkpoint(name)
    if which == "best":
        folder = _run_adapter_folder(bare) if "/" not in bare and os.sep not in bare else None
        best = folder / "best" if folder is not None else None
        if best is None or not (best / ADAPTER_FILE).is_file():
            raise AdapterError(f"Run {bare} kept no best adapter (it saves one at each validation "
                               f"that improves): use {bare} or {bare}@last for its last adapter.")
        spec = resolve_adapter(best)
        return AdapterSpec(name=name, path=spec.path, weights_file=spec.weights_file,
                           config=spec.config, run_id=bare)
    if which == "last":
        spec = resolve_adapter(bare)
        return AdapterSpec(name=name, path=spec.path, weights_file=spec.weights_file,
                           config=spec.config, run_id=spec.run_id)
    path = Path(name).expanduser()
    run_id = None
    if path.is_file():
        if path.suffix != ".safetensors":
            raise AdapterError(f"Adapter '{name}' is a file but not a .safetensors checkpoint.")
        folder, weights = path.parent, path
        if not (folder / ADAPTER_CONFIG).is_file() and (folder.parent / ADAPTER_CONFIG).is_file():
            folder = folder.parent  # best/adapters.safetensors next to a parent config
    elif path.is_dir():
        folder = path
        if not (folder / ADAPTER_CONFIG).is_file() and (folder / "adapters" / ADAPTER_CONFIG).is_file():
            folder = folder / "adapters"  # a run folder
        weights = folder / ADAPTER_FILE
    else:
        found = _run_adapter_folder(name) if "/" not in name and os.sep not in name else None
        if found is None:
            raise AdapterError(f"Adapter '{name}' not found: it is neither a folder nor a run id "
                               "(`droidft runs` lists runs).")
        folder, weights, run_id = found, found / ADAPTER_FILE, name
        if not folder.is_dir():
            raise AdapterError(f"Run {name} has no adapter yet ({folder} does not exist): "
                               "it may still be starting, or it failed before saving one.")
    if run_id is None and folder.name == "adapters" and folder.parent.parent == paths.runs_dir():
        run_id = folder.parent.name
    config = _read_adapter_config(folder, name)
    if not weights.is_file():
        raise AdapterError(f"Adapter '{name}': {weights} does not exist (no weights saved yet).")
    return AdapterSpec(name=name, path=folder, weights_file=weights, config=config, run_id=run_id)


# --------------------------------------------------------------------------- shapes without loading

def safetensors_header(path: Path) -> dict:
    """{tensor name: {"dtype", "shape"}} read from a .safetensors header only."""
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(n))
    header.pop("__metadata__", None)
    return header


def model_config(model_path: Path) -> dict:
    try:
        cfg = json.loads((Path(model_path) / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise AdapterError(f"Cannot read {model_path}/config.json: {exc}") from None
    text = cfg.get("text_config")
    if isinstance(text, dict):  # multimodal wrappers keep the LM fields one level down
        cfg = {**text, **{k: v for k, v in cfg.items() if k != "text_config"}}
    return cfg


def architecture(model_path: Path) -> dict:
    cfg = model_config(model_path)
    return {k: cfg.get(k) for k in ARCH_FIELDS if cfg.get(k) is not None}


def _quant_for(cfg: dict, module: str) -> dict | None:
    q = cfg.get("quantization") or cfg.get("quantization_config")
    if not isinstance(q, dict):
        return None
    per = q.get(module)
    if per is False:
        return None
    if isinstance(per, dict):
        return per
    return q if "bits" in q else None


def linear_shapes(model_path: Path) -> dict[str, tuple[int, int]]:
    """{module name: (out_dims, in_dims)} for every 2-D weight of a model, unpacking
    quantised weights, read from safetensors headers (nothing is loaded)."""
    model_path = Path(model_path)
    cfg = model_config(model_path)
    shapes: dict[str, tuple[int, int]] = {}
    for f in sorted(model_path.glob("*.safetensors")):
        header = safetensors_header(f)
        for key, info in header.items():
            if not key.endswith(".weight") or len(info["shape"]) != 2:
                continue
            module = key[: -len(".weight")]
            out_d, in_d = info["shape"]
            if module + ".scales" in header or info["dtype"] in ("U32", "I32"):
                q = _quant_for(cfg, module) or {}
                bits = q.get("bits", 4)
                in_d = in_d * 32 // bits
            shapes[module] = (out_d, in_d)
    return shapes


def adapter_tensors(spec: AdapterSpec) -> dict[str, tuple]:
    return {k: tuple(v["shape"]) for k, v in safetensors_header(spec.weights_file).items()}


def _layer_count(model_path: Path) -> int | None:
    return model_config(model_path).get("num_hidden_layers")


def _describe(arch: dict) -> str:
    parts = [arch.get("model_type", "?")]
    for key, label in (("hidden_size", "hidden"), ("num_hidden_layers", "layers"),
                       ("vocab_size", "vocab")):
        if key in arch:
            parts.append(f"{label} {arch[key]}")
    return ", ".join(str(p) for p in parts)


def check_adapter(model_path: str | os.PathLike, adapter, *, model_name: str | None = None) -> AdapterSpec:
    """Refuse an adapter that does not fit `model_path`, before anything is loaded.

    Checks the architecture of the base the adapter was trained on (its adapter_config.json
    `model`), every adapted layer's key and (out, in) shape, and that the weights have the
    rank the config says. Returns the AdapterSpec when it fits."""
    spec = resolve_adapter(adapter)
    model_path = Path(model_path)
    model_name = model_name or str(model_path)
    ftype = spec.fine_tune_type
    if ftype not in ("lora", "dora", "full"):
        raise AdapterError(f"Adapter '{spec.name}' has fine_tune_type '{ftype}', which droidft "
                           "does not know (expected lora, dora or full).")
    base = spec.base_model
    trained_on = f" (trained on {base})" if base else ""
    problems: list[str] = []
    arch = architecture(model_path)
    if base and Path(base).is_dir() and Path(base).resolve() != model_path.resolve():
        try:
            base_arch = architecture(Path(base))
        except AdapterError:
            base_arch = {}
        diffs = [f"{k} {base_arch[k]} vs {arch.get(k)}" for k in ARCH_FIELDS
                 if k in base_arch and base_arch.get(k) != arch.get(k)]
        if diffs:
            raise AdapterError(
                f"Adapter '{spec.name}' was trained on {base} ({_describe(base_arch)}) but "
                f"{model_name} is a different model ({_describe(arch)}): " + "; ".join(diffs) + ".")
    shapes = linear_shapes(model_path)
    tensors = adapter_tensors(spec)
    if not tensors:
        raise AdapterError(f"Adapter '{spec.name}': {spec.weights_file} holds no tensors.")
    n_layers = _layer_count(model_path)
    rank = spec.rank
    ranks_seen = set()
    if ftype == "full":
        for key, shape in tensors.items():
            module = key.rsplit(".", 1)[0]
            if key.endswith(".weight") and module in shapes and len(shape) == 2 \
                    and tuple(shape) != shapes[module]:
                problems.append(f"{key} has shape {tuple(shape)} but the model's is {shapes[module]}")
    for key, shape in tensors.items():
        if ftype == "full":
            break
        module, _, leaf = key.rpartition(".")
        if leaf not in ("lora_a", "lora_b", "m"):
            problems.append(f"{key} is not a LoRA/DoRA tensor")
            continue
        if module not in shapes:
            layer_note = ""
            parts = module.split(".")
            if "layers" in parts and n_layers is not None:
                i = parts.index("layers")
                if i + 1 < len(parts) and parts[i + 1].isdigit() and int(parts[i + 1]) >= n_layers:
                    layer_note = f" ({model_name} has only {n_layers} layers)"
            problems.append(f"layer {module} does not exist in the model{layer_note}")
            continue
        out_d, in_d = shapes[module]
        if len(shape) != 2:
            continue  # switch (MoE) layers: leave it to mlx-lm's own check
        if leaf == "lora_a":
            ranks_seen.add(shape[1])
            if shape[0] != in_d:
                problems.append(f"{module} takes {shape[0]} inputs in the adapter but {in_d} in the model")
        elif leaf == "lora_b":
            ranks_seen.add(shape[0])
            if shape[1] != out_d:
                problems.append(f"{module} gives {shape[1]} outputs in the adapter but {out_d} in the model")
    if rank is not None and ranks_seen and ranks_seen != {rank}:
        problems.append(f"adapter_config.json says rank {rank} but the weights have rank "
                        f"{', '.join(str(r) for r in sorted(ranks_seen))}")
    if problems:
        more = f" (and {len(problems) - 4} more)" if len(problems) > 4 else ""
        raise AdapterError(
            f"Adapter '{spec.name}'{trained_on} does not fit {model_name} ({_describe(arch)}): "
            + "; ".join(problems[:4]) + more + ".")
    return spec


def stale_base_warning(model_path: str | os.PathLike, adapter) -> str | None:
    """A warning when the adapter's recorded base is this very folder but its weights were
    rewritten after the adapter was saved (e.g. the demo model rebuilt by a newer recipe):
    the shapes still fit, but the adapter was trained against different weights."""
    spec = resolve_adapter(adapter)
    base = spec.base_model
    model_path = Path(model_path)
    if not base or not Path(base).is_dir() or Path(base).resolve() != model_path.resolve():
        return None
    weights = list(model_path.glob("*.safetensors"))
    if not weights:
        return None
    newest = max(f.stat().st_mtime for f in weights)
    saved = spec.weights_file.stat().st_mtime
    if newest > saved + 1:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(newest))
        return (f"adapter '{spec.name}' was saved before {model_path} was rewritten ({when}); it was "
                "trained on the earlier weights, so its outputs may be meaningless: retrain it")
    return None


def is_model_folder(path: str | os.PathLike) -> bool:
    p = Path(str(path)).expanduser()
    return p.is_dir() and (p / "config.json").is_file() and any(p.glob("*.safetensors"))
