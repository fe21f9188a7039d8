"""Models: the models on this machine, Hub search, 'fits this machine?', and downloads as jobs.

Nothing here asks the network until Search, Check or Download is pressed. Downloads run as
detached jobs (droidft.models.download); this page only reads their rows, once a second while
one runs, so a reload or a restarted server finds them where they are."""

import streamlit as st

from common import allowed, attempt, call, goto, machine, models, permitted, viewer_note
from droidft.estimate import fit_report, fit_summary
from droidft.models import download, hub, read_model_config
from droidft.models import tables as mt

st.title("Models")
st.caption("What is on this machine, what the Hugging Face Hub has, and what fits. A download runs "
           "in the background like a training run: leave the page, come back, it is still going.")


def _fine_tune(model: str) -> None:
    """Open the SFT form with this model chosen."""
    for key in ("sft.model_choice", "sft.model_other"):
        st.session_state.pop(key, None)
    goto("sft", model=model)


# -- downloads -------------------------------------------------------------------------------

jobs_now = call(download.list_jobs, doing="read the downloads", default=[]) or []
active = [j for j in jobs_now if j["status"] in download.ACTIVE]
last_done = max((j.get("ended_at") or 0 for j in jobs_now if j["status"] == "completed"), default=0)
refresh = last_done > st.session_state.get("models.seen_done", 0)  # a new model landed: look again
st.session_state["models.seen_done"] = last_done


@st.fragment(run_every=1.0 if active else None)
def downloads_panel() -> None:
    rows = call(download.list_jobs, doing="read the downloads", default=[]) or []
    shown = [j for j in rows if j["status"] in download.ACTIVE] + \
        [j for j in rows if j["status"] not in download.ACTIVE][:5]
    if not shown:
        return
    st.subheader("Downloads")
    for job in shown:
        view = download.progress_view(job)
        name = job["repo_id"] + (f"@{job['revision']}" if job.get("revision") else "")
        with st.container(border=True, key=f"dl-{job['id']}"):
            left, right = st.columns([4, 1], vertical_alignment="center")
            with left:
                if job["status"] in download.ACTIVE:
                    st.progress(view.fraction, text=f"**{name}** · {view.text}")
                elif job["status"] == "completed":
                    st.markdown(f":material/check_circle: **{name}** downloaded · {view.text}")
                else:
                    st.markdown(f":material/error: **{name}** {job['status']}: {job.get('error') or ''}")
            with right:
                if job["status"] in download.ACTIVE:
                    if st.button("Cancel", key=f"cancel-{job['id']}", disabled=not allowed("download"),
                                 help=viewer_note("download")) and permitted("download"):
                        with attempt("cancel the download"):
                            download.cancel(job["id"])
                            st.rerun()
                elif job["status"] == "completed":
                    if st.button("Fine-tune this model", key=f"tune-{job['id']}", icon=":material/tune:"):
                        _fine_tune(job["path"] if job.get("quantize_bits") else job["repo_id"])
                elif st.button("Pull again", key=f"again-{job['id']}", disabled=not allowed("download"),
                               help="Resumes from the bytes already downloaded"):
                    if permitted("download"):
                        with attempt("download this model"):
                            download.start(name, quantize_bits=job.get("quantize_bits"),
                                           deadline=hub.SEARCH_DEADLINE_S)
                            st.rerun()
    if not [j for j in rows if j["status"] in download.ACTIVE] and active:
        st.rerun()  # the last one finished: show it in the local list too


downloads_panel()

# -- fits this machine? ----------------------------------------------------------------------


def fits_panel(config: dict, key: str) -> None:
    total = (call(machine, default={}) or {}).get("memory_gb")
    c1, c2 = st.columns(2)
    batch = c1.number_input("Batch size", 1, 256, 4, key=f"{key}.batch")
    seq = c2.number_input("Max sequence length", 64, 131072, 2048, step=256, key=f"{key}.seq")
    report = call(fit_report, config, batch_size=int(batch), max_seq_length=int(seq),
                  total_gb=total, doing="estimate the memory", default=None)
    if report is None:
        return
    st.markdown(f"**Fits this machine?** {fit_summary(report)}"
                + (f" · {report.params_m:,.1f} M parameters" if report.params_m else "")
                + (f" · budget {report.budget_gb:.1f} GB of {report.total_gb:.0f} GB RAM" if report.budget_gb else ""))
    st.dataframe(mt.fit_rows(report), hide_index=True, width="stretch")


# -- on this machine -------------------------------------------------------------------------

local_tab, hub_tab = st.tabs(["On this machine", "Hugging Face Hub"])

