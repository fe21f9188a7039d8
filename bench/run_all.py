"""Run every benchmark and record their output in docs/BENCHMARKS.md.

Usage: python bench/run_all.py [--only train,store,...]
Each bench script measures its ratios side by side within one run; this only runs
them in turn (never in parallel: they would skew each other) and keeps the output.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCHES = {  # name -> (script, what it measures)
    "train": ("bench_train.py", "droidft vs stock `mlx_lm lora` tokens/s, BLAS, time to first metric"),
    "store": ("bench_store.py", "DuckDB store: open/insert/read costs, concurrent rates, Sessions query"),
    "dashboard": ("bench_dashboard.py", "Sessions render at 1,000 runs / 1,000,000 metrics, metric-to-chart latency"),
    "generate": ("bench_generate.py", "generation tokens/s vs stock `mlx_lm generate`"),
    "fusion": ("bench_fusion.py", "adapter fusion throughput"),
    "distributed": ("bench_distributed.py", "1 vs 2 local ranks (correctness, not speed, on one machine)"),
    "queue": ("bench_queue.py", "run queue hand-over: one run's end to the next run's first metric"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated subset of: " + ", ".join(BENCHES))
    parser.add_argument("--out", default=str(ROOT / "docs" / "BENCHMARKS.md"))
    args = parser.parse_args()
    chosen = args.only.split(",") if args.only else list(BENCHES)

    sections = []
    for name in chosen:
        script, what = BENCHES[name]
        path = ROOT / "bench" / script
        if not path.exists():
            continue
        print(f"== {name}: {what}", flush=True)
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
        took = time.perf_counter() - t0
        text = out.stdout.strip() + (f"\n[exit {out.returncode}]\n{out.stderr[-1500:]}" if out.returncode else "")
        print(text, flush=True)
        sections.append(f"## {name}: {what}\n\n`python bench/{script}` ({took:.0f} s)\n\n```\n{text}\n```\n")

    header = (f"# Benchmarks\n\nLatest output of `python bench/run_all.py`, "
              f"{time.strftime('%Y-%m-%d %H:%M')} on {platform.platform()}, {os.cpu_count()} cores, "
              f"Python {platform.python_version()}. Ratios are measured side by side within one run.\n\n")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(header + "\n".join(sections))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
