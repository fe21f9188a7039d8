"""The run lifecycle end to end, with real MLX training of the demo model in a detached worker."""

import os
import signal
import sys

import pytest

from droidft import jobs, store
from droidft.config import LoraParameters, SFTConfig
from helpers import demo_sft, wait_for

TRAIN_METRICS = {"train_loss", "learning_rate", "iterations_per_second", "tokens_per_second",
                 "trained_tokens", "peak_memory_gb"}


def quick(**overrides) -> SFTConfig:
    """A short real run of the demo model on the demo chat data."""
    return demo_sft(**dict(iters=20, steps_per_report=5, steps_per_eval=10, save_every=10, val_batches=2)
                    | overrides)




def test_run_completes_records_everything_and_adapter_loads_in_stock_mlx_lm(demo_model):
    from mlx_lm import generate, load

    run_id = jobs.start(quick(name="first"))
    run = jobs.wait(run_id, timeout=300)
    assert run["status"] == "completed", run.get("error")
    assert run["started_at"] and run["ended_at"] >= run["started_at"] and run["pid"]
    if sys.platform == "linux":
        from droidft.blas import find_openblas

        expected = "openblas" if find_openblas() else "reference"
        assert run["blas"].startswith(expected)

    names = {row["name"] for row in store.metrics(run_id)}
    assert TRAIN_METRICS | {"val_loss"} <= names
    steps = sorted({r["step"] for r in store.metrics(run_id, names=["train_loss"])})
    assert steps == [1, 5, 10, 15, 20]  # step 1 at once, then every steps_per_report
    # iterations/s is steps in the window over its time: windows of 1, 4, 5, 5, 5 steps
    rows = {(r["name"], r["step"]): r["value"] for r in store.metrics(run_id)}
    previous = (0, 0.0)
    for step in steps:
        tokens, rate = rows[("trained_tokens", step)], rows[("tokens_per_second", step)]
        window_s = (tokens - previous[1]) / rate
        assert rows[("iterations_per_second", step)] * window_s == pytest.approx(step - previous[0], rel=1e-6)
        previous = (step, tokens)
    val_steps = sorted(r["step"] for r in store.metrics(run_id, names=["val_loss"]))
    assert val_steps == [0, 9, 19]  # mlx-lm validates before step it and reports it - 1

    kinds = {}
    for art in store.artifacts(run_id):
        kinds.setdefault(art["kind"], []).append(art)
    assert sorted(a["step"] for a in kinds["checkpoint"]) == [10, 20]
    assert kinds["final_adapter"][0]["step"] == 20
    assert kinds["best_adapter"][0]["meta"]["val_loss"] > 0

    for path in (run["adapter_path"], kinds["best_adapter"][0]["path"]):
        model, tokenizer = load(str(demo_model), adapter_path=path)
        assert isinstance(generate(model, tokenizer, "hello", max_tokens=4), str)

    events = " ".join(e["message"] for e in store.events(run_id))
    assert "worker" in events and "completed" in events


def test_metrics_land_while_running_then_stop_saves_adapter(demo_model):
    run_id = jobs.start(quick(iters=100000, steps_per_eval=100000, save_every=100000))
    first = wait_for(lambda: store.metrics(run_id, names=["train_loss"]), timeout=120)
    assert store.get_run(run_id)["status"] == "running"  # rows arrive while training goes on
    assert first[0]["step"] == 1  # the first point comes right after the first step
    hb1 = store.get_run(run_id)["heartbeat_at"]
    wait_for(lambda: store.get_run(run_id)["heartbeat_at"] > hb1, timeout=10)

    jobs.stop(run_id)
    run = jobs.wait(run_id, timeout=120)
    assert run["status"] == "stopped", run.get("error")
    final = store.artifacts(run_id, kind="final_adapter")
    assert final and final[0]["step"] > 0
    assert os.path.exists(os.path.join(run["adapter_path"], "adapters.safetensors"))


def test_sigkill_is_reaped_with_log_lines_and_resume_continues(demo_model):
    run_id = jobs.start(quick(iters=100000, steps_per_eval=100000, save_every=10))
    wait_for(lambda: store.artifacts(run_id, kind="checkpoint"), timeout=120)
    before = len(store.metrics(run_id))
    os.kill(store.get_run(run_id)["pid"], signal.SIGKILL)

    run = wait_for(lambda: [r for r in jobs.list_runs() if r["id"] == run_id and r["status"] == "failed"],
                   timeout=15)[0]
    assert "died" in run["error"] and "Last log lines" in run["error"]
    assert len(store.metrics(run_id)) >= before  # nothing written before the kill is lost

    ckpt_step = max(a["step"] for a in store.artifacts(run_id, kind="checkpoint"))
    child_id = jobs.resume(run_id)
    child = store.get_run(child_id)
    assert child["parent_id"] == run_id
    assert child["config"]["start_step"] == ckpt_step
    assert child["config"]["resume_adapter_file"].endswith(f"{ckpt_step:07d}_adapters.safetensors")
    wait_for(lambda: store.metrics(child_id, names=["val_loss"]), timeout=120)
    jobs.stop(child_id)  # the child would run "forever"; its first numbers show where it started
    child = jobs.wait(child_id, timeout=120)
    assert child["status"] == "stopped", child.get("error")
    steps = [r["step"] for r in store.metrics(child_id, names=["val_loss", "train_loss"])]
    assert steps and min(steps) >= ckpt_step


