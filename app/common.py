"""Streamlit glue shared by the pages: page paths, error display, cached engine look-ups.

Only presentation lives here. Anything a page needs that is not about widgets belongs in
`droidft.studio` (or the engine itself).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import traceback
from contextlib import contextmanager

import streamlit as st

from droidft import paths, standby
from droidft import studio as us

log = logging.getLogger("droidft.app")

# page key -> (file relative to app/Home.py, title, icon)
PAGES = {
    "home": ("views/home.py", "Home", ":material/home:"),
    "models": ("views/models.py", "Models", ":material/deployed_code:"),
    "data": ("views/data.py", "Data", ":material/dataset:"),
    "sft": ("views/sft_setup.py", "SFT setup", ":material/tune:"),
    "rl": ("views/rl_setup.py", "RL setup", ":material/psychology:"),
    "monitor": ("views/monitor.py", "Monitor", ":material/monitoring:"),
    "sessions": ("views/sessions.py", "Sessions", ":material/history:"),
    "compare": ("views/compare.py", "Compare", ":material/compare:"),
    "fusion": ("views/fusion.py", "Fusion", ":material/merge:"),
    "evaluate": ("views/evaluate.py", "Evaluate", ":material/fact_check:"),
    "sweep": ("views/sweep.py", "Sweeps", ":material/grid_view:"),
}

POLL_SECONDS = 0.5  # the Monitor's refresh period: with the worker's 1 s flush, a report shows within ~1.5 s


def _import_methods() -> None:
    """The first Start validates its config against the method registry, whose modules import
    mlx-lm (~1.5 s on 2 cores), and the Monitor's first chart imports Altair: import them once
    per server, off the first click's path."""
    try:
        __import__("altair")
        from droidft import methods

        methods.available()
    except Exception:  # noqa: BLE001 - the click that needs them says what is wrong
        pass


threading.Thread(target=_import_methods, name="droidft-import-methods", daemon=True).start()


def goto(page: str, **query) -> None:
    """Switch to another page, carrying query parameters (e.g. run=ID)."""
    st.switch_page(PAGES[page][0], query_params={k: v for k, v in query.items() if v is not None} or None)


def link(page: str, label: str | None = None, **query) -> None:
    path, title, icon = PAGES[page]
    st.page_link(path, label=label or title, icon=icon,
                 query_params={k: v for k, v in query.items() if v is not None} or None)


def home_key() -> str:
    """Part of every cache key, so a different DROIDFT_HOME never sees another home's data."""
    return str(paths.home())


# -- errors ----------------------------------------------------------------------------


def show_error(exc: BaseException, doing: str = "") -> None:
    """An engine exception as a calm message with its cause and a fix; never a traceback."""
    info = us.explain(exc, doing)
    if info.unexpected:
        log.error("dashboard: %s\n%s", info.title, "".join(traceback.format_exception(exc)))
    if type(exc).__name__ == "StoreBusy":
        st.info(f"{info.title} {info.fix}", icon=":material/hourglass_top:")
        return
    body = f"**{info.title}**"
    if info.details:
        body += "\n" + "\n".join(f"- {d}" for d in info.details)
    body += f"\n\n{info.fix}"
    st.error(body, icon=":material/error:")


@contextmanager
def attempt(doing: str = ""):
    """`with attempt("start the run"): ...` shows any engine error instead of raising it.
    Streamlit's own control flow (rerun, switch_page, stop) passes through untouched."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - every error becomes a message
        show_error(exc, doing)


def call(fn, *args, doing: str = "", default=None, **kwargs):
    """fn(*args, **kwargs), or `default` after showing the error."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001
        show_error(exc, doing)
        return default


def empty(message: str, page: str | None = None, label: str | None = None, **query) -> None:
    """An empty state that says what to do next, with a link to do it."""
    st.info(message, icon=":material/lightbulb:")
    if page:
        link(page, label, **query)


# -- cached look-ups ---------------------------------------------------------------------


@st.cache_data(ttl=30, show_spinner=False)
def _models(home: str) -> list[dict]:
    import dataclasses

    from droidft.models import discover_models

    return [dataclasses.asdict(m) for m in discover_models()]


