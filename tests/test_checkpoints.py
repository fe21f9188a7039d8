"""Best checkpoints, early stopping and a stop that always works, with real training."""

import json
import time
from pathlib import Path

import pytest

from droidft import adapters, evaluate, jobs, queue, settings, store
from droidft.config import ConfigError, LoraParameters
from helpers import demo_sft, wait_for

HANGING_REWARD = '''
import os
import pathlib
import threading


def hangs_when_told(prompts, completions, answer, types=None):
    """A reward that stops answering once the test says so (a reward service that hangs)."""
    flag = pathlib.Path(os.environ["DROIDFT_TEST_HANG"])
    if flag.exists():
        (flag.parent / "stuck").write_text(str(os.getpid()))
        threading.Event().wait()
    return [0.0] * len(completions)
'''


@pytest.fixture
def four_rows(tmp_path):
    """Four training conversations from the demo chat data: the demo model over-fits them fast
    (validation loss bottoms out within ~5 steps, then climbs while train loss goes to ~0)."""
    from droidft import paths

    folder = tmp_path / "four"
    folder.mkdir()
    chat = paths.DATA_DIR / "demo" / "chat"
    (folder / "train.jsonl").write_text("".join(chat.joinpath("train.jsonl").read_text().splitlines(True)[:4]))
    (folder / "valid.jsonl").write_text("".join(chat.joinpath("valid.jsonl").read_text().splitlines(True)[:16]))
    return folder


def test_early_stopping_ends_an_over_fitting_run_and_the_best_adapter_beats_the_last(demo_model, four_rows, cli):
    config = demo_sft(data=str(four_rows), iters=150, learning_rate=5e-4, steps_per_report=2,
                      steps_per_eval=2, save_every=50, val_batches=-1, max_seq_length=256,
                      lora_parameters=LoraParameters(rank=16, scale=20.0),
                      early_stop_patience=3, early_stop_min_delta=0.01)
    run_id = jobs.start(config)
    run = jobs.wait(run_id, timeout=600)
    assert run["status"] == "completed", run.get("error")
    reason = jobs.end_reason(run)
    assert reason and reason.startswith("early stopping: val_loss did not improve"), reason
    assert any("early stopping" in e["message"] for e in store.events(run_id))
    last_step = store.artifacts(run_id, kind="final_adapter")[0]["step"]
    assert last_step < 150, "it ended before its last step"

    shown = json.loads(cli("show", run_id, "--json").stdout)
    best_step, best_path = shown["best_step"], shown["best_adapter_path"]
    assert 0 < best_step < last_step and best_path.endswith("adapters/best")
    vals = {r["step"]: r["value"] for r in store.metrics(run_id, names=["val_loss"])}
    assert shown["best_value"] == pytest.approx(min(v for s, v in vals.items() if s > 0))
    assert shown["end_reason"] == reason

    report = evaluate.evaluate("demo", [f"{run_id}@best", run_id], data=str(four_rows), suites=["loss"],
                               include_base=False, split="valid", record=False)
    losses = {row["target"]: row["loss"] for row in report.table()}
    assert losses[f"{run_id}@best"] < losses[run_id], losses
    assert adapters.adapter_ref(run_id, "best") == f"{run_id}@best"
    assert adapters.adapter_ref(run_id, "last") == run_id


def test_best_and_last_adapters_resolve_and_refuse_clearly(demo_model):
    run_id = jobs.start(demo_sft(iters=4, steps_per_report=2, steps_per_eval=1000, save_every=4,
                                 val_batches=1, max_seq_length=128))
    assert jobs.wait(run_id, timeout=300)["status"] == "completed"
    # validation only before step 1 (the untrained model) and the last step (mlx-lm reports it as 3)
    best = adapters.resolve_adapter(f"{run_id}@best")
    assert best.weights_file.parent.name == "best" and best.run_id == run_id
    assert adapters.resolve_adapter(f"{run_id}@last").weights_file == adapters.resolve_adapter(run_id).weights_file
    # one step: its only validation is of the untrained model, so there is no best adapter
    other = jobs.start(demo_sft(iters=1, steps_per_report=1, val_batches=1, max_seq_length=128,
                                steps_per_eval=1000, save_every=1))
    assert jobs.wait(other, timeout=300)["status"] == "completed"
    assert jobs.best_adapter(other) is None
    with pytest.raises(adapters.AdapterError, match="kept no best adapter"):
        adapters.resolve_adapter(f"{other}@best")
    assert adapters.adapter_ref(other, "best") == other  # pages fall back to the last one


def test_early_stopping_settings_are_validated():
    for bad, word in (({"early_stop_patience": 0}, "early_stop_patience"),
                      ({"early_stop_min_delta": -1.0}, "early_stop_min_delta")):
        with pytest.raises(ConfigError, match=word):
            demo_sft(**bad).validate()
    assert demo_sft(early_stop_patience=2, early_stop_min_delta=0.0).validate()


