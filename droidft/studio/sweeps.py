"""A sweep's trials as the Sweeps page shows them: a table with the best marked, points for
the per-setting charts, and the values the sweep form suggests."""

from __future__ import annotations

from typing import Any


def short_key(key: str) -> str:
    return key.split(".")[-1].replace("_", " ")


def suggest_values(spec: Any, current) -> str:
    """Grid values to offer for a form field: around the current value, or every choice."""
    if getattr(spec, "choices", None):
        return ",".join(str(c) for c in spec.choices if c is not None)
    if isinstance(current, bool):
        return "true,false"
    if isinstance(current, int) and current > 0:
        return ",".join(str(v) for v in dict.fromkeys([max(1, current // 2), current, current * 2]))
    if isinstance(current, float) and current > 0:
        return ",".join(f"{v:.3g}" for v in (current / 3, current, current * 3))
    return "" if current is None else str(current)


def sweep_table(summary: dict):
    """One row per trial: the swept settings, status, results, and a best mark."""
    import pandas as pd

    rows = []
    for t in summary["trials"]:
        row = {"best": "★" if t["best"] else "", "run_id": t["run_id"],
               "status": f"queued #{t['queue_position']}" if t.get("queue_position") else t["status"]}
        row.update({short_key(k): v for k, v in t["settings"].items()})
        for key, label in (("best_val_loss", "best val loss"), ("final_val_loss", "final val loss"),
                           ("best_val_total_rewards_mean", "best val reward"),
                           ("best_val_reward_mean", "best val reward"),  # KLPO's name for it
                           ("final_val_accuracies", "final val accuracy")):
            if any(key in x for x in summary["trials"]):
                row[label] = t.get(key)
        rows.append(row)
    return pd.DataFrame(rows)


def sweep_points(summary: dict):
    """Long rows for the per-setting charts: setting, value (number or text), objective."""
    import pandas as pd

    rows = []
    for t in summary["trials"]:
        if t.get("objective") is None:
            continue
        for key, value in t["settings"].items():
            rows.append({"setting": short_key(key), "key": key, "value": value, "objective": t["objective"],
                         "best": bool(t["best"]), "trial": t.get("name") or t["run_id"],
                         "run_id": t["run_id"], "status": t["status"]})
    return pd.DataFrame(rows)


def numeric_log(values) -> bool:
    """Whether numbers spread wide enough (10x and more, all positive) for a log axis."""
    nums = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return len(nums) == len(list(values)) and bool(nums) and min(nums) > 0 and max(nums) / min(nums) >= 10
