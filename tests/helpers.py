"""Small helpers the tests share."""

import time


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
