"""The Monitor's human judge: pairs an online run (judge: human) waits on, two completions
side by side, and a choice that goes back to the trainer. Drawn inside the Monitor's polling
fragment, so a new pair shows up within a poll and a click reruns only the fragment.

Who may judge is checked in the click handler (`judges.submit` raises for a visitor who
may not), not only by disabling the buttons."""

from __future__ import annotations

import time

import streamlit as st

from common import attempt, call, client_address, role
from droidft import judges


def _choose(pair_id: str, choice: int | None, config: dict) -> None:
    with attempt("record your choice"):
        if judges.submit(pair_id, choice, role(), config, who=client_address() or ""):
            st.toast({0: "A chosen", 1: "B chosen", None: "Left to the fallback"}[choice]
                     + ": the run goes on.", icon=":material/how_to_vote:")
        else:
            st.toast("That pair was already decided, or its time ran out.", icon=":material/timer_off:")


def judge_panel(run_id: str, run: dict) -> None:
    config = run.get("config") or {}
    if config.get("judge") != "human":
        return
    pairs = call(judges.open_pairs, run_id, doing="read the pairs to judge", default=[]) or []
    may = judges.may_judge(role(), config)
    st.markdown("**Judge the answers** · which reply is better?")
    if not pairs:
        st.caption(":material/hourglass_top: No pair is waiting: the model is writing the next ones."
                   if run.get("status") == "running" else "No pair is waiting.")
        return
    if not may:
        st.caption(":material/lock: Only the owner judges this run's pairs.")
    fallback = config.get("human_fallback", "skip")
    for pair in pairs:
        left = max(0, int(pair["deadline"] - time.time()))
        with st.container(border=True, key=f"pair-{pair['id']}"):
            st.markdown(f"**Prompt:** {pair['prompt'][:600]}")
            a, b = st.columns(2)
            with a:
                st.markdown("**A**")
                st.text(pair["completion_a"][:1500] or "(empty)")
            with b:
                st.markdown("**B**")
                st.text(pair["completion_b"][:1500] or "(empty)")
            st.caption(f"{left} s left, then {'the pair is skipped' if fallback == 'skip' else 'the ' + fallback + ' judge decides'}.")
            buttons = st.container(horizontal=True)
            for label, choice, kind in (("A is better", 0, "primary"), ("B is better", 1, "primary"),
                                        ("Can't tell", None, "secondary")):
                buttons.button(label, key=f"judge-{pair['id']}-{choice}", type=kind, disabled=not may,
                               on_click=_choose, args=(pair["id"], choice, config))
