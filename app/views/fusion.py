"""Fusion: merge adapters of the same base with global or per-layer weights, preview the
schedule, fuse into a new adapter or a full model, then compare the result."""

import pandas as pd
import streamlit as st

from charts import schedule_chart
from common import (
    adapter_targets, allowed, attempt, call, checkpoint_picker, empty, goto, model_select, models,
    require_role, viewer_note)
from droidft import fusion, paths
from droidft import studio as us
from droidft.data import unique_path
from export_section import export_section

st.title("Fusion")
st.caption("Blend what several fine-tunes learned into one adapter (or one full model): "
           "for example 70% of a style adapter and 30% of a facts adapter, or different "
           "mixes for early and late layers.")


choices = [c for c in adapter_targets()[1] if c["kind"] == "adapter"]
found = call(models, doing="look for models", default=[]) or []
if len(choices) < 2:
    empty("Fusion needs at least two adapters trained on the same base model. "
          f"There {'is' if len(choices) == 1 else 'are'} {len(choices)} so far: train another one "
          "(e.g. the demo preset with a different learning rate or seed).", "sft", "Set up a fine-tune")
    st.stop()
if not found:
    st.stop()

choices = us.with_checkpoint(choices, checkpoint_picker("fus.checkpoint"))
by_key = {c["key"]: c for c in choices}
model_path = model_select("Base model", found, key="fus.model")
n_layers = next((m.get("num_layers") for m in found if m["path"] == model_path), None) or 1
usable = [c for c in choices if us.same_base(c, model_path)]
picked = st.multiselect("Adapters to fuse (same base model)", [c["key"] for c in usable], key="fus.adapters",
                        format_func=lambda k: by_key[k]["label"], max_selections=6,
                        default=[c["key"] for c in usable[:2]] if "fus.adapters" not in st.session_state else None)
if len(picked) < 2:
    st.info("Pick two or more adapters.", icon=":material/lightbulb:")
    st.stop()
labels = [by_key[k]["label"].split(" · ")[0] + f" ({(by_key[k].get('run_id') or by_key[k]['value'])[-4:]})"
          for k in picked]

c1, c2, c3 = st.columns(3)
method = c1.selectbox("Method", list(fusion.METHODS), key="fus.method",
                      help="linear: weighted sum of the updates · ties: keep the largest changes and "
                           "resolve sign conflicts · dare: randomly drop changes and rescale")
density = None
if method != "linear":
    density = c2.slider("Density (share of each update kept)", 0.05, 1.0, 0.5, 0.05, key="fus.density")
to = c3.segmented_control("Output", ["adapter", "model"], default="adapter", key="fus.to", required=True,
                          format_func=lambda t: {"adapter": "new adapter", "model": "full model"}[t])

# -- weights -------------------------------------------------------------------------------------------
st.subheader("Weights")
mode = st.segmented_control("How", ["global", "layer ranges", "gradient"], default="global", key="fus.mode",
                            required=True,
                            format_func=lambda m: {"global": "same for every layer", "layer ranges": "per layer range",
                                                   "gradient": "fade across layers"}[m])
allow_any = st.toggle("Allow weights that do not sum to 1 (task arithmetic)", key="fus.any_sum")
weights, layer_spec = None, None
if mode == "global":
    cols = st.columns(len(picked))
    raw = [cols[i].slider(labels[i], -1.0 if allow_any else 0.0, 2.0 if allow_any else 1.0,
                          round(1.0 / len(picked), 2), 0.05, key=f"fus.w.{k}") for i, k in enumerate(picked)]
    weights = raw if allow_any else us.normalized(raw)
    if not allow_any and abs(sum(raw) - 1) > 1e-6:
        st.caption("Weights are scaled to sum to 1: " + ", ".join(f"{w:.2f}" for w in weights))
