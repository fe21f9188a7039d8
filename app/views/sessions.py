"""Sessions: every run in a sortable, filterable table; overlay curves, diff configs,
resume, delete, download, export (GGUF, Ollama, MLX, LM Studio, PEFT, Hub); the lineage graph."""

import streamlit as st

from chart_controls import chart_controls
from charts import overlay_chart
from common import allowed, attempt, call, empty, goto, link, require_role, show_error, viewer_note
from export_section import export_section
from queue_controls import queue_buttons, queue_panel
from droidft import jobs, queue, store
from droidft import studio as us

st.title("Sessions")
st.caption("Every run on this machine. Click rows to select them: one to act on it, "
           "several to overlay their curves, two to compare their settings.")

jobs_reaped = call(jobs.reap, doing="check for runs whose worker died", default=[])
summaries = call(store.run_summaries, doing="read the runs")
if summaries is None:
    st.stop()
if len(summaries) == 0:
    empty("No runs yet. Start the demo fine-tune on Home, or set up a run.", "home", "Go to Home")
    st.stop()

queue_panel()
sweep_ids = [s for s in summaries["sweep_id"].dropna().unique()] if "sweep_id" in summaries else []
if sweep_ids:
    with st.expander(f"Sweeps ({len(sweep_ids)})", icon=":material/grid_view:"):
        for sweep in (call(store.sweeps, doing="read the sweeps", default=[]) or [])[:20]:
            mine = summaries[summaries["sweep_id"] == sweep["id"]]
            done = int(mine["status"].isin(jobs.TERMINAL).sum())
            link("sweep", f"{sweep.get('name') or sweep['id']} · {sweep.get('method')} · {done}/{len(mine)} "
                          f"trials ended", sweep=sweep["id"])

# -- filters --------------------------------------------------------------------------------
f1, f2, f3 = st.columns([2, 2, 3])
statuses = f1.multiselect("Status", sorted(summaries["status"].dropna().unique()), key="f_status",
                          placeholder="All")
methods = f2.multiselect("Method", sorted(summaries["method"].dropna().unique()), key="f_method",
                         placeholder="All")
text = f3.text_input("Search", key="f_text", placeholder="name, model or dataset contains...")
table = us.filter_runs(summaries, statuses=statuses, methods=methods, text=text)
view = us.runs_table(table)
places = call(queue.positions, default={}) or {}
view["status"] = [us.queue_status({"id": i, "status": st_}, places) for i, st_ in zip(view["id"], view["status"])]
# ?select=ID,ID pre-selects runs (shareable links; Monitor and tests link here that way)
wanted = [r for r in st.query_params.get("select", "").split(",") if r]
default_rows = [i for i, rid in enumerate(view["id"]) if rid in wanted]

selection = st.dataframe(
    view, key="runs_table", on_select="rerun", selection_mode="multi-row", hide_index=True,
    selection_default={"selection": {"rows": default_rows}} if default_rows else None,
    height=min(420, 38 + 35 * len(view)),
    column_order=["status", "name", "method", "model", "dataset", "best_val_loss", "last_train_loss",
                  "duration_min", "trained_tokens", "steps", "created"],
    column_config={
        "status": st.column_config.TextColumn("Status", width=90),
        "name": st.column_config.TextColumn("Name", width="medium"),
        "method": st.column_config.TextColumn("Method", width="small"),
        "model": st.column_config.TextColumn("Model", width="small"),
        "dataset": st.column_config.TextColumn("Dataset", width="small"),
        "best_val_loss": st.column_config.NumberColumn("Best val loss", format="%.4f"),
        "last_train_loss": st.column_config.NumberColumn("Train loss", format="%.4f"),
        "duration_min": st.column_config.NumberColumn("Duration (min)", format="%.1f"),
        "trained_tokens": st.column_config.NumberColumn("Tokens", format="compact"),
        "steps": st.column_config.NumberColumn("Steps"),
        "created": st.column_config.DatetimeColumn("Created", format="YYYY-MM-DD HH:mm"),
    },
)
st.caption(f"{len(table)} of {len(summaries)} runs" + (" · filtered" if len(table) != len(summaries) else ""))

