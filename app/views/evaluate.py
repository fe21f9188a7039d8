"""Evaluate: run evaluation suites on the base model and adapters / fused models, show the
results as a table and a chart, and keep the history."""

import pandas as pd
import streamlit as st

from charts import bar_chart
from common import (
    adapter_targets, allowed, attempt, base_and_targets, call, empty, models, require_role, viewer_note)
from droidft import evaluate, store
from droidft import studio as us
from droidft.data import list_datasets

st.title("Evaluate")
st.caption("Measure whether fine-tuning helped: loss on held-out data (lower is better), exact-match "
           "accuracy of answers, or reward scores, for the base model and each fine-tuned version.")

runs, choices = adapter_targets()
run_names = {r["id"]: r.get("name") or r["id"] for r in runs}
by_key = {c["key"]: c for c in choices}
found = call(models, doing="look for models", default=[]) or []
if not found:
    st.stop()

left, right = st.columns([2, 3])
with left:
    model_path, include_base, choices, by_key, usable = base_and_targets("ev", found, choices)
with right:
    wanted = st.query_params.get("run")
    default = [c["key"] for c in usable if wanted and c.get("run_id") == wanted] or [c["key"] for c in usable[:1]]
    picked = st.multiselect("Fine-tuned versions", [c["key"] for c in usable], key="ev.targets",
                            default=default if "ev.targets" not in st.session_state else None,
                            format_func=lambda k: by_key[k]["label"], placeholder="Pick adapters or fused models")
if not choices:
    empty("No fine-tuned adapters yet; you can still evaluate the base model. Fine-tune one first to "
          "compare.", "home", "Go to Home")

c1, c2, c3 = st.columns(3)
suites = c1.multiselect("Suites", list(evaluate.SUITES), default=["loss", "accuracy"], key="ev.suites",
                        help="loss: cross-entropy on the split (perplexity too) · accuracy: greedy answers "
                             "scored by exact match and containment · reward: GRPO-style reward functions")
datasets = call(list_datasets, default=[]) or [{"name": "demo", "path": "demo"}]
data = c2.selectbox("Dataset", [d["path"] for d in datasets], key="ev.data",
                    format_func=lambda p: "demo (built-in)" if p == "demo" else next(
                        d["name"] for d in datasets if d["path"] == p))
split = c3.segmented_control("Split", ["test", "valid"], default="test", key="ev.split", required=True,
                             help="Held-out rows the models did not train on (test falls back to valid).")
c4, c5, c6 = st.columns(3)
limit = c4.number_input("Rows per suite", 1, 100000, 20, key="ev.limit", help="Fewer rows = faster.")
max_tokens = c5.number_input("Max answer tokens", 1, 2048, 48, key="ev.max_tokens")
pattern = c6.text_input("Regex an answer must match (optional)", key="ev.pattern")
reward_names = None
if "reward" in suites:
    from droidft import rewards

    options = [o["name"] for o in (call(rewards.available, default=[]) or [])]
    reward_names = st.multiselect("Reward functions", options, key="ev.rewards",
                                  placeholder="Default: the method's defaults") or None

if st.button("Evaluate", type="primary", icon=":material/play_arrow:", key="ev.go",
             disabled=not suites or not (include_base or picked) or not allowed("evaluate"),
             help=viewer_note("evaluate")):
    targets = [by_key[k]["value"] for k in picked]
    with attempt("evaluate"), st.status("Evaluating...", expanded=True) as status:
        require_role("evaluate")
        report = evaluate.evaluate(
            model_path, targets, data=data, suites=suites, include_base=include_base, split=split,
            limit=int(limit), max_tokens=int(max_tokens), pattern=pattern or None,
            reward_functions=reward_names, progress=lambda label, suite: status.write(f"{label}: {suite}"))
        status.update(label=f"Done in {us.fmt_duration(report.seconds)}", state="complete", expanded=False)
        st.session_state["ev.report"] = {"table": report.table(), "results": report.results}

report = st.session_state.get("ev.report")
if report:
    st.subheader("Results")
    table = pd.DataFrame(report["table"])
    table["target"] = table["target"].map(lambda t: us.target_name(t, run_names))
    st.dataframe(table, hide_index=True, width="stretch")
    numbers = [c for c in table.columns if c not in ("target", "perplexity")]
    for col, metric in zip(st.columns(max(1, len(numbers))), numbers):
        with col:  # one chart per metric: a loss and an accuracy do not share a scale
            st.altair_chart(bar_chart(table, "target", metric, "target", title=metric.replace("_", " ")),
                            width="stretch")
    for r in report["results"]:
        examples = [e for s in r["suites"].values() if isinstance(s.get("examples"), list)
                    for e in s["examples"] if isinstance(e, dict)]
        if examples:
            with st.expander(f"Example answers: {r['label']}", icon=":material/chat:"):
                st.dataframe(pd.DataFrame(examples), hide_index=True, width="stretch")

st.subheader("History")
history = call(store.evaluations, doing="read earlier evaluations", default=[]) or []
if not history:
    st.caption("No evaluations yet: results are kept here, per run and per fused model.")
else:
    rows = pd.DataFrame(us.evaluation_rows(history))
    rows["target"] = rows["target"].map(lambda t: us.target_name(t, run_names))
    st.dataframe(rows, hide_index=True, width="stretch",
                 column_config={"value": st.column_config.NumberColumn("value", format="%.4f")})
