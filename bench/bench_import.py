"""Benchmark dataset import: reading a file with DuckDB (droidft) vs the `datasets` package,
and the whole import (read, map, validate every row, split, write) vs the read alone.

    .venv/bin/python bench/bench_import.py               # 100,000 Alpaca rows per format
    .venv/bin/python bench/bench_import.py --rows 20000  # quicker

Each format's three timings run side by side in one process, on the same file, best of
--repeat runs, with a fresh DROIDFT_HOME and `datasets` cache per run (no cache hits).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def alpaca_rows(n: int) -> list[dict]:
    return [{"instruction": f"Write the number {i} in words and add a short remark about it.",
             "input": "" if i % 3 else f"Context line {i} with a few more words to read.",
             "output": f"The number {i} is written out here, with a sentence about it. " * 2} for i in range(n)]


def write(path: Path, rows: list[dict]) -> Path:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif path.suffix == ".csv":
        with open(path, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as tmp:
            os.environ["DROIDFT_HOME"] = tmp
            t0 = time.perf_counter()
            fn(Path(tmp))
            times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    import datasets

    from droidft.data import imports, mapping

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    rows = alpaca_rows(args.rows)
    print(f"{args.rows:,} Alpaca rows per file; best of {args.repeat}; seconds\n")
    print(f"{'format':8} {'size MB':>8} {'duckdb read':>12} {'datasets read':>14} {'ratio':>6} "
          f"{'full import':>12} {'import/read':>12} {'rows/s':>9}")
    with tempfile.TemporaryDirectory() as src_dir:
        for suffix, builder in ((".jsonl", "json"), (".csv", "csv"), (".parquet", "parquet")):
            path = write(Path(src_dir) / f"alpaca{suffix}", rows)

            def duck(_tmp, path=path):
                assert len(imports.read_file(path).rows) == args.rows

            def hf(tmp, path=path, builder=builder):
                ds = datasets.load_dataset(builder, data_files=str(path), split="train", cache_dir=str(tmp / "c"))
                assert len(ds.to_list()) == args.rows

            def full(_tmp, path=path):
                source = imports.read_file(path)
                result = imports.import_dataset(source, mapping.auto_map(source.columns), "bench")
                assert result.provenance["rows"]["imported"] == args.rows

            t_duck, t_hf, t_full = best(duck, args.repeat), best(hf, args.repeat), best(full, args.repeat)
            size = path.stat().st_size / 2**20
            print(f"{suffix[1:]:8} {size:8.1f} {t_duck:12.2f} {t_hf:14.2f} {t_hf / t_duck:6.2f} "
                  f"{t_full:12.2f} {t_full / t_duck:12.2f} {args.rows / t_full:9,.0f}")
    print("\nratio = datasets read / DuckDB read (above 1: DuckDB is faster); import/read = the cost of "
          "mapping, validating every row, splitting and writing, in units of the read itself.")


if __name__ == "__main__":
    main()
