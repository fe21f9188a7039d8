""""Sweep these settings" under the SFT and RL forms: pick settings, give values (grid) or
ranges (random search), and queue one run per combination as a sweep."""

from __future__ import annotations

import streamlit as st

from common import allowed, attempt, goto, require_role, viewer_note
from droidft import queue, sweeps
from droidft import studio as us

SWEEPABLE = ("int", "float", "choice", "bool")
NOT_SWEPT = ("ranks_per_host", "distributed_backend", "blas")  # where it runs, not how it trains


def sweep_section(prefix: str, config, specs: list[us.FieldSpec], problems: list[str]) -> None:
    """The expander; `config` is the form's current (valid) config, the sweep's base."""
    key = f"{prefix}.sweep"
    by_name = {s.name: s for s in specs if s.kind in SWEEPABLE and s.name not in NOT_SWEPT}
    with st.expander("Sweep these settings", icon=":material/grid_view:"):
        st.caption("Try several values of some settings, one run each, queued one after another; the "
                   "Sweeps page then shows which did best. Everything else stays as set above.")
        if config is None:
            st.caption("Fix the settings above first.")
            return
        names = st.multiselect("Settings to sweep", list(by_name), key=f"{key}.fields",
                               default=[n for n in ("learning_rate",) if n in by_name],
                               format_func=lambda n: by_name[n].label)
        mode = st.segmented_control("Search", ["grid", "random"], default="grid", key=f"{key}.mode", required=True,
                                    format_func={"grid": "every combination (grid)",
                                                 "random": "random samples from ranges"}.get)
        grid_items, range_items, count = [], [], 0
        for name in names:
            spec, current = by_name[name], us.get_dotted(config.to_dict(), name)
            if mode == "random" and spec.kind in ("int", "float"):
                c1, c2, c3 = st.columns([2, 2, 1], vertical_alignment="bottom")
                low = c1.text_input(f"{spec.label}: lowest", key=f"{key}.{name}.lo",
                                    value=f"{current / 10:.3g}" if isinstance(current, (int, float)) and current else "0")
                high = c2.text_input(f"{spec.label}: highest", key=f"{key}.{name}.hi",
                                     value=f"{current * 10:.3g}" if isinstance(current, (int, float)) and current else "1")
                log = c3.toggle("log", value=spec.kind == "float", key=f"{key}.{name}.log",
                                help="Sample evenly on a log scale (right for learning rates).")
                range_items.append(f"{name}={low}:{high}" + (":log" if log else ""))
            else:
                text = st.text_input(f"Values of {spec.label.lower()} (comma-separated)", key=f"{key}.{name}.values",
                                     value=us.suggest_values(spec, current))
                grid_items.append(f"{name}={text}")
        if mode == "random":
            count = int(st.number_input("Random trials", 1, sweeps.MAX_TRIALS, 4, key=f"{key}.count"))
        spec, trials, error = None, [], None
        try:
            spec = sweeps.SweepSpec(grid=sweeps.parse_grid(grid_items, type(config)),
                                    ranges=sweeps.parse_ranges(range_items, type(config)),
                                    random=count if range_items else 0)
            trials = sweeps.trials(type(config), spec) if names else []
        except ValueError as exc:
            error = str(exc)
        if error:
            st.error(error, icon=":material/error:")
        elif trials:
            at_once = queue.slot_info().get("slots", 1)
            st.caption(f"**{len(trials)} runs**; {at_once} train at once on this machine, the rest wait in "
                       "the queue.")
        disabled = bool(problems or error or not trials) or not allowed("start")
        if st.button(f"Start sweep ({len(trials)} runs)", key=f"{key}.start", icon=":material/grid_view:",
                     disabled=disabled, help=viewer_note("start")):
            with attempt("start the sweep"), st.spinner("Checking every trial's settings, then queueing..."):
                require_role("start")
                sweep_id, _ = sweeps.start(config, spec)
                goto("sweep", sweep=sweep_id)
