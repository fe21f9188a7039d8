"""The Data page's Import tab: load a file or a Hub dataset, map its columns, preview, split, save.

Widgets only; reading, mapping, checking and saving are droidft.data.imports / data.mapping.
The Hub is reached only when the owner presses Load, and every action re-checks the visitor's
role in its handler (a disabled button is only a hint).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import streamlit as st

from common import allowed, attempt, require_role, show_error, typed_path, viewer_note
from droidft import data as datasets
from droidft.data import imports, mapping

KINDS = {"file": "A file on this machine", "upload": "Upload a file", "hub": "Hugging Face Hub"}
UPLOAD_LIMIT = 200 * 2**20


def _save_upload(name: str, content: bytes) -> Path:
    """An uploaded file kept under the home's imports folder, under a harmless name."""
    fname = datasets.safe_filename(name)
    imports.file_kind(fname)
    if len(content) > UPLOAD_LIMIT:
        raise datasets.DataError(f"{fname} is {datasets.human_bytes(len(content))}; the upload limit is "
                                 f"{datasets.human_bytes(UPLOAD_LIMIT)} (import a file on this machine instead)")
    folder = datasets.datasets_dir().parent / "imports"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / fname
    path.write_bytes(content)
    return path


def _load(kind: str, limit: int | None) -> None:
    require_role("import")
    if kind == "hub":
        repo = st.session_state.get("imp.repo", "").strip()
        source = imports.read_hub(repo, config=st.session_state.get("imp.config", "").strip() or None,
                                  split=st.session_state.get("imp.hub_split", "").strip() or "train",
                                  revision=st.session_state.get("imp.revision", "").strip() or None, limit=limit)
    elif kind == "upload":
        up = st.session_state.get("imp.upload")
        if up is None:
            raise datasets.DataError("choose a file to upload first")
        source = imports.read_file(_save_upload(up.name, up.getvalue()), limit=limit)
    else:
        path = typed_path(st.session_state.get("imp.path", "").strip())
        if not path:
            raise datasets.DataError("type the path of a .jsonl, .json, .csv or .parquet file")
        source = imports.read_file(path, limit=limit)
    st.session_state["imp.source"] = source
    st.session_state["imp.loaded"] = st.session_state.get("imp.loaded", 0) + 1
    st.session_state.pop("imp.problems", None)


def _source_form(method: str) -> None:
    kind = st.radio("From", list(KINDS), format_func=KINDS.get, horizontal=True, key="imp.kind")
    if kind == "file":
        st.text_input("File", key="imp.path", placeholder="/path/to/data.csv, .jsonl, .json or .parquet")
    elif kind == "upload":
        st.file_uploader("File", type=["jsonl", "json", "csv", "parquet"], key="imp.upload")
    else:
        st.text_input("Dataset id", key="imp.repo", placeholder="owner/name, e.g. openai/gsm8k")
        c1, c2, c3 = st.columns(3)
        c1.text_input("Config", key="imp.config", placeholder="default", help="The subset, if the dataset has several.")
        c2.text_input("Split", key="imp.hub_split", placeholder="train",
                      help="The split to read; a slice such as train[:1000] reads part of it.")
        c3.text_input("Revision", key="imp.revision", placeholder="main", help="A branch, tag or commit.")
        st.caption("droidft goes online only when you press Load. Gated datasets use your Hugging Face "
                   "token (HF_TOKEN or `hf auth login`); droidft never shows or stores it.")
    limit = st.number_input("Read at most this many rows (0: all)", 0, 10**8, 0, step=1000, key="imp.limit")
    if st.button("Load", key="imp.load", icon=":material/download:", disabled=not allowed("import"),
                 help=viewer_note("import")):
        with attempt("load the data"):
            with st.spinner("Reading..."):
                _load(kind, int(limit) or None)


def _default_map(source: imports.Source, method: str) -> mapping.ColumnMap | None:
    try:
        return mapping.auto_map(source.columns, method=method)
    except datasets.DataError as exc:
        st.info(f"{exc}. Map the columns below.", icon=":material/lightbulb:")
        return None


