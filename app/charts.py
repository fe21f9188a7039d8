"""Altair chart builders the pages share (presentation only)."""

from __future__ import annotations

import altair as alt
import pandas as pd

from droidft import studio as us


PALETTE = ["#2563eb", "#f97316", "#16a34a", "#dc2626", "#9333ea", "#0891b2", "#ca8a04", "#db2777"]


STEP_AXIS = alt.Axis(format="d", tickMinStep=1)  # whole steps, also when only step 0 exists


def _smoothed_layers(data: pd.DataFrame, x: str, color: alt.Color, scale: alt.Scale, y_title: str,
                     smoothing: float, tooltip: list, points_for: list[str]) -> alt.LayerChart:
    """Raw values faint behind an EMA line when smoothing, else plain lines; `points_for`
    series (sparse validation values) also get dots."""
    y_axis = alt.Axis(format=".4~g")
    base = alt.Chart(data).encode(x=alt.X(f"{x}:Q", title="step", axis=STEP_AXIS), color=color)
    layers = []
    if smoothing > 0:
        layers.append(base.mark_line(strokeWidth=1, opacity=0.25).encode(
            y=alt.Y("value:Q", title=y_title or None, scale=scale, axis=y_axis), tooltip=tooltip))
        layers.append(base.mark_line(strokeWidth=2).encode(
            y=alt.Y("smoothed:Q", title=y_title or None, scale=scale, axis=y_axis),
            tooltip=tooltip + [alt.Tooltip("smoothed:Q", title="smoothed", format=".4g")]))
    else:
        layers.append(base.mark_line(strokeWidth=2).encode(
            y=alt.Y("value:Q", title=y_title or None, scale=scale, axis=y_axis), tooltip=tooltip))
    layers.append(base.transform_filter(alt.FieldOneOfPredicate(field="name", oneOf=points_for or ["__none__"]))
                  .mark_point(filled=True, size=45, opacity=0.35 if smoothing > 0 else 1.0)
                  .encode(y=alt.Y("value:Q", scale=scale), tooltip=tooltip))
    return alt.layer(*layers)


def series_chart(frame: pd.DataFrame, names: list[str], *, y_title: str, labels: dict | None = None,
                 height: int = 230, zero: bool = False, log: bool = False, smoothing: float = 0.0,
                 steps: tuple[int, int] | None = None) -> alt.LayerChart:
    """Lines of metric `names` against step (the page prints the title above it); validation
    series get points too. `labels` maps metric names to short legend labels. `log`: a log
    y axis (symlog when values reach 0 or below); `smoothing`: EMA weight (raw values stay
    faint behind); `steps`: the visible (first, last) steps; the y axis fits what is visible."""
    data = frame[frame["name"].isin(names)][["step", "value", "name"]].dropna(subset=["value"])
    data = us.ema(us.visible(data, steps), smoothing, by=("name",))
    data = data.assign(series=data["name"].map(labels or {}).fillna(data["name"]))
    scale = alt.Scale(type=us.scale_type(data["value"], log), zero=zero and not log)
    # the legend sits above the plot in one row: below it, it would eat into the fixed height
    legend = alt.Legend(orient="top", title=None, labelLimit=240, symbolSize=60) if len(names) > 1 else None
    color = alt.Color("series:N", title=None, scale=alt.Scale(range=PALETTE), legend=legend)
    tooltip = [alt.Tooltip("step:Q"), alt.Tooltip("name:N", title="metric"),
               alt.Tooltip("value:Q", format=".4g")]
    chart = _smoothed_layers(data, "step", color, scale, y_title, smoothing, tooltip,
                             [n for n in names if n.startswith("val")])
    return chart.properties(height=height).interactive(bind_y=False)


def overlay_chart(frame: pd.DataFrame, metric: str, label_col: str = "run", height: int = 320, *,
                  log: bool = False, smoothing: float = 0.0, steps: tuple[int, int] | None = None) -> alt.LayerChart:
    """One metric of several runs in one chart, one colour per run (same controls as series_chart)."""
    data = frame[frame["name"] == metric][["step", "value", "name", label_col]].dropna(subset=["value"])
    data = us.ema(us.visible(data, steps), smoothing, by=(label_col,))
    scale = alt.Scale(type=us.scale_type(data["value"], log), zero=False)
    color = alt.Color(f"{label_col}:N", title="run", scale=alt.Scale(range=PALETTE),
                      legend=alt.Legend(orient="right", labelLimit=320))
    tooltip = [alt.Tooltip(f"{label_col}:N"), alt.Tooltip("step:Q"), alt.Tooltip("value:Q", format=".4g")]
    chart = _smoothed_layers(data, "step", color, scale, metric.replace("_", " "), smoothing, tooltip,
                             [metric] if metric.startswith("val") else [])
    return chart.properties(title=metric.replace("_", " "), height=height).interactive(bind_y=False)


def sweep_chart(points: pd.DataFrame, setting: str, objective: str, *, log_x: bool = False,
                higher_is_better: bool = False, height: int = 240) -> alt.LayerChart:
    """One swept setting against the trials' result, the best trial drawn large and coloured."""
    data = points[points["setting"] == setting].copy()
    numeric = pd.api.types.is_numeric_dtype(pd.to_numeric(data["value"], errors="coerce").dropna()) and \
        pd.to_numeric(data["value"], errors="coerce").notna().all()
    if numeric:
        data["value"] = pd.to_numeric(data["value"])
        x = alt.X("value:Q", title=setting, scale=alt.Scale(type="log" if log_x else "linear", zero=False),
                  axis=alt.Axis(format="~g"))
    else:
        data["value"] = data["value"].astype(str)
        x = alt.X("value:N", title=setting, axis=alt.Axis(labelAngle=0))
    y_title = objective.replace("_", " ") + (" (higher is better)" if higher_is_better else " (lower is better)")
    base = alt.Chart(data).encode(
        x=x, y=alt.Y("objective:Q", title=y_title, scale=alt.Scale(zero=False), axis=alt.Axis(format=".4~g")),
        tooltip=[alt.Tooltip("trial:N"), alt.Tooltip("value", title=setting),
                 alt.Tooltip("objective:Q", title=objective, format=".4g"), alt.Tooltip("status:N")])
    others = base.transform_filter("!datum.best").mark_circle(size=90, color=PALETTE[0], opacity=0.7)
    best = base.transform_filter("datum.best").mark_point(shape="diamond", size=260, filled=True,
                                                          color=PALETTE[1])
    label = base.transform_filter("datum.best").mark_text(dy=-16, fontWeight="bold", color=PALETTE[1]).encode(
        text=alt.value("best"))
    return alt.layer(others, best, label).properties(height=height, title=setting)


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