elif mode == "layer ranges":
    st.caption(f"The model has {n_layers} layers (0-{n_layers - 1}). One row per range, one weight per adapter.")
    half = max(0, n_layers // 2 - 1)
    default = pd.DataFrame([{"layers": f"0-{half}", **{lab: (1.0 if j == 0 else 0.0) for j, lab in enumerate(labels)}},
                            {"layers": f"{half + 1}-{n_layers - 1}",
                             **{lab: (1.0 if j == 1 else 0.0) for j, lab in enumerate(labels)}}])
    grid = st.data_editor(default, num_rows="dynamic", key=f"fus.grid.{len(picked)}", hide_index=True,
                          column_config={"layers": st.column_config.TextColumn("layers", help='e.g. "0-3" or "5"')})
    layer_spec = {"ranges": [{"layers": str(r["layers"]), "weights": [float(r[lab]) for lab in labels]}
                             for _, r in grid.iterrows() if str(r.get("layers") or "").strip()]}
else:
    st.caption("Weights change linearly from the first layer to the last.")
    a, b = st.columns(2)
    start = [a.number_input(f"First layer: {lab}", value=1.0 if j == 0 else 0.0, step=0.1, key=f"fus.s.{j}")
             for j, lab in enumerate(labels)]
    end = [b.number_input(f"Last layer: {lab}", value=1.0 if j == 1 else 0.0, step=0.1, key=f"fus.e.{j}")
           for j, lab in enumerate(labels)]
    layer_spec = {"linear": {"start": start, "end": end}}

table = None
try:
    table = fusion.layer_weight_table(layer_spec, len(picked), n_layers, weights, allow_any_sum=allow_any)
except Exception as exc:  # noqa: BLE001 - shown as a message, the button stays off
    st.error(f"**These weights cannot be used:** {exc}", icon=":material/error:")
if table:
    st.altair_chart(schedule_chart(us.weight_table_frame(table, labels)), width="stretch")

# -- fuse ------------------------------------------------------------------------------------------------
o1, o2 = st.columns(2)
name = o1.text_input("Name of the result", key="fus.name", placeholder=f"fused-{method}")
rank = None
if to == "adapter":
    rank_in = o2.number_input("Rank of the fused adapter", 0, 1024, 0, key="fus.rank",
                              help="0 = the sum of the input ranks (lossless for linear fusion). Lower is "
                                   "smaller but approximate (the retained energy is reported).")
    rank = int(rank_in) or None
if st.button("Fuse", type="primary", icon=":material/merge:", disabled=table is None or not allowed("fuse"),
             help=viewer_note("fuse"), key="fus.go"):
    out = unique_path(paths.home() / "fused", name or f"fused-{method}")
    with attempt("fuse the adapters"), st.spinner("Fusing..."):
        require_role("fuse")
        result = fusion.fuse([by_key[k]["value"] for k in picked], weights, out=out, to=to, method=method,
                             rank=rank, layer_weights=layer_spec, model=model_path, density=density,
                             allow_any_sum=allow_any)
        st.session_state["fus.result"] = result.to_dict()

res = st.session_state.get("fus.result")
if res:
    with st.container(border=True):
        st.success(f"Fused {res['to']} saved to `{res['out']}` in {res['seconds']:.1f} s "
                   f"({res['gb_per_s']:.2f} GB/s).", icon=":material/check_circle:")
        if res.get("retained_energy"):
            st.caption(f"Retained energy of the updates: {res['retained_energy']['total']:.1%} "
                       f"(lowest layer {res['retained_energy']['min']:.1%}). 100% means the fused adapter "
                       "is exact.")
        if st.button("Compare it with the base model", type="primary", icon=":material/compare:", key="fus.compare"):
            for k in ("cmp.targets", "cmp.model"):
                st.session_state.pop(k, None)
            if res["to"] == "adapter":
                goto("compare", adapter=res["out"])
            goto("compare", model=res["out"])
    with st.container(border=True):
        export_section(res.get("artifact_id") or res["out"], key="fus.export", title="Export the fused result",
                       is_adapter=res["to"] == "adapter")
