"""What Compare, Fusion and Evaluate offer to pick: adapters (and whether they fit a base
model), a demo prompt, fusion weights."""

from __future__ import annotations

import json
from pathlib import Path

def demo_prompt() -> str:
    """A held-out question from the demo chat data (its test split), so the demo fine-tune's
    new skill shows in Compare; a generic question if that file is missing."""
    from .. import paths

    try:
        with open(paths.DATA_DIR / "demo" / "chat" / "test.jsonl", encoding="utf-8") as fh:
            row = json.loads(fh.readline())
        return next(m["content"] for m in reversed(row["messages"]) if m.get("role") == "user")
    except (OSError, ValueError, KeyError, StopIteration, TypeError):
        return "What is your favourite colour?"


def adapter_choices(runs: list[dict], fused: list[dict] | None = None) -> list[dict]:
    """Adapters to pick from: runs that saved one (newest first), then fused adapters and fused
    models. Each: {key, label, kind: adapter | model, value (run id or path), base, run_id}."""
    out = []
    names = {r["id"]: r.get("name") or r["id"] for r in runs}
    for run in sorted(runs, key=lambda r: r.get("created_at") or 0, reverse=True):
        if not run.get("adapter_path"):
            continue
        label = f"{run.get('name') or run['id']} · {run.get('method', '')} · {run['id'][-4:]}"
        out.append({"key": f"run:{run['id']}", "label": label, "kind": "adapter", "value": run["id"],
                    "base": run.get("model"), "run_id": run["id"], "path": run["adapter_path"]})
    for art in reversed(fused or []):
        meta = art.get("meta") if isinstance(art.get("meta"), dict) else {}
        kind = "model" if art.get("kind") == "fused_model" else "adapter"
        sources = " + ".join(names.get(i.get("run_id"), Path(str(i.get("name", "?"))).name)
                             for i in meta.get("inputs") or [])
        label = f"fused {kind} {Path(str(art['path'])).name}" + (f" ({sources})" if sources else "")
        out.append({"key": f"fused:{art['path']}", "label": label, "kind": kind, "value": str(art["path"]),
                    "base": meta.get("base_model"), "run_id": None, "path": str(art["path"])})
    return out


def same_base(choice: dict, model_path: str | None) -> bool:
    """Whether an adapter choice was trained on this base model (unknown bases pass)."""
    if not model_path or not choice.get("base"):
        return True
    try:
        return Path(str(choice["base"])).resolve() == Path(str(model_path)).resolve()
    except OSError:
        return str(choice["base"]) == str(model_path)


def normalized(weights: list[float]) -> list[float]:
    total = sum(weights)
    return [w / total for w in weights] if total else weights


CHECKPOINT_LABELS = {"best": "best (lowest validation loss; highest reward for GRPO)",
                     "last": "last (where training ended)"}


def with_checkpoint(choices: list[dict], which: str) -> list[dict]:
    """Adapter choices (adapter_choices above) with each run's value set to its best or
    last adapter (`RUN@best` when the run kept a best one) and the label saying which."""
    from ..adapters import adapter_ref

    out = []
    for c in choices:
        if c.get("run_id") and c.get("kind") == "adapter":
            try:
                value = adapter_ref(c["run_id"], which)
            except Exception:  # noqa: BLE001 - unreadable run: its last adapter
                value = c["run_id"]
            c = {**c, "value": value, "label": c["label"] + (" · best" if value.endswith("@best") else " · last")}
        out.append(c)
    return out


def target_name(target: str, run_names: dict) -> str:
    """A result row's target as the run's name, '(best)' for a best adapter."""
    base, _, which = str(target).rpartition("@")
    if which in ("best", "last") and base in run_names:
        return f"{run_names[base]} ({which})"
    return run_names.get(target, target)
