"""A config dataclass as Streamlit widgets, shared by the SFT and RL setup pages.

The fields, their kinds, help texts and choices come from `droidft.studio.field_specs`, so any
method's config class gets a complete form with no page code of its own.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from common import call, model_label, models, typed_path
from droidft import security
from droidft import studio as us
from droidft.data import list_datasets

NONE = "none"
GROUP_ORDER = ["Training", "Adapter", "Method", "Evaluation and saving", "Advanced"]
EXPANDED = {"Training", "Adapter", "Method"}


def widget_key(prefix: str, name: str) -> str:
    return f"{prefix}.{name}"


def init_state(prefix: str, specs: list[us.FieldSpec], values: dict | None = None, force: bool = False) -> None:
    """Put each field's value (given or default) into session state before the widgets draw."""
    values = values or {}
    for spec in specs:
        key = widget_key(prefix, spec.name)
        if force or key not in st.session_state:
            value = values.get(spec.name, spec.default)
            st.session_state[key] = us.field_display_value(spec, value)


def apply_values(prefix: str, specs: list[us.FieldSpec], values: dict) -> None:
    """Overwrite some fields (a preset, a loaded config): only the names given change."""
    by_name = {s.name: s for s in specs}
    for name, value in values.items():
        if name in by_name:
            st.session_state[widget_key(prefix, name)] = us.field_display_value(by_name[name], value)


def _number_step(spec: us.FieldSpec):
    if spec.kind == "int":
        return 1
    d = abs(spec.default or 0.0)
    if d and d < 0.01:
        return float(f"{d / 10:.0e}")
    return 0.01 if d < 1 else 0.1


def _draw(prefix: str, spec: us.FieldSpec, choices_override: dict):
    key = widget_key(prefix, spec.name)
    common = dict(key=key, help=spec.help or None)
    choices = choices_override.get(spec.name, spec.choices)
    if spec.name in choices_override and spec.kind == "yaml":  # e.g. LoRA keys: pick from the model
        current = st.session_state.get(key)
        if not isinstance(current, list):
            parsed = us.parse_field(spec, current) if isinstance(current, str) else current
            st.session_state[key] = [c for c in (parsed or []) if c in choices]
        picked = st.multiselect(spec.label, choices, placeholder="All linear layers", **common)
        return picked or None
    if spec.kind == "bool":
        return st.toggle(spec.label, **common)
    if spec.kind == "choice":
        # None is an option like the others (a selectbox showing None would read "Choose an option")
        options = [NONE if c is None else c for c in choices]
        if st.session_state.get(key) is None:
            st.session_state[key] = NONE
        if st.session_state.get(key) not in options:
            st.session_state[key] = options[0]
        picked = st.selectbox(spec.label, options, format_func=str, **common)
        return None if picked == NONE else picked
    if spec.kind == "multichoice":
        return st.multiselect(spec.label, choices, **common)
    if spec.kind in ("int", "float") and not spec.optional:
        value = st.session_state.get(key)
        if isinstance(value, str) or value is None:
            try:
                st.session_state[key] = (int if spec.kind == "int" else float)(value)
            except (TypeError, ValueError):
                st.session_state[key] = spec.default
        elif spec.kind == "float" and isinstance(value, int):
            st.session_state[key] = float(value)
        return st.number_input(spec.label, step=_number_step(spec),
                               format="%g" if spec.kind == "float" else "%d", **common)
    placeholder = "empty = none" if spec.optional else None
    return st.text_input(spec.label, placeholder=placeholder, **common)


