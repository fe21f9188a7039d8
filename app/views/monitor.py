"""Monitor: one run live. The run comes from ?run=ID, so a reopened tab or a restarted server
re-attaches; a fragment polls the store once a second without re-running the page."""

import time

import streamlit as st

from chart_controls import chart_controls
from charts import series_chart
from judge_panel import judge_panel
from common import (
    POLL_SECONDS, allowed, also_watching, attempt, call, empty, goto, link, require_role, run_label,
    show_error, status_badge, viewer_note)
from queue_controls import queue_buttons, queue_place, stop_countdown
from droidft import jobs, queue, store
from droidft import studio as us
from export_section import export_section

st.title("Monitor")

run_id = st.query_params.get("run")
if not run_id:
    runs = call(jobs.list_runs, doing="read the runs", default=[]) or []
    if not runs:
        empty("No runs yet. Start the demo fine-tune on Home, or set one up.", "home", "Go to Home")
        st.stop()
    runs = sorted(runs, key=lambda r: (r.get("status") in jobs.ACTIVE, r.get("created_at") or 0), reverse=True)
    st.caption("Pick a run to watch. Active runs are listed first.")
    choice = st.selectbox("Run", runs, format_func=run_label, index=None, placeholder="Choose a run")
    if choice:
        st.query_params["run"] = choice["id"]
        st.rerun()
    st.stop()

run = call(jobs.get, run_id, doing=f"open run {run_id}")
if run is None:
    empty("Pick another run from the list of sessions.", "sessions", "Open Sessions")
    st.stop()

# -- header: what this run is, and what can be done with it -----------------------------
head, actions = st.columns([3, 2], vertical_alignment="bottom")
with head:
    st.subheader(run.get("name") or run_id)
    status_badge(run.get("status"))
    st.caption(f"{run.get('method', '').upper()} · model **{us.short_path(run.get('model'))}** · data "
               f"**{us.short_path(run.get('data'))}** · id `{run_id}`"
               + (f" · BLAS: {us.short_blas(run['blas'])}" if run.get("blas") else "")
               + (f" · sweep `{run['sweep_id']}`" if run.get("sweep_id") else ""),
               help=f"model: {run.get('model')}\n\ndata: {run.get('data')}\n\nBLAS: {run.get('blas') or '?'}")
with actions:
    buttons = st.container(horizontal=True, horizontal_alignment="right")
    active = run.get("status") in jobs.ACTIVE
    if active and queue.is_waiting(run):
        queue_buttons(buttons, run_id)
    elif active:
        if buttons.button("Stop", icon=":material/stop_circle:", key="stop", disabled=not allowed("stop"),
                          help=viewer_note("stop") or "Ends training after the current step and saves the adapter."):
            with attempt("stop the run"):
                require_role("stop")
                jobs.stop(run_id)
                st.toast("Stop requested: the run saves its adapter and ends.")
    else:
        if run.get("status") in ("stopped", "failed") and buttons.button(
                "Resume", icon=":material/play_circle:", key="resume", disabled=not allowed("resume"),
                help=viewer_note("resume") or "Continues from the last checkpoint as a new, linked run."):
            with attempt("resume the run"):
                require_role("resume")
                new_id = jobs.resume(run_id)
                st.query_params["run"] = new_id
                st.rerun()
        if run.get("adapter_path") and buttons.button("Compare with base", type="primary",
                                                      icon=":material/compare:", key="to_compare"):
            goto("compare", run=run_id)
    if run.get("sweep_id") and buttons.button("Sweep", icon=":material/grid_view:", key="to_sweep",
                                              type="tertiary"):
        goto("sweep", sweep=run["sweep_id"])
    if buttons.button("Other run", icon=":material/swap_horiz:", key="other", type="tertiary"):
        del st.query_params["run"]
        st.rerun()

if run.get("status") == "failed" and run.get("error"):
    st.error(f"**The run failed.**\n\n```\n{run['error'][-3000:]}\n```\n\nFix the cause shown above, "
             "then Resume (it restarts from the last checkpoint) or start a new run.", icon=":material/error:")
