"""The Export step on Sessions, Monitor and Fusion under Streamlit's AppTest: a real export job
from a real run, its files listed for download, and the owner-only check in the handler."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from droidft import jobs, store
from droidft.export import jobs as export_jobs
from helpers import demo_sft

APP = Path(__file__).resolve().parent.parent / "app" / "Home.py"
TIMEOUT = 240


@pytest.fixture(scope="module")
def run_home(tmp_path_factory, demo_model):
    home = tmp_path_factory.mktemp("export-pages")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DROIDFT_HOME", str(home))
        rid = jobs.start(demo_sft(iters=6, steps_per_report=2, steps_per_eval=3, save_every=3, val_batches=1,
                                  max_seq_length=128, name="exportable"))
        assert jobs.wait(rid, timeout=900)["status"] == "completed"
    return {"home": home, "run_id": rid}


@pytest.fixture
def run_id(run_home, monkeypatch):
    monkeypatch.setenv("DROIDFT_HOME", str(run_home["home"]))
    return run_home["run_id"]


def page(view: str, **query) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    for k, v in query.items():
        at.query_params[k] = v
    at.switch_page(view).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_sessions_exports_a_run_to_gguf_and_modelfile_and_lists_the_files(run_id):
    at = page("views/sessions.py", select=run_id)
    key = f"exp.{run_id}"
    at.text_input(key=f"{key}.name").input("droid-page")
    at.button(key=f"{key}.go").click().run()
    assert not at.exception
    job_id = at.session_state[f"{key}.job"]
    job = export_jobs.wait(job_id, timeout=600)
    assert job["status"] == "completed", job.get("error")
    at.run()
    shown = " ".join(str(m.value) for m in at.markdown)
    assert "`droid-page-f16.gguf`" in shown and "`Modelfile`" in shown and "`README.md`" in shown
    assert len(at.get("download_button")) >= 3 + 2  # the three files, plus the run's config and adapter
    assert any("Written to" in str(s.value) for s in at.success)
    art = store.artifacts(kind="export_ollama")[-1]
    assert art["run_id"] == run_id and Path(art["path"], "droid-page-f16.gguf").is_file()


def test_monitor_offers_export_for_a_finished_run(run_id):
    at = page("views/monitor.py", run=run_id)
    assert at.button(key=f"exp.{run_id}.go")
    assert any(e.label == "Export" for e in at.expander)


def test_fusion_offers_export_of_the_fused_result(run_id, tmp_path, demo_model):
    from droidft import fusion

    from droidft.models.synthetic import random_lora_adapter

    res = fusion.fuse([run_id], [1.0], out=tmp_path / "fused", to="model")
    # the page asks for two adapters on one base before it shows anything: a second, recorded run
    rid = store.create_run(method="sft", config=demo_sft().to_dict(), model=store.get_run(run_id)["model"],
                           data="demo", name="other")
    other = random_lora_adapter(demo_model, tmp_path / "other", rank=4)
    store.update_run(rid, status="completed", adapter_path=str(other))
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    at.session_state["fus.result"] = res.to_dict()
    at.switch_page("views/fusion.py").run()
    assert not at.exception
    assert at.button(key="fus.export.go"), [str(i.value) for i in at.info]
    group = next(g for g in at.get("button_group") if "Export to" in str(g.proto))
    assert "PEFT adapter" not in str(group.proto) and "Ollama" in str(group.proto)  # a model has no PEFT form


def test_viewers_see_a_disabled_export_and_the_engine_refuses_them(run_id, monkeypatch):
    """The disabled button is the hint; the guard is `jobs.start(role=...)`, which the button's
    handler calls with the session's role (AppTest cannot press a disabled button, and a stale
    click of an owner-drawn button never reaches a handler drawn for a viewer)."""
    from droidft import security

    monkeypatch.setenv("DROIDFT_LAN", "1")
    security.set_password("owner-secret-1", "owner")
    security.set_password("viewer-secret-1", "viewer")
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    at.text_input[0].input("viewer-secret-1")
    at.button[0].click().run()
    assert at.session_state["role"] == "viewer"
    at.query_params["select"] = run_id
    at.switch_page("views/sessions.py").run()
    assert at.button(key=f"exp.{run_id}.go").disabled
    before = len(store.list_exports())
    for role, target in (("viewer", "gguf"), ("viewer", "hub"), (None, "peft")):
        with pytest.raises(security.AccessDenied):
            export_jobs.start(run_id, target, role=role)
    assert len(store.list_exports()) == before
