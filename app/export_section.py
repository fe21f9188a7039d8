"""The Export step, shared by Sessions (a run), Monitor (a finished run) and Fusion (a fused
result): pick a target, start an export job, watch its progress, then list and download the
files. Who may export is checked when the button is pressed, not only by disabling it."""

from __future__ import annotations

import time
from pathlib import Path

import streamlit as st

from common import allowed, attempt, call, require_role, role, viewer_note
from droidft import store
from droidft.export import LABELS, jobs

CHOICES = ["ollama", "gguf", "mlx", "lmstudio", "peft", "hub"]
DOWNLOAD_LIMIT = 2 * 1024**3  # larger files are listed with their folder, not offered for download
HELP = {
    "ollama": "A GGUF file and a Modelfile for `ollama create` (the chat template translated).",
    "gguf": "One GGUF file for llama.cpp, LM Studio or any GGUF runtime.",
    "mlx": "The fused MLX model folder; `mlx_lm.load` opens it.",
    "lmstudio": "The fused MLX model placed in LM Studio's models folder (droidft/NAME).",
    "peft": "The LoRA adapter in Hugging Face PEFT's layout, for transformers and vLLM.",
    "hub": "Upload to the Hugging Face Hub (private unless you say otherwise).",
}


def _sizes(n: int | None) -> str:
    if not n:
        return ""
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def _start(source: str, target: str, options: dict, key: str) -> None:
    """The button's handler: the role is checked here, whatever the button showed."""
    require_role("upload" if target == "hub" else "export")
    if target == "hub":
        from droidft.export.hub import check_repo_id

        options["repo_id"] = check_repo_id(options.get("repo_id") or "")  # a clear message now, not in the job
    st.session_state[f"{key}.job"] = jobs.start(source, target, role=role(), **options)


def _files(job: dict, key: str) -> None:
    art = next((a for a in call(store.artifacts, default=[]) or [] if a["id"] == job.get("artifact_id")), None)
    meta = (art or {}).get("meta") or {}
    st.success(meta.get("where") or f"Exported to {job.get('out')}.", icon=":material/check_circle:")
    for note in meta.get("notes") or []:
        st.caption(f"Note: {note}")
    folder = Path(str(job.get("out") or ""))
    for i, f in enumerate(meta.get("files") or []):
        row = st.container(horizontal=True, vertical_alignment="center")
        row.markdown(f"`{f['name']}` · {_sizes(f.get('bytes'))}")
        path = folder / f["name"]
        if folder.is_dir() and path.is_file() and path.stat().st_size <= DOWNLOAD_LIMIT:
            row.download_button("Download", data=lambda p=path: p.read_bytes(), file_name=path.name,
                                icon=":material/download:", key=f"{key}.dl.{job['id']}.{i}", on_click="ignore")
    if folder.is_dir():
        st.caption(f"Folder: `{folder}`")


def export_section(source: str, *, key: str, is_adapter: bool = True, title: str = "Export") -> None:
    """The export form and the latest export job of `source` (a run id, artifact id or folder)."""
    st.subheader(title)
    choices = [c for c in CHOICES if is_adapter or c != "peft"]
    target = st.segmented_control("Export to", choices, default=choices[0], key=f"{key}.target",
                                  format_func=lambda c: LABELS[c], required=True)
    st.caption(HELP[target])
    options: dict = {}
    c1, c2 = st.columns(2)
    if target == "hub":
        options["repo_id"] = c1.text_input("Repository (user/name)", key=f"{key}.repo", placeholder="you/my-model")
        options["upload"] = c2.selectbox("Upload", ["mlx", "peft", "gguf", "ollama"] if is_adapter else
                                         ["mlx", "gguf", "ollama"], key=f"{key}.upload",
                                         format_func=lambda c: LABELS[c])
        options["private"] = not st.toggle("Public", key=f"{key}.public", help="Repos are private by default.")
        options["update"] = st.checkbox("Update the repo if it already exists", key=f"{key}.update")
        st.caption("The token comes from HF_TOKEN or `hf auth login` on this machine; droidft never "
                   "shows or stores it.")
    elif target != "peft":
        name = c1.text_input("Name", key=f"{key}.name", placeholder="default: the run's name")
        options["name"] = name or None
        bits = c2.selectbox("Precision", ["16-bit", "8-bit", "4-bit"], key=f"{key}.bits",
                            help="GGUF: f16, q8_0, q4_0. MLX: full precision or mlx-lm's 8/4-bit quantisation.")
        options["quantize"] = {"16-bit": None, "8-bit": 8, "4-bit": 4}[bits]
    action = "upload" if target == "hub" else "export"
    if st.button(f"Export to {LABELS[target]}", type="primary", icon=":material/ios_share:",
                 key=f"{key}.go", disabled=not allowed(action), help=viewer_note(action)):
        with attempt(f"export to {LABELS[target]}"):
            _start(source, target, options, key)
    job_id = st.session_state.get(f"{key}.job")
    if job_id is None:
        earlier = call(jobs.for_source, source, limit=1, default=[]) or []
        job_id = earlier[0]["id"] if earlier else None
    if job_id:
        _job_status(job_id, key)


def _show(job: dict, key: str) -> None:
    label = LABELS.get(job["target"], job["target"])
    if job["status"] in jobs.ACTIVE:
        frac = min(1.0, (job.get("done") or 0) / (job.get("total") or 1))
        st.progress(frac, text=f"{label}: {job.get('phase') or 'starting'} "
                               f"({time.time() - (job.get('created_at') or time.time()):.0f} s)")
    elif job["status"] == "failed":
        st.error(f"{label} export failed: {job.get('error')}", icon=":material/error:")
    else:
        _files(job, key)


def _job_status(job_id: str, key: str) -> None:
    """A finished job is drawn once; a running one polls every second until it ends, then
    reruns the page so the polling stops."""
    job = call(jobs.get, job_id, doing="read the export job")
    if job is None:
        return
    if job["status"] not in jobs.ACTIVE:
        _show(job, key)
        return

    @st.fragment(run_every=1.0)
    def watch():
        now = call(jobs.get, job_id, doing="read the export job")
        if now is None or now["status"] not in jobs.ACTIVE:
            st.rerun()
        _show(now, key)
    watch()