elif not active and jobs.end_reason(run):
    st.info(f"**Why it ended:** {jobs.end_reason(run)}", icon=":material/info:")
if not active:
    best = call(jobs.best_adapter, run_id, default=None)
    if best:
        st.caption(f":material/star: Best adapter: step {best['step']}, {str(best['metric']).replace('_', ' ')} "
                   f"{us.fmt_number(best['value'])} — Compare, Fusion and Evaluate use it unless you pick "
                   "the last one.")


# -- the live part --------------------------------------------------------------------------
CHART_POINTS = 1000  # per series: a chart of a days-long run is as light as one of minutes


def _poll(run_id: str) -> dict:
    """Everything new since the last poll, merged into what this session already holds (a
    bounded history: us.thin_history). Only the run on screen is kept."""
    cache = st.session_state.setdefault("monitor_cache", {})
    for other in [k for k in cache if k != run_id]:
        del cache[other]
    entry = cache.get(run_id) or {"frame": None, "last_time": None, "run": None, "events": [],
                                  "samples": [], "artifacts": [], "busy": False, "checked": 0.0}
    since = entry["last_time"] - 5.0 if entry["last_time"] else None  # overlap; merge dedupes
    try:
        snap = store.snapshot(run_id, since_time=since)
    except store.StoreBusy:
        entry["busy"] = True
        cache[run_id] = entry
        return entry
    entry["busy"] = False
    entry["frame"] = us.thin_history(us.merge_metrics(entry["frame"], snap.get("metrics")))
    if len(entry["frame"]):
        entry["last_time"] = float(entry["frame"]["time"].max())
    entry["run"] = snap.get("run") or entry["run"]
    for key in ("events", "samples", "artifacts"):
        if snap.get(key) is not None:
            entry[key] = snap[key]
    # a worker that died says nothing: ask jobs (which reaps) when the heartbeat goes quiet
    r = entry["run"] or {}
    now = time.time()
    if r.get("status") in jobs.ACTIVE and now - (r.get("heartbeat_at") or r.get("created_at") or now) > 10 \
            and now - entry["checked"] > 5:
        entry["checked"] = now
        try:
            entry["run"] = jobs.get(run_id)
        except Exception:  # noqa: BLE001 - the next poll tries again
            pass
    cache[run_id] = entry
    return entry


LOG_CHARTS = ("loss", "reward", "KL")  # y-axis titles the log-scale toggle applies to


def _chart_specs(run_id: str, frame, view) -> list[tuple[str, dict]]:
    """The charts' Vega-Lite specs, rebuilt only when new rows arrived (or the view changed):
    a poll that found nothing new sends the very same charts again."""
    import altair as alt

    cache = st.session_state.setdefault("monitor_charts", {})
    for other in [k for k in cache if k != run_id]:  # only the run on screen, as in _poll
        del cache[other]
    version = (len(frame), float(frame["time"].max()), view.key())
    entry = cache.get(run_id)
    if entry is None or entry["version"] != version:
        shown = us.downsample(frame, max_points=CHART_POINTS, by=("name",))
        specs = []
        with alt.data_transformers.disable_max_rows():
            for title, names, y_title in us.chart_groups(set(shown["name"])):
                chart = series_chart(shown, names, y_title=y_title, labels=us.series_labels(names),
                                     zero=y_title in ("GB", "tokens/s", "tokens"),
                                     log=view.log and y_title in LOG_CHARTS, smoothing=view.smoothing,
                                     steps=view.steps)
                specs.append((title, chart.to_dict()))
        entry = cache[run_id] = {"version": version, "specs": specs}
        st.session_state["monitor_chart_builds"] = st.session_state.get("monitor_chart_builds", 0) + 1
    return entry["specs"]


