"""Model discovery and resolution, reading a model's config and architecture.

Offline first: "demo" is the project's own tiny model; local MLX folders, the
Hugging Face cache and LM Studio's folder are found on disk. A hub id is only
accepted when it is already downloaded.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .. import paths


class ModelError(ValueError):
    """A model that cannot be used; the message says what to do instead."""


@dataclass
class ModelInfo:
    name: str
    path: str
    source: str  # demo | droidft | local | hf-cache | lmstudio
    model_type: str | None = None
    num_layers: int | None = None
    hidden_size: int | None = None
    quantized_bits: int | None = None
    size_mb: float | None = None
    params: int | None = None  # weights, counted from the safetensors headers


def is_model_dir(path: Path) -> bool:
    """config.json and safetensors weights, all of them: a sharded model whose index names a
    shard that is missing (an interrupted download) is not a model yet."""
    path = Path(path)
    if not (path / "config.json").is_file() or not any(path.glob("*.safetensors")):
        return False
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text()).get("weight_map", {}).values())
        except (OSError, ValueError):
            return False
        return all((path / shard).is_file() for shard in shards)
    return True


def parameter_count(path: Path, bits: int | None = None) -> int | None:
    """Weights in a model folder, from its safetensors headers (no tensor is read); a quantised
    model's packed uint32 words count as the 32/bits weights each holds."""
    total = 0
    for f in sorted(Path(path).glob("*.safetensors")):
        try:
            with open(f, "rb") as fh:
                n = int.from_bytes(fh.read(8), "little")
                if n > min(100 * 2**20, f.stat().st_size):
                    return None  # not a safetensors file
                header = json.loads(fh.read(n))
        except (OSError, ValueError):
            return None
        for name, info in header.items():
            if name == "__metadata__" or not isinstance(info, dict) or name.endswith((".scales", ".biases")):
                continue
            n = 1
            for dim in info.get("shape", ()):
                n *= int(dim)
            total += n * (32 // bits) if (bits and info.get("dtype") == "U32") else n
    return total or None


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment at each call (huggingface_hub reads
    it once, at import): HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub."""
    hub = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if hub:
        return Path(hub).expanduser()
    return Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface").expanduser() / "hub"


def _hf_cache_dirs() -> list[Path]:
    return [hf_cache_dir()]


def display_name(path) -> str:
    """What to call a model folder: 'org/name' for a Hugging Face cache snapshot
    (.../models--org--name/snapshots/<commit>), else the folder's own name."""
    p = Path(str(path or "?"))
    if p.parent.name == "snapshots" and p.parent.parent.name.startswith("models--"):
        return p.parent.parent.name[len("models--"):].replace("--", "/", 1)
    return p.name or str(path)


def _lmstudio_dirs() -> list[Path]:
    dirs = [paths.lmstudio_models_dir(), Path.home() / ".lmstudio" / "models",
            Path.home() / ".cache" / "lm-studio" / "models"]
    return list(dict.fromkeys(dirs))


def _hf_cached_snapshot(repo_id: str, revision: str | None = None) -> Path | None:
    """A complete downloaded snapshot of a hub repo: the one `revision` (a branch, tag or
    commit) points at, else main's, else the newest complete one."""
    for hub in _hf_cache_dirs():
        repo = hub / f"models--{repo_id.replace('/', '--')}"
        snapshots = repo / "snapshots"
        if not snapshots.is_dir():
            continue
        wanted = revision or "main"
        commit = wanted if re.fullmatch(r"[0-9a-f]{40}", wanted) else None
        if commit is None and (repo / "refs" / wanted).is_file():
            commit = (repo / "refs" / wanted).read_text().strip()
        if commit and is_model_dir(snapshots / commit):
            return snapshots / commit
        if revision:
            continue  # that revision is not downloaded
        for snap in sorted(snapshots.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True):
            if is_model_dir(snap):
                return snap
    return None


def resolve_model(model: str) -> Path:
    """Turn what a user typed ("demo", a folder, a cached hub id) into a model folder."""
    if not model or not str(model).strip():
        raise ModelError("No model given: use 'demo' for the built-in demo model, or a model folder.")
    model = str(model).strip()
    if model == "demo":
        from .demo import demo_model_path

        return demo_model_path()
    path = Path(model).expanduser()
    if path.exists():
        if path.is_file():
            raise ModelError(f"{path} is a file; a model is a folder holding config.json and *.safetensors.")
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} has no config.json, so it is not a model folder "
                             "(an MLX/Hugging Face model folder holds config.json, tokenizer and *.safetensors).")
        if not any(path.glob("*.safetensors")):
            raise ModelError(f"{path} has config.json but no *.safetensors weights. "
                             "Convert it with `mlx_lm convert --hf-path ...` first.")
        return path
    named = paths.models_dir() / model
    if is_model_dir(named):
        return named
    repo, _, revision = model.partition("@")
    if repo.count("/") == 1:
        cached = _hf_cached_snapshot(repo, revision or None)
        if cached:
            return cached
        for root in _lmstudio_dirs():
            if not revision and is_model_dir(root / repo):
                return root / repo
        raise ModelError(f"Model '{model}' is not downloaded, and droidft only uses the network when "
                         f"asked: download it on the Models page or with `droidft models pull {model}`, "
                         "or use 'demo'.")
    raise ModelError(f"Model '{model}' not found: use 'demo', a model folder, or a downloaded hub id.")