picked_rows = selection.selection.rows if selection is not None else []
picked = [view.iloc[i]["id"] for i in picked_rows if i < len(view)]
if picked:
    st.query_params["select"] = ",".join(picked)
elif "select" in st.query_params:
    del st.query_params["select"]
if not picked:
    st.info("Select one or more rows above to act on them or to overlay their curves.",
            icon=":material/touch_app:")

# -- overlay ----------------------------------------------------------------------------------
if picked:
    names_by_id = dict(zip(table["id"], table["name"].fillna(table["id"])))
    st.subheader("Curves")
    metric = st.segmented_control(
        "Metric", ["train_loss", "val_loss", "learning_rate", "tokens_per_second", "peak_memory_gb"],
        default="train_loss", key="overlay_metric", format_func=lambda n: n.replace("_", " "))
    frame = call(store.metrics_frame, picked, names=[metric or "train_loss"], doing="read the curves")
    if frame is not None and len(frame):
        frame = us.downsample(frame, max_points=1500)
        frame["run"] = frame["run_id"].map(lambda r: f"{names_by_id.get(r, r)} ({r[-4:]})")
        chosen = metric or "train_loss"
        view_ = chart_controls("sessions.view", frame, log_default="loss" in chosen)
        st.altair_chart(overlay_chart(frame, chosen, log=view_.log, smoothing=view_.smoothing, steps=view_.steps),
                        width="stretch")
    elif frame is not None:
        st.caption("The selected runs recorded no values of this metric.")

# -- config diff ------------------------------------------------------------------------------
if len(picked) >= 2:
    st.subheader("Settings that differ")
    a, b = call(jobs.get, picked[0], default=None), call(jobs.get, picked[1], default=None)
    if a and b:
        rows = us.config_diff(a.get("config") or {}, b.get("config") or {})
        if rows:
            st.dataframe(rows, hide_index=True, column_config={
                "setting": "Setting", "a": names_by_id.get(a["id"], a["id"]),
                "b": names_by_id.get(b["id"], b["id"])})
        else:
            st.caption("The two runs have identical settings.")


# -- actions on one run ---------------------------------------------------------------------
def _cancel_delete() -> None:
    st.session_state.pop("pending_delete", None)


@st.dialog("Delete runs?", on_dismiss=_cancel_delete)
def confirm_delete(run_ids: list[str]) -> None:
    st.write(f"This removes {len(run_ids)} run(s): their metrics, logs, checkpoints and adapters. "
             "It cannot be undone.")
    if st.button("Delete", type="primary", key="confirm_delete", disabled=not allowed("delete"),
                 help=viewer_note("delete")):
        failed = False
        for rid in run_ids:
            try:
                require_role("delete")
                jobs.delete(rid)
            except Exception as exc:  # noqa: BLE001
                show_error(exc, f"delete run {rid}")
                failed = True
        _cancel_delete()
        if not failed:
            st.session_state.pop("runs_table", None)
            if "select" in st.query_params:
                del st.query_params["select"]
            st.rerun()
    if st.button("Cancel", key="cancel_delete"):
        _cancel_delete()
        st.rerun()


