"""Data-parallel training through mlx.launch: two local ranks of the ring backend."""

import re

import pytest

from droidft import jobs, store
from droidft.distributed import launch_command
from helpers import demo_sft


def config(**overrides):
    return demo_sft(**dict(iters=12, steps_per_report=4, steps_per_eval=6, save_every=6, val_batches=2)
                    | overrides)


def series(run_id, name):
    return {r["step"]: r["value"] for r in store.metrics(run_id, names=[name])}


def test_launch_command_passes_config_and_ranks():
    cmd = launch_command(config(ranks_per_host=2), "RUN")
    assert cmd[-5:] == ["--", "-m", "droidft.worker", "--rank", "RUN"]
    assert "--hosts" in cmd and cmd[cmd.index("--hosts") + 1] == "127.0.0.1"
    assert cmd[cmd.index("-n") + 1] == "2" and "ring" in cmd
    assert any(a.startswith("DROIDFT_RUN_CONFIG=") for a in cmd)


def test_bad_distributed_configs_are_refused():
    assert any("divisible" in p for p in config(batch_size=3, ranks_per_host=2).problems())
    assert any("ring or mpi" in p for p in config(distributed_backend="tcp").problems())
    assert any("hosts must be" in p for p in config(hosts=[""]).problems())


def test_two_ranks_match_one_rank_and_adapter_loads(demo_model):
    from mlx_lm import load

    one = jobs.start(config(name="1 rank"))
    one_run = jobs.wait(one, timeout=600)
    two = jobs.start(config(name="2 ranks", ranks_per_host=2))
    two_run = jobs.wait(two, timeout=600)
    assert one_run["status"] == "completed", one_run.get("error")
    assert two_run["status"] == "completed", two_run.get("error")

    # Same weights, same global batch: validation loss before training is identical, and
    # training losses agree closely (per-rank token normalisation differs slightly).
    v1, v2 = series(one, "val_loss"), series(two, "val_loss")
    assert v1[0] == pytest.approx(v2[0], rel=1e-4)
    t1, t2 = series(one, "train_loss"), series(two, "train_loss")
    assert t1.keys() == t2.keys()
    for step in t1:
        assert t1[step] == pytest.approx(t2[step], rel=0.05), (step, t1[step], t2[step])

    assert series(two, "world_size")[0] == 2
    assert series(two, "effective_batch_size")[0] == 4 and series(two, "per_rank_batch_size")[0] == 2
    assert series(two, "tokens_per_second_per_rank")
    load(two_run["model"], adapter_path=two_run["adapter_path"])


def test_stop_reaches_every_rank(demo_model):
    import time

    run_id = jobs.start(config(iters=100000, steps_per_eval=100000, save_every=100000,
                               ranks_per_host=2, steps_per_report=2))
    deadline = time.monotonic() + 300
    while not store.metrics(run_id, names=["train_loss"]) and time.monotonic() < deadline:
        time.sleep(0.3)
    jobs.stop(run_id)
    run = jobs.wait(run_id, timeout=120)
    assert run["status"] == "stopped", run.get("error")
    final = store.artifacts(run_id, kind="final_adapter")[0]["step"]
    # Every rank ended its own loop after the same step, the one the saved adapter holds.
    from droidft import paths

    last = {}
    for rank in (0, 1):
        log = (paths.run_dir(run_id) / f"rank{rank}.log").read_text()
        ends = re.findall(r"stop requested: ending training after step (\d+)", log)
        assert len(ends) == 1, (rank, log[-2000:])
        last[rank] = int(ends[0])
    assert last == {0: final, 1: final} and 0 < final < 100000, (last, final)
    assert max(r["step"] for r in store.metrics(run_id, names=["train_loss"])) <= final


def test_machine_checks_and_rank_status(demo_model, tmp_path):
    from droidft import paths
    from droidft.distributed import check_hosts, rank_status

    ok, = check_hosts(["127.0.0.1"], [str(demo_model)])
    assert ok["reachable"] and ok["python"] and ok["message"] == "ready"
    missing, = check_hosts(["localhost"], [str(tmp_path / "nope")])
    assert "missing there" in missing["message"]

    run_dir = paths.run_dir("r1")
    run_dir.mkdir(parents=True)
    (run_dir / "rank0.log").write_text("10:00:00 INFO  rank 0/2 on vm\n")
    (run_dir / "rank1.log").write_text("10:00:00 INFO  rank 1/2 on vm\n10:00:05 ERROR rank 1 failed: boom\n")
    status = rank_status("r1")
    assert [s["rank"] for s in status] == [0, 1]
    assert not status[0]["failed"] and status[1]["failed"]


