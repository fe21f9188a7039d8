"""The tables pages show: the Sessions table of runs (and its filter), stored evaluations
with each suite's headline number."""

from __future__ import annotations

from pathlib import Path

from .format import fmt_time, short_path

def filter_runs(summaries, *, statuses=None, methods=None, text: str = ""):
    """Rows of `store.run_summaries()` matching the chosen statuses, methods and a search text
    (in name, id, model or dataset; case-insensitive)."""
    out = summaries
    if statuses:
        out = out[out["status"].isin(list(statuses))]
    if methods:
        out = out[out["method"].isin(list(methods))]
    text = (text or "").strip().lower()
    if text:
        hay = (out["name"].fillna("") + " " + out["id"].fillna("") + " " + out["model"].fillna("")
               + " " + out["data"].fillna("")).str.lower()
        out = out[hay.str.contains(text, regex=False)]
    return out


def runs_table(summaries):
    """The Sessions table: readable columns (short model/dataset names, minutes, datetimes)."""
    import pandas as pd

    view = pd.DataFrame({
        "id": summaries["id"],
        "status": summaries["status"],
        "name": summaries["name"].fillna(summaries["id"]),
        "method": summaries["method"],
        "model": summaries["model"].fillna("").map(lambda p: Path(p).name if p else ""),
        "dataset": summaries["data"].fillna("").map(lambda p: Path(p).name if p else ""),
        "best_val_loss": summaries["best_val_loss"],
        "last_train_loss": summaries["last_train_loss"],
        "duration_min": summaries["duration_s"] / 60.0,
        "trained_tokens": summaries["trained_tokens"],
        "steps": summaries["steps"],
        "created": pd.to_datetime(summaries["created_at"], unit="s", utc=True)
                     .dt.tz_convert(_local_tz()).dt.tz_localize(None),
    })
    return view.reset_index(drop=True)


def _local_tz():
    import datetime as _dt

    return _dt.datetime.now().astimezone().tzinfo


SUITE_HEADLINE = {"loss": ("loss", "lower is better"), "accuracy": ("exact_match", "higher is better"),
                  "reward": ("total", "higher is better")}


def evaluation_rows(evaluations: list[dict]) -> list[dict]:
    """Stored evaluations (newest first) as table rows with each suite's headline number."""
    rows = []
    for ev in evaluations:
        results = ev.get("results") if isinstance(ev.get("results"), dict) else {}
        key, _ = SUITE_HEADLINE.get(ev.get("suite"), ("score", ""))
        value = results.get(key)
        rows.append({
            "when": fmt_time(ev.get("created_at")), "suite": ev.get("suite"),
            "target": results.get("label") or short_path(ev.get("target")),
            "metric": key, "value": float(value) if isinstance(value, (int, float)) else None,
            "examples": results.get("n") or results.get("examples"),
            "dataset": short_path(ev.get("dataset")), "run_id": ev.get("run_id"),
        })
    return rows
