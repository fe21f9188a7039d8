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
