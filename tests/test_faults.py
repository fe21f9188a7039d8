"""Faults: concurrent runs and pollers, a dying parent, files vanishing mid-run, bad homes,
and fuzzed configs. Each keeps its promise: a clear message and nothing lost."""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from droidft import jobs, paths, store
from droidft.config import ConfigError, LoraParameters
from helpers import demo_sft, wait_for


def small(**overrides):
    return demo_sft(**dict(iters=30, steps_per_report=1, steps_per_eval=10, save_every=10, val_batches=1,
                           lora_parameters=LoraParameters(rank=2, scale=10.0)) | overrides)


def test_two_runs_with_pollers_lose_no_row_and_show_no_lock_error(demo_model):
    from droidft import settings

    settings.set("max_concurrent_runs", 2)  # both at once, whatever this machine would queue
    errors, polls = [], [0]
    runs = [jobs.start(small(name=f"run {i}")) for i in range(2)]
    done = threading.Event()

    def poll():
        while not done.is_set():
            for run_id in runs:
                try:
                    store.snapshot(run_id)
                    jobs.list_runs()
                    polls[0] += 1
                except Exception as exc:  # any error here is a failure of the store's promise
                    errors.append(repr(exc))
            time.sleep(0.05)

    threads = [threading.Thread(target=poll) for _ in range(3)]
    for t in threads:
        t.start()
    finals = [jobs.wait(r, timeout=600) for r in runs]
    done.set()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert polls[0] > 20
    for run in finals:
        assert run["status"] == "completed", run.get("error")
        rows = store.metrics(run["id"])
        per_name = {}
        for r in rows:
            per_name[r["name"]] = per_name.get(r["name"], 0) + 1
        # a train report every step: every one of the 30 landed, for every train metric
        for name in ("train_loss", "learning_rate", "tokens_per_second", "trained_tokens"):
            assert per_name[name] == 30, (name, per_name)
        assert per_name["val_loss"] == 4  # before step 1, 10, 20 and 30
        log = (jobs.paths.run_dir(run["id"]) / "worker.log").read_text()
        assert "lock" not in log.lower()


