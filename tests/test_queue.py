"""The run queue with real workers: one slot means one run at a time, in order; the queue
survives the process that started it and a SIGKILLed worker; reorder, cancel, start now;
a lock keeps two processes from taking one slot; other jobs can hold slots too."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from droidft import jobs, queue, settings, store
from droidft.config import LoraParameters
from helpers import demo_sft, stop_all, wait_for


def tiny(**overrides):
    """A real run of a few seconds (most of it the worker's start-up)."""
    return demo_sft(**dict(iters=6, steps_per_report=2, steps_per_eval=3, save_every=3, val_batches=1,
                           max_seq_length=128, lora_parameters=LoraParameters(rank=2, scale=10.0))
                    | overrides)


def endless(**overrides):
    return tiny(**dict(iters=100000, steps_per_eval=100000, save_every=100000) | overrides)


class Poller:
    """Reads the runs' statuses from the store every 50 ms (without reaping: only the
    workers themselves start the next run) and keeps the most runs seen running at once.
    One query per poll: reading the runs one by one could see run A still running and, a
    read later, run B already started by A's worker on its way out."""

    def __init__(self, run_ids):
        self.run_ids, self.max_running, self.polls, self.errors = run_ids, 0, 0, []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def loop(self):
        while not self.done.is_set():
            try:
                runs = [r for r in store.list_runs() if r["id"] in self.run_ids]  # one snapshot
                live = [r for r in runs if r["status"] == "running"
                        or (r["status"] == "queued" and r.get("queue_order") is None)]
                self.max_running = max(self.max_running, len(live))
                self.polls += 1
            except Exception as exc:  # noqa: BLE001
                self.errors.append(repr(exc))
            time.sleep(0.05)

    def stop(self):
        self.done.set()
        self.thread.join()


def test_five_runs_with_one_slot_run_one_at_a_time_in_order(demo_model):
    settings.set("max_concurrent_runs", 1)
    ids = [jobs.start(tiny(name=f"run {i}")) for i in range(5)]
    poller = Poller(ids)
    try:
        assert list(queue.positions()) == ids[1:], "the first starts, four wait in order"
        entries = queue.entries()
        assert [e["position"] for e in entries] == [1, 2, 3, 4]
        starts = [e["estimated_start"] for e in entries]
        assert all(s is not None for s in starts) and starts == sorted(starts)
        # the test never reaps or advances: each finishing worker starts the next
        wait_for(lambda: all(store.get_run(r)["status"] in jobs.TERMINAL for r in ids), timeout=900)
    finally:
        poller.stop()
        stop_all()
    assert not poller.errors, poller.errors[:3]
    assert poller.polls > 50 and poller.max_running == 1
    runs = [store.get_run(r) for r in ids]
    assert [r["status"] for r in runs] == ["completed"] * 5, [r.get("error") for r in runs]
    for earlier, later in zip(runs, runs[1:]):
        assert later["started_at"] >= earlier["ended_at"], "in order, never overlapping"
        assert store.metrics(later["id"], names=["train_loss"])


def test_queue_survives_a_dashboard_restart_and_a_sigkilled_worker(demo_model, tmp_path):
    settings.set("max_concurrent_runs", 1)
    # the "dashboard" starts three runs and exits, as a restarted server does
    code = ("import sys; sys.path.insert(0, 'tests'); from droidft import jobs; from test_queue import endless, tiny;"
            "print(jobs.start(endless(name='first', save_every=4)));"
            "print(jobs.start(endless(name='second')));"
            "print(jobs.start(tiny(name='third')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=str(jobs.paths.REPO_ROOT))
    assert out.returncode == 0, out.stderr
    first, second, third = out.stdout.split()
    try:
        wait_for(lambda: store.get_run(first)["status"] == "running", timeout=300)
        assert queue.positions() == {second: 1, third: 2}
        wait_for(lambda: store.artifacts(first, kind="checkpoint"), timeout=300)
        os.kill(store.get_run(first)["pid"], signal.SIGKILL)
        time.sleep(1.0)
        assert store.get_run(second)["queue_order"] is not None, "nobody has noticed the death yet"
        jobs.list_runs()  # any page or CLI call reaps the dead worker and starts the next run
        assert store.get_run(first)["status"] == "failed"
        assert store.get_run(second)["queue_order"] is None and queue.positions() == {third: 1}
        wait_for(lambda: store.get_run(second)["status"] == "running", timeout=300)
        jobs.stop(second)  # its worker ends, and on its way out starts the third
        wait_for(lambda: store.get_run(third)["status"] in jobs.TERMINAL, timeout=600)
        assert store.get_run(second)["status"] == "stopped"
        assert store.get_run(third)["status"] == "completed", store.get_run(third).get("error")
    finally:
        stop_all()


def test_reorder_cancel_and_start_now(demo_model):
    settings.set("max_concurrent_runs", 1)
    a = jobs.start(endless(name="a"))
    b, c, d = (jobs.start(endless(name=n)) for n in "bcd")
    try:
        assert list(queue.positions()) == [b, c, d]
        assert queue.move(d, 1) == 1
        assert list(queue.positions()) == [d, b, c]
        queue.move(b, 99)  # clamped to the end
        assert list(queue.positions()) == [d, c, b]
        jobs.stop(c)  # a waiting run leaves the queue without starting
        run = store.get_run(c)
        assert run["status"] == "stopped" and run["pid"] is None and "queue" in jobs.end_reason(run)
        assert list(queue.positions()) == [d, b]
        queue.start_now(b)  # past the one slot
        wait_for(lambda: store.get_run(b)["status"] == "running", timeout=300)
        wait_for(lambda: store.get_run(a)["status"] == "running", timeout=300)
        assert list(queue.positions()) == [d], "two run past one slot; d still waits"
        with pytest.raises(queue.QueueError, match="not waiting"):
            queue.move(a, 1)
        jobs.stop(a)
        jobs.wait(a, timeout=300)
        assert list(queue.positions()) == [d], "b still holds the only slot"
        jobs.stop(b)
        wait_for(lambda: store.get_run(d)["status"] == "running", timeout=300)
    finally:
        stop_all()


def test_processes_racing_for_the_last_slot_start_exactly_one_run(demo_model):
    """Many processes call advance() at the same instant (as workers ending together do)."""
    settings.set("max_concurrent_runs", 1)
    store.init()
    ids = [store.create_run(method="sft", config=tiny(name=f"r{i}").to_dict(), model=str(demo_model),
                            data="demo", name=f"r{i}", enqueue=True) for i in range(3)]
    at = time.time() + 2.0
    code = ("import time; from droidft import queue; time.sleep(max(0, %r - time.time()));"
            "print(len(queue.advance()))") % at
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              cwd=str(jobs.paths.REPO_ROOT)) for _ in range(4)]
    try:
        started = [int(p.communicate(timeout=120)[0].strip() or 0) for p in procs]
        assert sum(started) == 1, started
        assert len(queue.positions()) == 2
        assert sum(store.get_run(r)["queue_order"] is None for r in ids) == 1
    finally:
        stop_all()


