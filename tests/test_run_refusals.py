"""What the engine refuses to do with a run, and what it notices about a run's worker: each
refusal is a RunError that says why and leaves every run as it was."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from droidft import jobs, paths, store
from helpers import demo_sft, wait_for


def recorded(status: str, *, iters: int = 10, pid: int | None = None, created_ago: float = 0.0,
             final_step: int | None = None) -> str:
    """A run row as a worker (or a crash) leaves it, with its adapter file when `final_step`."""
    rid = store.create_run(method="sft", config=demo_sft(iters=iters, save_every=5).to_dict(),
                           model="demo", data="demo", name=status)
    now = time.time()
    store.update_run(rid, status=status, pid=pid, created_at=now - created_ago,
                     ended_at=None if status in jobs.ACTIVE else now)
    paths.run_dir(rid).mkdir(parents=True, exist_ok=True)
    if final_step is not None:
        adapters = paths.run_dir(rid) / "adapters"
        adapters.mkdir()
        (adapters / "adapters.safetensors").write_bytes(b"weights")
        store.add_artifact(kind="final_adapter", path=str(adapters), run_id=rid, step=final_step)
    return rid


def unchanged(rid: str, status: str) -> None:
    assert store.get_run(rid)["status"] == status
    assert [r["id"] for r in store.list_runs() if r.get("parent_id") == rid] == []


def test_resume_refuses_an_active_run_a_run_without_checkpoint_and_a_finished_one():
    active = recorded("queued")  # inside the start-up grace: not reaped
    with pytest.raises(jobs.RunError, match="still queued; stop it before resuming"):
        jobs.resume(active)
    unchanged(active, "queued")

    early = recorded("failed")
    with pytest.raises(jobs.RunError, match="saved no checkpoint"):
        jobs.resume(early)
    unchanged(early, "failed")

    done = recorded("stopped", iters=10, final_step=10)
    with pytest.raises(jobs.RunError, match="already trained all 10 iterations"):
        jobs.resume(done)
    unchanged(done, "stopped")
    assert len(store.list_runs()) == 3


def test_delete_refuses_an_active_run_and_stop_a_finished_one():
    active = recorded("queued")
    with pytest.raises(jobs.RunError, match="stop it before deleting"):
        jobs.delete(active)
    assert store.get_run(active) and paths.run_dir(active).is_dir()

    finished = recorded("completed")
    with pytest.raises(jobs.RunError, match="already completed; nothing to stop"):
        jobs.stop(finished)
    assert not (paths.run_dir(finished) / "STOP").exists()
    unchanged(finished, "completed")


def test_the_reaper_waits_out_the_start_up_grace_then_fails_a_queued_run():
    starting = recorded("queued", created_ago=jobs.STARTUP_GRACE_S - 30)
    stale = recorded("queued", created_ago=jobs.STARTUP_GRACE_S + 30)
    assert jobs.reap() == [stale]
    assert store.get_run(starting)["status"] == "queued"
    run = store.get_run(stale)
    assert run["status"] == "failed" and "died" in run["error"]


def test_the_reaper_sees_a_reused_pid_is_not_the_worker():
    """A worker that died and whose pid now belongs to another live process is reaped."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        rid = recorded("running", pid=other.pid)
        assert jobs.pid_alive(other.pid) and not jobs.pid_alive(other.pid, rid)
        assert jobs.reap() == [rid]
        assert store.get_run(rid)["status"] == "failed"
        assert other.poll() is None, "the unrelated process is left alone"
    finally:
        other.kill()
        other.wait()


def test_a_worker_alive_but_silent_is_noticed(demo_model, monkeypatch, cli):
    """A worker paused (SIGSTOP) beats no heartbeat: the engine says so, the Monitor and
    `droidft show` show it, and nothing reaps it while its process lives."""
    from streamlit.testing.v1 import AppTest

    rid = jobs.start(demo_sft(iters=100000, steps_per_report=5, steps_per_eval=100000, save_every=100000,
                              val_batches=2, max_seq_length=128))
    pid = None
    try:
        wait_for(lambda: store.metrics(rid, names=["train_loss"]), timeout=300)
        pid = store.get_run(rid)["pid"]
        monkeypatch.setenv("DROIDFT_SILENT_AFTER_S", "3")
        assert jobs.silence(jobs.get(rid)) is None, "a reporting worker is not silent"
        os.kill(pid, signal.SIGSTOP)
        note = wait_for(lambda: jobs.silence(jobs.get(rid)), timeout=60)
        assert f"pid {pid}" in note and "alive but has not reported" in note and "hung or paused" in note
        assert jobs.reap() == [] and store.get_run(rid)["status"] == "running"

        app = paths.REPO_ROOT / "app" / "Home.py"
        at = AppTest.from_file(str(app), default_timeout=240).run()
        at.query_params["run"] = rid
        at.switch_page("views/monitor.py").run()
        assert any("alive but has not reported" in w.value for w in at.warning), [w.value for w in at.warning]
        shown = cli("show", rid)
        assert "warning" in shown.stdout and f"pid {pid}" in shown.stdout, shown.stdout

        os.kill(pid, signal.SIGCONT)
        wait_for(lambda: jobs.silence(jobs.get(rid)) is None, timeout=60)
    finally:
        if pid:
            os.kill(pid, signal.SIGCONT)
        jobs.stop(rid)
        assert jobs.wait(rid, timeout=300)["status"] == "stopped"