with local_tab:
    found = call(models, refresh, doing="look for models", default=[]) or []
    st.dataframe(mt.local_rows(found), hide_index=True, width="stretch")
    st.caption("Found in droidft's models folder, the Hugging Face cache and LM Studio's folder. "
               "Any other model folder works too: type it into the SFT form.")
    if found:
        labels = {m["path"]: mt.local_rows([m])[0]["Model"] for m in found}
        picked = st.selectbox("Model", list(labels), format_func=labels.get, key="models.local")
        chosen = next(m for m in found if m["path"] == picked)
        name = "demo" if chosen["source"] == "demo" else chosen["name"]
        st.caption(f"`{chosen['path']}`")
        cfg = call(read_model_config, chosen["path"], doing="read the model's config", default=None)
        if cfg:
            fits_panel(cfg, "models.local_fit")
        b1, b2 = st.columns([1, 3])
        if b1.button("Fine-tune this model", key="models.tune_local", type="primary", icon=":material/tune:"):
            _fine_tune(name)
        if chosen["source"] in ("hf-cache", "droidft"):
            with b2.popover("Remove", icon=":material/delete:", disabled=not allowed("delete"),
                            help=viewer_note("delete")):
                st.markdown(f"Delete **{name}** ({mt.fmt_bytes((chosen.get('size_mb') or 0) * 1e6)}) "
                            "from this disk?")
                if st.button("Delete", key="models.rm", type="primary") and permitted("delete"):
                    with attempt("remove the model"):
                        download.remove(name)
                        models(fresh=True)
                        st.rerun()

# -- the Hub ---------------------------------------------------------------------------------

with hub_tab:
    if hub.offline_switched_on():
        st.info(hub.offline_message(), icon=":material/cloud_off:")
    with st.form("models.search_form", border=False):
        c1, c2, c3, c4 = st.columns([3, 1, 1, 1], vertical_alignment="bottom")
        query = c1.text_input("Search the Hub", key="models.query", placeholder="e.g. qwen3 0.6b")
        sort = c2.selectbox("Sort by", list(hub.SORTS), key="models.sort")
        limit = c3.selectbox("Results", [50, 200, 1000], key="models.limit")
        mlx_only = c4.toggle("MLX-ready only", key="models.mlx", value=True,
                             help="Repos tagged for MLX, such as mlx-community's: they load as they are")
        searched = st.form_submit_button("Search", icon=":material/search:")
    if searched:
        try:
            result = hub.search_models(query, sort=sort, mlx_only=mlx_only, limit=limit)
            st.session_state["models.results"] = [m.to_dict() for m in result.models]
            st.session_state.pop("models.check", None)
        except hub.HubUnavailable as exc:
            st.session_state["models.results"] = None
            st.info(str(exc), icon=":material/cloud_off:")
        except hub.HubError as exc:
            st.error(str(exc), icon=":material/error:")
    results = st.session_state.get("models.results")
    if results is not None:
        if not results:
            st.info("No text-generation models match. Try fewer words, or switch off MLX-ready only.")
        else:
            st.dataframe(mt.hub_rows(results), hide_index=True, width="stretch",
                         column_config={"Downloads": st.column_config.NumberColumn(format="compact")})
            ids = [r["repo_id"] for r in results]
            repo = st.selectbox("Model", ids, key="models.hub_pick")
            if st.button("Check it", key="models.check_btn", icon=":material/fact_check:",
                         help="Asks the Hub for its files, sizes and config: is it trainable, does it fit"):
                try:
                    st.session_state["models.check"] = hub.check_repo(repo, with_config=True,
                                                                      deadline=hub.SEARCH_DEADLINE_S)
                except hub.HubError as exc:
                    st.session_state.pop("models.check", None)
                    (st.info if isinstance(exc, hub.HubUnavailable) else st.error)(str(exc))
            check = st.session_state.get("models.check")
            if check is not None and check.repo_id == repo:
                st.markdown(f"**{repo}** · {len(check.files)} files to download, "
                            f"{mt.fmt_bytes(check.download_bytes)} · licence {check.model.license or '-'}"
                            f" · gated: {mt.gated_label(check.model.gated)}")
                if check.problem:
                    st.error(check.problem, icon=":material/block:")
                else:
                    if check.model.gated and not hub.has_token():
                        st.warning(hub.gated_message(repo), icon=":material/lock:")
                    if check.config:
                        fits_panel(check.config, "models.hub_fit")
                    convert = False
                    if not check.model.quant_bits:
                        convert = st.toggle("Convert to MLX 4-bit after downloading", key="models.convert",
                                            help="mlx-lm's convert: a quarter of the memory, for QLoRA")
                    if st.button("Download", key="models.download", type="primary", icon=":material/download:",
                                 disabled=not allowed("download"), help=viewer_note("download")):
                        if permitted("download"):
                            with attempt("download this model"):
                                download.start(repo, quantize_bits=4 if convert else None, check=check)
                                st.rerun()