def config_form(prefix: str, specs: list[us.FieldSpec], *, choices_override: dict | None = None,
                skip: tuple = (), method: str | None = None) -> tuple[dict, list[str]]:
    """Draw the fields grouped in expanders; returns (dotted name -> value, input problems).
    A path field refused in LAN mode is a problem and its value is dropped."""
    choices_override = choices_override or {}
    values, problems = {}, []
    groups: dict[str, list[us.FieldSpec]] = {}
    for spec in specs:
        if spec.name not in skip:
            groups.setdefault(spec.group, []).append(spec)
    for group in [g for g in GROUP_ORDER if g in groups] + [g for g in groups if g not in GROUP_ORDER]:
        order = us.GROUPS.get(group, ())
        members = sorted(groups[group], key=lambda s: order.index(s.name.split(".")[0])
                         if s.name.split(".")[0] in order else len(order))
        with st.expander(group, expanded=group in EXPANDED):
            cols = st.columns(3)
            for i, spec in enumerate(members):
                with cols[i % 3]:
                    raw = _draw(prefix, spec, choices_override)
                try:
                    values[spec.name] = raw if spec.name in choices_override and spec.kind == "yaml" \
                        else us.parse_field(spec, raw)
                except ValueError as exc:
                    problems.append(str(exc))
                    continue
                try:  # LAN mode: a path outside the allowed folders is not read, not even to check it
                    security.check_field_path(spec.name, values[spec.name], method=method)
                except security.AccessDenied as exc:
                    problems.append(str(exc))
                    values[spec.name] = None
                except ValueError:  # a model or dataset that does not resolve: the config says so
                    pass
    return values, problems


def model_picker(prefix: str, models: list[dict], label_fn, default: str | None = None) -> str:
    """The model to train: discovered models (demo first) or a typed folder / hub id."""
    options = [m["path"] for m in models] + ["__other__"]
    labels = {m["path"]: label_fn(m) for m in models}
    key = widget_key(prefix, "model_choice")
    if default and key not in st.session_state:
        match = next((m["path"] for m in models if default in (m["path"], m["name"])), None)
        st.session_state[key] = match or "__other__"
        if not match:
            st.session_state[widget_key(prefix, "model_other")] = default
    choice = st.selectbox("Model", options, key=key, format_func=lambda p: labels.get(p, "Another model..."),
                          help=us.HELP["model"])
    if choice == "__other__":
        typed = st.text_input("Model folder or downloaded hub id", key=widget_key(prefix, "model_other"),
                              placeholder="/path/to/mlx-model or mlx-community/...").strip()
        looks_like_folder = typed.startswith(("/", "~", ".")) or Path(typed).expanduser().exists()
        return call(typed_path, typed, doing="use this model folder", default="") if looks_like_folder else typed
    return "demo" if choice == (models[0]["path"] if models and models[0].get("source") == "demo" else None) else choice


def data_picker(prefix: str, datasets: list[dict], default: str | None = None) -> str:
    """The dataset to train on: the demo, datasets made in the dashboard, or a typed path."""
    options = [d["path"] for d in datasets] + ["__other__"]
    labels = {d["path"]: ("demo (built-in sample data)" if d["path"] == "demo" else f"{d['name']}")
              for d in datasets}
    key = widget_key(prefix, "data_choice")
    if default and key not in st.session_state:
        st.session_state[key] = default if default in options else "__other__"
        if default not in options:
            st.session_state[widget_key(prefix, "data_other")] = default
    choice = st.selectbox("Dataset", options, key=key, format_func=lambda p: labels.get(p, "Another folder..."),
                          help=us.HELP["data"])
    if choice == "__other__":
        typed = st.text_input("Dataset folder (with train.jsonl and valid.jsonl)",
                              key=widget_key(prefix, "data_other")).strip()
        return call(typed_path, typed, doing="use this dataset folder", default="")
    return choice


def model_and_data(prefix: str) -> tuple[str, str]:
    """The model and dataset pickers side by side (defaults from ?model= and ?data=)."""
    found = call(models, doing="look for models", default=[]) or []
    found_data = call(list_datasets, doing="list datasets", default=[]) or [{"name": "demo", "path": "demo"}]
    left, right = st.columns(2)
    with left:
        model = model_picker(prefix, found, model_label, default=st.query_params.get("model"))
    with right:
        data = data_picker(prefix, found_data, default=st.query_params.get("data"))
    return model, data