if len(picked) == 1:
    run = call(jobs.get, picked[0], doing="open the run")
    if run:
        st.subheader(run.get("name") or run["id"])
        st.caption(f"id `{run['id']}` · {us.queue_status(run, places)} · created {us.fmt_time(run.get('created_at'))}"
                   + (f" · resumed from `{run['parent_id']}`" if run.get("parent_id") else "")
                   + (f" · {jobs.end_reason(run)}" if jobs.end_reason(run) else ""))
        bar = st.container(horizontal=True)
        if bar.button("Monitor", icon=":material/monitoring:", key="open_monitor"):
            goto("monitor", run=run["id"])
        if run.get("adapter_path") and bar.button("Compare", icon=":material/compare:", key="open_compare"):
            goto("compare", run=run["id"])
        if run.get("sweep_id") and bar.button("Sweep", icon=":material/grid_view:", key="open_sweep"):
            goto("sweep", sweep=run["sweep_id"])
        if run.get("status") in ("stopped", "failed") and bar.button(
                "Resume", icon=":material/play_circle:", key="resume", disabled=not allowed("resume")):
            with attempt("resume the run"):
                require_role("resume")
                goto("monitor", run=jobs.resume(run["id"]))
        if queue.is_waiting(run):
            queue_buttons(bar, run["id"], key="one")
        elif run.get("status") in jobs.ACTIVE:
            if bar.button("Stop", icon=":material/stop_circle:", key="stop", disabled=not allowed("stop")):
                with attempt("stop the run"):
                    require_role("stop")
                    jobs.stop(run["id"])
                    st.toast("Stop requested.")
        elif bar.button("Delete", icon=":material/delete:", key="delete", disabled=not allowed("delete")):
            with attempt("delete the run"):
                require_role("delete")
                st.session_state["pending_delete"] = [run["id"]]
        config = run.get("config") or {}
        bar.download_button("Config (YAML)", us.config_yaml(config), file_name=f"{run['id']}.yaml",
                            mime="text/yaml", icon=":material/download:", key="dl_yaml", on_click="ignore")
        if run.get("adapter_path"):
            bar.download_button("Adapter (zip)", lambda: us.adapter_zip(run["adapter_path"]),
                                file_name=f"{run['id']}-adapter.zip", mime="application/zip",
                                icon=":material/download:", key="dl_adapter", on_click="ignore")
        with st.expander("Command line", icon=":material/terminal:"):
            st.caption("Repeat this run with droidft (save the YAML above as config.yaml):")
            st.code(us.command_for(config), language="bash")
            stock = us.stock_command(run)
            if stock:
                st.caption("The equivalent stock mlx-lm command:")
                st.code(stock, language="bash")
        if run.get("error"):
            with st.expander("Error", icon=":material/error:"):
                st.code(run["error"], language=None)
        if run.get("adapter_path") and run.get("status") not in jobs.ACTIVE:
            with st.container(border=True):
                export_section(run["id"], key=f"exp.{run['id']}",
                               is_adapter=(run.get("config") or {}).get("fine_tune_type", "lora") == "lora")
elif len(picked) > 1:
    deletable = [r for r in picked if table.set_index("id").loc[r, "status"] not in jobs.ACTIVE]
    if deletable and st.button(f"Delete {len(deletable)} selected runs", icon=":material/delete:",
                               key="delete_many", disabled=not allowed("delete")):
        with attempt("delete the runs"):
            require_role("delete")
            st.session_state["pending_delete"] = deletable
if st.session_state.get("pending_delete"):
    confirm_delete(st.session_state["pending_delete"])

# -- lineage ----------------------------------------------------------------------------------
with st.expander("Lineage: source → dataset → run → adapter → fused model → evaluation, export", icon=":material/account_tree:",
                 expanded=bool(picked)):
    try:
        ids = set(picked) if picked else set(table["id"].head(25))
        runs = table[table["id"].isin(ids) | table["id"].isin(table[table["id"].isin(ids)]["parent_id"])]
        arts = store.artifacts()
        evals = store.evaluations()
        sources = us.dataset_sources(runs["data"])
        st.graphviz_chart(us.lineage_dot(runs.to_dict("records"), arts, evals, sources=sources), width="stretch")
        if not picked:
            st.caption("Showing the 25 newest runs; select rows to focus on them.")
    except Exception as exc:  # noqa: BLE001
        show_error(exc, "draw the lineage")
