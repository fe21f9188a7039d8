"""Data: pick or upload a dataset, validate it line by line, preview rows as the model sees
them, look at token lengths, split it, or generate sample data for any method."""

import pandas as pd
import streamlit as st

from charts import histogram
from common import (
    allowed, attempt, call, data_mtime, goto, model_select, models, require_role, show_error, token_stats,
    tokenizer, typed_path, viewer_note)
from droidft import data as datasets
from droidft import studio as us
from droidft.data import imports
from importer import import_tab

st.title("Data")
st.caption("A dataset is a folder with train.jsonl and valid.jsonl: one JSON object per line. "
           "Check one here before training on it, or import one from a file or the Hugging Face Hub.")

METHODS = list(datasets.METHOD_FORMATS)
method = st.selectbox("Training method the data is for", METHODS, key="data.method",
                      format_func=lambda m: m.upper().replace("_", "."),
                      help="Each method reads its own row format; validation checks for that one.")
fmts = datasets.METHOD_FORMATS[method]
with st.expander(f"Row formats for {method.upper()}", icon=":material/help:"):
    for fmt in fmts:
        st.markdown(f"**{datasets.FORMAT_LABELS[fmt]}**")
        st.code(datasets.FORMAT_EXAMPLES[fmt], language="json", wrap_lines=True)

pick_tab, import_tab_, upload_tab, sample_tab = st.tabs(["Pick a dataset", "Import", "Upload", "Generate sample data"])

with pick_tab:
    known = call(datasets.list_datasets, doing="list datasets", default=[]) or []
    options = [d["path"] for d in known] + ["__other__"]
    labels = {d["path"]: ("demo (built-in)" if d["path"] == "demo" else d["name"]) for d in known}
    if st.session_state.get("data.selected") in options and "data.pick" not in st.session_state:
        st.session_state["data.pick"] = st.session_state["data.selected"]
    pick = st.selectbox("Dataset", options, key="data.pick",
                        format_func=lambda p: labels.get(p, "A folder or .jsonl file on this machine..."))
    if pick == "__other__":
        pick = st.text_input("Path", key="data.path", placeholder="/path/to/folder or file.jsonl").strip()
        pick = call(typed_path, pick, doing="use this path", default="")
    if pick:
        st.session_state["data.selected"] = pick

with import_tab_:
    import_tab(method)

with upload_tab:
    files = st.file_uploader("JSON Lines files", type=["jsonl"], accept_multiple_files=True, key="data.upload",
                             help="One file (split it below), or train.jsonl + valid.jsonl (+ test.jsonl).")
    up_name = st.text_input("Dataset name", key="data.upload_name", placeholder="my-dataset")
    if st.button("Save upload", key="data.save_upload", disabled=not files or not allowed("upload"),
                 help=viewer_note("upload"), icon=":material/upload:"):
        with attempt("save the upload"):
            require_role("upload")
            folder = datasets.save_uploads([(f.name, f.getvalue()) for f in files], up_name)
            st.session_state["data.selected"] = str(folder)
            st.session_state.pop("data.pick", None)
            st.toast(f"Saved as {folder.name}")
            st.rerun()

with sample_tab:
    st.caption("A small, valid dataset in the right format for the chosen method: a starting point "
               "to edit, or something to train on right away.")
    s_name = st.text_input("Name", key="data.sample_name", placeholder=f"sample-{method}") or f"sample-{method}"
    c1, c2 = st.columns(2)
    n_train = c1.number_input("Training rows", 4, 5000, 40, key="data.sample_train")
    n_valid = c2.number_input("Validation rows", 1, 1000, 8, key="data.sample_valid")
    if st.button("Generate", key="data.generate", icon=":material/auto_awesome:",
                 disabled=not allowed("sample-data"), help=viewer_note("sample-data")):
        with attempt("generate sample data"):
            require_role("sample-data")
            folder = datasets.sample_data(method, datasets.new_dataset_dir(s_name), n_train=int(n_train),
                                          n_valid=int(n_valid))
            st.session_state["data.selected"] = str(folder)
            st.session_state.pop("data.pick", None)
            st.rerun()

selected = st.session_state.get("data.selected")
if not selected:
    st.info("Pick a dataset, upload one, or generate sample data to see its checks and preview.",
            icon=":material/lightbulb:")
    st.stop()

# -- validation --------------------------------------------------------------------------------
st.divider()
report = call(datasets.validate_dataset, selected, method, max_problems=200, doing="check the dataset")
if report is None:
    st.stop()
st.subheader(f"Checks: {us.short_path(report.path)}")
st.caption(f"`{report.path}` · format: **{datasets.FORMAT_LABELS.get(report.format or '', 'unknown')}**")
provenance = imports.read_provenance(report.path)
if provenance:
    st.caption(imports.provenance_summary(provenance))
cols = st.columns(3)
for i, split in enumerate(("train", "valid", "test")):
    cols[i].metric(f"{split} rows", report.splits.get(split, "-"))
if report.ok and not report.problems:
    st.success(f"Ready for {method.upper()}: no problems found.", icon=":material/check_circle:")
elif report.ok:
    st.success(f"Ready for {method.upper()}, with {len(report.problems)} note(s) below.", icon=":material/check_circle:")
