"""Small helpers the tests share."""

import time

import pytest


def wait_for(predicate, timeout=120.0, poll=0.2):
    """Poll until `predicate()` is truthy; return its value, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError("timed out waiting")


def demo_sft(**values):
    """A short real SFT config on the demo model and demo chat data: batch 4, lr 1e-3,
    LoRA rank 4 scale 10, unless `values` say otherwise (each test file sets its cadence)."""
    from droidft.config import LoraParameters, SFTConfig

    base = dict(model="demo", data="demo", batch_size=4, learning_rate=1e-3,
                lora_parameters=LoraParameters(rank=4, scale=10.0))
    return SFTConfig(**{**base, **values})


@pytest.fixture
def one_slot_held():
    """One run at a time, the slot held by a lease (as a download would): queued runs stay
    queued, and no worker starts behind the test's back."""
    from droidft import jobs, queue, settings, store

    settings.set("max_concurrent_runs", 1)
    lease = queue.acquire("test", "holds the slot", wait=False)
    yield lease
    for run in store.list_runs(status=jobs.ACTIVE):
        if queue.is_waiting(run):
            queue.cancel(run["id"])
    queue.release(lease)


def trained_demo_run(tmp_path_factory, name: str, **values) -> tuple:
    """One real demo SFT run (`demo_sft(**values)`) in a droidft home of its own, shared by a
    module's tests: returns (home, run id)."""
    from droidft import jobs

    home = tmp_path_factory.mktemp(name)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DROIDFT_HOME", str(home))
        run_id = jobs.start(demo_sft(**values))
        run = jobs.wait(run_id, timeout=900)
        assert run["status"] == "completed", run.get("error")
    return home, run_id


def stop_all() -> None:
    """Stop every active run of this home (waiting ones leave the queue) and wait for them."""
    from droidft import jobs, store

    for run in jobs.list_runs(status=jobs.ACTIVE):
        try:
            jobs.stop(run["id"])
        except jobs.RunError:
            pass
    for run in store.list_runs(status=jobs.ACTIVE):
        jobs.wait(run["id"], timeout=300)
