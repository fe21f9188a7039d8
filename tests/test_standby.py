"""The standby worker (droidft/standby.py): a worker started ahead of its run with its imports
done. It must train a run exactly as a fresh worker does, refuse what it cannot serve (another
environment, changed code), look alive to the reaper, and never outlive its dashboard."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import demo_sft, wait_for


@pytest.fixture
def standby_on(monkeypatch):
    """Standbys switched on for this test; any left waiting are ended afterwards."""
    from droidft import standby

    monkeypatch.setenv("DROIDFT_STANDBY", "1")
    yield standby
    pid = standby.ready()
    if pid:
        os.kill(pid, signal.SIGKILL)


def start_standby(standby) -> int:
    standby._ensure_if_idle()
    return wait_for(standby.ready, timeout=180, poll=0.3)


def losses(run_id: str) -> list[tuple[int, float]]:
    from droidft import store

    return [(r["step"], r["value"]) for r in store.metrics(run_id, names=["train_loss", "val_loss"])]


def test_a_waiting_standby_trains_the_next_run_exactly_as_a_fresh_worker(demo_model, standby_on):
    from droidft import jobs, queue

    config = demo_sft(iters=8, steps_per_report=2, steps_per_eval=4, val_batches=2, save_every=4)
    fresh = jobs.wait(jobs.start(config), timeout=600)  # no standby waits yet: a fresh worker
    assert fresh["status"] == "completed", fresh.get("error")

    pid = start_standby(standby_on)
    assert pid != fresh["pid"]
    run_id = jobs.start(config)
    running = jobs.get(run_id)
    assert running["pid"] == pid  # handed to the standby, not a new process
    assert queue.pid_alive(pid, run_id)  # the reaper sees the run's worker, not a reused pid
    assert standby_on.ready() is None  # it no longer waits: the next Start gets another
    run = jobs.wait(run_id, timeout=600)
    assert run["status"] == "completed", run.get("error")
    assert losses(run_id) == losses(fresh["id"])  # the same training, number for number
    run_dir = Path(os.environ["DROIDFT_HOME"]) / "runs" / run_id
    assert f"worker {pid} started" in (run_dir / "worker.log").read_text()
    assert "mlx_lm.lora" in (run_dir / "stdout.log").read_text()  # the trainer's output, in the run's log
    assert (Path(run["adapter_path"]) / "adapters.safetensors").exists()


def test_a_start_while_the_standby_imports_waits_for_it(demo_model, standby_on):
    """Pressed right after the dashboard opened: the standby is still importing. A fresh
    worker would import from scratch beside it on the same cores; the Start waits for it."""
    from droidft import jobs

    standby_on._ensure_if_idle()
    wait_for(standby_on._starting, timeout=60, poll=0.02)  # it has the lock: importing (> 1 s)
    assert standby_on.ready() is None
    run_id = jobs.start(demo_sft(iters=2, steps_per_report=1, steps_per_eval=100, val_batches=1))
    pid = jobs.get(run_id)["pid"]
    assert standby_on.adopted(pid, run_id)
    assert jobs.wait(run_id, timeout=600)["status"] == "completed"


def test_a_standby_refuses_another_environment_and_changed_code(demo_model, standby_on):
    from droidft import blas, jobs, store

    pid = start_standby(standby_on)
    env, _ = blas.worker_env("auto")
    assert standby_on.take("some-run", {**env, "HF_ENDPOINT": "http://elsewhere"}) is None
    assert standby_on.take("../../elsewhere", env) is None  # a run id is a folder name, never a path
    assert not (Path(os.environ["DROIDFT_HOME"]).parent / "elsewhere").exists()
    assert standby_on.ready() == pid  # refused, still waiting

    source = Path(standby_on.__file__)
    before = source.stat()
    try:
        os.utime(source, (before.st_atime, before.st_mtime + 10))  # droidft changed on disk
        assert standby_on.take("some-run", env) is None
    finally:
        os.utime(source, ns=(before.st_atime_ns, before.st_mtime_ns))
    wait_for(lambda: standby_on.ready() is None, timeout=30)  # a stale standby goes away
    # and a Start then gets a fresh worker, as without a standby
    run_id = jobs.start(demo_sft(iters=2, steps_per_report=1, steps_per_eval=100, val_batches=1))
    assert jobs.get(run_id)["pid"] != pid
    assert jobs.wait(run_id, timeout=600)["status"] == "completed"
    assert store.get_run(run_id)["pid"] != pid


def test_a_standby_leaves_with_its_dashboard_and_only_one_waits(tmp_path):
    env = dict(os.environ, DROIDFT_STANDBY="1")
    starter = ("from droidft import standby; standby._ensure_if_idle(); import time; "
               "time.sleep(float(__import__('sys').argv[1]))")
    # a "dashboard" that stays while its standby gets ready, and a second one asking too
    first = subprocess.Popen([sys.executable, "-c", starter, "600"], env=env)
    try:
        from droidft import standby

        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("DROIDFT_STANDBY", "1")
            pid = wait_for(standby.ready, timeout=180, poll=0.3)
            subprocess.run([sys.executable, "-c", starter, "0"], env=env, check=True, timeout=60)
            assert standby.ready() == pid  # the second dashboard found it waiting: no second one
            first.kill()
            first.wait()
            wait_for(lambda: not _alive(pid), timeout=60)  # its dashboard gone, it goes too
            assert standby.ready() is None
            assert not standby.socket_path().exists()
    finally:
        first.kill()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_switched_off_nothing_waits_and_starts_stay_fresh(demo_model, monkeypatch):
    from droidft import standby

    monkeypatch.setenv("DROIDFT_STANDBY", "0")
    standby.keep_ready(every=0)
    assert standby.take("any-run", dict(os.environ)) is None
    assert not standby.socket_path().exists()