def models(fresh: bool = False) -> list[dict]:
    """Discovered models as dicts (demo first); `fresh` looks again now (a download finished,
    a model was removed) instead of within the cache's 30 s."""
    if fresh:
        _models.clear()
    return _models(home_key())


def model_label(m: dict) -> str:
    parts = [m.get("model_type") or "?"]
    if m.get("num_layers"):
        parts.append(f"{m['num_layers']} layers")
    if m.get("quantized_bits"):
        parts.append(f"{m['quantized_bits']}-bit")
    if m.get("size_mb") is not None:
        parts.append(f"{m['size_mb']:,.0f} MB" if m["size_mb"] >= 10 else f"{m['size_mb']:.1f} MB")
    name = "demo (built-in tiny model)" if m.get("source") == "demo" else m["name"]
    return f"{name} · {', '.join(parts)}"


@st.cache_data(ttl=120, show_spinner=False)
def machine() -> dict:
    from droidft.blas import machine_summary

    return machine_summary()


@st.cache_data(ttl=600, show_spinner=False)
def lora_keys(model_path: str) -> list[str]:
    from droidft.models import linear_layer_keys

    return linear_layer_keys(model_path)


def status_text(status: str | None) -> str:
    return f"{us.STATUS_ICONS.get(status or '', '')} {status or '?'}"


def status_badge(status: str | None) -> None:
    st.badge(status or "?", icon=None, color=us.STATUS_COLORS.get(status or "", "gray"))


def run_label(run: dict) -> str:
    """Plain text (for select boxes): name · status · age."""
    return f"{run.get('name') or run['id']} · {run.get('status')} · {us.fmt_ago(run.get('created_at'))}"


def run_line(run: dict) -> str:
    """Markdown with a status icon (for lists)."""
    color = us.STATUS_COLORS.get(run.get("status") or "", "gray")
    return (f"{us.STATUS_ICONS.get(run.get('status'), '')} **{run.get('name') or run['id']}** "
            f":{color}[{run.get('status')}] · {us.fmt_ago(run.get('created_at'))}")


def page_setup(title: str, caption: str | None = None) -> None:
    st.title(title)
    if caption:
        st.caption(caption)


def now() -> float:
    return time.time()


@st.cache_resource(show_spinner=False, max_entries=4)
def tokenizer(model_path: str):
    """A model's tokenizer (loaded once per model folder)."""
    from pathlib import Path

    from mlx_lm.utils import load_tokenizer

    return load_tokenizer(Path(model_path))


@st.cache_data(ttl=300, show_spinner=False, max_entries=32)
def token_stats(data_path: str, model_path: str, method: str, mtime: float, split: str = "train",
                limit: int = 2000, max_seq_length: int | None = None) -> dict:
    """Token lengths of a dataset split under a model's tokenizer (cached per file version)."""
    from droidft.data import token_stats as stats

    return stats(data_path, tokenizer(model_path), split=split, limit=limit,
                 max_seq_length=max_seq_length, method=method)


def data_mtime(data_path) -> float:
    """A cache key that changes when a dataset's files change."""
    from pathlib import Path

    p = Path(str(data_path))
    files = [p] if p.is_file() else list(p.glob("*.jsonl"))
    return max((f.stat().st_mtime for f in files if f.exists()), default=0.0)


# -- LAN sharing: who may do what ------------------------------------------------------------
#
# Every handler that changes something calls `require_role(action)` inside its `attempt(...)`,
# right before the engine call: `allowed()` only greys a button out, and a disabled button is a
# hint, not a guard (a forged press reaches the script on Streamlit < 1.61, and dialogs, forms
# and new widgets are easy to leave enabled). New owner-only actions get a name in
# droidft.security.OWNER_ONLY and the same one call.


def role() -> str | None:
    """This visitor's role. Local mode: 'owner' for this machine, None for anyone else (the
    server should not be reachable from elsewhere, but may be started that way). LAN mode: the
    role signed in with, until the sign-in expires or that role's password changes."""
    from droidft import security

    if not security.lan_mode():
        return "owner" if security.is_loopback(client_address()) else None
    signed = st.session_state.get("role")
    if signed is None:
        return None
    problem = security.session_problem(signed, st.session_state.get("signed_in_at", 0.0),
                                       st.session_state.get("auth_stamp", ""))
    if problem:
        sign_out(problem)
        return None
    return signed