def test_other_jobs_hold_slots_through_the_lease_api(demo_model):
    settings.set("max_concurrent_runs", 1)
    lease = queue.acquire("export", "gguf of a run", wait=False)
    assert lease is not None and queue.leases()[0]["kind"] == "export"
    assert queue.acquire("download", wait=False) is None, "the only slot is held"
    rid = jobs.start(tiny(name="after the export"))
    try:
        assert queue.positions() == {rid: 1}, "the run waits for the export"
        queue.release(lease)  # gives the slot back and starts the run
        assert queue.positions() == {}
        assert jobs.wait(rid, timeout=300)["status"] == "completed"
        with queue.slot("export", "another"):
            assert len(queue.leases()) == 1
        assert queue.leases() == []
    finally:
        stop_all()


def test_a_dead_lease_holder_frees_its_slot(tmp_path):
    settings.set("max_concurrent_runs", 1)
    code = "from droidft import queue; print(queue.acquire('download', 'a model', wait=False))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=str(jobs.paths.REPO_ROOT))
    assert out.stdout.strip().endswith(".lease")
    assert queue.leases() == [] and queue.busy_slots() == 0  # its process is gone


def test_slots_setting_and_the_automatic_default(monkeypatch):
    assert settings.get("max_concurrent_runs") is None
    monkeypatch.setattr(queue, "machine", lambda: {"cores": 2, "memory_gb": 24.0})
    assert queue.auto_slots()[0] == 1, "a 2-core machine trains one run at a time"
    monkeypatch.setattr(queue, "machine", lambda: {"cores": 16, "memory_gb": 64.0})
    monkeypatch.setattr(queue, "run_memory_gb", lambda run: 0.5)
    assert queue.auto_slots({"id": "x"})[0] == 4
    monkeypatch.setattr(queue, "run_memory_gb", lambda run: 20.0)
    count, why = queue.auto_slots({"id": "x"})
    assert count == 2 and "RAM" in why, "the memory estimate decides when it is the tighter limit"
    assert queue.slots() == 4
    settings.set("max_concurrent_runs", "3")
    assert queue.slots() == 3 and queue.slot_info()["reason"] == "set by the owner"
    assert json.loads((jobs.paths.home() / "settings.json").read_text()) == {"max_concurrent_runs": 3}
    settings.set("max_concurrent_runs", "auto")
    assert settings.get("max_concurrent_runs") is None
    for bad in ("0", "-1", "lots", "65"):
        with pytest.raises(settings.SettingsError, match="max_concurrent_runs"):
            settings.set("max_concurrent_runs", bad)
    with pytest.raises(settings.SettingsError, match="unknown setting"):
        settings.set("colour", "red")


def test_cli_queue_settings_and_runs_json(demo_model, cli):
    out = cli("settings", "set", "max_concurrent_runs", "1")
    assert out.returncode == 0 and "max_concurrent_runs = 1" in out.stdout
    bad = cli("settings", "set", "max_concurrent_runs", "zero")
    assert bad.returncode == 2 and "whole number" in bad.stderr and "Traceback" not in bad.stderr
    first = jobs.start(endless(name="holds the slot"))
    second = jobs.start(tiny(name="waits"))
    try:
        rows = {r["id"]: r for r in json.loads(cli("runs", "--json").stdout)}
        assert rows[first]["queue_position"] is None and rows[second]["queue_position"] == 1
        assert rows[second]["sweep_id"] is None and rows[second]["status"] == "queued"
        listing = json.loads(cli("queue", "--json").stdout)
        assert listing["slots"]["slots"] == 1 and listing["slots"]["busy"] == 1
        assert [w["id"] for w in listing["waiting"]] == [second]
        text = cli("queue").stdout
        assert "1 of 1 in use" in text and "#1" in text and second in text
        for action in (("move", first, "1"), ("cancel", first)):
            refused = cli("queue", *action)  # the running one is not in the queue: nothing happens
            assert refused.returncode == 2 and "not waiting" in refused.stderr, action
        assert store.get_run(first)["status"] in jobs.ACTIVE
        assert cli("queue", "start-now", second).returncode == 0
        wait_for(lambda: store.get_run(second)["status"] in ("running", "completed"), timeout=300)
    finally:
        stop_all()