else:
    n = len(report.errors) + report.omitted_errors
    st.error(f"Not ready for {method.upper()}: {n} problem(s). Each is listed with its file and line; "
             "fix them in the file, or split a single file below.", icon=":material/error:")
if report.problems:
    st.dataframe(pd.DataFrame([{"level": p.level, "file": p.file, "line": p.line, "problem": p.message}
                               for p in report.problems]),
                 hide_index=True, width="stretch",
                 column_config={"line": st.column_config.NumberColumn("line", format="%d"),
                                "problem": st.column_config.TextColumn("problem", width="large")})
    if report.omitted:
        st.caption(f"... and {report.omitted} more problems not listed.")

# -- split -------------------------------------------------------------------------------------
with st.expander("Split into train / valid (/ test)", expanded=not report.ok and "valid" not in report.splits,
                 icon=":material/call_split:"):
    c1, c2, c3 = st.columns(3)
    valid_f = c1.slider("Validation share", 0.02, 0.5, 0.1, 0.01, key="data.valid_f")
    test_f = c2.slider("Test share", 0.0, 0.4, 0.0, 0.01, key="data.test_f")
    seed = c3.number_input("Seed", 0, 10**6, 0, key="data.seed")
    from pathlib import Path as _P

    src = _P(report.path)
    in_place = src.is_dir() and datasets.datasets_dir().resolve() in src.resolve().parents  # whole path parts
    st.caption("Rows are shuffled with the seed. " + (
        "The dataset folder is split in place." if in_place else
        "The result is saved as a new dataset (the original is not changed)."))
    if st.button("Split", key="data.split", icon=":material/call_split:", disabled=not allowed("split"),
                 help=viewer_note("split")):
        with attempt("split the dataset"):
            require_role("split")
            out = src if in_place else datasets.new_dataset_dir((src.stem if src.is_file() else src.name) + "-split")
            rep = datasets.split_dataset(src, out, valid_fraction=valid_f, test_fraction=test_f, seed=int(seed),
                                         method=method, overwrite=in_place)
            st.session_state["data.selected"] = rep.path
            st.session_state.pop("data.pick", None)
            st.rerun()

# -- preview and token lengths -------------------------------------------------------------------
st.subheader("As the model sees it")
found = call(models, doing="look for models", default=[]) or []
if not found:
    st.stop()
mpath = model_select("Tokenizer / chat template of", found, key="data.model")
split = st.segmented_control("Split", [s for s in ("train", "valid", "test") if s in report.splits] or ["train"],
                             default="train" if "train" in report.splits else None, key="data.split_pick")
if not split:
    st.stop()
prev_col, hist_col = st.columns([3, 2])
with prev_col:
    try:
        tok = tokenizer(mpath)
        rows = datasets.preview(selected, tok, n=5, method=method, split=split)
    except Exception as exc:  # noqa: BLE001
        show_error(exc, "preview the rows")
        rows = []
    for item in rows:
        with st.container(border=True):
            meta = f"line {item['line']} · {datasets.FORMAT_LABELS.get(item.get('format') or '', '?')}"
            if item.get("tokens") is not None:
                meta += f" · {item['tokens']} tokens"
                if item.get("prompt_tokens"):
                    meta += f" ({item['prompt_tokens']} before the reply)"
            st.caption(meta)
            if item.get("error"):
                st.error(item["error"])
            else:
                st.code(item.get("text") or "", language=None, wrap_lines=True, height=180)
                if item.get("answer") is not None:
                    st.caption(f"expected answer: {item['answer']}")
                if item.get("chosen_text") is not None:
                    st.markdown("**chosen**")
                    st.code(item["chosen_text"], language=None, wrap_lines=True)
                    st.markdown("**rejected**")
                    st.code(item.get("rejected_text") or "", language=None, wrap_lines=True)
with hist_col:
    max_len = st.number_input("Max sequence length (training setting)", 16, 65536, 2048, step=128,
                              key="data.max_len")
    try:
        stats = token_stats(str(report.path), mpath, method, data_mtime(report.path), split=split,
                            max_seq_length=int(max_len))
    except Exception as exc:  # noqa: BLE001
        show_error(exc, "count tokens")
        stats = None
    if stats and stats["count"]:
        st.altair_chart(histogram(stats["lengths"], title=f"Token lengths ({split})", x_title="tokens per example",
                                  marker=int(max_len) if stats["max"] >= int(max_len) * 0.8 else None,
                                  marker_label="max sequence length"), width="stretch")
        st.caption(f"{stats['count']} examples{' (first 2,000)' if stats['sampled'] else ''} · mean "
                   f"{stats['mean']:.0f} · median {stats['p50']:.0f} · 95% under {stats['p95']:.0f} · "
                   f"max {stats['max']} tokens")
        if stats["over_max"]:
            st.warning(f"{stats['over_max']} example(s) are longer than {int(max_len)} tokens and will be cut.")
    elif stats:
        st.caption("No usable rows to measure.")

if report.ok:
    target = "sft" if method == "sft" else "rl"
    if st.button(f"Train on this dataset ({'SFT' if target == 'sft' else method.upper()})", type="primary",
                 icon=":material/arrow_forward:", key="data.use"):
        goto(target, data=report.path, method=None if target == "sft" else method)
