"""Roles are enforced where actions happen, not by disabled buttons.

A viewer signed in on a LAN dashboard forces the value of every owner-only widget, as a
modified browser can (Streamlit before 1.61 accepted values for disabled widgets, and a
widget someone forgets to disable accepts them anywhere). Each time the engine must not be
called (no run row, no file, no process) and the page must say why."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from droidft import paths, security, store
from droidft import data as datasets
import helpers
from helpers import demo_sft

one_slot_held = helpers.one_slot_held  # a fixture

APP = Path(__file__).resolve().parent.parent / "app" / "Home.py"
TIMEOUT = 240
OWNER, VIEWER = "owner-secret-1", "viewer-secret-1"


@pytest.fixture
def lan(monkeypatch, demo_model):
    monkeypatch.setenv("DROIDFT_LAN", "1")
    security.set_password(OWNER, "owner")
    security.set_password(VIEWER, "viewer")


@pytest.fixture
def disabled_not_enforced(monkeypatch):
    """The server accepts a value for a disabled widget, as Streamlit < 1.61 did: the guard
    under test is droidft's own check, whatever Streamlit does."""
    from streamlit.runtime.state.session_state import SessionState

    original = SessionState.register_widget

    def register_widget(self, metadata, user_key):
        return original(self, dataclasses.replace(metadata, disabled=False), user_key)

    monkeypatch.setattr(SessionState, "register_widget", register_widget)


def signed_in(password: str, view: str = "views/home.py", **query) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    at.text_input[0].input(password)
    at.button[0].click().run()
    assert at.session_state["role"] in ("owner", "viewer"), [e.value for e in at.error]
    for key, value in query.items():
        at.query_params[key] = value
    at.switch_page(view).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def force(widget, value=True):
    """What a forged client sends: a value for a widget the page drew disabled (AppTest itself
    refuses to touch a disabled widget, as a browser does)."""
    widget._value = value
    return widget


def refused(at: AppTest, action: str) -> bool:
    shown = " ".join(str(e.value) for e in at.error)
    return f"Viewers cannot {action}" in shown and "Nothing was changed" in shown


def stopped_run_with_checkpoint(demo_model) -> str:
    """A stopped run whose adapter (random LoRA factors on the demo model) can be resumed."""
    from droidft.models.synthetic import random_lora_adapter

    rid = store.create_run(method="sft", config=demo_sft(iters=10, save_every=5).to_dict(),
                           model=str(demo_model), data="demo", name="stopped")
    adapter = random_lora_adapter(demo_model, paths.run_dir(rid) / "adapters", rank=4, seed=len(rid))
    store.update_run(rid, status="stopped", started_at=time.time() - 30, ended_at=time.time(),
                     adapter_path=str(adapter))
    store.add_artifact(kind="final_adapter", path=str(adapter), run_id=rid, step=5)
    return rid


def active_run() -> str:
    """A run its worker has not picked up yet (queued, no pid, inside the start-up grace)."""
    rid = store.create_run(method="sft", config=demo_sft().to_dict(), model="demo", data="demo", name="active")
    paths.run_dir(rid).mkdir(parents=True, exist_ok=True)
    return rid


def no_new_runs(before: set[str]) -> bool:
    return {r["id"] for r in store.list_runs()} == before


# -- every owner-only widget, forced by a viewer ------------------------------------------------------


def test_viewer_cannot_start_runs_from_home_sft_or_rl(lan, disabled_not_enforced):
    for view, key in (("views/home.py", "demo_start"), ("views/sft_setup.py", "sft.start"),
                      ("views/rl_setup.py", "rl.grpo.start")):
        at = signed_in(VIEWER, view)
        assert at.button(key=key).disabled, "the hint is still there"
        force(at.button(key=key)).run()
        assert refused(at, "start"), (view, [e.value for e in at.error])
        assert store.list_runs() == [], f"{view} started a run for a viewer"


