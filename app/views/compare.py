"""Compare: one prompt through the base model and one or more adapters side by side, with the
same sampling settings and seed, streamed, with each one's speed. Chat mode keeps history."""

import streamlit as st

from common import adapter_targets, base_and_targets, call, empty, models, show_error
from droidft import inference
from droidft.adapters import check_adapter
from droidft import studio as us

st.title("Compare")
st.caption("Ask the original model and your fine-tuned versions the same thing, with the same "
           "sampling and seed, and read the answers side by side.")

runs, choices = adapter_targets()
found = call(models, doing="look for models", default=[]) or []
if not found:
    st.stop()

# -- what to compare -----------------------------------------------------------------------------
q_run, q_adapter, q_model = (st.query_params.get(k) for k in ("run", "adapter", "model"))
by_key = {c["key"]: c for c in choices}
if "cmp.targets" not in st.session_state:
    wanted = [c["key"] for c in choices if (q_run and c.get("run_id") == q_run)
              or (q_adapter and c["path"] == q_adapter) or (q_model and c["path"] == q_model)]
    st.session_state["cmp.targets"] = wanted or [c["key"] for c in choices[:1]]
    seed_choice = by_key.get((wanted or [None])[0])
    base = seed_choice.get("base") if seed_choice and seed_choice["kind"] == "adapter" else None
    if base:
        match = next((m["path"] for m in found if us.same_base({"base": base}, m["path"])), None)
        if match:
            st.session_state["cmp.model"] = match

c_model, c_targets = st.columns([2, 3])
with c_model:
    model_path, include_base, choices, by_key, usable = base_and_targets("cmp", found, choices)
with c_targets:
    st.session_state["cmp.targets"] = [k for k in st.session_state["cmp.targets"] if k in {c["key"] for c in usable}]
    targets = st.multiselect("Fine-tuned versions", [c["key"] for c in usable], key="cmp.targets",
                             format_func=lambda k: by_key[k]["label"], max_selections=4,
                             placeholder="Pick adapters (runs and fused adapters)")
    if not usable:
        st.caption("No adapter trained on this base model yet.")
if not choices:
    empty("No fine-tuned adapters yet. Fine-tune the demo model first (it takes seconds).", "home", "Go to Home")

# -- sampling -----------------------------------------------------------------------------------------
with st.expander("Sampling", icon=":material/tune:"):
    s1, s2, s3, s4 = st.columns(4)
    temperature = s1.slider("Temperature", 0.0, 2.0, 0.7, 0.05, key="cmp.temp",
                            help="0 always picks the most likely token; higher is more varied.")
    top_p = s2.slider("Top-p", 0.0, 1.0, 0.9, 0.01, key="cmp.top_p",
                      help="Sample only from the most likely tokens covering this probability.")
    min_p = s3.slider("Min-p", 0.0, 1.0, 0.05, 0.01, key="cmp.min_p",
                      help="Drop tokens less likely than this fraction of the best one.")
    top_k = s4.number_input("Top-k", 0, 1000, 0, key="cmp.top_k", help="0 = no limit.")
    s5, s6, s7, s8 = st.columns(4)
    rep = s5.number_input("Repetition penalty", 0.0, 3.0, 1.0, 0.05, key="cmp.rep",
                          help="Above 1 discourages repeating recent tokens; 1 = off.")
    max_tokens = s6.number_input("Max tokens", 1, 4096, 128, 16, key="cmp.max_tokens")
    seed = s7.number_input("Seed", 0, 2**31 - 1, 0, key="cmp.seed", help="The same seed for every column.")
    system = s8.text_input("System prompt", key="cmp.system", placeholder="optional")

sampling = inference.Sampling(temperature=float(temperature), top_p=float(top_p), min_p=float(min_p),
                              top_k=int(top_k), repetition_penalty=None if rep == 1.0 else float(rep),
                              seed=int(seed))

columns_spec = ([{"key": "base", "label": "Base model", "kind": "base"}] if include_base else []) + \
               [by_key[k] for k in targets]
if not columns_spec:
    st.info("Pick at least one fine-tuned version, or include the base model.", icon=":material/lightbulb:")
    st.stop()

chat_mode = st.toggle("Chat mode (keep the conversation)", key="cmp.chat")
history = st.session_state.setdefault("cmp.history", {})  # target key -> list of messages
results = st.session_state.setdefault("cmp.results", {})  # target key -> last result dict
if chat_mode:
    prompt = st.chat_input("Message all models at once", key="cmp.chat_input")
    if st.button("Clear conversation", key="cmp.clear", type="tertiary"):
        history.clear()
        results.clear()
        st.rerun()
else:
    st.session_state.setdefault("cmp.prompt", us.demo_prompt())
    prompt = st.text_area("Prompt", key="cmp.prompt", height=90)
    if not st.button("Generate", type="primary", icon=":material/play_arrow:", key="cmp.go"):
        prompt = None
    elif not (prompt or "").strip():
        st.warning("Type a prompt first.")
        prompt = None


def _target_args(spec: dict) -> dict:
    if spec["kind"] == "base":
        return {"model": model_path, "adapters": None}
    if spec["kind"] == "model":
        return {"model": spec["value"], "adapters": None}
    return {"model": model_path, "adapters": spec["value"]}


cols = st.columns(len(columns_spec))
for col, spec in zip(cols, columns_spec):
    with col:
        st.markdown(f"**{spec['label']}**")
        msgs = history.get(spec["key"], []) if chat_mode else []
        for m in msgs:
            with st.chat_message(m["role"]):
                st.markdown(m["content"])
        if prompt:
            conversation = msgs + [{"role": "user", "content": prompt}] if chat_mode else prompt
            if chat_mode:
                with st.chat_message("user"):
                    st.markdown(prompt)
            stats = {}

            def pieces(conversation=conversation, spec=spec, stats=stats):
                for chunk in inference.stream(prompt=conversation, sampling=sampling, max_tokens=int(max_tokens),
                                              system=system or None, **_target_args(spec)):
                    stats["tps"], stats["tokens"], stats["finish"] = (chunk.tokens_per_second,
                                                                      chunk.generation_tokens, chunk.finish_reason)
                    yield chunk.text

            try:
                if spec["kind"] == "adapter":
                    check_adapter(model_path, spec["value"])
                with st.spinner("Loading and generating..."):
                    box = st.chat_message("assistant") if chat_mode else st.container(border=True)
                    with box:
                        text = st.write_stream(pieces())
                text = text if isinstance(text, str) else "".join(map(str, text))
                results[spec["key"]] = {"text": text, **stats}
                if chat_mode:
                    history[spec["key"]] = conversation + [{"role": "assistant", "content": text}]
            except Exception as exc:  # noqa: BLE001
                show_error(exc, f"generate with {spec['label']}")
                results.pop(spec["key"], None)
                continue
        elif spec["key"] in results and not chat_mode:
            with st.container(border=True):
                st.markdown(results[spec["key"]]["text"] or "_(empty answer)_")
        r = results.get(spec["key"])
        if r and (prompt or not chat_mode or msgs):
            ending = {"stop": "finished its answer", "length": "hit the max tokens"}.get(r.get("finish"), "")
            st.caption(f"{r.get('tokens', 0)} tokens · {r.get('tps', 0):.1f} tokens/s" + (f" · {ending}" if ending else ""))
