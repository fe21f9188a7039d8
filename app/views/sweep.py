"""Sweeps: every trial of a sweep against its settings, the best trial marked, one click to
compare the best with the base model. The sweep comes from ?sweep=ID."""

import pandas as pd
import streamlit as st

from charts import overlay_chart, sweep_chart
from common import call, empty, goto, link
from droidft import store, sweeps
from droidft import studio as us

st.title("Sweeps")

sweep_id = st.query_params.get("sweep")
if not sweep_id:
    found = call(sweeps.list_sweeps, doing="read the sweeps", default=[]) or []
    if not found:
        empty("No sweeps yet. On the SFT or RL setup page, open “Sweep these settings” to try several "
              "learning rates (or any other setting) in one go.", "sft", "Set up a sweep")
        st.stop()
    st.caption("Pick a sweep to see its trials.")
    choice = st.selectbox("Sweep", found, index=None, placeholder="Choose a sweep",
                          format_func=lambda s: f"{s.get('name') or s['id']} · {s['method']} · "
                                                f"{s['done']}/{s['trials']} trials ended")
    if choice:
        st.query_params["sweep"] = choice["id"]
        st.rerun()
    st.stop()


first = call(sweeps.summary, sweep_id, default=None)
polling = first is not None and first["done"] < first["total"]


@st.fragment(run_every=2.0 if polling else None)
def show(sweep_id: str) -> None:
    result = call(sweeps.summary, sweep_id, doing=f"open sweep {sweep_id}")
    if result is None:
        link("sessions", "All runs")
        return
    metric, higher = result["objective"]["metric"], result["objective"]["higher_is_better"]
    st.subheader(result.get("name") or sweep_id)
    st.caption(f"{result['method'].upper()} · {result['done']} of {result['total']} trials ended · ranked by "
               f"{'highest' if higher else 'lowest'} {metric.replace('_', ' ')} · id `{sweep_id}`")
    st.progress(result["done"] / max(1, result["total"]), text=f"{result['done']} / {result['total']} trials")
    best = next((t for t in result["trials"] if t["best"]), None)
    if best:
        settings = ", ".join(f"{us.short_key(k)} = {v}" for k, v in best["settings"].items())
        box = st.container(horizontal=True, vertical_alignment="center")
        box.success(f"**Best trial:** {settings} · {metric.replace('_', ' ')} {best['objective']:.4f}",
                    icon=":material/star:")
        if box.button("Compare the best with the base", type="primary", icon=":material/compare:",
                      key="sweep.compare"):
            for k in ("cmp.targets", "cmp.model"):
                st.session_state.pop(k, None)
            goto("compare", run=best["run_id"])
    elif result["done"] < result["total"]:
        st.info("No trial has finished yet; results appear here as each one ends.", icon=":material/hourglass_top:")
    else:
        st.warning(f"No trial reported {metric.replace('_', ' ')}: the runs may have failed or had no "
                   "validation data.", icon=":material/warning:")

    table = us.sweep_table(result)
    picked = st.dataframe(table, hide_index=True, width="stretch", key="sweep.table", on_select="rerun",
                          selection_mode="single-row",
                          column_config={"best": st.column_config.TextColumn("", width=30),
                                         "run_id": st.column_config.TextColumn("run", width="small")})
    rows = picked.selection.rows if picked is not None else []
    if rows:
        goto("monitor", run=table.iloc[rows[0]]["run_id"])
    st.caption("Click a row to open that trial's Monitor.")

    points = us.sweep_points(result)
    if len(points):
        settings_swept = list(dict.fromkeys(points["setting"]))
        cols = st.columns(min(3, len(settings_swept)))
        for i, setting in enumerate(settings_swept):
            values = list(points[points["setting"] == setting]["value"])
            with cols[i % len(cols)]:
                st.altair_chart(sweep_chart(points, setting, metric, log_x=us.numeric_log(values),
                                            higher_is_better=higher), width="stretch")
    curves_metric = "val_total_rewards_mean" if higher else "val_loss"
    frame = call(store.metrics_frame, [t["run_id"] for t in result["trials"]], names=[curves_metric],
                 default=None)
    if frame is not None and len(frame):
        names = {t["run_id"]: ("★ " if t["best"] else "") + " ".join(
            f"{us.short_key(k)}={v}" for k, v in t["settings"].items()) for t in result["trials"]}
        frame = frame.assign(run=frame["run_id"].map(names))
        st.altair_chart(overlay_chart(pd.DataFrame(frame), curves_metric, log=not higher), width="stretch")
    if result["done"] >= result["total"]:
        st.caption("Every trial has ended.")
        if polling:
            st.rerun(scope="app")  # stop polling


show(sweep_id)
if st.button("Other sweep", icon=":material/swap_horiz:", key="sweep.other", type="tertiary"):
    del st.query_params["sweep"]
    st.rerun()
link("sessions", "All runs")
