"""Faults: concurrent runs and pollers, a dying parent, files vanishing mid-run, bad homes,
and fuzzed configs. Each keeps its promise: a clear message and nothing lost."""

import json
import os
import shutil
import subprocess
import sys
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from droidft import jobs, store
from droidft.config import ConfigError, LoraParameters, SFTConfig


def small(**overrides):
    values = dict(model="demo", data="demo", iters=30, batch_size=4, learning_rate=1e-3,
                  steps_per_report=1, steps_per_eval=10, save_every=10, val_batches=1,
                  lora_parameters=LoraParameters(rank=2, scale=10.0))
    values.update(overrides)
    return SFTConfig(**values)


def test_two_runs_with_pollers_lose_no_row_and_show_no_lock_error(demo_model):
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
    assert [r["step"] for r in store.metrics(run_id, names=["train_loss"])] == [5, 10, 15]


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
