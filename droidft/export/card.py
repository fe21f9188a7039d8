"""Model cards (README.md) for every export, in the Hub's model-card format: YAML front matter
(base_model, library_name, tags, datasets, pipeline_tag) and a body that says what was trained
on what: base model, dataset with its provenance, method and key hyper-parameters, steps and
tokens trained, final train/validation metrics, the evaluation table where one exists, and the
droidft version. Everything comes from the run's record in the store, never from guesses."""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path

import yaml

from .. import __version__

LIBRARY = {"mlx": "mlx", "lmstudio": "mlx", "gguf": "gguf", "ollama": "gguf", "peft": "peft"}
_HUB_CACHE = re.compile(r"(models|datasets)--([^/\\]+?)--([^/\\]+)")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def hub_id(path_or_name, kind: str = "models") -> str | None:
    """The Hub id of a model/dataset given as a hub id or as a path in the Hugging Face cache."""
    if path_or_name is None:
        return None
    text = str(path_or_name)
    for m in _HUB_CACHE.finditer(text):
        if m.group(1) == kind:
            return f"{m.group(2)}/{m.group(3)}"
    if _HUB_ID.match(text) and not Path(text).expanduser().exists():
        return text
    return None


def _dataset_facts(data: str | None, method: str | None) -> dict:
    """Where the training data came from: its folder, rows per split, a digest of train.jsonl."""
    if not data:
        return {}
    facts: dict = {"given": str(data), "hub_id": hub_id(data, "datasets")}
    try:
        from ..data import resolve_dataset

        folder = resolve_dataset(data, method)
    except Exception:  # noqa: BLE001 - gone or unreadable: say what was recorded
        return facts
    facts["path"] = str(folder)
    from .. import paths

    demo_root = (paths.DATA_DIR / "demo").resolve()
    if str(data).strip().lower() == "demo" or demo_root in Path(folder).resolve().parents:
        facts["provenance"] = "droidft's bundled demo dataset (generated from text shipped with droidft)"
    rows = {}
    for split in ("train", "valid", "test"):
        f = folder / f"{split}.jsonl" if folder.is_dir() else (folder if split == "train" else None)
        if f is not None and f.is_file():
            with open(f, "rb") as fh:
                rows[split] = sum(1 for line in fh if line.strip())
            if split == "train":
                facts["train_sha256"] = hashlib.sha256(f.read_bytes()).hexdigest()[:16]
    facts["rows"] = rows
    return facts


def _is_demo_model(path_or_name) -> bool:
    from .. import paths
    from ..models.demo import SHIPPED_DIR

    if str(path_or_name) == "demo":
        return True
    try:  # the shipped build, or one built locally (stale recipe, $DROIDFT_DEMO_MODEL)
        return Path(str(path_or_name)).resolve() in {SHIPPED_DIR.resolve(), paths.demo_model_dir().resolve()}
    except OSError:
        return False


def card_facts(src, target: str, extra: dict | None = None) -> dict:
    """Everything a card says, as plain data (also kept in the export's artifact)."""
    from .. import store

    run = src.run or {}
    config = run.get("config") or (src.adapter.config if src.adapter is not None else {}) or {}
    base_name = src.base_name or config.get("model")
    if src.provenance.get("base_model"):
        base_name = base_name or src.provenance["base_model"]
    if base_name and _is_demo_model(src.base or base_name):
        base_name = "droidft-demo (droidft's built-in demo model, not on the Hub)"
    facts: dict = {
        "target": target,
        "base_model": base_name,
        "base_hub_id": hub_id(src.base or base_name) or hub_id(base_name),
        "method": run.get("method") or ("fusion" if src.provenance else None),
        "fine_tune_type": config.get("fine_tune_type"),
        "hyperparameters": {k: config.get(k) for k in (
            "learning_rate", "optimizer", "batch_size", "iters", "epochs", "max_seq_length",
            "num_layers", "grad_accumulation_steps", "mask_prompt", "seed", "beta", "loss_type",
            "group_size") if config.get(k) is not None},
        "lora": config.get("lora_parameters"),
        "run_id": src.run_id,
        "run_name": run.get("name"),
        "dataset": _dataset_facts(run.get("data") or config.get("data"), run.get("method")),
        "fusion": {k: src.provenance.get(k) for k in ("method", "weights", "inputs", "rank")
                   if src.provenance.get(k) is not None} or None,
        "droidft_version": __version__,
        "exported_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        **(extra or {}),
    }
    if src.run_id:
        try:
            latest = store.latest_metrics(src.run_id)
            vals = [m["value"] for m in store.metrics(src.run_id, names=["val_loss"])]
        except Exception:  # noqa: BLE001 - a card without metrics beats no export
            latest, vals = {}, []
        facts["metrics"] = {
            "steps": _steps(src.run_id),
            "trained_tokens": int(latest["trained_tokens"]) if latest.get("trained_tokens") else None,
            "final_train_loss": latest.get("train_loss"),
            "final_val_loss": latest.get("val_loss"),
            "best_val_loss": min(vals) if vals else None,
        }
        try:
            facts["evaluations"] = [
                {"suite": e["suite"], "target": e["target"], "dataset": e["dataset"],
                 **{k: v for k, v in (e.get("results") or {}).items() if isinstance(v, (int, float))}}
                for e in store.evaluations(run_id=src.run_id)]
        except Exception:  # noqa: BLE001
            facts["evaluations"] = []
    return facts


