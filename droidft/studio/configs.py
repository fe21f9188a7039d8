"""Stored run configs side by side, and as YAML, a `droidft train` command, the stock
`mlx_lm lora` command, or a zip of the adapter."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

def flatten(values, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(values, dict):
        for key, value in values.items():
            if isinstance(value, dict) and value:
                out.update(flatten(value, f"{prefix}{key}."))
            else:
                out[f"{prefix}{key}"] = value
    return out


def config_diff(a: dict, b: dict, *, only_changed: bool = True) -> list[dict]:
    """Rows {setting, a, b} comparing two configs key by key (nested keys dotted)."""
    fa, fb = flatten(a or {}), flatten(b or {})
    rows = []
    for key in sorted(set(fa) | set(fb)):
        va, vb = fa.get(key), fb.get(key)
        if only_changed and va == vb:
            continue
        rows.append({"setting": key, "a": _show(va), "b": _show(vb)})
    return rows


def _show(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def config_yaml(config: dict) -> str:
    import yaml

    return yaml.safe_dump(config, sort_keys=False)


def command_for(config: dict) -> str:
    """The `droidft train` command that repeats a stored run's config."""
    import shlex

    flat = dict(config)
    method = flat.pop("method", "sft")
    parts = ["droidft", "train", method]
    for key in ("model", "data"):
        if flat.get(key):
            parts += [f"--{key}", str(flat[key])]
    parts += ["--config", "config.yaml"]
    return shlex.join(parts)


def stock_command(run: dict) -> str | None:
    """The stock `mlx_lm lora` command equivalent to a stored run, when its method has one."""
    from .. import methods, paths

    try:
        config = methods.config_from_dict(run.get("config") or {})
    except Exception:  # noqa: BLE001 - an old or foreign config: no command, no crash
        return None
    if not hasattr(config, "to_mlx_lm_command"):
        return None
    adapter = str(paths.run_dir(run["id"]) / "adapters")
    return config.to_mlx_lm_command(str(run.get("model")), str(run.get("data")), adapter)


def adapter_zip(folder: str | Path) -> bytes:
    """The adapter weights and config of a folder zipped in memory (no checkpoints)."""
    folder = Path(folder)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in ("adapters.safetensors", "adapter_config.json"):
            path = folder / name
            if path.is_file():
                zf.write(path, arcname=f"{folder.parent.name}-{folder.name}/{name}")
    return buf.getvalue()