def test_resume_of_a_stopped_run_trains_only_what_is_left(demo_model):
    total, every = 60, 5
    run_id = jobs.start(quick(iters=total, save_every=every, steps_per_report=1))
    adapters = jobs.paths.run_dir(run_id) / "adapters"
    checkpoints = lambda: [int(p.name[:7]) for p in adapters.glob("*_adapters.safetensors")]  # noqa: E731
    wait_for(checkpoints, timeout=300, poll=0.01)  # the trainer's own files: no reporting delay
    pid = store.get_run(run_id)["pid"]
    os.kill(pid, signal.SIGSTOP)  # hold the trainer still while the stop is requested: it lands mid-run
    try:
        assert max(checkpoints()) + every < total, "the trainer is not mid-run (no later checkpoint yet)"
        jobs.stop(run_id)
    finally:
        os.kill(pid, signal.SIGCONT)
    run = jobs.wait(run_id, timeout=300)
    assert run["status"] == "stopped", run.get("error")
    stopped_at = store.artifacts(run_id, kind="final_adapter")[0]["step"]
    assert 0 < stopped_at < total
    child = jobs.wait(jobs.resume(run_id), timeout=300)
    assert child["status"] == "completed", child.get("error")
    assert child["config"]["iters"] == total - stopped_at
    steps = [r["step"] for r in store.metrics(child["id"], names=["train_loss"])]
    assert steps == list(range(stopped_at + 1, total + 1))  # every step left, once, up to the last


def test_a_resumed_run_continues_the_learning_rate_schedule(demo_model):
    """Warmup and decay pick up where the parent stopped instead of starting over."""
    from mlx_lm.tuner.utils import build_schedule

    from droidft.config import lr_schedule_for

    parent = quick(iters=400, warmup_steps=20, save_every=5, steps_per_report=1, steps_per_eval=10**6)
    run_id = jobs.start(parent)
    wait_for(lambda: len(store.metrics(run_id, names=["train_loss"])) >= 8, timeout=300)
    jobs.stop(run_id)
    assert jobs.wait(run_id, timeout=300)["status"] == "stopped"
    child_id = jobs.resume(run_id)
    wait_for(lambda: len(store.metrics(child_id, names=["learning_rate"])) >= 3, timeout=300)
    jobs.stop(child_id)
    jobs.wait(child_id, timeout=300)
    schedule = build_schedule(lr_schedule_for(parent))
    # The trainer reports the rate that step trained with, schedule(step - 1): the same rule
    # holds for the parent's reports and the child's, on one global step count.
    rows = store.metrics(run_id, names=["learning_rate"])[:5] + store.metrics(child_id, names=["learning_rate"])[:5]
    for row in rows:
        assert row["value"] == pytest.approx(schedule(row["step"] - 1).item(), rel=1e-5), row
    first = store.metrics(child_id, names=["learning_rate"])[0]
    assert first["step"] > 5 and first["value"] > schedule(3).item()  # not back at the warmup's start


@pytest.mark.parametrize("overrides", [
    {"fine_tune_type": "dora"},
    {"fine_tune_type": "full", "num_layers": 1, "learning_rate": 1e-4},
    {"quantize_bits": 4},
    {"optimizer": "adamw", "warmup_steps": 2, "grad_accumulation_steps": 2, "grad_checkpoint": True,
     "mask_prompt": True, "lora_parameters": LoraParameters(rank=2, keys=["self_attn.q_proj"])},
    {"optimizer": "sgd"}, {"optimizer": "adafactor"}, {"optimizer": "muon"},
], ids=["dora", "full", "qlora", "adamw-warmup-accum-ckpt-mask-keys", "sgd", "adafactor", "muon"])
def test_training_variants_complete(demo_model, overrides):
    from mlx_lm import load

    run_id = jobs.start(quick(iters=4, steps_per_report=2, steps_per_eval=4, save_every=4, **overrides))
    run = jobs.wait(run_id, timeout=300)
    assert run["status"] == "completed", run.get("error")
    loss = store.metrics(run_id, names=["train_loss"])
    assert loss and all(r["value"] == r["value"] for r in loss)  # reported and not NaN
    model_folder = run["model"]
    if overrides.get("quantize_bits"):
        assert model_folder.endswith("-q4g64")
    load(model_folder, adapter_path=run["adapter_path"])


def test_epochs_fix_the_iteration_count(demo_model):
    run_id = jobs.start(quick(epochs=0.1, batch_size=4))
    run = store.get_run(run_id)
    assert run["config"]["iters"] >= 1 and run["config"]["epochs"] == 0.1
    assert jobs.wait(run_id, timeout=300)["status"] == "completed"