def test_stop_now_ends_a_run_stuck_in_a_long_step_within_the_grace_period(
        demo_model, tmp_path, monkeypatch):
    """A GRPO step that never finishes (its reward function hangs): Stop cannot end it, Stop
    now does, within the grace period plus 5 s; the last checkpoint stays; the next queued run
    starts."""
    from droidft.methods.grpo import GRPOConfig

    grace = 6.0
    monkeypatch.setattr(jobs, "STOP_GRACE_S", grace)
    flag = tmp_path / "hang-now"
    monkeypatch.setenv("DROIDFT_TEST_HANG", str(flag))
    reward_file = tmp_path / "hanging_reward.py"
    reward_file.write_text(HANGING_REWARD)
    settings.set("max_concurrent_runs", 1)
    config = GRPOConfig(model="demo", data="demo", iters=100000, batch_size=2, group_size=2,
                        max_completion_length=8, steps_per_report=1, steps_per_eval=100000,
                        save_every=2, val_batches=1, reward_file=str(reward_file),
                        reward_functions=["hangs_when_told"])
    run_id = jobs.start(config)
    waiting = jobs.start(demo_sft(iters=2, steps_per_report=1, steps_per_eval=100, save_every=2,
                                  val_batches=1, max_seq_length=128, name="next in line"))
    try:
        wait_for(lambda: store.artifacts(run_id, kind="checkpoint"), timeout=600)
        flag.touch()
        wait_for(lambda: (tmp_path / "stuck").exists(), timeout=300)
        asked = time.time()
        jobs.stop(run_id)
        assert jobs.stop_requested_at(run_id) == pytest.approx(asked, abs=2)
        while time.time() < asked + grace:
            time.sleep(0.2)
        assert store.get_run(run_id)["status"] == "running", "a polite stop cannot end a stuck step"
        run = jobs.stop_now(run_id)
        took = time.time() - asked
        assert run["status"] == "stopped" and took <= grace + 5, took
        assert not queue.pid_alive(run["pid"], run_id)
        reason = jobs.end_reason(run)
        assert "mid-step" in reason and "last checkpoint" in reason, reason
        final = store.artifacts(run_id, kind="final_adapter")
        assert final and final[-1]["step"] >= 2 and run["adapter_path"]
        assert Path(run["adapter_path"], "adapters.safetensors").exists()
        adapters.resolve_adapter(run_id)  # the kept checkpoint is a usable adapter
        assert queue.positions() == {} and store.get_run(waiting)["queue_order"] is None
        assert jobs.wait(waiting, timeout=300)["status"] == "completed"
        child = jobs.resume(run_id)  # and the stopped run resumes from its checkpoint
        assert store.get_run(child)["config"]["start_step"] == final[-1]["step"]
        jobs.stop(child)
    finally:
        for rid in (run_id, waiting):
            if store.get_run(rid)["status"] in jobs.ACTIVE:
                jobs.stop_now(rid)
        for run in store.list_runs(status=jobs.ACTIVE):
            jobs.stop_now(run["id"])


def test_stop_now_from_the_cli(demo_model, cli):
    run_id = jobs.start(demo_sft(iters=100000, steps_per_report=1, steps_per_eval=100000, save_every=3,
                                 val_batches=1, max_seq_length=128))
    wait_for(lambda: store.artifacts(run_id, kind="checkpoint"), timeout=300)
    out = cli("stop", run_id, "--now")
    assert out.returncode == 0, out.stderr
    run = store.get_run(run_id)
    assert run["status"] == "stopped" and "stopped now" in jobs.end_reason(run)
    again = cli("stop", run_id, "--now")
    assert again.returncode == 2 and "already stopped" in again.stderr


def test_early_stopping_counts_for_rewards_where_higher_is_better(tmp_path):
    """The shared callback every method uses (GRPO ranks by validation reward)."""
    from droidft.reporting import RunContext, StoreCallback

    class Writer:
        def metric(self, *args, **kwargs):
            pass

        def maybe_flush(self):
            pass

    logged = []
    ctx = RunContext(run_id="r", run_dir=tmp_path, writer=Writer(), log=logged.append,
                     should_stop=lambda: False, early_stop_patience=3, early_stop_min_delta=0.005)
    callback = StoreCallback(ctx, best_metric="val_total_rewards_mean", higher_is_better=True)
    for step, reward in ((0, 0.9), (10, 0.1), (20, 0.3), (30, 0.29), (40, 0.303)):
        callback.track_best(step, reward)
        assert not ctx.stop_now(), step  # step 0 counts for nothing; 0.303 is within min_delta of 0.3
    callback.track_best(50, 0.28)
    assert ctx.stop_now() and ctx.early_stop.startswith("early stopping: val_total_rewards_mean")
    assert logged == [ctx.early_stop]
    callback.track_best(60, float("nan"))  # ignored, no second message
    assert len(logged) == 1
