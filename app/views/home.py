"""Home: what droidft is, the one-click demo fine-tune, the machine, the runs in progress."""

import streamlit as st

from common import (
    allowed, attempt, call, empty, goto, link, machine, presence, require_role, run_line, status_text,
    viewer_note, who_is_connected)
from droidft import security
from droidft import jobs
from droidft import studio as us

st.title("droidft")
st.markdown(
    "Fine-tune language models on your own machine. Pick a model and a dataset, watch the "
    "loss fall live, then compare the fine-tuned model with the original, side by side."
)

with st.container(border=True):
    left, right = st.columns([3, 2], vertical_alignment="center")
    with left:
        st.subheader("Try it in one minute")
        st.markdown(
            "Fine-tune the small built-in **demo model** on the built-in **demo chat data**. "
            f"It trains for real on this machine: {us.demo_config().iters} steps, about half a minute on "
            "2 CPU cores with OpenBLAS. Then ask both models the same question."
        )
    with right:
        if st.button("Fine-tune the demo model", type="primary", icon=":material/rocket_launch:",
                     key="demo_start", width="stretch",
                     disabled=not allowed("start"), help=viewer_note("start")):
            with attempt("start the demo fine-tune"), st.spinner("Starting the demo run..."):
                require_role("start")
                run_id = jobs.start(us.demo_config())
                goto("monitor", run=run_id)
        st.caption("Then: Monitor shows the loss live · Compare shows base vs fine-tuned answers.")

runs = call(jobs.list_runs, doing="read the runs", default=[]) or []
active = [r for r in runs if r.get("status") in jobs.ACTIVE]
recent = sorted(runs, key=lambda r: r.get("created_at") or 0, reverse=True)

col_runs, col_machine = st.columns([3, 2])
with col_runs:
    st.subheader("Runs in progress")
    if not active:
        st.caption("Nothing is training right now.")
    for run in active:
        with st.container(border=True):
            st.markdown(f"**{run.get('name') or run['id']}** · {status_text(run.get('status'))} · "
                        f"started {us.fmt_ago(run.get('started_at') or run.get('created_at'))}")
            link("monitor", "Watch it live", run=run["id"])
    st.subheader("Recent runs")
    if not recent:
        empty("No runs yet. Start the demo above, or set up your own run.", "sft", "Set up a fine-tune")
    for run in recent[:5]:
        cols = st.columns([5, 2])
        cols[0].markdown(run_line(run))
        with cols[1]:
            link("monitor", "Open", run=run["id"])
    if len(recent) > 5:
        link("sessions", f"All {len(recent)} runs")

with col_machine:
    st.subheader("This machine")
    info = call(machine, doing="read the machine's details", default={}) or {}
    if info:
        st.markdown(
            f"- **Device:** {us.fmt_device(info.get('device'))} · {info.get('cpus', '?')} CPUs"
            + (f" ({info['cpu']})" if info.get("cpu") else "") + "\n"
            f"- **Memory:** {info.get('memory_gb') or '?'} GB\n"
            f"- **Training math (BLAS):** {us.short_blas(info.get('worker_blas'))}\n"
            f"- **MLX:** {info.get('mlx', '?')} · Python {info.get('python', '?')}"
        )
        if "not installed" in str(info.get("worker_blas", "")):
            st.warning("Training will use the slow reference BLAS. Run "
                       "`scripts/install-system-deps.sh` to install OpenBLAS (7x faster on the demo model, about 20x on a 23M-parameter one: docs/BENCHMARKS.md).")
    if security.lan_mode() or len(presence().active()) > 1:
        who_is_connected()
    st.subheader("Go to")
    for key, text in (("data", "Check or upload a dataset"), ("sft", "Set up a supervised fine-tune"),
                      ("rl", "Set up RL / preference training"), ("sessions", "Browse past runs"),
                      ("compare", "Compare models side by side")):
        link(key, text)
