"""1 vs 2 local ranks of mlx.launch's ring backend on the demo model, side by side.

On one small machine the two ranks share the same cores, so this shows correctness
(matching losses) and the launcher's overhead, not a speed-up; across machines each
rank brings its own cores. Usage: python bench/bench_distributed.py [--iters N]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=40)
    args = parser.parse_args()
    os.environ.setdefault("DROIDFT_HOME", tempfile.mkdtemp(prefix="droidft-bench-"))
    from droidft import jobs, store
    from droidft.config import SFTConfig
    from droidft.models.demo import DEMO_SFT_DEFAULTS

    base = SFTConfig.from_dict({**DEMO_SFT_DEFAULTS, "model": "demo", "data": "demo"}).replace(
        iters=args.iters, steps_per_report=10, steps_per_eval=10**6, save_every=10**6)
    print(f"demo model LoRA, {args.iters} iters, global batch {base.batch_size}, {os.cpu_count()} cores")
    print(f"{'ranks':>5} {'tokens/s (all)':>15} {'tokens/s/rank':>14} {'wall s':>7} {'last train loss':>16}")
    for ranks in (1, 2):
        t0 = time.perf_counter()
        run_id = jobs.start(base.replace(ranks_per_host=ranks, name=f"{ranks} ranks"))
        run = jobs.wait(run_id)
        wall = time.perf_counter() - t0
        if run["status"] != "completed":
            raise SystemExit(f"{ranks}-rank run failed: {run.get('error')}")
        rates = [r["value"] for r in store.metrics(run_id, names=["tokens_per_second"])]
        rate = statistics.mean(rates[1:] or rates)
        loss = store.metrics(run_id, names=["train_loss"])[-1]["value"]
        print(f"{ranks:>5} {rate:>15.0f} {rate / ranks:>14.0f} {wall:>7.1f} {loss:>16.4f}")


if __name__ == "__main__":
    main()
