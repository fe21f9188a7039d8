"""RL setup: the GRPO family, KLPO, DPO / ORPO / CPO / DSLA, FTPO and the online methods
(online DPO, XPO, PPO, RLHF-REINFORCE with a reward, model or human judge). The form is
built from the selected method's config dataclass, so every method the engine registers
gets one."""

import streamlit as st

from common import allowed, attempt, call, goto, link, lora_keys, require_role, viewer_note
from sweep_form import sweep_section
from forms import config_form, init_state, model_and_data
from droidft import jobs, methods, security
from droidft import studio as us

st.title("RL and preference training")
st.caption("Reinforcement learning from rewards (GRPO family, KLPO), from preferred/rejected answer "
           "pairs (DPO, ORPO, CPO, DSLA, FTPO), or online: the model writes two answers and a judge "
           "(reward functions, a model, or you in the Monitor) picks one. Usually run after a "
           "supervised fine-tune.")

available = [m for m in (call(methods.available, doing="list the training methods", default=[]) or [])
             if m.family != "sft"]
if not available:
    st.info("No RL or preference methods are installed yet. Meanwhile, a supervised fine-tune "
            "gets most of the way.", icon=":material/lightbulb:")
    link("sft", "Set up a supervised fine-tune")
    st.stop()

names = [m.name for m in available]
wanted = st.query_params.get("method")
if wanted in names and "rl.method" not in st.session_state:
    st.session_state["rl.method"] = wanted
LABELS = {"dr_grpo": "Dr.GRPO", "online_dpo": "Online DPO", "rlhf_reinforce": "RLHF-REINFORCE"}
method_name = st.segmented_control("Method", names, key="rl.method", default=names[0], required=True,
                                   format_func=lambda n: LABELS.get(n, n.upper()))
method = next(m for m in available if m.name == (method_name or names[0]))
st.caption(method.description or (method.config_class.__doc__ or "").strip().split("\n\n")[0])

P = f"rl.{method.name}"
config_class = method.config_class
locked = dict(getattr(config_class, "LOCKED", {}) or {})
specs = us.field_specs(config_class)
has_rewards = {"reward_functions", "reward_weights"} <= config_class.field_names()
skip = tuple(locked) + (("reward_functions", "reward_weights") if has_rewards else ())
init_state(P, specs)

model, data = model_and_data(P)
name = st.text_input("Run name", key=f"{P}.name", placeholder="optional", help=us.HELP["name"])

# -- reward functions with weights (GRPO family) --------------------------------------------------
reward_values = {}
if has_rewards:
    st.subheader("Rewards")
    from droidft import rewards

    reward_file = st.session_state.get(f"{P}.reward_file") or None
    try:  # LAN mode: not even the names in a file outside the allowed folders (the form says why)
        security.check_field_path("reward_file", reward_file)
    except security.AccessDenied:
        reward_file = None
    options = call(rewards.available, reward_file, doing="list reward functions", default=None)
    if options is None:
        options = call(rewards.available, doing="list reward functions", default=[]) or []
    descriptions = {o["name"]: o.get("description") or "" for o in options}
    default_names = call(rewards.default_names, reward_file, data == "demo", default=[]) or []
    key = f"{P}.rewards"
    if key not in st.session_state:
        st.session_state[key] = [n for n in default_names if n in descriptions]
    picked = st.multiselect("Reward functions", list(descriptions), key=key,
                            help="Each completion's reward is the weighted sum of these functions. "
                                 "Empty = the method's defaults.")
    weights = []
    if picked:
        cols = st.columns(min(3, len(picked)))
        for i, rname in enumerate(picked):
            with cols[i % len(cols)]:
                weights.append(st.number_input(f"Weight of {rname}", value=1.0, step=0.1, format="%g",
                                               key=f"{P}.weight.{rname}", help=descriptions.get(rname) or None))
                st.caption(descriptions.get(rname, ""))
    reward_values = {"reward_functions": picked or None, "reward_weights": weights or None}

choices = {}
if model:
    from droidft.models import resolve_model

    model_path = call(resolve_model, model, doing="use this model")
    keys = call(lora_keys, str(model_path), default=None) if model_path is not None else None
    if keys:
        choices["lora_parameters.keys"] = keys

if "judge" in config_class.field_names():
    st.caption(":material/how_to_vote: With judge **human**, the Monitor shows you each step's two "
               "answers and the run waits for your choice (up to human timeout, then the fallback).")
if locked:
    st.caption("Fixed by this method: " + ", ".join(f"{k} = {v}" for k, v in locked.items()))
values, input_problems = config_form(P, specs, choices_override=choices, skip=skip, method=method.name)
values.update(reward_values)
values.update(model=model or "", data=data or "", name=name.strip() or None)
config, problems = us.build_config(config_class, values)
problems = input_problems + problems

if config is not None:
    with st.expander("Config as YAML and command line", icon=":material/terminal:"):
        st.code(us.config_yaml(config.to_dict()), language="yaml", height=240)
        st.caption("The same run from a shell (save the YAML above as config.yaml):")
        st.code(us.command_for(config.to_dict()), language="bash")

if problems:
    st.error("**Fix these settings before starting:**\n" + "\n".join(f"- {p}" for p in problems),
             icon=":material/error:")
if st.button("Start training", type="primary", icon=":material/play_arrow:",
             disabled=bool(problems) or not allowed("start"), help=viewer_note("start"), key=f"{P}.start"):
    with attempt("start the run"), st.spinner("Checking the model and data, then starting..."):
        require_role("start")
        goto("monitor", run=jobs.start(config))
sweep_section(P, config, [s for s in specs if s.name not in skip], problems)
