"""Training throughput: droidft vs stock `mlx_lm lora`, measured side by side in one run.

Trains the same config (demo model, demo chat data) four ways and prints tokens/s:
  1. droidft worker, OpenBLAS (what users get)
  2. stock `python -m mlx_lm lora`, OpenBLAS preloaded (equal BLAS)
  3. stock `python -m mlx_lm lora`, the mlx[cpu] wheel's reference BLAS (the stock install)
  4. droidft worker, reference BLAS
plus the time from `jobs.start` to the first metric row in DuckDB.

Stock tokens/s is read from the trainer's printed report lines (this is a benchmark of the
stock CLI; droidft itself never parses text). Usage: python bench/bench_train.py [--iters N]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ANSI = re.compile(r"\x1b\[[0-9;]*m")
REPORT_LINE = re.compile(r"^\s*(\d+)\s+([\d.]+)\s*[▼▲]?\s+([\d,]+)\s+([\d.]+)k\s*$")


def droidft_run(config, env_blas: str) -> tuple[float, float, str]:
    """Run through droidft; returns (tokens/s averaged over reports after warm-up,
    seconds from start() to the first metric row, blas used)."""
    from droidft import jobs, store

    t0 = time.perf_counter()
    run_id = jobs.start(config.replace(blas=env_blas))
    first = None
    while True:
        if first is None and store.metrics(run_id, names=["train_loss"]):
            first = time.perf_counter() - t0
        run = store.get_run(run_id)
        if run["status"] in ("completed", "failed", "stopped"):
            break
        time.sleep(0.1)
    if run["status"] != "completed":
        raise SystemExit(f"droidft run failed: {run.get('error')}")
    rates = [r["value"] for r in store.metrics(run_id, names=["tokens_per_second"])]
    return statistics.mean(rates[1:] or rates), first or float("nan"), run["blas"]


def stock_run(config, model: str, data: str, preload: str | None) -> float:
    """Run stock `python -m mlx_lm lora` with the same YAML; tokens/s from its report lines."""
    env = dict(os.environ, NO_COLOR="1", TERM="dumb", COLUMNS="120")
    env.pop("LD_PRELOAD", None)
    if preload:
        env["LD_PRELOAD"] = preload
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "config.yaml"
        cfg.write_text(config.to_mlx_lm_yaml(model, data, str(Path(tmp) / "adapters")))
        out = subprocess.run([sys.executable, "-m", "mlx_lm", "lora", "-c", str(cfg)],
                             capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"stock mlx_lm lora failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    plain = ANSI.sub("", out.stdout)
    rates = [float(m.group(3).replace(",", "")) for line in plain.splitlines()
             if (m := REPORT_LINE.match(line))]
    if not rates:
        raise SystemExit("could not read tokens/s from stock output:\n" + out.stdout[-2000:])
    return statistics.mean(rates[1:] or rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=60)
    parser.add_argument("--reference-iters", type=int, default=20,
                        help="iterations for the slow reference-BLAS runs")
    parser.add_argument("--repeats", type=int, default=3, help="best of N for the OpenBLAS pair")
    args = parser.parse_args()

    os.environ.setdefault("DROIDFT_HOME", tempfile.mkdtemp(prefix="droidft-bench-"))
    from droidft.blas import find_openblas
    from droidft.config import SFTConfig
    from droidft.data import resolve_dataset
    from droidft.demo_model import DEMO_SFT_DEFAULTS, demo_model_path

    model, data = str(demo_model_path()), str(resolve_dataset("demo"))
    base = SFTConfig.from_dict({**DEMO_SFT_DEFAULTS, "model": model, "data": data})
    config = base.replace(iters=args.iters, steps_per_report=10, steps_per_eval=10**6,
                          save_every=10**6)
    slow = config.replace(iters=args.reference_iters, steps_per_report=5)
    openblas = find_openblas()
    if openblas is None and sys.platform == "linux":
        print("OpenBLAS not installed: run scripts/install-system-deps.sh first")

    rows = []
    # Interleaved and best-of-N: on a shared machine, load drifts between runs.
    d_fast, first_metric, s_fast = 0.0, float("inf"), 0.0
    for _ in range(args.repeats):
        rate, first, d_blas = droidft_run(config, "auto")
        d_fast, first_metric = max(d_fast, rate), min(first_metric, first)
        s_fast = max(s_fast, stock_run(config, model, data, openblas))
    rows.append(("droidft worker", d_blas.split(" (")[0], d_fast))
    rows.append(("stock mlx_lm lora", "openblas" if openblas else "reference", s_fast))
    s_ref = stock_run(slow, model, data, None)
    rows.append(("stock mlx_lm lora", "reference (stock install)", s_ref))
    d_ref, _, _ = droidft_run(slow, "reference")
    rows.append(("droidft worker", "reference", d_ref))

    print(f"\nDemo model LoRA, {args.iters} iters (reference BLAS: {args.reference_iters}), best of "
          f"{args.repeats} interleaved runs for the OpenBLAS pair, "
          f"batch {config.batch_size}, rank {config.lora_parameters.rank}, machine: {os.cpu_count()} cores")
    print(f"{'trainer':20} {'BLAS':28} {'tokens/s':>10}")
    for who, blas, rate in rows:
        print(f"{who:20} {blas:28} {rate:10.0f}")
    print()
    print(f"droidft / stock, equal BLAS:           {d_fast / s_fast:6.2f}x   (target >= 0.95x)")
    print(f"droidft / stock mlx[cpu] install:      {d_fast / s_ref:6.2f}x   (target >= 10x on Linux)")
    print(f"droidft / stock, both reference BLAS:  {d_ref / s_ref:6.2f}x")
    print(f"start() to first metric row in DuckDB: {first_metric:6.2f} s  (target <= 5 s)")


if __name__ == "__main__":
    main()
