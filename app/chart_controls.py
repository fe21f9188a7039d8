"""The controls above metric charts (Monitor, Sessions overlay): log scale, EMA smoothing and
the visible steps, whose y axes then fit what is visible."""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st


@dataclass(frozen=True)
class ChartView:
    log: bool
    smoothing: float
    steps: tuple[int, int] | None

    def key(self) -> tuple:
        return (self.log, self.smoothing, self.steps)


def chart_controls(key: str, frame, *, log_default: bool = True) -> ChartView:
    """Draw the three controls in a row; returns the view they ask for. The step range keeps
    following the newest step while its right end is at the last step (a live run grows)."""
    first = int(frame["step"].min()) if frame is not None and len(frame) else 0
    last = int(frame["step"].max()) if frame is not None and len(frame) else 0
    c_log, c_smooth, c_steps = st.columns([1, 2, 3], vertical_alignment="bottom")
    log = c_log.toggle("Log scale", value=log_default, key=f"{key}.log",
                       help="A logarithmic y axis: a loss that falls fast early stays readable later "
                            "(symmetric log when values reach zero or below).")
    smoothing = c_smooth.slider("Smoothing", 0.0, 0.99, 0.0, 0.01, key=f"{key}.smooth",
                                help="Exponential moving average of each series (TensorBoard's); "
                                     "the raw values stay faint behind the smoothed line.")
    steps = None
    if last > first:
        range_key, seen_key = f"{key}.steps", f"{key}.steps_last"
        current = st.session_state.get(range_key)
        if current is None or current[1] >= st.session_state.get(seen_key, last) or current[1] > last:
            current = (min(max(first, current[0] if current else first), last), last)  # follow the newest step
        st.session_state[range_key] = (max(first, current[0]), min(last, current[1]))
        st.session_state[seen_key] = last
        steps = c_steps.slider("Steps shown", first, last, key=range_key,
                               help="Zoom into part of the run; the y axis fits the steps shown.")
        if steps == (first, last):
            steps = None
    return ChartView(log=bool(log), smoothing=float(smoothing), steps=tuple(steps) if steps else None)
