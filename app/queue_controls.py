"""Queue and stop controls the Monitor and Sessions share: a waiting run's place and buttons
(start now, move to the front, cancel), the stop countdown with "Stop now", and the queue
panel with the runs-at-once setting. Every button checks the visitor's role when pressed."""

from __future__ import annotations

import time

import streamlit as st

from common import allowed, attempt, call, goto, require_role, viewer_note
from droidft import jobs, queue, settings
from droidft import studio as us


def queue_buttons(container, run_id: str, key: str = "q") -> None:
    """Start now / Move to front / Cancel for a run waiting in the queue."""
    if container.button("Start now", icon=":material/play_arrow:", key=f"{key}.start_now",
                        disabled=not allowed("start"),
                        help=viewer_note("start") or "Start it at once, even though every slot is taken."):
        with attempt("start the run now"):
            require_role("start")
            queue.start_now(run_id)
            st.rerun()
    if container.button("Move to front", icon=":material/vertical_align_top:", key=f"{key}.front",
                        disabled=not allowed("reorder-queue"),
                        help=viewer_note("reorder-queue") or "Make it the next to start."):
        with attempt("reorder the queue"):
            require_role("reorder-queue")
            queue.move(run_id, 1)
            st.rerun()
    if container.button("Cancel", icon=":material/cancel:", key=f"{key}.cancel", disabled=not allowed("stop"),
                        help=viewer_note("stop") or "Take it out of the queue; it never starts."):
        with attempt("cancel the run"):
            require_role("stop")
            jobs.stop(run_id)
            st.rerun()


def queue_place(run: dict) -> None:
    """'Number 2 in the queue · starts in about 6 min (17:35)' and why it waits."""
    entries = call(queue.entries, doing="read the queue", default=[]) or []
    mine = next((e for e in entries if e["id"] == run["id"]), None)
    if mine is None:
        return
    info = call(queue.slot_info, default={}) or {}
    st.info(f"**Number {mine['position']} of {len(entries)} in the queue** · "
            f"{us.fmt_start(mine['estimated_start'])}. {info.get('slots', '?')} run(s) train at once on this "
            f"machine ({info.get('reason', '')}); it starts by itself when one ends.",
            icon=":material/schedule:")


def stop_countdown(run_id: str) -> None:
    """After Stop: the seconds left of the grace period, then a "Stop now" button."""
    asked = jobs.stop_requested_at(run_id)
    if asked is None:
        return
    left = jobs.STOP_GRACE_S - (time.time() - asked)
    if left > 0:
        st.warning(f"Stopping: the run ends after its current step and saves its adapter. If a long step "
                   f"keeps it busy, **Stop now** is offered in {left:.0f} s.", icon=":material/hourglass_top:")
        return
    box = st.container(horizontal=True, vertical_alignment="center")
    box.warning(f"The run has not ended {time.time() - asked:.0f} s after Stop: a step may take long. "
                "Stop now ends its process at once and keeps the last checkpoint.", icon=":material/warning:")
    if box.button("Stop now", type="primary", icon=":material/dangerous:", key="stop_now",
                  disabled=not allowed("stop"), help=viewer_note("stop")):
        with attempt("stop the run now"):
            require_role("stop")
            jobs.stop_now(run_id, reason="stopped now from the dashboard")
            st.rerun(scope="app")


def slots_setting() -> None:
    """The runs-at-once setting (the owner's)."""
    info = call(queue.slot_info, doing="read the queue settings", default=None)
    if info is None:
        return
    current = settings.get(queue.SETTING)
    left, right = st.columns([2, 3], vertical_alignment="bottom")
    auto = left.toggle("Decide automatically", value=current is None, key="q.auto",
                       disabled=not allowed("change-settings"),
                       help=f"Now: {queue.auto_slots()[0]} ({queue.auto_slots()[1]}).")
    number = right.number_input("Runs at once", 1, 64, int(current or info["slots"]), key="q.slots",
                                disabled=auto or not allowed("change-settings"),
                                help=viewer_note("change-settings"))
    wanted = None if auto else int(number)
    if wanted != current and st.button("Save", key="q.save", icon=":material/save:",
                                       disabled=not allowed("change-settings")):
        with attempt("change the number of runs at once"):
            require_role("change-settings")
            settings.set(queue.SETTING, "auto" if wanted is None else wanted)
            queue.advance()  # more slots may start waiting runs now
            st.rerun()


def queue_panel() -> None:
    """Sessions: the slots in use, the waiting runs in order with their buttons, the setting."""
    entries = call(queue.entries, doing="read the queue", default=[]) or []
    info = call(queue.slot_info, default={}) or {}
    busy = call(queue.busy_slots, default=0) or 0
    title = f"Queue: {busy} of {info.get('slots', '?')} slots in use, {len(entries)} waiting"
    with st.expander(title, icon=":material/queue:", expanded=bool(entries)):
        st.caption(f"Runs at once: {info.get('setting', 'auto')} ({info.get('reason', '')}). A run started while "
                   "every slot is taken waits here and starts by itself when one frees.")
        for e in entries[:30]:
            row = st.container(horizontal=True, vertical_alignment="center")
            row.markdown(f"**#{e['position']}** {e.get('name') or e['id']} · {us.fmt_start(e['estimated_start'])}")
            if row.button("Monitor", key=f"q.{e['id']}.open", type="tertiary", icon=":material/monitoring:"):
                goto("monitor", run=e["id"])
            queue_buttons(row, e["id"], key=f"q.{e['id']}")
        slots_setting()
