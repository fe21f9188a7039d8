"""`fuse`: load the adapters' factors, merge them layer by layer (maths.py) with per-layer
weights (layer_weights.py), and write a fused adapter or a fused model with its provenance
(`fusion.json` and a store artifact). The method is explained in `droidft/fusion/__init__.py`."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .. import paths
from ..adapters import (ADAPTER_CONFIG, ADAPTER_FILE, AdapterError, AdapterSpec, architecture,
                        check_adapter, resolve_adapter)
from .layer_weights import check_weights_row, layer_index, layer_weight_table, read_layer_weights
from .maths import (FusionError, blas_threads, dare_drop, factored_svd, lora_update, ties_merge,
                    truncated_svd)

METHODS = ("linear", "ties", "dare")
OUTPUTS = ("adapter", "model")


# --------------------------------------------------------------------------- inputs


def _to_np(a) -> np.ndarray:
    import mlx.core as mx

    return np.array(a.astype(mx.float32)) if a.dtype != mx.float32 else np.array(a)


def load_factors(spec: AdapterSpec) -> dict[str, dict[str, np.ndarray]]:
    """{module: {"a": (in, r), "b": (r, out)[, "m": (out,)]}} of one adapter, float32."""
    import mlx.core as mx

    tensors = mx.load(str(spec.weights_file))
    out: dict[str, dict[str, np.ndarray]] = {}
    for key, value in tensors.items():
        module, _, leaf = key.rpartition(".")
        if leaf == "lora_a":
            out.setdefault(module, {})["a"] = _to_np(value)
        elif leaf == "lora_b":
            out.setdefault(module, {})["b"] = _to_np(value)
        elif leaf == "m":
            out.setdefault(module, {})["m"] = _to_np(value)
    for module, f in out.items():
        if "a" not in f or "b" not in f:
            raise FusionError(f"Adapter '{spec.name}': layer {module} has only part of its LoRA "
                              "factors (lora_a and lora_b must both be present).")
        if f["a"].ndim != 2:
            raise FusionError(f"Adapter '{spec.name}': layer {module} is not a linear layer "
                              "(mixture-of-experts adapters cannot be fused yet).")
    return out


# --------------------------------------------------------------------------- merging


# --------------------------------------------------------------------------- the fusion

@dataclass
class FusionResult:
    out: Path
    to: str
    method: str
    artifact_id: str | None
    provenance: dict
    seconds: float
    bytes_processed: int
    retained_energy: dict | None = None
    layers: list[dict] = field(default_factory=list)

    @property
    def gb_per_s(self) -> float:
        return self.bytes_processed / 1e9 / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["out"] = str(self.out)
        d["gb_per_s"] = self.gb_per_s
        return d


def _base_for(specs: list[AdapterSpec], model) -> tuple[Path | None, str | None]:
    if model is not None:
        from ..models import resolve_model

        path = resolve_model(str(model)) if not (isinstance(model, Path) and model.is_dir()) else model
        return path, str(model)
    bases = []
    for s in specs:
        if s.base_model and Path(s.base_model).is_dir():
            bases.append(Path(s.base_model))
    if not bases:
        return None, None
    first = bases[0]
    for s, b in zip(specs, bases):
        if b.resolve() != first.resolve() and architecture(b) != architecture(first):
            raise FusionError(f"Adapters '{specs[0].name}' and '{s.name}' were trained on different "
                              f"base models ({first} and {b}): only adapters of the same base fuse.")
    return first, str(first)


def _module_order(modules: set[str]) -> list[str]:
    return sorted(modules, key=lambda m: (layer_index(m) if layer_index(m) is not None else -1, m))


class _BaseWeights:
    """Base weights by module name, from a lazily loaded model (de-quantised, float32)."""

    def __init__(self, model_path: Path):
        from mlx_lm.utils import load_model

        self.model_path = model_path
        self.model, self.config = load_model(model_path, lazy=True)
        self.modules = dict(self.model.named_modules())

    def linear(self, module: str):
        m = self.modules.get(module)
        if m is None or not hasattr(m, "weight"):
            raise FusionError(f"Layer {module} does not exist in the base model {self.model_path}.")
        return m

    def weight(self, module: str) -> np.ndarray:
        import mlx.core as mx
        import mlx.nn as nn

        m = self.linear(module)
        w = m.weight
        if isinstance(m, nn.QuantizedLinear):
            w = mx.dequantize(w, m.scales, m.biases, group_size=m.group_size, bits=m.bits,
                              mode=getattr(m, "mode", "affine"))
        return _to_np(w)


def _fuse(adapters: Sequence, weights: Sequence[float] | None = None, *, out: str | os.PathLike | None = None,
         to: str = "adapter", method: str = "linear", rank: int | None = None, layer_weights=None,
         model=None, density: float | None = None, normalize: bool = True, ties_sign: bool = False,
         seed: int = 0, allow_any_sum: bool = False, keep_quantization: bool = False,
         overwrite: bool = False, record: bool = True,
         progress: Callable[[int, int, str], None] | None = None) -> FusionResult:
    t0 = time.perf_counter()
    # ---- validate the request before touching any weights
    if to not in OUTPUTS:
        raise FusionError(f"Unknown output '{to}': choose {' or '.join(OUTPUTS)}.")
    if method not in METHODS:
        raise FusionError(f"Unknown fusion method '{method}': choose one of {', '.join(METHODS)}.")
    adapters = list(adapters or [])
    if not adapters:
        raise FusionError("No adapters to fuse.")
    if method == "linear" and density is not None:
        raise FusionError("density applies to the ties and dare methods, not linear.")
    if method == "linear" and ties_sign:
        raise FusionError("ties_sign applies to the dare method only.")
    if method != "linear":
        density = 0.5 if density is None else density
        if isinstance(density, bool) or not isinstance(density, (int, float)) or not 0 < density <= 1:
            raise FusionError(f"density must be in (0, 1] (the fraction of each update kept), got {density!r}.")
    if to == "model" and rank is not None:
        raise FusionError("rank applies to a fused adapter (--to adapter); a fused model has full weights.")
    if to == "adapter" and keep_quantization:
        raise FusionError("keep_quantization applies to a fused model (--to model).")
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
        raise FusionError(f"rank must be a whole number >= 1, got {rank!r}.")
    try:
        specs = [resolve_adapter(a) for a in adapters]
    except AdapterError as exc:
        raise FusionError(str(exc)) from None
    names = [s.name for s in specs]
    if len(set(s.weights_file.resolve() for s in specs)) != len(specs):
        raise FusionError("The same adapter is listed twice; give it a larger weight instead.")
    for s in specs:
        if s.fine_tune_type == "full":
            raise FusionError(f"Adapter '{s.name}' is a full fine-tune (whole weights, no low-rank "
                              "update); fuse only LoRA or DoRA adapters.")
    if weights is None:
        weights_list = None if layer_weights is not None else [1.0 / len(specs)] * len(specs)
    else:
        weights_list = [float(w) if isinstance(w, (int, float)) and not isinstance(w, bool) else w
                        for w in weights]
        if len(weights_list) != len(specs):
            raise FusionError(f"{len(specs)} adapters ({', '.join(names)}) but {len(weights_list)} weights.")

    base_path, base_name = _base_for(specs, model)
    if base_path is not None:
        for s in specs:
            try:
                check_adapter(base_path, s, model_name=base_name)
            except AdapterError as exc:
                raise FusionError(str(exc)) from None
    has_dora = any(s.fine_tune_type == "dora" for s in specs)
    if base_path is None and (to == "model" or has_dora):
        why = "a fused model" if to == "model" else "DoRA adapters"
        raise FusionError(f"{why} need the base model, and the adapters' recorded base is not on this "
                          "machine: pass the base model (--model).")

    factors = [load_factors(s) for s in specs]
    module_sets = [set(f) for f in factors]
    union = set().union(*module_sets)
    for s, ms in zip(specs, module_sets):
        missing = sorted(union - ms)
        if missing:
            raise FusionError(
                f"Adapter '{s.name}' does not adapt {len(missing)} layer(s) the others do "
                f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}): fused adapters "
                "must have the same layer keys (train them with the same keys and num_layers).")
    modules = _module_order(union)
    n_layers = None
    if base_path is not None:
        n_layers = architecture(base_path).get("num_hidden_layers")
    if n_layers is None:
        idx = [layer_index(m) for m in modules if layer_index(m) is not None]
        n_layers = (max(idx) + 1) if idx else 1
    lw_spec = read_layer_weights(layer_weights)
    table = layer_weight_table(lw_spec, len(specs), n_layers, weights_list, allow_any_sum)
    global_row = (check_weights_row(weights_list, len(specs), "weights", allow_any_sum)
                  if weights_list is not None else None)

    default_rank = sum(int(f[modules[0]]["a"].shape[1]) for f in factors)
    out_rank = rank or default_rank
    base = _BaseWeights(base_path) if (to == "model" or has_dora) else None

    out_dir = Path(out).expanduser() if out else (
        paths.home() / "fused" / f"fused-{method}-{time.strftime('%Y%m%d-%H%M%S')}")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        if not overwrite:
            raise FusionError(f"{out_dir} already exists and is not empty: choose another --out "
                              "or allow overwriting.")
    out_dir.parent.mkdir(parents=True, exist_ok=True)

    # ---- merge, module by module
    bytes_read = sum(s.weights_file.stat().st_size for s in specs)
    lora_out: dict[str, np.ndarray] = {}
    dense_out: dict[str, np.ndarray] = {}
    layer_reports: list[dict] = []
    kept_energy = total_energy = 0.0
    for n, module in enumerate(modules):
        li = layer_index(module)
        row = table[li] if li is not None and li < len(table) else global_row
        if row is None:
            raise FusionError(f"Layer {module} is outside the model's layers and no global weights were given.")
        if progress:
            progress(n, len(modules), module)
        scales = [s.scale for s in specs]
        fast = method == "linear" and not has_dora
        w_base = base.weight(module) if (has_dora or to == "model") and base is not None else None
        if fast:
            us = [(row[i] * scales[i]) * factors[i][module]["b"].T for i in range(len(specs))]
            vs = [factors[i][module]["a"] for i in range(len(specs))]
            if to == "adapter":
                u, s, vt, tot = factored_svd(us, vs, out_rank)
            else:
                dense_out[module] = np.concatenate(us, axis=1) @ np.concatenate(vs, axis=1).T
        else:
            deltas = [lora_update(factors[i][module], scales[i], w_base) for i in range(len(specs))]
            if method == "linear":
                merged = sum(w * d for w, d in zip(row, deltas))
            elif method == "ties":
                merged = ties_merge(deltas, row, density, normalize=normalize)
            else:
                rngs = [np.random.default_rng([seed, n, i]) for i in range(len(specs))]
                dropped = [dare_drop(d, density, r) for d, r in zip(deltas, rngs)]
                merged = (ties_merge(dropped, row, 1.0, normalize=normalize, trim=False) if ties_sign
                          else sum(w * d for w, d in zip(row, dropped)))
            merged = np.asarray(merged, dtype=np.float32)
            if to == "adapter":
                u, s, vt, tot = truncated_svd(merged, out_rank, seed)
            else:
                dense_out[module] = merged
        if to == "adapter":
            kept = float(np.square(s, dtype=np.float64).sum())
            kept_energy += kept
            total_energy += tot
            root = np.sqrt(s).astype(np.float32)
            a = (vt.T * root).astype(np.float32)          # (in, r)
            b = (root[:, None] * u.T).astype(np.float32)  # (r, out)
            if a.shape[1] < out_rank:  # pad: mlx-lm gives every layer the same rank
                a = np.pad(a, ((0, 0), (0, out_rank - a.shape[1])))
                b = np.pad(b, ((0, out_rank - b.shape[0]), (0, 0)))
            lora_out[module + ".lora_a"] = a
            lora_out[module + ".lora_b"] = b
            layer_reports.append({"module": module, "retained_energy": kept / tot if tot > 0 else 1.0,
                                  "weights": list(row)})
        else:
            layer_reports.append({"module": module, "weights": list(row)})

    provenance = {
        "method": method, "to": to,
        "inputs": [{"name": s.name, "path": str(s.path), "weights_file": str(s.weights_file),
                    "run_id": s.run_id, "fine_tune_type": s.fine_tune_type, "rank": s.rank,
                    "scale": s.scale, "base_model": s.base_model} for s in specs],
        "weights": global_row,
        "layer_weights": lw_spec,
        "layer_table": table if lw_spec is not None else None,
        "params": ({"density": density, "normalize": normalize, "seed": seed}
                   | ({"ties_sign": ties_sign} if method == "dare" else {})) if method != "linear" else {},
        "rank": out_rank if to == "adapter" else None,
        "base_model": str(base_path) if base_path else None,
        "allow_any_sum": allow_any_sum,
        "created_at": time.time(),
    }
    retained = None
    if to == "adapter":
        per = [r["retained_energy"] for r in layer_reports]
        retained = {"total": kept_energy / total_energy if total_energy > 0 else 1.0,
                    "min": min(per), "mean": float(np.mean(per))}
        provenance["retained_energy"] = retained

    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        if to == "adapter":
            bytes_written = _write_adapter(tmp, specs, modules, lora_out, out_rank, n_layers, base_path,
                                           provenance)
        else:
            bytes_read += sum(f.stat().st_size for f in base_path.glob("*.safetensors"))
            bytes_written = _write_model(tmp, base, base_path, dense_out, keep_quantization)
        provenance["seconds"] = time.perf_counter() - t0
        (tmp / "fusion.json").write_text(json.dumps(provenance, indent=2, default=str))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    seconds = time.perf_counter() - t0
    artifact_id = None
    if record:
        from .. import store

        artifact_id = store.add_artifact(kind=f"fused_{to}", path=str(out_dir), meta=provenance)
    return FusionResult(out=out_dir, to=to, method=method, artifact_id=artifact_id,
                        provenance=provenance, seconds=seconds,
                        bytes_processed=bytes_read + bytes_written, retained_energy=retained,
                        layers=layer_reports)


def fuse(adapters: Sequence, weights: Sequence[float] | None = None, *, out: str | os.PathLike | None = None,
         to: str = "adapter", method: str = "linear", rank: int | None = None, layer_weights=None,
         model=None, density: float | None = None, normalize: bool = True, ties_sign: bool = False,
         seed: int = 0, allow_any_sum: bool = False, keep_quantization: bool = False,
         overwrite: bool = False, record: bool = True,
         progress: Callable[[int, int, str], None] | None = None) -> FusionResult:
    """Fuse adapters (run ids or folders) into one LoRA adapter or one full model.

    weights: one per adapter (default: equal, summing to 1); layer_weights: per-layer spec
    (see `layer_weight_table`); method: linear | ties | dare (`density`, default 0.5, the
    kept fraction; `normalize` for TIES; `ties_sign` for DARE+TIES); rank: of the fused
    adapter (default: the sum of the input ranks, lossless for linear fusion); model: the
    base (default: the base the adapters were trained on); keep_quantization: re-quantise
    the fused layers of a quantised base instead of de-quantising the model; record: add
    a store artifact (kind fused_adapter / fused_model) with the provenance."""
    with blas_threads():
        return _fuse(adapters, weights, out=out, to=to, method=method, rank=rank,
                     layer_weights=layer_weights, model=model, density=density, normalize=normalize,
                     ties_sign=ties_sign, seed=seed, allow_any_sum=allow_any_sum,
                     keep_quantization=keep_quantization, overwrite=overwrite, record=record,
                     progress=progress)


def _write_adapter(folder: Path, specs, modules, tensors, rank, n_layers, base_path, provenance) -> int:
    import mlx.core as mx

    folder.mkdir(parents=True, exist_ok=True)
    layer_ids = [layer_index(m) for m in modules if layer_index(m) is not None]
    keys = sorted({m.split(f"layers.{layer_index(m)}.", 1)[1] if layer_index(m) is not None else m
                   for m in modules})
    num_layers = (n_layers - min(layer_ids)) if layer_ids else 0
    config = {k: v for k, v in specs[0].config.items()
              if k not in ("resume_adapter_file", "adapter_path", "lora_parameters", "fine_tune_type")}
    config.update({
        "model": str(base_path) if base_path else specs[0].base_model,
        "fine_tune_type": "lora",
        "num_layers": num_layers,
        "lora_parameters": {"rank": int(rank), "scale": 1.0, "dropout": 0.0, "keys": keys},
        "droidft_fusion": {"method": provenance["method"], "inputs": [s.name for s in specs],
                           "weights": provenance["weights"]},
    })
    mx.save_safetensors(str(folder / ADAPTER_FILE), {k: mx.array(v) for k, v in tensors.items()})
    (folder / ADAPTER_CONFIG).write_text(json.dumps(config, indent=4, default=str))
    return (folder / ADAPTER_FILE).stat().st_size


def _write_model(folder: Path, base: _BaseWeights, base_path: Path, deltas: dict, keep_quantization: bool) -> int:
    """The base with the merged updates added, in the layout `mlx_lm fuse` writes."""
    import mlx.core as mx
    import mlx.nn as nn
    from mlx.utils import tree_unflatten
    from mlx_lm.utils import dequantize_model, load_tokenizer, save

    model, config = base.model, dict(base.config)
    updates = []
    quantized = False
    for module, delta in deltas.items():
        lin = base.linear(module)
        is_q = isinstance(lin, nn.QuantizedLinear)
        quantized |= is_q
        w = base.weight(module) + delta
        dtype = lin.scales.dtype if is_q else lin.weight.dtype
        has_bias = "bias" in lin
        new = nn.Linear(w.shape[1], w.shape[0], bias=has_bias)
        new.weight = mx.array(w).astype(dtype)
        if has_bias:
            new.bias = lin.bias
        if is_q and keep_quantization:
            new = nn.QuantizedLinear.from_linear(new, lin.group_size, lin.bits,
                                                 mode=getattr(lin, "mode", "affine"))
        updates.append((module, new))
    model.update_modules(tree_unflatten(updates))
    if not keep_quantization and (config.get("quantization") or config.get("quantization_config")):
        model = dequantize_model(model)
        config.pop("quantization", None)
        config.pop("quantization_config", None)
    tokenizer = load_tokenizer(base_path, eos_token_ids=config.get("eos_token_id"))
    folder.mkdir(parents=True, exist_ok=True)
    save(folder, base_path, model, tokenizer, config, donate_model=False)
    return sum(f.stat().st_size for f in folder.glob("*.safetensors"))


def fused_artifacts() -> list[dict]:
    """Fused adapters and models the store knows, newest last, with their provenance."""
    from .. import store

    return store.artifacts(kind="fused_adapter") + store.artifacts(kind="fused_model")


def update_of(adapter, module: str, model=None) -> np.ndarray:
    """One adapter's update (out, in) of one layer: for tests and the dashboard's preview."""
    spec = resolve_adapter(adapter)
    f = load_factors(spec)
    if module not in f:
        raise FusionError(f"Adapter '{spec.name}' does not adapt {module}.")
    w = None
    if "m" in f[module]:
        base_path, _ = _base_for([spec], model)
        if base_path is None:
            raise FusionError("A DoRA update needs the base model.")
        w = _BaseWeights(base_path).weight(module)
    return lora_update(f[module], spec.scale, w)
