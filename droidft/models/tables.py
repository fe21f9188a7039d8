"""Models as table rows, the same on the Models page and in `droidft models list/search`:
local models, Hub search hits, 'fits this machine?' options."""

from __future__ import annotations

SOURCE_LABELS = {"demo": "built in", "droidft": "droidft", "hf-cache": "Hugging Face cache",
                 "lmstudio": "LM Studio", "local": "folder"}


def fmt_params(n: float | None) -> str:
    """787584 -> 0.8 M, 7_615_616_512 -> 7.6 B; '-' when unknown."""
    if not n:
        return "-"
    if n >= 1e9:
        return f"{n / 1e9:.1f} B"
    if n >= 1e6:
        return f"{n / 1e6:.1f} M"
    return f"{n / 1e3:.0f} k"


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{int(n)} B"


def fmt_bits(bits: int | None) -> str:
    return f"{bits}-bit" if bits else "-"


def local_rows(models: list[dict]) -> list[dict]:
    """One row per model on this machine (dicts from discover_models)."""
    return [{
        "Model": "demo" if m.get("source") == "demo" else m["name"],
        "Where": SOURCE_LABELS.get(m.get("source"), m.get("source") or "-"),
        "Architecture": m.get("model_type") or "-",
        "Parameters": fmt_params(m.get("params")),
        "Quantisation": fmt_bits(m.get("quantized_bits")),
        "Size on disk": fmt_bytes((m.get("size_mb") or 0) * 1e6) if m.get("size_mb") is not None else "-",
    } for m in models]


def gated_label(gated) -> str:
    return {"manual": "yes (approval)", "auto": "yes (accept terms)"}.get(gated, "yes" if gated else "no")


def hub_rows(models) -> list[dict]:
    """One row per Hub search hit (droidft.models.hub.HubModel or its dict)."""
    rows = []
    for m in models:
        m = m if isinstance(m, dict) else m.to_dict()
        rows.append({
            "Model": m["repo_id"], "Downloads": m.get("downloads") or 0,
            "Updated": (m.get("last_modified") or "")[:10] or "-",
            "Architecture": m.get("model_type") or "-",
            "Parameters": fmt_params(m.get("params")), "Quantisation": fmt_bits(m.get("quant_bits")),
            "Size": fmt_bytes(m.get("size_bytes")), "Licence": m.get("license") or "-",
            "Gated": gated_label(m.get("gated")), "MLX": "yes" if m.get("mlx_ready") else "-",
        })
    return rows


def fit_rows(report) -> list[dict]:
    """'Fits this machine?' rows from droidft.estimate.FitReport."""
    return [{"Method": o.method, "Memory": f"{o.memory_gb:.2f} GB" if o.memory_gb >= 0.1
             else f"{o.memory_gb * 1024:.0f} MB",
             "Fits": "yes" if o.fits and not o.changes else ("with changes" if o.fits else "no"),
             "Advice": o.advice} for o in report.options]
