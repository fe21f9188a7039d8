"""A run's progress from its record and metrics: steps done, speed and time left."""

from __future__ import annotations

import time
from dataclasses import dataclass

from .format import fmt_duration
from .frames import metrics_frame

@dataclass
class Progress:
    step: int  # steps this run has done (not counting a resumed parent's)
    total: int | None
    fraction: float
    eta_s: float | None
    steps_per_s: float | None
    elapsed_s: float | None

    @property
    def text(self) -> str:
        if self.total:
            out = f"step {self.step} / {self.total}"
        else:
            out = f"step {self.step}"
        if self.eta_s is not None:
            out += f" · about {fmt_duration(self.eta_s)} left"
        return out


def run_progress(run: dict, frame=None, now: float | None = None) -> Progress:
    """Progress of a run from its record and metrics: fraction done, speed and time left.

    Steps in the store are global (a resumed run continues its parent's numbering), the
    config's `iters` counts this run's own steps."""
    now = now or time.time()
    config = run.get("config") or {}
    offset = int(config.get("start_step") or 0)
    total = config.get("iters")
    total = int(total) if isinstance(total, (int, float)) and total > 0 else None
    frame = metrics_frame(frame)
    step = 0
    if len(frame):
        step = max(0, int(frame["step"].max()) - offset)
    if run.get("status") == "completed" and total:
        step = max(step, total)
    started = run.get("started_at")
    end = run.get("ended_at") or now
    elapsed = (end - started) if started else None
    rate = None
    if len(frame) and started:
        # speed from the progress reports themselves: robust to model load time
        steps = frame[frame["name"] == "train_loss"] if "train_loss" in set(frame["name"]) else frame
        pts = steps.groupby("step")["time"].max().sort_index()
        if len(pts) >= 2 and pts.iloc[-1] > pts.iloc[0]:
            rate = (pts.index[-1] - pts.index[0]) / (pts.iloc[-1] - pts.iloc[0])
        if not rate:
            its = frame[frame["name"] == "iterations_per_second"]["value"]
            if len(its):
                rate = float(its.iloc[-1]) or None
    eta = None
    if total and rate and run.get("status") in ("running", "queued"):
        eta = max(0.0, (total - step) / rate)
    fraction = min(1.0, step / total) if total else 0.0
    return Progress(step=step, total=total, fraction=fraction, eta_s=eta,
                    steps_per_s=rate, elapsed_s=elapsed)