def _steps(run_id: str) -> int | None:
    from .. import store

    try:
        rows = store.metrics(run_id, names=["train_loss"])
    except Exception:  # noqa: BLE001
        return None
    return max((int(r["step"]) for r in rows), default=None)


def front_matter(facts: dict) -> dict:
    target = facts["target"]
    tags = ["droidft", LIBRARY.get(target, target), "fine-tuned", "text-generation"]
    if facts.get("fine_tune_type") in ("lora", "dora"):
        tags.append(facts["fine_tune_type"])
    if facts.get("method"):
        tags.append(str(facts["method"]))
    meta: dict = {}
    if facts.get("base_hub_id"):
        meta["base_model"] = facts["base_hub_id"]
    meta["library_name"] = LIBRARY.get(target, target)
    meta["pipeline_tag"] = "text-generation"
    meta["tags"] = list(dict.fromkeys(tags))
    ds = (facts.get("dataset") or {}).get("hub_id")
    meta["datasets"] = [ds] if ds else []
    return meta


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "—" if v is None else str(v)


def render(facts: dict, usage: str = "") -> str:
    """The README.md text: front matter, then what was trained and how to use it."""
    meta = front_matter(facts)
    lines = ["---", yaml.safe_dump(meta, sort_keys=False).strip(), "---", ""]
    title = facts.get("name") or facts.get("run_name") or facts.get("run_id") or "droidft model"
    lines += [f"# {title}", ""]
    base = facts.get("base_hub_id") or facts.get("base_model") or "an unrecorded base model"
    method = facts.get("method") or "fine-tuning"
    lines += [f"Fine-tuned from **{base}** with droidft ({method}"
              + (f", {facts['fine_tune_type']}" if facts.get("fine_tune_type") else "") + ").", ""]
    lines += ["## Training", "", "| | |", "|---|---|"]
    rows = [("Base model", facts.get("base_model")), ("Base model on the Hub", facts.get("base_hub_id")),
            ("Method", facts.get("method")), ("Fine-tune type", facts.get("fine_tune_type"))]
    lora = facts.get("lora") or {}
    for k in ("rank", "scale", "dropout", "keys"):
        if lora.get(k) is not None:
            rows.append((f"LoRA {k}", ", ".join(lora[k]) if isinstance(lora[k], list) else lora[k]))
    rows += [(k.replace("_", " ").capitalize(), v) for k, v in (facts.get("hyperparameters") or {}).items()]
    m = facts.get("metrics") or {}
    rows += [("Steps trained", m.get("steps")), ("Tokens trained", m.get("trained_tokens")),
             ("Final train loss", m.get("final_train_loss")), ("Final validation loss", m.get("final_val_loss")),
             ("Best validation loss", m.get("best_val_loss")), ("droidft run", facts.get("run_id"))]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in rows if v is not None]
    ds = facts.get("dataset") or {}
    lines += ["", "## Dataset", ""]
    if ds:
        lines.append(f"- Given as: `{ds.get('given')}`" + (f" (Hub: `{ds['hub_id']}`)" if ds.get("hub_id") else ""))
        if ds.get("provenance"):
            lines.append(f"- Provenance: {ds['provenance']}")
        if ds.get("path"):
            lines.append(f"- Folder: `{ds['path']}`")
        if ds.get("rows"):
            lines.append("- Rows: " + ", ".join(f"{k} {v}" for k, v in ds["rows"].items()))
        if ds.get("train_sha256"):
            lines.append(f"- train.jsonl sha256 (first 16 hex): `{ds['train_sha256']}`")
    else:
        lines.append("Not recorded (exported from an adapter or model folder without its run).")
    if facts.get("fusion"):
        fu = facts["fusion"]
        lines += ["", "## Fusion", "", f"- Method: {fu.get('method')}", f"- Weights: {fu.get('weights')}"]
        for i in fu.get("inputs") or []:
            lines.append(f"- Input: {i.get('name') if isinstance(i, dict) else i}")
    evals = facts.get("evaluations") or []
    if evals:
        keys = sorted({k for e in evals for k in e if k not in ("suite", "target", "dataset")})
        lines += ["", "## Evaluation", "", "| suite | target | " + " | ".join(keys) + " |",
                  "|---|---|" + "---|" * len(keys)]
        for e in evals:
            lines.append(f"| {e['suite']} | {Path(str(e['target'])).name} | "
                         + " | ".join(_fmt(e.get(k)) for k in keys) + " |")
    if usage:
        lines += ["", "## Use", "", usage.strip()]
    lines += ["", "## Export", "", f"- Format: {facts['target']}"
              + (f" ({facts['detail']})" if facts.get("detail") else ""),
              f"- Exported {facts['exported_at']} by droidft {facts['droidft_version']}", ""]
    return "\n".join(lines)


def write_card(folder: Path, facts: dict, usage: str = "") -> Path:
    path = Path(folder) / "README.md"
    path.write_text(render(facts, usage), encoding="utf-8")
    return path


def read_front_matter(text: str) -> dict:
    """The YAML front matter of a model card (what the Hub reads as cardData)."""
    if not text.startswith("---"):
        return {}
    end = text.find("\n---", 3)
    return yaml.safe_load(text[3:end]) if end > 0 else {}