def test_viewer_cannot_check_machines(lan, disabled_not_enforced, monkeypatch):
    from droidft import distributed

    calls = []
    monkeypatch.setattr(distributed, "check_hosts", lambda *a, **k: calls.append(a) or [])
    at = signed_in(VIEWER, "views/sft_setup.py")
    at.number_input(key="sft.ranks_per_host").set_value(2).run()
    force(at.button(key="sft.check_hosts")).run()
    assert refused(at, "check machines")
    assert calls == [], "ssh was run for a viewer"


def test_viewer_cannot_stop_resume_or_delete_from_monitor_and_sessions(lan, disabled_not_enforced, demo_model):
    stopped, running = stopped_run_with_checkpoint(demo_model), active_run()
    before = {r["id"] for r in store.list_runs()}
    stop_file = paths.run_dir(running) / "STOP"

    at = signed_in(VIEWER, "views/monitor.py", run=running)
    force(at.button(key="stop")).run()
    assert refused(at, "stop") and not stop_file.exists()
    at = signed_in(VIEWER, "views/monitor.py", run=stopped)
    force(at.button(key="resume")).run()
    assert refused(at, "resume") and no_new_runs(before)

    at = signed_in(VIEWER, "views/sessions.py", select=running)
    force(at.button(key="stop")).run()
    assert refused(at, "stop") and not stop_file.exists()
    at = signed_in(VIEWER, "views/sessions.py", select=stopped)
    force(at.button(key="resume")).run()
    assert refused(at, "resume") and no_new_runs(before)
    force(at.button(key="delete")).run()
    assert refused(at, "delete") and "pending_delete" not in at.session_state
    other = stopped_run_with_checkpoint(demo_model)
    before.add(other)
    at = signed_in(VIEWER, "views/sessions.py", select=f"{stopped},{other}")
    force(at.button(key="delete_many")).run()
    assert refused(at, "delete")
    # The confirmation dialog's own button, reached with a pending deletion in the session.
    at.session_state["pending_delete"] = [stopped, other]
    at.run()
    force(at.button(key="confirm_delete")).run()
    assert refused(at, "delete")
    assert no_new_runs(before) and paths.run_dir(stopped).exists(), "a viewer deleted a run"


def test_viewer_cannot_fuse_or_evaluate(lan, disabled_not_enforced, demo_model):
    a, b = stopped_run_with_checkpoint(demo_model), stopped_run_with_checkpoint(demo_model)
    at = signed_in(VIEWER, "views/fusion.py")
    assert set(at.multiselect(key="fus.adapters").value) == {f"run:{a}", f"run:{b}"}
    force(at.button(key="fus.go")).run()
    assert refused(at, "fuse")
    assert not (paths.home() / "fused").exists() and not store.artifacts(kind="fused_adapter")

    at = signed_in(VIEWER, "views/evaluate.py")
    force(at.button(key="ev.go")).run()
    assert refused(at, "evaluate")
    assert store.evaluations() == []


def test_viewer_cannot_upload_generate_or_split_data(lan, disabled_not_enforced):
    rows = "".join('{"text": "row %d"}\n' % i for i in range(20))
    at = signed_in(VIEWER, "views/data.py")
    at.file_uploader(key="data.upload").set_value(("mine.jsonl", rows.encode(), "application/jsonl")).run()
    force(at.button(key="data.save_upload")).run()
    assert refused(at, "upload")
    force(at.button(key="data.generate")).run()
    assert refused(at, "sample data")
    force(at.button(key="data.split")).run()
    assert refused(at, "split")
    assert list(datasets.datasets_dir().iterdir()) == [], "a viewer wrote a dataset"


def waiting_run(name: str) -> str:
    return store.create_run(method="sft", config=demo_sft().to_dict(), model="demo", data="demo",
                            name=name, enqueue=True)