def _mapping_form(source: imports.Source, method: str, detected: mapping.ColumnMap | None) -> mapping.ColumnMap | None:
    formats = list(datasets.METHOD_FORMATS[method])
    default_fmt = detected.format if detected and detected.format in formats else formats[0]
    fmt = st.selectbox("Make rows of format", formats, index=formats.index(default_fmt), key=f"imp.format.{method}",
                       format_func=datasets.FORMAT_LABELS.get)
    guess = detected if detected and detected.format == fmt else None
    if guess is None:
        try:
            guess = mapping.auto_map(source.columns, fmt=fmt, method=method)
        except datasets.DataError:
            guess = None
    names = list(mapping.REQUIRED[fmt]) + list(mapping.OPTIONAL[fmt])
    if fmt == "chat" and not (guess and "messages" in guess.fields):
        names = ["system", "prompt", "completion", "tools"]
    token = f"{st.session_state.get('imp.loaded', 0)}.{fmt}"
    cols = st.columns(min(4, len(names)))
    fields = {}
    for i, name in enumerate(names):
        picked = cols[i % len(cols)].multiselect(
            name + ("" if name in ("system", "tools", "type") else " *"), source.columns,
            default=list(guess.fields.get(name, ())) if guess else [], key=f"imp.field.{token}.{name}",
            help="Several columns are joined with a blank line." if name in ("prompt", "system") else None)
        if picked:
            fields[name] = tuple(picked)
    cmap = mapping.ColumnMap(fmt, fields, guess.schema if guess and guess.fields == fields else None)
    try:
        cmap.check(source.columns)
    except datasets.DataError as exc:
        st.warning(str(exc), icon=":material/warning:")
        return None
    return cmap


def _preview(source: imports.Source, cmap: mapping.ColumnMap) -> None:
    st.markdown("**Preview** (the first rows as they will be saved)")
    for item in imports.preview(source, cmap, n=3):
        with st.container(border=True):
            st.caption(f"row {item['row']}")
            if item["error"]:
                st.error(item["error"])
            else:
                st.code(json.dumps(item["mapped"], ensure_ascii=False, indent=1), language="json",
                        wrap_lines=True, height=160)


def _save_form(source: imports.Source, cmap: mapping.ColumnMap, method: str) -> None:
    c1, c2, c3 = st.columns(3)
    valid = c1.slider("Validation %", 1, 50, 10, key="imp.valid")
    test = c2.slider("Test %", 0, 40, 0, key="imp.test")
    seed = c3.number_input("Seed", 0, 10**6, 0, key="imp.seed")
    default_name = Path(source.label.split(" ")[0]).stem.replace("/", "-")
    name = st.text_input("Dataset name", key="imp.name", placeholder=default_name).strip() or default_name
    drop = st.checkbox("Leave out rows that cannot be used (they are listed in provenance.json)", key="imp.drop")
    if st.button("Import", key="imp.save", type="primary", icon=":material/save:",
                 disabled=not allowed("import") or valid + test >= 100, help=viewer_note("import")):
        try:
            require_role("import")
            with st.spinner("Checking and saving..."):
                result = imports.import_dataset(source, cmap, name, method=method, valid_fraction=valid / 100,
                                                 test_fraction=test / 100, seed=int(seed), drop_bad=drop)
        except Exception as exc:  # noqa: BLE001 - shown with the row-numbered problems below
            show_error(exc, "import the dataset")
            st.session_state["imp.problems"] = [p for p in getattr(exc, "problems", []) if p.level == "error"]
        else:
            st.session_state["data.selected"] = str(result.path)
            st.session_state.pop("data.pick", None)
            st.session_state.pop("imp.source", None)
            st.toast(f"Imported {result.provenance['rows']['imported']} rows as {result.path.name}")
            st.rerun()
    problems = st.session_state.get("imp.problems")
    if problems:
        st.dataframe(pd.DataFrame([{"row": p.line, "problem": p.message} for p in problems[:imports.SHOWN_PROBLEMS]]),
                     hide_index=True, width="stretch",
                     column_config={"row": st.column_config.NumberColumn("row", format="%d")})


def _cell(value) -> str:
    """A source value as short text for the table (lists and objects as JSON)."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 300 else text[:300] + "..."


def import_tab(method: str) -> None:
    """Everything the Import tab shows, for the training method picked at the top of the page."""
    st.caption("Bring in a public dataset or your own file: its columns become one of droidft's row "
               "formats, rows are checked, split, and saved with where they came from.")
    _source_form(method)
    source = st.session_state.get("imp.source")
    if source is None:
        return
    st.success(f"{len(source.rows):,} rows from {source.label} · columns: {', '.join(source.columns[:12])}",
               icon=":material/table:")
    with st.expander("The first rows as they are in the source", icon=":material/table_rows:"):
        st.dataframe(pd.DataFrame([{c: _cell(row.get(c)) for c in source.columns} for row in source.rows[:5]]),
                     hide_index=True, width="stretch")
    detected = _default_map(source, method)
    if detected and detected.schema:
        st.caption(f"Recognised: **{mapping.SCHEMA_LABELS[detected.schema]}**")
    cmap = _mapping_form(source, method, detected)
    if cmap is None:
        return
    try:
        _preview(source, cmap)
    except Exception as exc:  # noqa: BLE001
        show_error(exc, "preview the rows")
        return
    _save_form(source, cmap, method)
