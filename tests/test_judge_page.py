"""The human judge in the Monitor (AppTest): a real online DPO run waits on two pairs, the
page shows them side by side, a choice goes back to the trainer and the run goes on. On a
LAN a viewer may judge only if the run allows it, checked where the click is handled."""

from streamlit.testing.v1 import AppTest

from droidft import jobs, judges, store
from droidft.config import LoraParameters
from droidft.methods.online import OnlineDPOConfig
from helpers import wait_for
from test_pages import APP, TIMEOUT, assert_clean, texts


def monitor(run_id: str, role: str | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    if role:
        at.session_state["role"] = role
    at.run()
    at.query_params["run"] = run_id
    at.switch_page("views/monitor.py").run()
    assert_clean(at)
    return at


def buttons(at: AppTest, label: str) -> list:
    return [b for b in at.button if b.label == label]


def test_monitor_shows_pairs_and_a_choice_goes_back_to_the_run(demo_model, monkeypatch):
    run_id = jobs.start(OnlineDPOConfig(
        model="demo", data="demo", iters=1, batch_size=2, max_completion_length=6, steps_per_report=1,
        val_batches=1, judge="human", human_timeout=300, human_fallback="reward",
        lora_parameters=LoraParameters(rank=4, scale=10.0)))
    try:
        pending = wait_for(lambda: len(judges.open_pairs(run_id)) == 2 and judges.open_pairs(run_id), timeout=300)
        # a viewer on a LAN sees the pairs but may not judge this run: disabled, and refused if clicked anyway
        monkeypatch.setenv("DROIDFT_LAN", "1")
        at = monitor(run_id, role="viewer")
        assert "**Judge the answers** · which reply is better?" in texts(at, "markdown")
        assert any("Only the owner judges" in c for c in texts(at, "caption"))
        a_buttons = buttons(at, "A is better")
        assert len(a_buttons) == 2 and all(b.disabled for b in a_buttons)
        # the handler checks the role itself: a page drawn for the owner, clicked as a viewer
        # (a forged event for a disabled button looks the same to the server)
        at = monitor(run_id, role="owner")
        at.session_state["role"] = "viewer"
        buttons(at, "A is better")[0].click().run()
        assert any("Only the owner can judge" in e for e in texts(at, "error"))
        assert {r["status"] for r in store.judgments(run_id=run_id)} == {"pending"}

        # the owner: both completions shown side by side, one click per pair
        at = monitor(run_id, role="owner")
        shown = " ".join(texts(at, "text"))
        for row in pending:
            assert row["completion_a"].strip()[:20] in shown and row["completion_b"].strip()[:20] in shown
        assert any(pending[0]["prompt"] in m for m in texts(at, "markdown"))
        buttons(at, "B is better")[0].click().run()
        assert_clean(at)
        first = store.judgments(ids=[pending[0]["id"]])[0]
        assert (first["status"], first["choice"], first["decided_by"]) == ("decided", 1, "owner")
        assert len(buttons(at, "B is better")) == 1  # the decided pair is gone from the panel
        buttons(at, "A is better")[0].click().run()
        assert store.judgments(ids=[pending[1]["id"]])[0]["choice"] == 0

        run = jobs.wait(run_id, timeout=300)
        assert run["status"] == "completed", run.get("error")
        verdicts = {(s["completion"], s["meta"]["verdict"]) for s in store.samples(run_id) if s["meta"]["judge"] == "human"}
        assert (pending[0]["completion_b"], "chosen") in verdicts and (pending[1]["completion_a"], "chosen") in verdicts
        at = monitor(run_id, role="owner")  # finished: the panel is gone, the judged samples are listed
        assert not buttons(at, "A is better")
        assert any("chosen by the human judge" in c for c in texts(at, "caption"))
    finally:
        if store.get_run(run_id)["status"] in jobs.ACTIVE:
            jobs.stop(run_id)
            jobs.wait(run_id, timeout=120)


def test_viewers_may_judge_when_the_run_allows_it(demo_model, monkeypatch):
    """A stand-in worker (a process whose command line names the run, as the reaper checks)
    keeps a run with one open pair alive; the run lets viewers judge."""
    import subprocess
    import sys
    import time

    run_id = store.create_run(method="online_dpo", config=OnlineDPOConfig(judge="human", viewers_may_judge=True).to_dict(),
                              model="demo", data="demo", run_id="r-lan")
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", run_id])
    try:
        store.update_run(run_id, status="running", started_at=time.time(), heartbeat_at=time.time(), pid=worker.pid)
        ids = store.add_judgments(run_id, 1, [("Name three fruits.", "apple, fig and kiwi.", "I do not know.")],
                                  time.time() + 300)
        monkeypatch.setenv("DROIDFT_LAN", "1")
        at = monitor(run_id, role="viewer")
        assert not any("Only the owner judges" in c for c in texts(at, "caption"))
        buttons(at, "Can't tell")[0].click().run()
        assert_clean(at)
        row = store.judgments(ids=ids)[0]
        assert (row["status"], row["choice"], row["decided_by"]) == ("skipped", None, "viewer")
    finally:
        worker.kill()
        worker.wait()