def test_viewer_cannot_start_reorder_or_cancel_queued_runs(lan, disabled_not_enforced, one_slot_held):
    from droidft import queue

    first, second = waiting_run("first"), waiting_run("second")
    buttons = {"start_now": "start", "front": "reorder queue", "cancel": "stop"}
    for view, query, prefix in (("views/monitor.py", {"run": second}, "q"),
                                ("views/sessions.py", {"select": second}, "one"),
                                ("views/sessions.py", {}, f"q.{second}")):  # the queue panel
        at = signed_in(VIEWER, view, **query)
        for name, action in buttons.items():
            key = f"{prefix}.{name}"
            assert at.button(key=key).disabled, key
            force(at.button(key=key)).run()
            assert refused(at, action), (view, key, [e.value for e in at.error])
    assert list(queue.positions()) == [first, second], "a viewer reordered or emptied the queue"
    assert {r["status"] for r in store.list_runs()} == {"queued"} and store.get_run(second)["pid"] is None


def test_viewer_cannot_change_how_many_runs_train_at_once(lan, disabled_not_enforced, one_slot_held):
    from droidft import settings

    waiting_run("waits")
    at = signed_in(VIEWER, "views/sessions.py")
    assert at.toggle(key="q.auto").disabled and at.number_input(key="q.slots").disabled
    force(at.toggle(key="q.auto"), False)
    force(at.number_input(key="q.slots"), 4).run()
    assert at.button(key="q.save").disabled
    force(at.button(key="q.save")).run()
    assert refused(at, "change settings"), [e.value for e in at.error]
    assert settings.get("max_concurrent_runs") == 1


def test_viewer_cannot_start_a_sweep_or_stop_now(lan, disabled_not_enforced, one_slot_held):
    import os

    from droidft import jobs

    at = signed_in(VIEWER, "views/sft_setup.py")
    assert at.button(key="sft.sweep.start").disabled
    force(at.button(key="sft.sweep.start")).run()
    assert refused(at, "start"), [e.value for e in at.error]
    assert store.sweeps() == [] and store.list_runs() == [], "a viewer queued a sweep"

    rid = active_run()  # started (not waiting in the queue), asked to stop long ago
    stop_file = paths.run_dir(rid) / "STOP"
    stop_file.write_text("stopped on request")
    past = time.time() - jobs.STOP_GRACE_S - 60
    os.utime(stop_file, (past, past))
    at = signed_in(VIEWER, "views/monitor.py", run=rid)
    assert at.button(key="stop_now").disabled
    force(at.button(key="stop_now")).run()
    assert refused(at, "stop"), [e.value for e in at.error]
    assert store.get_run(rid)["status"] in jobs.ACTIVE, "a viewer ended a run"


def test_viewer_cannot_import_data_or_export_a_run(lan, disabled_not_enforced, demo_model):
    """Issue 12's Import tab and issue 13's Export step, forced by a viewer."""
    source = datasets.datasets_dir().parent / "mine.csv"  # inside the home: an allowed path
    source.write_text("prompt,completion\n" + "".join(f"q{i},a{i}\n" for i in range(20)))
    at = signed_in(VIEWER, "views/data.py")
    at.radio(key="imp.kind").set_value("file")
    at.text_input(key="imp.path").input(str(source)).run()
    force(at.button(key="imp.load")).run()
    assert refused(at, "import")
    assert "imp.source" not in at.session_state, "a viewer's Load read the file"
    assert list(datasets.datasets_dir().iterdir()) == []

    rid = stopped_run_with_checkpoint(demo_model)
    at = signed_in(VIEWER, "views/sessions.py", select=rid)
    force(at.button(key=f"exp.{rid}.go")).run()
    assert refused(at, "export")
    assert store.list_exports() == [], "a viewer started an export"


def test_the_owner_still_can(lan, demo_model):
    """The same guard lets the owner through (the Sessions delete, end to end)."""
    rid = stopped_run_with_checkpoint(demo_model)
    at = signed_in(OWNER, "views/sessions.py", select=rid)
    at.button(key="delete").click().run()
    at.button(key="confirm_delete").click().run()
    assert not at.exception and store.get_run(rid) is None