def require_role(action: str) -> None:
    """Raise droidft.security.AccessDenied (shown by `attempt` as a clear refusal) unless this
    visitor may do `action` now. Call it right before the engine call of every handler that
    starts, stops, resumes, deletes, uploads, fuses, evaluates, splits, exports, downloads or
    reaches other machines."""
    from droidft import security

    security.require(role(), action)


def permitted(action: str) -> bool:
    """`require_role` for a handler written as `if st.button(...) and permitted("x"):` - a
    refusal is shown where the button is and the handler goes no further."""
    from droidft import security

    try:
        require_role(action)
        return True
    except security.AccessDenied as exc:
        show_error(exc, action.replace("-", " ").capitalize())
        return False


def allowed(action: str) -> bool:
    """May this visitor do `action`? For greying out buttons; the handler still calls
    `require_role`."""
    from droidft import security

    try:
        security.require(role(), action)
        return True
    except security.AccessDenied:
        return False


def viewer_note(action: str) -> str | None:
    """Help text for a button a viewer may not press."""
    return None if allowed(action) else "Viewers can watch and compare; only the owner can " + \
        action.replace("-", " ") + "."


def typed_path(path: str) -> str:
    """A path typed into a page: refused (AccessDenied) in LAN mode outside the allowed folders."""
    from droidft import security

    if path and path != "demo":
        security.check_path(path)
    return path


def _hashes_from_secrets() -> None:
    """`password_hash` / `viewer_password_hash` in .streamlit/secrets.toml, as env variables
    for droidft.security (an env variable set by the owner wins)."""
    from droidft import security

    try:
        secrets = {k: st.secrets[k] for k in ("password_hash", "viewer_password_hash") if k in st.secrets}
    except Exception:  # noqa: BLE001 - no secrets file is the normal case
        return
    for role, key in (("owner", "password_hash"), ("viewer", "viewer_password_hash")):
        if secrets.get(key):
            os.environ.setdefault(security.HASH_ENV[role], str(secrets[key]))


def sign_out(reason: str | None = None) -> None:
    """Forget this tab's sign-in (the Sign out button, an expired sign-in, a changed password)."""
    for key in ("role", "signed_in_at", "auth_stamp"):
        st.session_state.pop(key, None)
    if reason:
        st.session_state["signed_out_reason"] = reason
    presence().leave(session_id())


def sign_in_gate() -> None:
    """Stop here unless this visitor may use the dashboard: in LAN mode until they sign in, in
    local mode for good when they are not on this machine (Home.py calls this before navigation)."""
    from droidft import security

    if not security.lan_mode():
        if role() is None:
            st.title("droidft")
            st.error("**This dashboard is not shared on the network.** Only the machine it runs on can "
                     "use it; its owner can share it with a password (see README, Sharing on a LAN).",
                     icon=":material/lock:")
            st.stop()
        return
    if role():
        return
    _hashes_from_secrets()
    st.title("droidft")
    if not security.password_configured():
        st.error("**This dashboard is shared on the network, but no password is set.** The owner sets "
                 "one on this machine (see README, Sharing on a LAN), then reloads this page.",
                 icon=":material/lock:")
        st.stop()
    if reason := st.session_state.pop("signed_out_reason", None):
        st.info(reason, icon=":material/logout:")
    with st.form("sign_in"):
        st.markdown("This dashboard is shared on the network. Sign in with the owner's or a viewer's password.")
        password = st.text_input("Password", type="password")
        if st.form_submit_button("Sign in", type="primary"):
            outcome = call(security.sign_in, password, client_address(), doing="check the password")
            if outcome and outcome.role:
                st.session_state.update(role=outcome.role, signed_in_at=time.time(),
                                        auth_stamp=security.credential_stamp(outcome.role))
                st.rerun()
            if outcome:
                st.error(outcome.message, icon=":material/lock:")
    st.stop()


def sign_out_button() -> None:
    """In LAN mode, the sidebar's Sign out (the next visitor of this browser starts signed out)."""
    from droidft import security

    if security.lan_mode() and role() and st.sidebar.button("Sign out", key="sign_out",
                                                            icon=":material/logout:", type="tertiary"):
        sign_out("You signed out.")
        st.rerun()


# -- who is connected ----------------------------------------------------------------------------


