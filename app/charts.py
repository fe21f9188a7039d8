"""Altair chart builders the pages share (presentation only)."""

from __future__ import annotations

import altair as alt
import pandas as pd

PALETTE = ["#2563eb", "#f97316", "#16a34a", "#dc2626", "#9333ea", "#0891b2", "#ca8a04", "#db2777"]


STEP_AXIS = alt.Axis(format="d", tickMinStep=1)  # whole steps, also when only step 0 exists


def series_chart(frame: pd.DataFrame, names: list[str], *, y_title: str, labels: dict | None = None,
                 height: int = 230, zero: bool = False) -> alt.Chart:
    """Lines of metric `names` against step (the page prints the title above it); validation
    series get points too. `labels` maps metric names to short legend labels."""
    data = frame[frame["name"].isin(names)][["step", "value", "name"]].dropna(subset=["value"])
    data = data.assign(series=data["name"].map(labels or {}).fillna(data["name"]))
    scale = alt.Scale(zero=zero)
    # the legend sits above the plot in one row: below it, it would eat into the fixed height
    legend = alt.Legend(orient="top", title=None, labelLimit=240, symbolSize=60) if len(names) > 1 else None
    color = alt.Color("series:N", title=None, scale=alt.Scale(range=PALETTE), legend=legend)
    tooltip = [alt.Tooltip("step:Q"), alt.Tooltip("name:N", title="metric"),
               alt.Tooltip("value:Q", format=".4g")]
    base = alt.Chart(data)
    line = base.mark_line(strokeWidth=2).encode(
        x=alt.X("step:Q", title="step", axis=STEP_AXIS),
        y=alt.Y("value:Q", title=y_title or None, scale=scale, axis=alt.Axis(format=".4~g")),
        color=color, tooltip=tooltip)
    points = base.transform_filter(
        alt.FieldOneOfPredicate(field="name", oneOf=[n for n in names if n.startswith("val")] or ["__none__"])
    ).mark_point(filled=True, size=45).encode(x="step:Q", y=alt.Y("value:Q", scale=scale), color=color,
                                             tooltip=tooltip)
    return (line + points).properties(height=height).interactive(bind_y=False)


def overlay_chart(frame: pd.DataFrame, metric: str, label_col: str = "run", height: int = 320) -> alt.Chart:
    """One metric of several runs in one chart, one colour per run."""
    data = frame[frame["name"] == metric][["step", "value", label_col]].dropna(subset=["value"])
    return alt.Chart(data, title=metric.replace("_", " "), height=height).mark_line(
        strokeWidth=2).encode(
        x=alt.X("step:Q", title="step", axis=STEP_AXIS),
        y=alt.Y("value:Q", title=metric.replace("_", " "), scale=alt.Scale(zero=False), axis=alt.Axis(format=".4~g")),
        color=alt.Color(f"{label_col}:N", title="run", scale=alt.Scale(range=PALETTE),
                        legend=alt.Legend(orient="right", labelLimit=320)),
        tooltip=[f"{label_col}:N", "step:Q", alt.Tooltip("value:Q", format=".4g")],
    ).interactive(bind_y=False)


def histogram(values, *, title: str, x_title: str, bins: int = 40, marker: float | None = None,
              marker_label: str = "") -> alt.Chart:
    data = pd.DataFrame({"value": list(values)})
    bars = alt.Chart(data, title=title, height=240).mark_bar(color=PALETTE[0], opacity=0.85).encode(
        x=alt.X("value:Q", bin=alt.Bin(maxbins=bins), title=x_title),
        y=alt.Y("count():Q", title="examples"), tooltip=["count():Q"])
    if marker is None:
        return bars
    rule = alt.Chart(pd.DataFrame({"x": [marker], "label": [marker_label]})).mark_rule(
        color=PALETTE[3], strokeDash=[4, 3], strokeWidth=2).encode(x="x:Q", tooltip=["label:N", "x:Q"])
    return bars + rule


def bar_chart(frame: pd.DataFrame, x: str, y: str, color: str | None = None, *, title: str,
              height: int = 260) -> alt.Chart:
    enc = dict(x=alt.X(f"{x}:N", title=None, axis=alt.Axis(labelAngle=0, labelLimit=200)),
               y=alt.Y(f"{y}:Q", title=y.replace("_", " "), axis=alt.Axis(format="~g")),
               tooltip=[f"{x}:N", alt.Tooltip(f"{y}:Q", format=".4g")])
    if color:
        legend = alt.Legend(orient="bottom") if color != x else None
        enc["color"] = alt.Color(f"{color}:N", scale=alt.Scale(range=PALETTE), legend=legend)
        if color != x:
            enc["xOffset"] = f"{color}:N"
    return alt.Chart(frame, title=title, height=height).mark_bar().encode(**enc)


def schedule_chart(frame: pd.DataFrame, height: int = 260) -> alt.Chart:
    """Per-layer fusion weights (columns layer, adapter, weight) as stacked bars, one per layer."""
    return alt.Chart(frame, title="Weight of each adapter per layer", height=height).mark_bar().encode(
        x=alt.X("layer:O", title="layer", axis=alt.Axis(labelAngle=0)),
        y=alt.Y("weight:Q", title="weight", stack="zero"),
        color=alt.Color("adapter:N", scale=alt.Scale(range=PALETTE), legend=alt.Legend(orient="bottom",
                                                                                        labelLimit=320)),
        tooltip=["adapter:N", "layer:O", alt.Tooltip("weight:Q", format=".3f")],
    )
