"""Metric rows as pandas frames for the charts: merged polls, downsampled series, the latest
values, and which charts a run's metric names make."""

from __future__ import annotations

import math
from typing import Any

def metrics_frame(rows) -> "Any":
    """Metric rows (a list of dicts or a DataFrame) as a DataFrame with step, time, name, value."""
    import pandas as pd

    if rows is None:
        return pd.DataFrame(columns=["step", "time", "name", "value"])
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    for col in ("step", "time", "name", "value"):
        if col not in frame.columns:
            frame[col] = pd.Series(dtype="float64" if col != "name" else "object")
    return frame


def merge_metrics(old, new):
    """Append newly polled rows to what a page already holds, dropping repeats of (name, step).

    Polls overlap on purpose (they ask for a little before the last time seen), so a row written
    in the same instant as the previous poll is never missed; the overlap is removed here."""
    import pandas as pd

    new = metrics_frame(new)
    if old is None or len(old) == 0:
        out = new
    elif len(new) == 0:
        return old
    else:
        out = pd.concat([old, new], ignore_index=True)
    keys = [c for c in ("run_id", "name", "step") if c in out.columns]
    out = out.drop_duplicates(subset=keys, keep="last")
    return out.sort_values(["step", "time"], kind="stable").reset_index(drop=True)


def downsample(frame, max_points: int = 1500, by=("run_id", "name")):
    """At most `max_points` rows per series (evenly spaced, always keeping the last one), so
    a chart of a million-row history stays light in the browser."""
    import numpy as np

    if frame is None or len(frame) == 0:
        return frame
    keys = [c for c in by if c in frame.columns]
    if not keys:
        groups = [frame]
    else:
        groups = [g for _, g in frame.groupby(keys, sort=False)]
    parts = []
    for group in groups:
        if len(group) > max_points:
            idx = np.unique(np.linspace(0, len(group) - 1, max_points).round().astype(int))
            group = group.iloc[idx]
        parts.append(group)
    import pandas as pd

    return pd.concat(parts, ignore_index=True) if parts else frame


def thin_history(frame, recent: int = 2000, older: int = 2000):
    """Bound what a page holds for a long run: per metric, the newest `recent` rows as they are
    and at most `older` evenly spaced rows of everything before (the first one included). A
    chart of it looks the same; a run of days no longer makes every poll of every watching tab
    cost memory and time in proportion to its length."""
    import numpy as np
    import pandas as pd

    if frame is None or len(frame) <= recent + older:
        return frame
    parts = []
    for _, group in frame.groupby("name", sort=False):
        if len(group) > recent + older:
            head = group.iloc[:-recent]
            idx = np.unique(np.linspace(0, len(head) - 1, older).round().astype(int))
            group = pd.concat([head.iloc[idx], group.iloc[-recent:]])
        parts.append(group)
    return pd.concat(parts).sort_values(["step", "time"], kind="stable").reset_index(drop=True)


def latest_values(frame) -> dict[str, float]:
    """The newest value of every metric name in a frame."""
    if frame is None or len(frame) == 0:
        return {}
    last = frame.sort_values(["step", "time"], kind="stable").groupby("name").tail(1)
    return {str(r.name): float(r.value) for r in last.itertuples(index=False)
            if r.value is not None and not (isinstance(r.value, float) and math.isnan(r.value))}