def test_streamlit_itself_discards_a_forged_press_of_a_disabled_button(lan):
    """Why pyproject asks for streamlit>=1.61: from that release the server drops a value
    sent for a disabled widget (SessionState.register_widget), so the handler never runs."""
    at = signed_in(VIEWER, "views/home.py")
    force(at.button(key="demo_start")).run()
    assert store.list_runs() == [] and not refused(at, "start"), "the press never reached the page"


# -- sign-in state: expiry, changed passwords, sign-out, strangers in local mode -------------------------------


def test_sign_out_expiry_and_a_changed_password_end_a_sign_in(lan, monkeypatch):
    at = signed_in(OWNER)
    at.button(key="sign_out").click().run()
    assert "role" not in at.session_state
    assert any("You signed out" in i.value for i in at.info)

    at = signed_in(OWNER)
    security.set_password("a new owner password", "owner")
    at.run()
    assert "role" not in at.session_state
    assert any("password was changed" in i.value for i in at.info)
    assert not [b for b in at.button if b.key == "demo_start"], "the sign-in form, not the page"

    at = signed_in("a new owner password")
    monkeypatch.setenv("DROIDFT_SESSION_HOURS", "0.5")
    at.session_state["signed_in_at"] = time.time() - 31 * 60
    at.run()
    assert "role" not in at.session_state and any("expired" in i.value for i in at.info)


def test_local_mode_treats_other_machines_as_signed_out(monkeypatch, demo_model):
    """`streamlit run app/Home.py --server.address 0.0.0.0` without --lan: this machine is the
    owner, anyone else sees a refusal and nothing usable."""
    import streamlit as st

    monkeypatch.delenv("DROIDFT_LAN", raising=False)
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    assert at.button(key="demo_start") and not at.error
    monkeypatch.setattr(type(st.context), "ip_address", property(lambda self: "192.168.1.50"))
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    assert any("not shared on the network" in e.value for e in at.error)
    assert not [b for b in at.button if b.key == "demo_start"]
    with pytest.raises(security.AccessDenied, match="not shared"):
        security.require(None, "start")


def test_the_streamlit_config_listens_on_this_machine_only():
    tomllib = pytest.importorskip("tomllib")
    config = tomllib.loads((APP.parent.parent / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "127.0.0.1"
    assert config["server"]["enableXsrfProtection"] is True


def test_streamlit_floor_is_the_release_that_enforces_disabled():
    tomllib = pytest.importorskip("tomllib")
    from packaging.version import Version

    deps = tomllib.loads((APP.parent.parent / "pyproject.toml").read_text())["project"]["dependencies"]
    floor = next(d for d in deps if d.startswith("streamlit"))
    assert Version(floor.split(">=")[1]) >= Version("1.61")
    import streamlit

    assert Version(streamlit.__version__) >= Version("1.61")


# -- paths typed into the forms ------------------------------------------------------------------------------


def test_typed_paths_outside_the_allowed_folders_are_not_read(lan, monkeypatch, tmp_path):
    """Even the owner's form does not read a file outside the allowed folders to check it:
    not the function names of a reward file, not the hosts of a hostfile."""
    monkeypatch.setenv("DROIDFT_ALLOW_CUSTOM_CODE", "1")
    reward_file = tmp_path / "rewards.py"
    reward_file.write_text("def secret_reward_name(prompts, completions, answer, types=None):\n    return []\n")
    hostfile = tmp_path / "hosts.json"
    hostfile.write_text('[{"ssh": "secret-host!", "ips": []}]')

    at = signed_in(OWNER, "views/rl_setup.py")
    at.text_input(key="rl.grpo.reward_file").input(str(reward_file)).run()
    at.run()  # the reward list reads the file named on the previous run
    shown = " ".join(str(e.value) for e in at.error)
    assert "outside the folders" in shown, shown
    assert "secret_reward_name" not in at.multiselect(key="rl.grpo.rewards").options
    assert at.button(key="rl.grpo.start").disabled

    at = signed_in(OWNER, "views/sft_setup.py")
    at.text_input(key="sft.hostfile").input(str(hostfile)).run()
    shown = " ".join(str(e.value) for e in at.error)
    assert "outside the folders" in shown and "secret-host" not in shown, shown