@st.fragment(run_every=POLL_SECONDS if active else None)
def live(run_id: str) -> None:
    try:
        entry = _poll(run_id)
    except Exception as exc:  # noqa: BLE001
        show_error(exc, "read the run's progress")
        return
    current = entry["run"] or run
    if current.get("status") != run.get("status") or queue.is_waiting(current) != queue.is_waiting(run):
        st.rerun()  # left the queue, started or ended: redraw the page (status, buttons, polling)
    frame = entry["frame"]
    progress = us.run_progress(current, frame)
    if queue.is_waiting(current):
        st.progress(0.0, text="Waiting in the queue")
        queue_place(current)
    elif current.get("status") == "queued":
        st.progress(0.0, text="Starting: loading the model and data...")
    else:
        st.progress(progress.fraction, text=progress.text)
    if current.get("status") in jobs.ACTIVE and not queue.is_waiting(current):
        stop_countdown(run_id)
    if entry["busy"]:
        st.caption("The run database is busy; retrying.")
    if note := jobs.silence(current):  # alive but silent: hung, paused or unable to write
        st.warning(note, icon=":material/hourglass_disabled:")
    if watchers := also_watching(run_id):
        st.caption(f":material/visibility: {watchers}")

    if current.get("status") in jobs.ACTIVE:
        judge_panel(run_id, current)

    latest = us.latest_values(frame)
    tiles = st.columns(5)
    tiles[0].metric("Train loss", us.fmt_number(latest.get("train_loss")))
    tiles[1].metric("Validation loss", us.fmt_number(latest.get("val_loss")))
    tiles[2].metric("Tokens / s", us.fmt_count(latest.get("tokens_per_second")))
    tiles[3].metric("Peak memory", f"{latest['peak_memory_gb']:.2f} GB" if "peak_memory_gb" in latest else "-")
    tiles[4].metric("Elapsed", us.fmt_duration(progress.elapsed_s))

    if frame is None or len(frame) == 0:
        st.info("Waiting for the first report from the trainer (it reports every "
                f"{(current.get('config') or {}).get('steps_per_report', '?')} steps)."
                if current.get("status") in jobs.ACTIVE else "This run recorded no metrics.",
                icon=":material/hourglass_top:")
    else:
        view = chart_controls("monitor.view", frame)
        cols = st.columns(2)
        for i, (title, spec) in enumerate(_chart_specs(run_id, frame, view)):
            with cols[i % 2]:
                st.markdown(f"**{title}**")
                st.vega_lite_chart(spec, width="stretch", key=f"chart_{title}")

    config = current.get("config") or {}
    if (config.get("ranks_per_host") or 1) > 1 or config.get("hosts") or config.get("hostfile"):
        from droidft.distributed import rank_status

        ranks = call(rank_status, run_id, doing="read the ranks' logs", default=[]) or []
        if ranks:
            st.markdown("**Ranks**")
            for r in ranks:
                icon = ":material/error:" if r["failed"] else ":material/check_circle:"
                st.caption(f"{icon} rank {r['rank']}: {r['last_line'][:200]}")

    rows = entry["samples"] or []
    if rows:
        samples, logs = st.columns(2)
        with samples:
            st.markdown("**Latest samples**")
            for s in list(reversed(rows))[:4 if config.get("judge") else 3]:  # online: two pairs
                with st.container(border=True):
                    reward, meta = s.get("reward"), s.get("meta") or {}
                    st.caption(f"step {s.get('step', '?')}"
                               + (f" · reward {reward:.3g}" if isinstance(reward, (int, float)) else "")
                               + (f" · {meta['verdict']} by the {meta.get('judge', '?')} judge"
                                  if isinstance(meta, dict) and meta.get("verdict") else ""))
                    if s.get("prompt"):
                        st.markdown(f"**Prompt:** {str(s['prompt'])[:400]}")
                    st.text(str(s.get("completion") or "")[:1200])
    else:
        logs = st.container()
    with logs:
        st.markdown("**Log**")
        st.code(us.strip_ansi(jobs.log_tail(run_id, lines=14)) or "(no log lines yet)", language=None,
                height=300, wrap_lines=True)

live(run_id)
if not active and run.get("adapter_path") and run.get("status") in ("completed", "stopped"):
    with st.expander("Export", icon=":material/ios_share:"):
        export_section(run_id, key=f"exp.{run_id}", title="Export this run",
                       is_adapter=(run.get("config") or {}).get("fine_tune_type", "lora") == "lora")
link("sessions", "All runs")
