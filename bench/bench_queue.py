"""Run queue overhead: from one run's end to the next queued run's first metric, side by side
with the start-up of a run started on a free slot, in one droidft home.

With one slot, N short demo runs are started at once; each finishing worker starts the next
(droidft.queue.advance, no daemon). For each hand-over it measures
  end -> next worker spawned   (the finishing worker's advance: lock, read, spawn)
  end -> next worker running   (+ the new process's start and imports)
  end -> next first metric     (the above + model/data load + first step + report)
and, for comparison, a run started on a free slot: jobs.start -> first metric. The queue's
extra cost is the hand-over minus that cold start. Prints the load average too: on a shared
2-core machine every figure grows with the load.

Usage: python bench/bench_queue.py [--runs 6] [--iters 4]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def first_metric_time(store, run_id: str) -> float | None:
    rows = store.metrics(run_id)
    return min(r["time"] for r in rows) if rows else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--iters", type=int, default=4)
    args = parser.parse_args()
    os.environ["DROIDFT_HOME"] = tempfile.mkdtemp(prefix="droidft-bench-queue-")

    from droidft import jobs, settings, store
    from droidft.config import LoraParameters, SFTConfig
    from droidft.models.demo import demo_model_path

    demo_model_path()
    settings.set("max_concurrent_runs", 1)
    config = SFTConfig(model="demo", data="demo", iters=args.iters, batch_size=4, steps_per_report=1,
                       steps_per_eval=10**6, save_every=args.iters, val_batches=1, max_seq_length=128,
                       lora_parameters=LoraParameters(rank=4))
    load = os.getloadavg()[0]

    # a cold start on a free slot, twice (the first also warms the file cache)
    cold = []
    for i in range(2):
        t0 = time.time()
        rid = jobs.start(config.replace(name=f"cold {i}"))
        while first_metric_time(store, rid) is None:
            time.sleep(0.02)
        cold.append(first_metric_time(store, rid) - t0)
        jobs.wait(rid)

    ids = [jobs.start(config.replace(name=f"queued {i}")) for i in range(args.runs)]
    for rid in ids:
        while store.get_run(rid)["status"] not in jobs.TERMINAL:
            time.sleep(0.1)
    runs = [store.get_run(r) for r in ids]
    assert all(r["status"] == "completed" for r in runs), [r.get("error") for r in runs]
    to_spawn, to_running, to_metric = [], [], []
    for before, after in zip(runs, runs[1:]):
        spawned = [e["time"] for e in store.events(after["id"]) if e["message"].startswith("left the queue")]
        to_spawn.append(spawned[0] - before["ended_at"])
        to_running.append(after["started_at"] - before["ended_at"])
        to_metric.append(first_metric_time(store, after["id"]) - before["ended_at"])
    load_after = os.getloadavg()[0]

    def med(xs):
        return statistics.median(xs)

    print(f"load average {load:.1f} before, {load_after:.1f} after ({os.cpu_count()} cores)")
    print(f"{len(to_metric)} hand-overs with 1 slot, demo model, {args.iters} steps each:")
    print(f"  end -> next worker spawned   median {med(to_spawn):.3f} s  max {max(to_spawn):.3f} s  "
          f"(the queue's own decision: lock, read, spawn)")
    print(f"  end -> next worker running   median {med(to_running):.2f} s  max {max(to_running):.2f} s")
    print(f"  end -> next first metric     median {med(to_metric):.2f} s  max {max(to_metric):.2f} s  "
          f"(target < 3 s)")
    print(f"  cold start on a free slot (jobs.start -> first metric): median {med(cold):.2f} s "
          f"({', '.join(f'{c:.2f}' for c in cold)})")
    print(f"  queue hand-over / cold start: {med(to_metric) / med(cold):.2f}x")


if __name__ == "__main__":
    main()
