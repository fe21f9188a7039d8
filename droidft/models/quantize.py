"""Quantised copies of a model for QLoRA, built once and kept under the models folder."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from .. import paths
from .resolve import is_model_dir


def quantized_copy(model_path: Path, bits: int = 4, group_size: int = 64) -> Path:
    """A quantised copy of a model for QLoRA, built once and kept under the models folder.
    Stock `mlx_lm.load` opens it, so adapters trained on it load the stock way too."""
    from mlx_lm.utils import load, quantize_model, save

    model_path = Path(model_path)
    out = paths.models_dir() / f"{model_path.name}-q{bits}g{group_size}"
    if is_model_dir(out):
        return out
    model, tokenizer, config = load(str(model_path), return_config=True)
    model, config = quantize_model(model, config, group_size, bits)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=paths.models_dir()))
    try:
        save(tmp, model_path, model, tokenizer, config)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