def chart_groups(names) -> list[tuple[str, list[str], str]]:
    """Which charts a run's metrics make, as (title, metric names, y-axis title): loss, the RL
    rewards (total, per reward function), preference rewards, KL, completion lengths,
    clipping, then learning rate, speed and memory, then anything else reported.
    Spreads (`_std`), coverage and raw log-probabilities are left out."""
    import re

    names = set(names)
    used: set[str] = set()
    groups: list[tuple[str, list[str], str]] = []

    def take(title: str, members, y_title: str) -> None:
        members = [n for n in members if n in names and n not in used]
        if members:
            groups.append((title, members, y_title))
            used.update(members)

    def matching(pattern: str) -> list[str]:
        return sorted(n for n in names if re.fullmatch(pattern, n))

    take("Loss", ["train_loss", "val_loss"], "loss")
    take("Reward", matching(r"(train_|val_)?total_rewards_mean") + ["reward_mean", "reward"]
         + matching(r"(train|val)_(reward_mean|judge_reward_mean|rewards)"), "reward")
    take("Judged pairs", matching(r"train_(pairs_judged|pairs_skipped|judge_fallbacks|human_judged)"), "pairs")
    take("Reward per function", [n for n in matching(r"(train|val)_.+_mean") if not re.search(
        r"grouped_rewards|generated_tokens|logits|logps|kl|advantages|ratios", n)], "reward")
    take("Preference rewards", matching(r"(train|val)_(chosen|rejected)_reward"), "reward")
    take("Preference accuracy and margin", matching(r"(train|val)_(accuracies|margins)"), "value")
    take("KL divergence", matching(r"(train_|val_)?kl"), "KL")
    take("Completion length", matching(r"(train|val)_(average|min|max)_generated_tokens"), "tokens")
    take("Clipping", matching(r".*clip_(ratio|fraction).*"), "share clipped")
    take("Next-token wins", matching(r"(train|val)_(chosen_win|margin_win)"), "share")
    take("Learning rate", ["learning_rate"], "learning rate")
    take("Tokens per second", ["tokens_per_second"], "tokens/s")
    take("Peak memory", ["peak_memory_gb"], "GB")
    hidden = {"iterations_per_second", "trained_tokens", "val_time", "step_time"}
    rest: dict[str, list[str]] = {}  # anything else: train_X and val_X share a chart
    for n in sorted(names - used - hidden):
        if not re.search(r"_std$|_coverage$|logps|logits", n):
            rest.setdefault(re.sub(r"^(train|val)_", "", n), []).append(n)
    for key, members in rest.items():
        take(key.replace("_", " ").capitalize(), members, "")
    return groups


def series_labels(names: list[str]) -> dict[str, str]:
    """Short legend labels for the metrics of one chart: the words they all share go (the
    chart's title says them), e.g. train_loss/val_loss -> train/val."""
    words = [n.split("_") for n in names]
    common = set(words[0]).intersection(*words[1:]) if len(words) > 1 else set()
    out = {}
    for name, parts in zip(names, words):
        kept = [w for w in parts if w not in common]
        out[name] = " ".join(kept) or name.replace("_", " ")
    return out


def weight_table_frame(table: list[list[float]], labels: list[str]):
    """A per-layer weight table (rows = layers) as a long frame for a chart."""
    import pandas as pd

    rows = [{"layer": i, "adapter": labels[j], "weight": w} for i, row in enumerate(table)
            for j, w in enumerate(row)]
    return pd.DataFrame(rows)


def ema(frame, weight: float, by=("run_id", "name")):
    """`frame` with a `smoothed` column: each series' exponential moving average over steps
    (TensorBoard's debiased form, so the first points are not pulled toward zero).
    weight 0 = no smoothing, 0.99 = very smooth."""
    import numpy as np

    out = frame.sort_values("step", kind="stable").copy()
    weight = min(max(float(weight or 0.0), 0.0), 0.999)
    if weight == 0 or len(out) == 0:
        out["smoothed"] = out["value"]
        return out
    keys = [c for c in by if c in out.columns]
    parts = []
    for _, group in (out.groupby(keys, sort=False) if keys else [(None, out)]):
        values = group["value"].to_numpy(dtype=float)
        smoothed, last, n = np.empty_like(values), 0.0, 0
        for i, v in enumerate(values):
            if math.isfinite(v):
                last, n = last * weight + (1 - weight) * v, n + 1
            smoothed[i] = last / (1 - weight ** n) if n else float("nan")
        parts.append(group.assign(smoothed=smoothed))
    import pandas as pd

    return pd.concat(parts).sort_values("step", kind="stable")


def visible(frame, steps: tuple[int, int] | None):
    """Rows within a (first, last) step range; all rows when `steps` is None."""
    if steps is None or frame is None or len(frame) == 0:
        return frame
    return frame[(frame["step"] >= steps[0]) & (frame["step"] <= steps[1])]


def scale_type(values, log: bool) -> str:
    """linear, or for a log view: log when every value is positive, else symlog."""
    if not log:
        return "linear"
    values = [v for v in values if v is not None and math.isfinite(v)]
    return "log" if values and min(values) > 0 else "symlog"