def read_model_config(path: Path) -> dict:
    try:
        return json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"Cannot read {path}/config.json: {exc}") from None


def model_info(path: Path, name: str | None = None, source: str = "local") -> ModelInfo:
    cfg = read_model_config(path)
    size = sum(f.stat().st_size for f in Path(path).glob("*.safetensors")) / 1e6
    quant = cfg.get("quantization") or cfg.get("quantization_config") or {}
    return ModelInfo(
        name=name or Path(path).name, path=str(path), source=source,
        model_type=cfg.get("model_type"),
        num_layers=cfg.get("num_hidden_layers") or cfg.get("n_layer") or cfg.get("num_layers"),
        hidden_size=cfg.get("hidden_size"), quantized_bits=quant.get("bits"),
        size_mb=round(size, 1), params=parameter_count(path, quant.get("bits")),
    )


def discover_models(include_demo: bool = True) -> list[ModelInfo]:
    """Every model on this machine droidft can train, the demo model first."""
    found: list[ModelInfo] = []
    if include_demo:
        from .demo import demo_model_path

        found.append(model_info(demo_model_path(), name="demo", source="demo"))
    seen = {found[0].path} if found else set()

    def add(path: Path, name: str, source: str):
        if str(path) in seen or not is_model_dir(path):
            return
        try:
            found.append(model_info(path, name=name, source=source))
            seen.add(str(path))
        except ModelError:
            pass

    for path in sorted(paths.models_dir().iterdir()):
        add(path, path.name, "droidft")
    for hub in _hf_cache_dirs():
        if hub.is_dir():
            for repo in sorted(hub.glob("models--*")):
                snap = _hf_cached_snapshot(repo.name[len("models--"):].replace("--", "/"))
                if snap:
                    add(snap, repo.name[len("models--"):].replace("--", "/"), "hf-cache")
    for root in _lmstudio_dirs():
        if root.is_dir():
            for path in sorted(root.glob("*/*")):
                add(path, f"{path.parent.name}/{path.name}", "lmstudio")
    return found


def linear_layer_keys(model_path: Path) -> list[str]:
    """The linear-layer names inside one transformer block (the LoRA `keys` choices),
    read from the real architecture without loading the weights."""
    import mlx.nn as nn
    from mlx_lm.utils import _get_classes

    cfg = read_model_config(model_path)
    model_class, args_class = _get_classes(cfg)
    model = model_class(args_class.from_dict(cfg))
    keys = []
    for name, module in model.layers[0].named_modules():
        if isinstance(module, (nn.Linear, nn.QuantizedLinear)) or hasattr(module, "to_lora"):
            keys.append(name)
    return sorted(keys)
