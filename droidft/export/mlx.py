"""MLX folder export: the fused model in the layout `mlx_lm fuse` writes (config.json,
model.safetensors, tokenizer files), optionally re-quantised to 4 or 8 bits with mlx-lm's
own quantize_model, with a README.md model card. Stock `mlx_lm.load` opens it."""

from __future__ import annotations

import shutil
from pathlib import Path

from .source import ExportError, Source, fuse_to_folder

QUANTIZE_BITS = (4, 8)
GROUP_SIZE = 64


def usage(folder_or_id: str) -> str:
    return ("```python\nfrom mlx_lm import load, generate\n\n"
            f"model, tokenizer = load(\"{folder_or_id}\")\n"
            "print(generate(model, tokenizer, prompt=\"Hello\", max_tokens=64))\n```")


def quantize_folder(folder: Path, bits: int, group_size: int = GROUP_SIZE) -> None:
    """Re-quantise the model in `folder` in place (mlx-lm's quantize_model + save)."""
    import tempfile

    from mlx_lm.utils import load, quantize_model, save

    if bits not in QUANTIZE_BITS:
        raise ExportError(f"Quantise to 4 or 8 bits, not {bits}.")
    model, tokenizer, config = load(str(folder), return_config=True)
    if config.get("quantization"):
        raise ExportError("The fused model is already quantised; export it without --quantize, or "
                          "from a full-precision base.")
    model, config = quantize_model(model, config, group_size, bits)
    tmp = Path(tempfile.mkdtemp(prefix=".quant-", dir=folder.parent))
    try:
        save(tmp, folder, model, tokenizer, config)
        for f in folder.glob("*.safetensors"):
            f.unlink()
        for f in tmp.iterdir():
            shutil.move(str(f), folder / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def export_mlx(src: Source, out: Path, *, quantize: int | None = None, progress=None) -> dict:
    """Write the fused (and optionally quantised) MLX model to `out`; returns detail for the card."""
    if progress:
        progress(0, 3, "fusing the adapter into the base model")
    fuse_to_folder(src, out, dequantize=bool(quantize))
    if quantize:
        if progress:
            progress(1, 3, f"quantising to {quantize} bits")
        quantize_folder(out, quantize)
    return {"detail": f"MLX, {quantize}-bit (group size {GROUP_SIZE})" if quantize else "MLX, full precision"}
