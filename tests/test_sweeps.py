"""Sweeps: parsing grids and ranges, validating every trial first, and a real 2x2 grid on the
demo model queued as one group, from the CLI."""

import json

import pytest

from droidft import jobs, queue, settings, store, sweeps
from droidft.config import SFTConfig
from droidft.methods.grpo import GRPOConfig
from helpers import demo_sft


def test_grid_values_are_typed_and_aliases_resolve():
    grid = sweeps.parse_grid(["learning_rate=1e-4,3e-4", "rank=4,8", "optimizer=adam,adamw",
                              "grad-checkpoint=true,false"], SFTConfig)
    assert grid == {"learning_rate": [1e-4, 3e-4], "lora_parameters.rank": [4, 8],
                    "optimizer": ["adam", "adamw"], "grad_checkpoint": [True, False]}
    trials = sweeps.trials(SFTConfig, sweeps.SweepSpec(grid=grid))
    assert len(trials) == 16 and trials[0] == {"learning_rate": 1e-4, "lora_parameters.rank": 4,
                                               "optimizer": "adam", "grad_checkpoint": True}
    grpo = sweeps.parse_grid(["beta=0,0.1", "group_size=2,4"], GRPOConfig)
    assert grpo == {"beta": [0.0, 0.1], "group_size": [2, 4]}


@pytest.mark.parametrize("items, message", [
    (["learning_rate"], "KEY=V1,V2"),
    (["rank=four"], "not a whole number"),
    (["colour=red,blue"], "not a setting of sft"),
    (["lora_parameters.size=1,2"], "not a setting"),
    (["model=a,b"], "cannot be swept"),
])
def test_bad_grids_say_what_is_wrong(items, message):
    with pytest.raises(sweeps.SweepError, match=message):
        sweeps.parse_grid(items, SFTConfig)


def test_random_search_samples_ranges_reproducibly():
    ranges = sweeps.parse_ranges(["learning_rate=1e-5:1e-3:log", "rank=2:16"], SFTConfig)
    assert ranges == {"learning_rate": (1e-5, 1e-3, True), "lora_parameters.rank": (2.0, 16.0, False)}
    spec = sweeps.SweepSpec(grid={"seed": [0, 1]}, ranges=ranges, random=5, seed=3)
    trials = sweeps.trials(SFTConfig, spec)
    assert len(trials) == 10, "each grid combination crossed with each sample"
    assert trials == sweeps.trials(SFTConfig, spec), "the same seed draws the same trials"
    for t in trials:
        assert 1e-5 <= t["learning_rate"] <= 1e-3 and isinstance(t["lora_parameters.rank"], int)
    for items, message in ((["learning_rate=1e-3:1e-5"], "smaller"), (["learning_rate=0:1:log"], "LO > 0"),
                           (["optimizer=a:b"], "numeric"), (["learning_rate=1e-5"], "LO:HI")):
        with pytest.raises(sweeps.SweepError, match=message):
            sweeps.parse_ranges(items, SFTConfig)
    with pytest.raises(sweeps.SweepError, match="--random N"):
        sweeps.trials(SFTConfig, sweeps.SweepSpec(ranges=ranges))
    with pytest.raises(sweeps.SweepError, match="at most"):
        sweeps.trials(SFTConfig, sweeps.SweepSpec(grid={"seed": list(range(65))}))


def test_a_sweep_with_one_bad_trial_queues_nothing(demo_model):
    spec = sweeps.SweepSpec(grid={"learning_rate": [1e-4, 50.0]})
    with pytest.raises(sweeps.SweepError, match="learning_rate must be <= 10"):
        sweeps.start(demo_sft(iters=2), spec)
    assert store.list_runs() == [] and store.sweeps() == []


def test_a_2x2_grid_on_the_demo_model_completes_and_marks_the_best(demo_model, cli):
    settings.set("max_concurrent_runs", 1)
    out = cli("sweep", "sft", "--model", "demo", "--data", "demo", "--grid", "learning_rate=1e-4,2e-3",
              "--grid", "rank=2,8", "--iters", "8", "--steps-per-report", "2", "--steps-per-eval", "4",
              "--save-every", "8", "--val-batches", "2", "--max-seq-length", "128", "--batch-size", "4",
              "--name", "lr x rank", "--wait", timeout=1200)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split()
    run_ids, sweep_id = lines[:-1], lines[-1]
    assert len(run_ids) == 4 and sweep_id.startswith("sweep-")
    rows = {r["id"]: r for r in json.loads(cli("runs", "--json").stdout)}
    assert {rows[r]["sweep_id"] for r in run_ids} == {sweep_id}
    assert all(rows[r]["status"] == "completed" and rows[r]["queue_position"] is None for r in run_ids)
    starts = sorted((rows[r]["started_at"], rows[r]["ended_at"]) for r in run_ids)
    assert all(b[0] >= a[1] for a, b in zip(starts, starts[1:])), "one slot: one trial at a time"

    result = sweeps.summary(sweep_id)
    assert result["total"] == result["done"] == 4 and result["keys"] == ["learning_rate", "lora_parameters.rank"]
    settings_seen = {(t["settings"]["learning_rate"], t["settings"]["lora_parameters.rank"]) for t in result["trials"]}
    assert settings_seen == {(1e-4, 2), (1e-4, 8), (2e-3, 2), (2e-3, 8)}
    best = [t for t in result["trials"] if t["best"]]
    assert len(best) == 1 and best[0]["run_id"] == result["best"]
    assert best[0]["objective"] == min(t["best_val_loss"] for t in result["trials"])
    for t in result["trials"]:
        vals = [r["value"] for r in store.metrics(t["run_id"], names=["val_loss"])]
        assert t["final_val_loss"] == vals[-1] and t["best_val_loss"] == min(vals)
    shown = cli("sweep", "show", sweep_id)
    assert shown.returncode == 0 and f"* {result['best']}" in shown.stdout
    listed = json.loads(cli("sweep", "list", "--json").stdout)
    assert listed[0]["id"] == sweep_id and listed[0]["trials"] == 4 and listed[0]["done"] == 4


def test_sweep_cli_refuses_bad_input_with_one_line(cli):
    out = cli("sweep", "sft", "--model", "demo", "--data", "demo", "--grid", "learning_rate=fast")
    assert out.returncode == 2 and "not a number" in out.stderr and "Traceback" not in out.stderr
    out = cli("sweep", "show", "sweep-nope")
    assert out.returncode == 2 and "No sweep" in out.stderr


def test_sweep_trials_wait_in_the_queue_in_order(demo_model):
    settings.set("max_concurrent_runs", 1)
    blocker = jobs.start(demo_sft(iters=100000, steps_per_eval=100000, save_every=100000, val_batches=1,
                                  max_seq_length=128, name="holds the slot"))
    try:
        sweep_id, run_ids = sweeps.start(demo_sft(iters=2, val_batches=1, max_seq_length=128),
                                         sweeps.SweepSpec(grid={"seed": [1, 2, 3]}))
        assert list(queue.positions()) == run_ids
        result = sweeps.summary(sweep_id)
        assert [t["queue_position"] for t in result["trials"]] == [1, 2, 3] and result["best"] is None
        assert [e["sweep_id"] for e in queue.entries()] == [sweep_id] * 3
    finally:
        for run in store.list_runs(status=jobs.ACTIVE):
            jobs.stop(run["id"])
        jobs.wait(blocker, timeout=300)
