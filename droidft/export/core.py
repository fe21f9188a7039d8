"""`export(SOURCE, TO)`: one entry point for every export target, each recorded as an artifact.

Targets: mlx (fused MLX folder), lmstudio (that folder in LM Studio's models folder), gguf
(llama.cpp), ollama (GGUF + Modelfile), peft (the adapter in PEFT's layout), hub (upload of
one of those, or of an earlier export). Every export gets a README.md model card. Output is
written into a hidden sibling folder and renamed into place when complete, so a failed or
killed export leaves nothing half-written under its name.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from . import card
from .source import ExportError, Source, _slug, default_out, fuse_to_folder, resolve_source

TARGETS = ("gguf", "ollama", "mlx", "lmstudio", "peft", "hub")
UPLOADABLE = ("mlx", "peft", "gguf", "ollama")
LABELS = {"gguf": "GGUF (llama.cpp)", "ollama": "Ollama (GGUF + Modelfile)", "mlx": "MLX folder",
          "lmstudio": "LM Studio", "peft": "PEFT adapter", "hub": "Hugging Face Hub"}
Progress = Callable[[float, float, str], None]


@dataclass
class ExportResult:
    target: str
    out: str
    files: list[dict]  # name, bytes
    artifact_id: str | None
    seconds: float
    detail: str = ""
    where: str = ""
    notes: list[str] = field(default_factory=list)
    url: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def outtype_for(quantize: int | None) -> str:
    try:
        return {None: "f16", 0: "f16", 16: "f16", 8: "q8_0", 4: "q4_0", 32: "f32"}[quantize]
    except KeyError:
        raise ExportError(f"GGUF comes as 16-bit (f16), 8-bit (q8_0) or 4-bit (q4_0), not {quantize}-bit.") from None


def _gguf(src: Source, out: Path, name: str, quantize: int | None, progress: Progress | None,
          modelfile: bool) -> dict:
    from . import ollama
    from .gguf import write_gguf

    outtype = outtype_for(quantize)
    work = None
    model_dir = src.model_dir
    if model_dir is None or _quantized(model_dir):
        if progress:
            progress(0.0, 1.0, "fusing the adapter into the base model")
        work = Path(tempfile.mkdtemp(prefix=".fused-", dir=out.parent))
        model_dir = fuse_to_folder(src, work / "fused", dequantize=True)
    try:
        gguf_name = f"{name}-{outtype}.gguf"
        step = (lambda d, t, what: progress(0.1 + 0.9 * d / max(t, 1), 1.0, f"writing {what}")) if progress else None
        res = write_gguf(model_dir, out / gguf_name, outtype=outtype, name=name, progress=step)
        detail = {"detail": f"GGUF {outtype}, {res.arch}, tokenizer pre '{res.tokenizer_pre}'",
                  "gguf": {"file": gguf_name, "outtype": outtype, "arch": res.arch, "tensors": res.tensors,
                           "gb_per_s": res.gb_per_s}, "notes": res.notes}
        if modelfile:
            text, note = ollama.modelfile(gguf_name, model_dir)
            (out / "Modelfile").write_text(text)
            detail["detail"] += " + Modelfile"
            if note:
                detail["notes"].append(note)
        detail["usage"] = (ollama.usage(name.lower(), gguf_name) if modelfile else
                           f"```bash\nllama-cli -m {gguf_name} -cnv\n```")
        return detail
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)


def _quantized(folder: Path) -> bool:
    from .source import _quantized as q

    return q(folder)


def _target_name(src: Source, name: str | None) -> str:
    return _slug(name) if name else src.default_name


def export(source, to: str, *, out=None, name: str | None = None, quantize: int | None = None,
           repo_id: str | None = None, upload: str = "mlx", private: bool = True, update: bool = False,
           overwrite: bool = False, record: bool = True, progress: Progress | None = None) -> ExportResult:
    """Export SOURCE (run id, artifact id, adapter or model folder) to target `to`."""
    t0 = time.perf_counter()
    if to not in TARGETS:
        raise ExportError(f"Unknown export target '{to}': choose one of {', '.join(TARGETS)}.")
    if quantize not in (None, 0, 4, 8):
        raise ExportError(f"--quantize takes 4 or 8 (bits), not {quantize}.")
    if to == "hub":
        return _hub(source, repo_id or name, upload=upload, private=private, update=update,
                    quantize=quantize, record=record, progress=progress, t0=t0)
    src = resolve_source(source)
    name = _target_name(src, name)
    if to == "lmstudio":
        from .lmstudio import destination

        dest = Path(out).expanduser() if out else destination(name)
    else:
        dest = Path(out).expanduser() if out else default_out(to, name)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())) and not overwrite:
        raise ExportError(f"{dest} already exists and is not empty: choose another name or folder.")
    if to == "peft" and src.adapter is None:
        raise ExportError(f"'{src.label}' is a model, not an adapter: the PEFT export needs a run or an "
                          "adapter folder.")
    if to in ("gguf", "ollama"):
        from .gguf import unsupported_reason
        from .source import _read_json

        cfg = _read_json((src.model_dir or src.base) / "config.json")
        reason = unsupported_reason(cfg)
        if reason:
            raise ExportError(reason)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        if to in ("gguf", "ollama"):
            detail = _gguf(src, tmp, name, quantize, progress, modelfile=(to == "ollama"))
        elif to == "peft":
            from .peft import export_peft, usage

            detail = export_peft(src, tmp, quantize=quantize)
            detail["usage"] = usage(card.hub_id(src.base) or src.base_name, repo_id or str(dest))
        else:
            from .lmstudio import export_lmstudio
            from .mlx import export_mlx, usage

            fn = export_lmstudio if to == "lmstudio" else export_mlx
            detail = fn(src, tmp, quantize=quantize, progress=progress)
            detail["usage"] = usage(str(dest))
            if to == "lmstudio":
                detail["where"] = detail["where"].replace(str(tmp), str(dest))
        facts = card.card_facts(src, to, {"name": name, "detail": detail.get("detail")})
        card.write_card(tmp, facts, detail.get("usage", ""))
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    files = [{"name": p.relative_to(dest).as_posix(), "bytes": p.stat().st_size}
             for p in sorted(dest.rglob("*")) if p.is_file()]
    where = detail.get("where") or f"Written to {dest}."
    result = ExportResult(to, str(dest), files, None, time.perf_counter() - t0, detail.get("detail", ""),
                          where, detail.get("notes", []))
    if record:
        result.artifact_id = _record(src, to, dest, result, facts, detail)
    if progress:
        progress(1.0, 1.0, "done")
    return result


def _record(src: Source, to: str, dest: Path, result: ExportResult, facts: dict, detail: dict,
            extra: dict | None = None) -> str:
    from .. import store

    meta = {"target": to, "source": src.label, "source_kind": src.kind,
            "source_path": str(src.model_dir or (src.adapter.path if src.adapter is not None else "")),
            "source_artifact": (src.artifact or {}).get("id"), "files": result.files,
            "detail": result.detail, "where": result.where, "notes": result.notes,
            "card": {k: facts.get(k) for k in ("base_model", "base_hub_id", "method", "metrics")},
            **{k: detail[k] for k in ("gguf", "peft") if k in detail}, **(extra or {})}
    return store.add_artifact(kind=f"export_{to}", path=str(dest), run_id=src.run_id, meta=meta)


def _export_folder(source) -> tuple[Path, dict] | None:
    """An earlier export (artifact id or folder holding README.md from droidft), or None."""
    from .. import store

    label = str(source)
    if label.startswith("art") and not Path(label).exists():
        art = next((a for a in store.artifacts() if a["id"] == label), None)
        if art and str(art.get("kind", "")).startswith("export_"):
            return Path(art["path"]), art
        return None
    path = Path(label).expanduser()
    if path.is_dir() and (path / "README.md").is_file() and "droidft" in (path / "README.md").read_text(errors="ignore"):
        art = next((a for a in store.artifacts() if a.get("path") == str(path)), None)
        return path, art or {}
    return None


def _hub(source, repo_id, *, upload, private, update, quantize, record, progress, t0) -> ExportResult:
    from .hub import check_repo_id, upload_folder

    repo_id = check_repo_id(repo_id or "")
    step = (lambda d, t, what: progress(0.5 + 0.5 * d / max(t, 1), 1.0, f"uploading {what}")) if progress else None
    earlier = _export_folder(source)
    staging = None
    try:
        if earlier is not None:
            folder, art = earlier
            src = Source(str(source), "export", run=None, artifact=art or None)
            run_id = (art or {}).get("run_id")
        else:
            if upload not in UPLOADABLE:
                raise ExportError(f"Upload one of {', '.join(UPLOADABLE)}, not '{upload}'.")
            staging = Path(tempfile.mkdtemp(prefix="droidft-hub-"))
            half = (lambda d, t, what: progress(0.5 * d / max(t, 1), 1.0, what)) if progress else None
            made = export(source, upload, out=staging / "upload", name=repo_id.split("/")[1], quantize=quantize,
                          record=False, progress=half)
            folder = Path(made.out)
            src = resolve_source(source)
            run_id = src.run_id
        res = upload_folder(folder, repo_id, private=private, update=update, progress=step)
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    files = [{"name": f, "bytes": (folder / f).stat().st_size if (folder / f).exists() else None} for f in res.files]
    verb = "Updated" if res.updated else "Uploaded to"
    result = ExportResult("hub", res.url, files, None, time.perf_counter() - t0,
                          f"{'private' if res.private else 'public'} model repo, commit {res.commit[:8]}",
                          f"{verb} {res.url} ({'private' if res.private else 'public'}).", url=res.url)
    if record:
        from .. import store

        meta = {"target": "hub", "source": str(source), "repo_id": repo_id, "url": res.url, "commit": res.commit,
                "private": res.private, "updated": res.updated, "files": files,
                "source_artifact": (src.artifact or {}).get("id") if src.artifact else None, "upload": upload}
        result.artifact_id = store.add_artifact(kind="export_hub", path=res.url, run_id=run_id, meta=meta)
    if progress:
        progress(1.0, 1.0, "done")
    return result