# -- RL and preference methods across ranks (issue 14) ---------------------------------------------


def test_dsla_on_two_ranks_matches_one_rank(demo_model):
    """mlx-lm-lora's DSLA trainer gives each rank its own rows, averages gradients and reduces
    every reported number: 2 ranks train what 1 rank trains. The latent term's `direction`
    variant uses batch statistics (per rank under mlx.launch), so this compares `similarity`."""
    from mlx_lm import load

    from droidft.config import LoraParameters
    from droidft.methods.dsla import DSLAConfig

    base = dict(model="demo", data="demo", iters=4, batch_size=4, steps_per_report=2, steps_per_eval=4,
                save_every=4, val_batches=1, learning_rate=1e-4, latent_variant="similarity",
                lora_parameters=LoraParameters(rank=4, scale=10.0))
    one = jobs.wait(jobs.start(DSLAConfig(**base, name="dsla 1 rank")), timeout=600)
    two = jobs.wait(jobs.start(DSLAConfig(**base, name="dsla 2 ranks", ranks_per_host=2)), timeout=600)
    assert one["status"] == "completed", one.get("error")
    assert two["status"] == "completed", two.get("error")
    v1, v2 = series(one["id"], "val_loss"), series(two["id"], "val_loss")
    assert v1[0] == pytest.approx(v2[0], rel=1e-4)
    t1, t2 = series(one["id"], "train_loss"), series(two["id"], "train_loss")
    assert t1.keys() == t2.keys() == {2, 4}
    for step in t1:
        assert t1[step] == pytest.approx(t2[step], rel=0.02), (step, t1[step], t2[step])
    assert series(two["id"], "world_size")[0] == 2
    load(two["model"], adapter_path=two["adapter_path"])


def test_grpo_on_two_ranks_splits_each_batch_between_the_ranks(demo_model, tmp_path):
    """GRPO samples completions, so losses of 1 and 2 ranks differ by the sampling; what must
    hold is that each rank trains its own half of the same global batch (mlx-lm-lora's GRPO
    iterator offsets by rank) and that the run completes with one adapter."""
    import json

    from droidft.config import LoraParameters
    from droidft.data import sample_data
    from droidft.methods.grpo import GRPOConfig
    from droidft import paths

    data = sample_data("grpo", tmp_path / "unique")  # every question once: rows are identifiable
    base = dict(model="demo", data=str(data), iters=2, batch_size=4, group_size=2, max_completion_length=6,
                steps_per_report=1, steps_per_eval=2, save_every=2, val_batches=1, samples_per_report=4,
                reward_functions=["exact_answer"], lora_parameters=LoraParameters(rank=4, scale=10.0))
    one = jobs.wait(jobs.start(GRPOConfig(**base)), timeout=600)
    two = jobs.wait(jobs.start(GRPOConfig(**base, ranks_per_host=2)), timeout=600)
    assert one["status"] == "completed" and two["status"] == "completed", (one.get("error"), two.get("error"))
    first_batch = {s["prompt"] for s in store.samples(one["id"]) if s["step"] == 1}
    assert len(first_batch) == 4
    shards = []
    for rank in (0, 1):
        log = (paths.run_dir(two["id"]) / f"rank{rank}.log").read_text()
        line = next(x for x in log.splitlines() if f"rank {rank}/2 first batch: " in x)
        shards.append(set(json.loads(line.split("first batch: ", 1)[1])))
    assert len(shards[0]) == len(shards[1]) == 2 and not shards[0] & shards[1]
    assert shards[0] | shards[1] == first_batch
    assert series(two["id"], "world_size")[0] == 2 and series(two["id"], "train_loss")
    # rank 0 writes the run's adapter and checkpoints; rank 1's own saves went to a scratch
    # folder (never into the run's adapter file), removed when it finished
    assert (paths.run_dir(two["id"]) / "adapters" / "0000002_adapters.safetensors").exists()
    assert not list(paths.run_dir(two["id"]).glob("rank*-adapters"))