def test_run_outlives_the_process_that_started_it(demo_model):
    """What a Streamlit server restart looks like to a run: its starter is gone."""
    code = ("from droidft import jobs; from droidft.config import SFTConfig, LoraParameters;"
            "print(jobs.start(SFTConfig(iters=15, steps_per_report=5, steps_per_eval=15, save_every=15,"
            "lora_parameters=LoraParameters(rank=2))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    run_id = out.stdout.strip().splitlines()[-1]
    run = jobs.wait(run_id, timeout=300)
    assert run["status"] == "completed", run.get("error")
    assert [r["step"] for r in store.metrics(run_id, names=["train_loss"])] == [1, 5, 10, 15]


def test_model_deleted_and_data_changed_during_a_run(demo_model, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(demo_model, model)
    data = tmp_path / "data"
    shutil.copytree(jobs.datasets.resolve_dataset("demo"), data)
    earlier = jobs.wait(jobs.start(small(iters=3, model=str(model), data=str(data))), timeout=300)
    assert earlier["status"] == "completed"

    run_id = jobs.start(small(iters=2000, model=str(model), data=str(data), steps_per_eval=10**6,
                              save_every=10**6))
    for _ in range(600):
        if store.metrics(run_id, names=["train_loss"]):
            break
        time.sleep(0.2)
    shutil.rmtree(model)  # weights are in memory: training goes on
    (data / "train.jsonl").write_text("garbage\n")
    jobs.stop(run_id)
    run = jobs.wait(run_id, timeout=300)
    assert run["status"] == "stopped", run.get("error")
    assert os.path.exists(os.path.join(run["adapter_path"], "adapters.safetensors"))

    # The database is intact: every earlier run and its metrics are still there.
    assert store.get_run(earlier["id"])["status"] == "completed"
    assert store.metrics(earlier["id"], names=["train_loss"])
    # Using the adapter now that its base is gone says so clearly.
    with pytest.raises(ValueError, match="not found|no config.json"):
        jobs.start(small(model=str(model)))
    with pytest.raises(ValueError, match="line 1"):
        jobs.start(small(data=str(data)))


def test_unwritable_home_is_a_clear_message(tmp_path, cli, demo_model, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("DROIDFT_HOME", str(blocker / "home"))
    out = cli("train", "sft", "--model", "demo", "--data", "demo", "--iters", "2")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "home folder" in out.stderr, out.stderr
    out = cli("runs")
    assert out.returncode == 2 and "home folder" in out.stderr


# -- a full disk: a real tmpfs of a few MB as the droidft home ------------------------------------


@pytest.fixture
def small_disk(tmp_path, monkeypatch):
    """A 48 MB tmpfs holding DROIDFT_HOME, so writes meet a real ENOSPC. Needs Linux and the
    right to mount (root, as in CI's container); skipped elsewhere. The demo model stays on
    the big disk (it is read-only), as a model cache on another drive would."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("a small tmpfs needs Linux and root")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if made.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip()}")
    monkeypatch.setenv("DROIDFT_HOME", str(mount / "home"))
    monkeypatch.setenv("DROIDFT_MIN_FREE_MB", "8")
    try:
        yield mount
    finally:
        for run in store.list_runs(status=jobs.ACTIVE):
            if run.get("pid"):
                with contextlib.suppress(OSError):
                    os.kill(run["pid"], signal.SIGKILL)
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill_disk(mount, leave_bytes: int):
    """Write a filler file until only `leave_bytes` are free on `mount`; returns its path."""
    filler = mount / "filler"
    with open(filler, "ab") as fh:
        while (free := shutil.disk_usage(mount).free) > leave_bytes:
            try:
                fh.write(b"\0" * min(free - leave_bytes, 1 << 20))
                fh.flush()
            except OSError:
                break
    return filler


def database_intact(earlier_id: str, earlier_steps: list[int]) -> None:
    """A fresh DuckDB connection opens the file and the earlier run is whole."""
    import duckdb

    con = duckdb.connect(str(paths.db_path()), read_only=True)
    try:
        status = con.execute("SELECT status FROM runs WHERE id = ?", [earlier_id]).fetchone()[0]
        steps = [r[0] for r in con.execute("SELECT step FROM metrics WHERE run_id = ? AND name = "
                                           "'train_loss' ORDER BY step", [earlier_id]).fetchall()]
    finally:
        con.close()
    assert status == "completed" and steps == earlier_steps


def first_metric(run_id: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not store.metrics(run_id, names=["train_loss"]):
        assert time.monotonic() < deadline, "no metric arrived"
        time.sleep(0.2)


def test_a_run_that_would_not_fit_on_the_disk_is_refused(small_disk, demo_model, cli):
    earlier = jobs.wait(jobs.start(small(iters=3)), timeout=300)
    assert earlier["status"] == "completed", earlier.get("error")
    fill_disk(small_disk, 2 * 2**20)
    with pytest.raises(OSError, match="Not enough free disk space for this run's checkpoints") as refused:
        jobs.start(small())
    assert "2.0 MB free" in str(refused.value) or "1.9 MB free" in str(refused.value), refused.value
    from droidft import studio as us

    explained = us.explain(refused.value, "start the run")
    assert explained.title.endswith("start the run: not enough disk space.") and not explained.unexpected
    out = cli("train", "sft", "--model", "demo", "--data", "demo", "--iters", "5")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "Not enough free disk space" in out.stderr, out.stderr
    assert [r["id"] for r in store.list_runs()] == [earlier["id"]]
    database_intact(earlier["id"], [1, 2, 3])


def test_a_run_stops_itself_before_the_disk_fills_and_resumes_after(small_disk, demo_model):
    earlier = jobs.wait(jobs.start(small(iters=3)), timeout=300)
    run_id = jobs.start(small(iters=3000, steps_per_eval=10**6, save_every=50))
    first_metric(run_id)
    filler = fill_disk(small_disk, 4 * 2**20)  # under the 8 MB margin
    run = jobs.wait(run_id, timeout=300)
    assert run["status"] == "failed"
    assert "disk is almost full" in run["error"] and "Resume" in run["error"], run["error"]
    assert run["adapter_path"], "the adapter so far is saved while there is room"
    steps = [r["step"] for r in store.metrics(run_id, names=["train_loss"])]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) < 3000  # every step reported, in order
    database_intact(earlier["id"], [1, 2, 3])

    filler.unlink()
    resumed = jobs.get(jobs.resume(run_id))
    first_metric(resumed["id"])
    assert store.metrics(resumed["id"], names=["train_loss"])[0]["step"] == steps[-1] + 1
    jobs.stop(resumed["id"])
    assert jobs.wait(resumed["id"], timeout=300)["status"] == "stopped"


def test_a_disk_that_fills_up_completely_loses_nothing_already_reported(small_disk, demo_model, monkeypatch):
    """No margin: the next checkpoint write meets ENOSPC, as do the database writes. Once space
    is freed the worker writes every buffered row and its final status; the database is whole."""
    monkeypatch.setenv("DROIDFT_MIN_FREE_MB", "0")
    earlier = jobs.wait(jobs.start(small(iters=3)), timeout=300)
    run_id = jobs.start(small(iters=200, steps_per_eval=10**6, save_every=1))
    first_metric(run_id)
    filler = fill_disk(small_disk, 0)
    # The full disk reached the worker: its heartbeat (written with every flush of its rows)
    # stops while its process lives on, waiting for space with its rows in memory.
    pid = jobs.get(run_id)["pid"]
    beats = []

    def heartbeat_stopped() -> bool:
        beats.append(store.get_run(run_id)["heartbeat_at"])
        return len(beats) > 8 and len(set(beats[-8:])) == 1  # unchanged over 8 polls (~4 s)

    wait_for(heartbeat_stopped, timeout=120, poll=0.5)
    assert jobs.pid_alive(pid, run_id) and jobs.get(run_id)["status"] == "running", \
        "the worker waits for space instead of dying"
    filler.unlink()
    run = jobs.wait(run_id, timeout=300)
    assert run["status"] == "failed"
    assert "The disk is full while training" in run["error"], run["error"]
    steps = [r["step"] for r in store.metrics(run_id, names=["train_loss"])]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) < 200
    events = " ".join(e["message"] for e in store.events(run_id))
    assert "training failed" in events  # written from the buffer after space came back
    assert run["adapter_path"] is None or Path(run["adapter_path"]).exists()
    database_intact(earlier["id"], [1, 2, 3])
    # What was saved whole can be resumed.
    resumed = jobs.resume(run_id)
    first_metric(resumed)
    jobs.stop(resumed)
    assert jobs.wait(resumed, timeout=300)["status"] == "stopped"


FIELD_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                         st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
                         st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=2))
def _config_classes():
    from droidft import methods

    return {m.name: m.config_class for m in methods.available()}


@pytest.mark.parametrize("method", sorted(_config_classes()))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_config_validator_never_crashes(method, data):
    """Any mapping gives a config with a list of readable problems, or a ConfigError."""
    cls = _config_classes()[method]
    keys = st.sampled_from(sorted(cls.field_names()) + ["bogus", "lora_parameters"])
    values = data.draw(st.dictionaries(keys, FIELD_VALUES, max_size=6))
    try:
        config = cls.from_dict(values)
        found = config.problems()
    except ConfigError as exc:
        assert exc.problems and all(isinstance(p, str) and p for p in exc.problems)
        return
    assert all(isinstance(p, str) and p for p in found)
    json.dumps(config.to_dict(), default=str)
