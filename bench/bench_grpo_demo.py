"""Does GRPO learn anything on the demo model? Measured through the real worker.

    .venv/bin/python bench/bench_grpo_demo.py [--iters N] [--json]

1. Naive tasks: the untrained demo model on arithmetic and word puzzles with exact-answer
   rewards (mlx-lm-lora's R1 defaults, and droidft's exact_answer). Every completion scores
   0, so every group has zero reward variance: GRPO's advantages are all 0, nothing learns.
2. The demo: `droidft train grpo --model demo --data demo` with every option at its default
   ("name three <category>", partial-credit `droidft_demo_reward`). Reported: mean training
   reward per report, validation reward at each evaluation, and a few completions.

Runs in a throwaway DROIDFT_HOME; the demo model is shared (data/models), built if needed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def series(store, run_id: str, name: str) -> list[tuple[int, float]]:
    return sorted((r["step"], round(r["value"], 4)) for r in store.metrics(run_id, names=[name]))


def run(config, jobs, store, label: str) -> dict:
    started = time.monotonic()
    run_id = jobs.start(config)
    record = jobs.wait(run_id, timeout=3600)
    out = {
        "label": label, "run_id": run_id, "status": record["status"], "error": record.get("error"),
        "seconds": round(time.monotonic() - started, 1),
        "train_reward_mean": series(store, run_id, "train_total_rewards_mean"),
        "train_group_reward_std": series(store, run_id, "train_grouped_rewards_std"),
        "val_reward_mean": series(store, run_id, "val_total_rewards_mean"),
        "samples": [(s["step"], s["prompt"], s["completion"], s["reward"])
                    for s in store.samples(run_id, limit=6)],
    }
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=None, help="demo iterations (default: the config default)")
    parser.add_argument("--naive-iters", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    os.environ["DROIDFT_HOME"] = tempfile.mkdtemp(prefix="droidft-bench-grpo-")
    from droidft import jobs, store
    from droidft.data import sample_data
    from droidft.methods.grpo import GRPOConfig

    naive_data = sample_data("grpo", Path(os.environ["DROIDFT_HOME"]) / "naive")
    results = []
    for label, names in (("naive: arithmetic/words, mlx-lm-lora R1 rewards", None),
                         ("naive: arithmetic/words, exact_answer", ["exact_answer"])):
        config = GRPOConfig(model="demo", data=str(naive_data), iters=args.naive_iters, steps_per_report=2,
                            steps_per_eval=args.naive_iters, val_batches=2, reward_functions=names)
        results.append(run(config, jobs, store, label))
    demo = GRPOConfig(model="demo", data="demo")
    if args.iters:
        demo = demo.replace(iters=args.iters)
    results.append(run(demo, jobs, store, "demo: default grpo run (name three X, droidft_demo_reward)"))

    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for r in results:
        print(f"\n== {r['label']}  [{r['status']}, {r['seconds']} s, run {r['run_id']}]")
        if r["error"]:
            print("   error:", r["error"].splitlines()[0])
        print("   train reward mean per report:", [v for _, v in r["train_reward_mean"]])
        print("   mean in-group reward std     :", [v for _, v in r["train_group_reward_std"]])
        print("   validation reward (step, mean):", r["val_reward_mean"])
        for step, prompt, completion, reward in r["samples"][-3:]:
            print(f"   step {step}: {prompt!r} -> {completion.strip()!r} reward {reward:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
