"""SFT setup: the whole SFT config as a form with presets and help, the equivalent stock
mlx-lm command and YAML, a memory/time estimate, and the start button."""

import streamlit as st

from common import (
    allowed, attempt, call, data_mtime, goto, lora_keys, machine, require_role, token_stats,
    viewer_note)
from sweep_form import sweep_section
from forms import apply_values, config_form, init_state, model_and_data
from droidft import estimate, jobs
from droidft import studio as us
from droidft.config import SFTConfig

P = "sft"
st.title("Supervised fine-tuning")
st.caption("Teach a model from example conversations or prompt/answer pairs. Start from a preset, "
           "adjust what you need (hover the ? for help), and start.")

specs = us.field_specs(SFTConfig)
presets = us.sft_presets()
init_state(P, specs, presets["quick demo"])


def _apply_preset() -> None:
    name = st.session_state.get("sft.preset")
    if name:
        apply_values(P, specs, presets[name])


st.segmented_control("Preset", list(presets), key="sft.preset", default="quick demo", on_change=_apply_preset,
                     help="quick demo: seconds on the demo model · balanced: a sensible first real "
                          "run · quality: longer, bigger adapter, for a final model")

model, data = model_and_data(P)
name = st.text_input("Run name", key="sft.name", placeholder="optional, e.g. support-bot v1", help=us.HELP["name"])

model_path = None
if model:
    from droidft.models import resolve_model

    model_path = call(resolve_model, model, doing="use this model")
choices = {}
if model_path is not None:
    keys = call(lora_keys, str(model_path), doing="read the model's layers", default=None)
    if keys:
        choices["lora_parameters.keys"] = keys

values, input_problems = config_form(P, specs, choices_override=choices, method="sft")
values.update(model=model or "", data=data or "", name=name.strip() or None)
config, problems = us.build_config(SFTConfig, values)
problems = input_problems + problems

# -- what it will cost, and what it is in stock mlx-lm --------------------------------------
if config is not None and model_path is not None:
    from droidft.data import resolve_dataset

    data_path = call(resolve_dataset, config.data, doing="use this dataset")
    est_col, cmd_col = st.columns([2, 3])
    with est_col:
        st.subheader("Estimate")
        from droidft.models import read_model_config

        cfg = call(read_model_config, model_path, default=None)
        if cfg:
            speed = call(estimate.measured_tokens_per_s, str(model_path), default=None)
            stats = None
            if data_path is not None:
                try:
                    stats = token_stats(str(data_path), str(model_path), "sft", data_mtime(data_path), limit=300)
                except Exception:  # noqa: BLE001 - the estimate then assumes a typical length
                    stats = None
            est = estimate.estimate_run(config, cfg, measured_tokens_per_s=speed,
                                  avg_tokens=stats["mean"] if stats and stats["count"] else None)
            a, b, c = st.columns(3)
            a.metric("Memory", f"{est.memory_gb:.2f} GB" if est.memory_gb >= 0.1 else f"{est.memory_gb * 1024:.0f} MB")
            b.metric("Time", us.fmt_duration(est.seconds))
            c.metric("Trains", f"{est.trainable_m:.2f} M", help=f"parameters trained, of {est.params_m:.1f} M in the model")
            st.caption(f"Rough: {us.fmt_count(est.tokens)} tokens; speed from {est.basis}.")
            total = (call(machine, default={}) or {}).get("memory_gb")
            advice = call(estimate.fit_advice, config, cfg, total_gb=total, default=None,
                          avg_tokens=stats["mean"] if stats and stats["count"] else None)
            if advice:
                st.warning(advice, icon=":material/memory:")
    with cmd_col:
        st.subheader("Same run in stock mlx-lm")
        if data_path is not None:
            tab_cmd, tab_yaml = st.tabs(["Command", "YAML"])
            tab_cmd.code(config.to_mlx_lm_command(str(model_path), str(data_path)), language="bash", wrap_lines=True)
            tab_yaml.code(config.to_mlx_lm_yaml(str(model_path), str(data_path)), language="yaml", height=220)

# -- machines (data-parallel training through mlx.launch) --------------------------------------
if config is not None and (config.hosts or config.hostfile or config.ranks_per_host > 1):
    with st.expander(f"Machines: {config.world_size()} training processes", expanded=True,
                     icon=":material/lan:"):
        st.caption("Each machine needs passwordless ssh from this one, this Python at the same path, "
                   "and the model and data at the same paths. Rank 0 runs here and writes the run.")
        if st.button("Check machines", key="sft.check_hosts", icon=":material/network_check:",
                     disabled=not allowed("check-machines"), help=viewer_note("check-machines")):
            from droidft.distributed import check_hosts

            needed = [str(p) for p in (model_path, data_path) if p is not None]
            with attempt("check the machines"):
                require_role("check-machines")
                for row in check_hosts(config.hosts or ["127.0.0.1"], needed):
                    (st.success if row["message"] == "ready" else st.error)(f"**{row['host']}**: {row['message']}")

# -- start ------------------------------------------------------------------------------------
if problems:
    st.error("**Fix these settings before starting:**\n" + "\n".join(f"- {p}" for p in problems),
             icon=":material/error:")
if st.button("Start training", type="primary", icon=":material/play_arrow:",
             disabled=bool(problems) or not allowed("start"), help=viewer_note("start"), key="sft.start"):
    with attempt("start the run"), st.spinner("Checking the model and data, then starting..."):
        require_role("start")
        run_id = jobs.start(config)
        goto("monitor", run=run_id)
sweep_section(P, config, specs, problems)
