"""What an export starts from: a run id, a fusion artifact, an adapter folder or a model folder,
and the fused model made from it (mlx-lm's own fuse: load base + adapter, `fuse()` every
adapted linear, save in the layout `mlx_lm.fuse` writes)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .. import paths


class ExportError(ValueError):
    """An export that cannot be done; the message says why and what to do instead."""


@dataclass
class Source:
    """A resolved SOURCE: a trained adapter on a base model, or a finished model folder."""

    label: str  # what the user gave, for messages and names
    kind: str  # run | adapter | fused_adapter | fused_model | model
    adapter: object | None = None  # droidft.inference.AdapterSpec
    base: Path | None = None  # the base model folder of an adapter
    base_name: str | None = None  # the base as recorded (demo, a hub id, a folder)
    model_dir: Path | None = None  # a full model (fused artifact or model folder)
    run: dict | None = None
    artifact: dict | None = None
    provenance: dict = field(default_factory=dict)  # fusion.json of a fused result

    @property
    def run_id(self) -> str | None:
        if self.run:
            return self.run["id"]
        return getattr(self.adapter, "run_id", None)

    @property
    def default_name(self) -> str:
        if self.run:
            return _slug(self.run.get("name") or self.run["id"])
        folder = self.model_dir or (self.adapter.path if self.adapter is not None else None)
        if folder is not None and folder.name == "adapters":
            folder = folder.parent
        return _slug(folder.name if folder is not None else self.label)


def _slug(text: str) -> str:
    out = "".join(c if c.isalnum() or c in "-_." else "-" for c in str(text)).strip("-.")
    return out[:80] or "model"


def _artifact(artifact_id: str) -> dict | None:
    from .. import store

    try:
        return next((a for a in store.artifacts() if a["id"] == artifact_id), None)
    except Exception:  # noqa: BLE001 - no database yet: not an artifact
        return None


def _base_of(adapter, label: str) -> tuple[Path, str]:
    from ..models import ModelError, resolve_model

    base_name = adapter.base_model
    if not base_name:
        raise ExportError(f"Adapter '{label}' does not record its base model (no 'model' in "
                          "adapter_config.json); export it from its run instead.")
    try:
        return resolve_model(str(base_name)), str(base_name)
    except ModelError as exc:
        raise ExportError(f"The base model of '{label}' ({base_name}) is not on this machine: {exc}") from None


def resolve_source(source) -> Source:
    """A run id, an artifact id (fused adapter or model), an adapter folder or a model folder."""
    from .. import store
    from ..adapters import AdapterError, resolve_adapter

    label = str(source or "").strip()
    if not label:
        raise ExportError("Nothing to export: give a run id, a fusion result or an adapter folder.")
    path = Path(label).expanduser()
    if label.startswith("art") and not path.exists():
        art = _artifact(label)
        if art is None:
            raise ExportError(f"No artifact '{label}' in this droidft home (`droidft show RUN` lists them).")
        src = resolve_source(art["path"]) if Path(art["path"]).exists() else None
        if src is None:
            raise ExportError(f"Artifact {label} points at {art['path']}, which no longer exists.")
        src.artifact, src.label = art, label
        if art.get("run_id") and src.run is None:
            src.run = store.get_run(art["run_id"])
        return src
    if path.is_dir() and (path / "config.json").is_file() and any(path.glob("*.safetensors")):
        prov = _read_json(path / "fusion.json")
        return Source(label, "fused_model" if prov else "model", model_dir=path, provenance=prov)
    try:
        adapter = resolve_adapter(label)
    except AdapterError as exc:
        raise ExportError(str(exc)) from None
    run = store.get_run(adapter.run_id) if adapter.run_id else None
    prov = _read_json(adapter.path / "fusion.json")
    base, base_name = _base_of(adapter, label)
    kind = "run" if run else ("fused_adapter" if prov else "adapter")
    return Source(label, kind, adapter=adapter, base=base, base_name=base_name, run=run, provenance=prov)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}


def _adapter_folder(adapter, tmp: Path) -> Path:
    """A folder mlx-lm's load_adapters reads: the adapter's own, or (for a checkpoint file
    other than adapters.safetensors) a link to it beside a copy of its config."""
    if adapter.weights_file.name == "adapters.safetensors" and adapter.weights_file.parent == adapter.path:
        return adapter.path
    tmp.mkdir(parents=True, exist_ok=True)
    shutil.copy(adapter.path / "adapter_config.json", tmp / "adapter_config.json")
    os.symlink(adapter.weights_file.resolve(), tmp / "adapters.safetensors")
    return tmp


def fuse_to_folder(src: Source, out: Path, *, dequantize: bool) -> Path:
    """The fused model of `src` written to `out` (mlx-lm's fuse; a model source is copied).
    dequantize: a quantised base comes out in full precision (GGUF needs it)."""
    out = Path(out)
    if src.model_dir is not None and (not dequantize or not _quantized(src.model_dir)):
        shutil.copytree(src.model_dir, out, dirs_exist_ok=True)
        return out
    from mlx.utils import tree_unflatten  # importing mlx-lm costs seconds: only when fusing
    from mlx_lm.utils import dequantize_model, load, save

    if src.model_dir is not None:
        model, tokenizer, config = load(str(src.model_dir), return_config=True, lazy=True)
        model = dequantize_model(model)
        _drop_quantization(config)
        save(out, src.model_dir, model, tokenizer, config, donate_model=False)
        return out
    with tempfile.TemporaryDirectory(prefix="droidft-adapter-") as tmp:
        folder = _adapter_folder(src.adapter, Path(tmp) / "adapter")
        model, tokenizer, config = load(str(src.base), adapter_path=str(folder), return_config=True, lazy=True)
        fused = [(n, m.fuse(dequantize=dequantize)) for n, m in model.named_modules() if hasattr(m, "fuse")]
        if fused:
            model.update_modules(tree_unflatten(fused))
        if dequantize and _quantized_config(config):
            model = dequantize_model(model)
            _drop_quantization(config)
        save(out, src.base, model, tokenizer, config, donate_model=False)
    return out


def _quantized_config(config: dict) -> bool:
    return bool(config.get("quantization") or config.get("quantization_config"))


def _quantized(folder: Path) -> bool:
    return _quantized_config(_read_json(folder / "config.json"))


def _drop_quantization(config: dict) -> None:
    config.pop("quantization", None)
    config.pop("quantization_config", None)


def default_out(target: str, name: str) -> Path:
    """Where an export goes unless told: <home>/exports/<name>-<target>[-N]."""
    root = paths.home() / "exports"
    root.mkdir(parents=True, exist_ok=True)
    out = root / f"{name}-{target}"
    n = 2
    while out.exists():
        out = root / f"{name}-{target}-{n}"
        n += 1
    return out