@st.cache_resource(show_spinner=False)
def presence():
    """The server's one table of open sessions (droidft.presence)."""
    from droidft.presence import Presence

    return Presence()


def client_address() -> str | None:
    """The visitor's IP address as Streamlit reports it (None on this machine)."""
    address = st.context.ip_address
    return address if isinstance(address, str) else None  # AppTest has no connection


def session_id() -> str:
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return ctx.session_id if ctx else "bare"


def report_presence(page: str, run_id: str | None = None) -> None:
    presence().report(session_id(), role=role(), address=client_address(), page=page, run_id=run_id)


@st.fragment(run_every=10)
def presence_beacon(page: str, run_id: str | None) -> None:
    """Keeps this tab listed as connected (re-runs every 10 s; a closed tab stops) and shows
    how many are connected in the sidebar when it is more than just you. A tab whose sign-in
    ended meanwhile (expired, password changed) redraws as the sign-in form."""
    if role() is None:
        st.rerun()
    report_presence(page, run_id)
    standby.keep_ready()  # the next Start's worker, imports done (only while nothing trains)
    count = len(presence().active())
    if count > 1:
        st.caption(f":material/group: {count} connected · see Home")


def who_is_connected() -> None:
    """The Home page's list of open dashboard tabs (addresses for the owner only)."""
    rows = presence().table(show_addresses=allowed("delete"), me=session_id())
    with st.expander(f"Who is connected ({len(rows)})", icon=":material/group:"):
        st.caption("Dashboard tabs open on this server in the last 30 s, and the page or run each "
                   "one shows. Streamlit tells no more than this: addresses come from each "
                   "browser's connection.")
        st.markdown("\n".join(
            f"- **{r['who']}** · {PAGES.get(r['page'], ('', r['page'] or '?'))[1]}"
            + (f" · run `{r['run']}`" if r["run"] else "")
            + f" · for {us.fmt_duration(r['connected'])}" for r in rows))


def also_watching(run_id: str) -> str | None:
    """'Also watching: viewer · 192.168.1.7' for the Monitor, or None when it is only you."""
    me = session_id()
    others = [v for v in presence().watching(run_id) if v.session != me]
    if not others:
        return None
    names = [v.label(show_address=allowed("delete")) for v in others]
    return "Also watching this run: " + ", ".join(names)


def adapter_targets() -> tuple[list[dict], list[dict]]:
    """(runs, adapters and fused models to pick from) for Compare, Fusion and Evaluate."""
    from droidft import jobs

    runs = call(jobs.list_runs, doing="read the runs", default=[]) or []
    from droidft import fusion

    fused = call(fusion.fused_artifacts, doing="list fused adapters", default=[]) or []
    return runs, us.adapter_choices(runs, fused)


def checkpoint_picker(key: str) -> str:
    """Which adapter of each run to use: the best one (default) or the last one."""
    from droidft.studio import CHECKPOINT_LABELS

    return st.segmented_control(
        "Adapter of each run", list(CHECKPOINT_LABELS), default="best", key=key, required=True,
        format_func=lambda c: c, help="best: the adapter of the validation with the lowest loss (highest "
                                      "reward for GRPO and KLPO), kept beside the last one; last: where training ended. "
                                      "A run without a best adapter uses its last.")


def base_and_targets(prefix: str, found: list[dict], choices: list[dict]):
    """Compare's and Evaluate's left column: the base model, whether to include it, and best
    or last adapters. Returns (base model path, include base, choices at that checkpoint, the
    choices by key, the choices that fit the base)."""
    model_path = model_select("Base model", found, key=f"{prefix}.model")
    include_base = st.toggle("Include the base model", value=True, key=f"{prefix}.base")
    choices = us.with_checkpoint(choices, checkpoint_picker(f"{prefix}.checkpoint"))
    usable = [c for c in choices if c["kind"] == "model" or us.same_base(c, model_path)]
    return model_path, include_base, choices, {c["key"]: c for c in choices}, usable


def model_select(label: str, found: list[dict], key: str, **kwargs) -> str:
    """A select box over discovered models (their paths), labelled by model_label."""
    labels = {m["path"]: model_label(m) for m in found}
    return st.selectbox(label, list(labels), key=key, format_func=labels.get, **kwargs)
