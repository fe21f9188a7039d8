"""LM Studio export: the fused MLX model placed where LM Studio lists models.

LM Studio keeps models as <models folder>/<publisher>/<model>/ (lmstudio.ai/docs, "Import
Models"): ~/.lmstudio/models by default, ~/.cache/lm-studio/models in releases before 0.3;
the app records a moved home in ~/.lmstudio-home-pointer. DROIDFT_LMSTUDIO_MODELS overrides
all of these (tests point it at a temporary folder). On Apple silicon LM Studio runs MLX
folders with its MLX engine; elsewhere it needs a GGUF (export --to gguf into the same folder).
"""

from __future__ import annotations

from pathlib import Path

from .. import paths
from .mlx import export_mlx
from .source import ExportError, Source

PUBLISHER = "droidft"


def models_dir() -> Path:
    """LM Studio's models folder on this machine (see droidft.paths.lmstudio_models_dir)."""
    return paths.lmstudio_models_dir()


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
