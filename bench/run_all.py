"""Run every benchmark and record their output in docs/BENCHMARKS.md.

Usage: python bench/run_all.py [--only train,store,...]
Each bench script measures its ratios side by side within one run; this only runs
them in turn (never in parallel: they would skew each other) and keeps the output.
The hour-long soak runs only when named: --only soak (or with the others).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCHES = {  # name -> (script, what it measures[, arguments])
    "first_minute": ("bench_first_minute.py", "git clone to the fine-tuned answer in a real browser, "
                     "each phase; cold-cache install", ["--cold"]),
    "train": ("bench_train.py", "droidft vs stock `mlx_lm lora` tokens/s, BLAS kernels' GFLOP/s, "
              "time to first metric"),
    "sizes": ("bench_sizes.py", "demo / 23M / Qwen2.5-0.5B shape: tokens/s vs stock, peak memory vs "
              "estimate, FLOP/s vs matmul peak, generation vs stock"),
    "store": ("bench_store.py", "DuckDB store: open/insert/read costs, concurrent rates, Sessions query"),
    "dashboard": ("bench_dashboard.py", "Sessions render at 1,000 runs / 1,000,000 metrics, metric-to-chart latency"),
    "generate": ("bench_generate.py", "generation tokens/s vs stock `mlx_lm generate`"),
    "fusion": ("bench_fusion.py", "adapter fusion throughput"),
    "distributed": ("bench_distributed.py", "1 vs 2 local ranks (correctness, not speed, on one machine)"),
    "queue": ("bench_queue.py", "run queue hand-over: one run's end to the next run's first metric"),
    "methods": ("bench_methods_demo.py", "each method added with issue 14 on the demo task, before -> after"),
    "soak": ("bench_soak.py", "an hour of three Monitor tabs on a live run, then ten minutes after: memory over time"),
    "hub": ("bench_hub.py", "Hub pull vs `hf download` from a local Hub; Models page with 200 local models, 1,000 results"),
    "import": ("bench_import.py", "dataset import: DuckDB vs `datasets` reads, full import vs read"),
    "export": ("bench_export.py", "GGUF export throughput vs mlx-lm's own --export-gguf"),
}
ONLY_WHEN_NAMED = {"soak"}  # 70 minutes
KEEP_MARK = "<!-- run_all.py rewrites everything above this line and keeps everything below -->"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated subset of: " + ", ".join(BENCHES))
    parser.add_argument("--out", default=str(ROOT / "docs" / "BENCHMARKS.md"))
    args = parser.parse_args()
    chosen = args.only.split(",") if args.only else [b for b in BENCHES if b not in ONLY_WHEN_NAMED]

    sections, targets = [], []
    loads = [os.getloadavg()[0]]
    for name in chosen:
        script, what, *extra = BENCHES[name]
        bench_args = extra[0] if extra else []
        path = ROOT / "bench" / script
        if not path.exists():
            continue
        print(f"== {name}: {what}", flush=True)
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, str(path), *bench_args], capture_output=True, text=True, cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
        took = time.perf_counter() - t0
        loads.append(os.getloadavg()[0])
        lines = out.stdout.strip().splitlines()
        targets += [json.loads(line[len("TARGET "):]) for line in lines if line.startswith("TARGET ")]
        text = "\n".join(line for line in lines if not line.startswith("TARGET "))
        text += f"\n[exit {out.returncode}]\n{out.stderr[-1500:]}" if out.returncode else ""
        print(text, flush=True)
        command = " ".join(["python", f"bench/{script}", *bench_args])
        sections.append(f"## {name}: {what}\n\n`{command}` ({took:.0f} s)\n\n```\n{text}\n```\n")

    table = targets_table(targets)
    print("\n" + table, flush=True)
    header = (f"# Benchmarks\n\nLatest output of `python bench/run_all.py`, "
              f"{time.strftime('%Y-%m-%d %H:%M')} on {platform.platform()}, {os.cpu_count()} cores, "
              f"Python {platform.python_version()}; 1-minute load average "
              f"{min(loads):.2f}-{max(loads):.2f} between benches. "
              f"Ratios are measured side by side within one run.\n\n")
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    # Hand-written analyses and one-off measurements live below KEEP_MARK and survive a re-run.
    old = out_path.read_text() if out_path.exists() else ""
    kept = old[old.index(KEEP_MARK):] if KEEP_MARK in old else KEEP_MARK + "\n"
    out_path.write_text(header + "## Targets (issue 16)\n\n" + table + "\n\n" + "\n".join(sections) + "\n" + kept)
    print(f"wrote {args.out}")


def targets_table(targets: list[dict]) -> str:
    """The TARGET lines the benches printed, as a Markdown table."""
    rows = ["| what | measured | target | met |", "| --- | --- | --- | --- |"]
    for t in targets:
        met = {True: "yes", False: "**no**", None: "-"}[t.get("met")]
        rows.append(f"| {t['what']} | {t['measured']} | {t['target']} | {met} |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
