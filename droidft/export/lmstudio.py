"""LM Studio export: the fused MLX model placed where LM Studio lists models.

LM Studio keeps models as <models folder>/<publisher>/<model>/ (lmstudio.ai/docs, "Import
Models"): ~/.lmstudio/models by default, ~/.cache/lm-studio/models in releases before 0.3;
the app records a moved home in ~/.lmstudio-home-pointer. DROIDFT_LMSTUDIO_MODELS overrides
all of these (tests point it at a temporary folder). On Apple silicon LM Studio runs MLX
folders with its MLX engine; elsewhere it needs a GGUF (export --to gguf into the same folder).
"""

from __future__ import annotations

import os
from pathlib import Path

from .mlx import export_mlx
from .source import ExportError, Source

PUBLISHER = "droidft"


def models_dir() -> Path:
    """LM Studio's models folder on this machine (it need not exist yet)."""
    override = os.environ.get("DROIDFT_LMSTUDIO_MODELS")
    if override:
        return Path(override).expanduser()
    home = Path.home()
    pointer = home / ".lmstudio-home-pointer"
    try:
        if pointer.is_file():
            target = Path(pointer.read_text(encoding="utf-8").strip()).expanduser()
            if target.is_dir():
                return target / "models"
    except OSError:
        pass
    legacy = home / ".cache" / "lm-studio" / "models"
    if not (home / ".lmstudio").exists() and legacy.is_dir():
        return legacy
    return home / ".lmstudio" / "models"


def destination(name: str, publisher: str = PUBLISHER) -> Path:
    for part in (publisher, name):
        if not part or "/" in part or "\\" in part or part in (".", "..") or part.startswith("."):
            raise ExportError(f"'{part}' cannot be an LM Studio folder name (no slashes, no leading dot).")
    return models_dir() / publisher / name


def export_lmstudio(src: Source, out: Path, *, quantize: int | None = None, progress=None) -> dict:
    detail = export_mlx(src, out, quantize=quantize, progress=progress)
    detail["detail"] = f"LM Studio ({detail['detail']}), listed as {out.parent.name}/{out.name}"
    detail["where"] = (f"LM Studio lists it under My Models as {out.parent.name}/{out.name} "
                       f"(folder {out}).")
    return detail
