"""The lineage graph ([import source ->] dataset -> run -> adapter -> fused model -> evaluation,
export) as Graphviz DOT."""

from __future__ import annotations

import json
from pathlib import Path

from ..data import FORMAT_LABELS
from ..data.imports import read_provenance, source_label
from ..data.mapping import SCHEMA_LABELS


def _dot_quote(text: str) -> str:
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _meta(art: dict) -> dict:
    meta = art.get("meta") or {}
    if isinstance(meta, str):
        try:
            meta = json.loads(meta)
        except ValueError:
            meta = {}
    return meta


def lineage_dot(runs: list[dict], artifacts: list[dict] | None = None,
                evaluations: list[dict] | None = None, max_runs: int = 60,
                sources: dict[str, dict] | None = None) -> str:
    """Graphviz DOT of [import source ->] dataset -> run -> adapter -> fused model -> evaluation.

    runs: dicts with id, name, status, data, parent_id, adapter_path.
    artifacts: dicts with kind, path, run_id and optional meta {sources: [...]}.
    evaluations: dicts with id/name, model/adapter and run_id.
    sources: dataset path -> its import provenance (see dataset_sources)."""
    runs = list(runs)[:max_runs]
    lines = ["digraph lineage {", "  rankdir=LR;",
             '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];']
    seen: set[str] = set()

    def node(key: str, label: str, color: str):
        if key not in seen:
            seen.add(key)
            lines.append(f"  {_dot_quote(key)} [label={_dot_quote(label)}, fillcolor={_dot_quote(color)}];")

    def edge(a: str, b: str, style: str = ""):
        lines.append(f"  {_dot_quote(a)} -> {_dot_quote(b)}{(' [style=' + style + ']') if style else ''};")

    run_ids = {r["id"] for r in runs}
    adapter_of: dict[str, str] = {}
    for run in runs:
        data = str(run.get("data") or "?")
        dkey = "data:" + data
        node(dkey, "dataset\n" + Path(data).name, "#fef3c7")
        prov = (sources or {}).get(data)
        if prov and "src:" + data not in seen:
            _import_source(prov, "src:" + data, dkey, node, lines)
        rkey = "run:" + run["id"]
        node(rkey, f"{run.get('name') or run['id']}\n{run.get('method', '')} · {run.get('status', '')}",
             "#fee2e2" if run.get("status") == "failed" else "#dbeafe")
        edge(dkey, rkey)
        if run.get("parent_id") and run["parent_id"] in run_ids:
            edge("run:" + run["parent_id"], rkey, "dashed")
        if run.get("adapter_path"):
            akey = "adapter:" + str(run["adapter_path"])
            adapter_of[str(run["adapter_path"])] = akey
            node(akey, "adapter\n" + run["id"][:8], "#dcfce7")
            edge(rkey, akey)
    fused_keys: dict[str, str] = {}
    exports = []
    for art in artifacts or []:
        if str(art.get("kind", "")).startswith("export_"):
            exports.append(art)
            continue
        if art.get("kind") not in ("fused_adapter", "fused_model", "fusion"):
            continue
        fkey = "fused:" + str(art.get("path"))
        fused_keys[str(art.get("path"))] = fused_keys[str(art.get("id"))] = fkey
        node(fkey, ("fused model" if art.get("kind") == "fused_model" else "fused adapter")
             + "\n" + Path(str(art.get("path"))).name, "#ede9fe")
        meta = _meta(art)
        for src in meta.get("inputs") or meta.get("sources") or []:
            key = None
            if isinstance(src, dict):
                if src.get("run_id") in run_ids:
                    key = adapter_of.get(str(next((r.get("adapter_path") for r in runs
                                                   if r["id"] == src["run_id"]), None)))
                    key = key or "run:" + src["run_id"]
                src = src.get("path")
            key = key or adapter_of.get(str(src)) or adapter_of.get(str(Path(str(src)).parent))
            if key:
                edge(key, fkey)
    for art in exports:  # run adapter / fused result -> export (GGUF, MLX, PEFT, Hub ...)
        meta = _meta(art)
        run_adapter = next((r.get("adapter_path") for r in runs if r["id"] == art.get("run_id")), None)
        parent = (fused_keys.get(str(meta.get("source_artifact"))) or fused_keys.get(str(meta.get("source_path")))
                  or adapter_of.get(str(meta.get("source_path"))) or adapter_of.get(str(run_adapter)))
        if parent is None:
            continue
        xkey = "export:" + str(art.get("id"))
        what = str(art.get("kind"))[len("export_"):]
        node(xkey, f"export · {what}\n" + (meta.get("repo_id") or Path(str(art.get("path"))).name), "#ffedd5")
        edge(parent, xkey)
    for ev in evaluations or []:
        ekey = "eval:" + str(ev.get("id") or ev.get("name"))
        score = ev.get("score")
        label = "evaluation\n" + str(ev.get("suite") or ev.get("name") or "")
        if isinstance(score, (int, float)):
            label += f"\n{score:.3g}"
        node(ekey, label, "#fce7f3")
        target = ev.get("target") or ev.get("adapter_path") or ev.get("model")
        src = None
        if target:
            src = adapter_of.get(str(target)) or ("fused:" + str(target) if "fused:" + str(target) in seen else None)
        if src is None and ev.get("run_id") in run_ids:
            src = "run:" + ev["run_id"]
        if src:
            edge(src, ekey)
    lines.append("}")
    return "\n".join(lines)


def _import_source(prov: dict, key: str, dataset_key: str, node, lines: list[str]) -> None:
    """The node a dataset was imported from, and an edge labelled with the mapping and rows."""
    node(key, source_label(prov).replace(": ", "\n", 1), "#e0f2fe")
    rows = prov.get("rows") or {}
    schema = SCHEMA_LABELS.get(prov.get("schema") or "", "your mapping")
    label = (f"import: {schema} → {FORMAT_LABELS.get(prov.get('format') or '', prov.get('format'))}\n"
             f"{rows.get('imported', '?')} rows")
    if rows.get("dropped"):
        label += f" ({rows['dropped']} left out)"
    lines.append(f"  {_dot_quote(key)} -> {_dot_quote(dataset_key)} [label={_dot_quote(label)}, fontsize=9];")


def dataset_sources(data_paths) -> dict[str, dict]:
    """Import provenance of each dataset folder that has one (for lineage_dot)."""
    found = {}
    for path in {str(p) for p in data_paths if p}:
        prov = read_provenance(path)
        if prov:
            found[path] = prov
    return found
