"""Benchmark droidft.store: connection costs, concurrent workers + pollers, Sessions query.

    .venv/bin/python bench/bench_store.py            # everything (~1.5 min on 2 cores)
    .venv/bin/python bench/bench_store.py --quick    # shorter concurrency runs

Each section uses its own temporary DROIDFT_HOME. Concurrency runs start real processes:
writers report through BatchWriter (background flush thread, like the training worker),
readers poll `snapshot()` like the Monitor page. "contended" counts polls that had to wait
for a lock at all (sidecar lock or a DuckDB retry); "retries" counts failed DuckDB opens.
Set DROIDFT_STORE_LOCKFILE=0 in a scenario to measure DuckDB's lock + retry alone.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

LOAD = textwrap.dedent("""
    import json, os, sys, time, traceback
    from droidft import store
    role, out, args = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    rep = {"role": role, "errors": [], "lat": [], "contended": 0}
    try:
        if role == "writer":
            w = store.BatchWriter(args["run_id"], interval=args["interval"])
            w.start_background()
            t_end = time.monotonic() + args["seconds"]
            i = 0
            while time.monotonic() < t_end:
                w.metric(i, "loss", float(i)); i += 1
                w.maybe_flush()
                time.sleep(args["pace"])
            w.close()
            rep.update(rows=i, flushes=w.flushes, busy_flushes=w.busy_flushes)
        else:
            k = 0
            while not os.path.exists(args["stop_file"]):
                before = store.stats["contended"]
                t0 = time.perf_counter()
                try:
                    store.snapshot(args["run_ids"][k % len(args["run_ids"])])
                except Exception as exc:
                    rep["errors"].append(repr(exc))
                rep["lat"].append(time.perf_counter() - t0)
                rep["contended"] += store.stats["contended"] > before
                k += 1
                time.sleep(args["poll"])
    except Exception:
        rep["errors"].append(traceback.format_exc())
    rep["stats"] = store.stats
    json.dump(rep, open(out, "w"))
""")


def fresh_home() -> Path:
    home = Path(tempfile.mkdtemp(prefix="droidft-bench-"))
    os.environ["DROIDFT_HOME"] = str(home)
    return home


class Timing(float):
    """A median in ms that prints as "median (min)": on a busy machine the minimum is the
    better estimate of the cost itself, the median of what a user sees."""

    def __new__(cls, median, low):
        obj = super().__new__(cls, median)
        obj.low = low
        return obj

    def __format__(self, spec):
        return f"{float(self):{spec}} ({self.low:{spec}})"


def median_ms(fn, n=40) -> Timing:
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return Timing(statistics.median(ts) * 1000, min(ts) * 1000)


def single_process(attach: bool) -> list[tuple[str, str]]:
    from droidft import store, store_db

    store_db.USE_ATTACH = attach  # the tunable lives with the connection code
    fresh_home()
    rid = store.create_run(method="sft", config={}, model="m", data="d")
    step = iter(range(10**9))
    out = []
    out.append(("write: open + insert 1 metric row + close",
                f"{median_ms(lambda: store.add_metrics([(rid, next(step), 'loss', 1.0, time.time())])):.1f} ms"))
    w = store.BatchWriter(rid)

    def flush50():
        for _ in range(50):
            w.metric(next(step), "loss", 1.0)
        w.event("e")
        w.flush()
    out.append(("write: BatchWriter flush (50 metrics + 1 event + heartbeat)", f"{median_ms(flush50):.1f} ms"))
    out.append(("write: 1,000 rows in one add_metrics",
                f"{median_ms(lambda: store.add_metrics([(rid, next(step), 'x', 1.0, 1.0) for _ in range(1000)]), 20):.1f} ms"))
    out.append(("read: read-only open + get_run + close", f"{median_ms(lambda: store.get_run(rid)):.1f} ms"))
    mon = store.create_run(method="grpo", config={}, model="m", data="d")
    store.add_metrics([(mon, s, n, 1.0, float(s)) for s in range(250) for n in ("train_loss", "val_loss", "lr", "tok")])
    store.add_events([(mon, float(t), "info", f"line {t}") for t in range(200)])
    store.add_samples([(mon, s, float(s), "prompt " * 20, "completion " * 40, 0.5, {"r": 1}) for s in range(100)])
    for s in range(5):
        store.add_artifact(kind="checkpoint", path=f"/c/{s}", run_id=mon, step=s)
    out.append(("read: snapshot, run with 1,000 metrics/200 events/100 samples",
                f"{median_ms(lambda: store.snapshot(mon)):.1f} ms"))
    out.append(("read: snapshot(since_time) of the last 5 s only (Monitor poll)",
                f"{median_ms(lambda: store.snapshot(mon, since_time=245.0)):.1f} ms"))
    import duckdb
    out.append(("duckdb alone: connect(':memory:') + close",
                f"{median_ms(lambda: duckdb.connect(':memory:').close()):.1f} ms"))
    store_db.USE_ATTACH = True
    return out


def concurrent(label, *, seconds, pace, interval, poll, writers=3, readers=2, lockfile="1", attach="1"):
    from droidft import store

    home = fresh_home()
    script = home / "load.py"
    script.write_text(LOAD)
    store.init()
    run_ids = [store.create_run(method="sft", config={}, model="m", data="d") for _ in range(writers)]
    stop = home / "stop"
    env = dict(os.environ, DROIDFT_STORE_LOCKFILE=lockfile, DROIDFT_STORE_ATTACH=attach)

    def start(role, i, args):
        out = home / f"{role}{i}.json"
        return subprocess.Popen([sys.executable, str(script), role, str(out), json.dumps(args)],
                                cwd=REPO, env=env), out

    rs = [start("reader", i, {"run_ids": run_ids, "poll": poll, "stop_file": str(stop)})
          for i in range(readers)]
    time.sleep(1.0)  # readers past their imports, so they poll through the whole write phase
    ws = [start("writer", i, {"run_id": r, "seconds": seconds, "pace": pace, "interval": interval})
          for i, r in enumerate(run_ids)]
    for p, _ in ws:
        p.wait()
    stop.touch()
    for p, _ in rs:
        p.wait()
    reps = [json.loads(o.read_text()) for _, o in ws + rs]
    wr = [r for r in reps if r["role"] == "writer"]
    rd = [r for r in reps if r["role"] == "reader"]
    sent = sum(r["rows"] for r in wr)
    landed = sum(len(store.metrics(r)) for r in run_ids)
    lat = sorted(x for r in rd for x in r["lat"])
    errors = sum(len(r["errors"]) for r in reps)
    polls = len(lat)
    return {
        "scenario": label,
        "rows landed": f"{landed}/{sent}",
        "write tx/s": f"{sum(r['flushes'] for r in wr) / seconds:.1f}",
        "polls": polls,
        "contended": f"{sum(r['contended'] for r in rd)} ({100 * sum(r['contended'] for r in rd) / max(polls, 1):.0f}%)",
        "retries r/w": f"{sum(r['stats']['retries'] for r in rd)}/{sum(r['stats']['retries'] for r in wr)}",
        "poll p50/p95/max ms": f"{1000 * lat[len(lat) // 2]:.0f}/{1000 * lat[int(len(lat) * .95)]:.0f}/{1000 * lat[-1]:.0f}" if lat else "-",
        "errors": errors,
        "busy": sum(r["stats"]["busy"] for r in reps) + sum(r.get("busy_flushes", 0) for r in wr),
    }


def summaries_at_scale(n_runs=1000, n_metrics=1_000_000) -> list[tuple[str, str]]:
    from droidft import store

    fresh_home()
    store.init()
    t = time.perf_counter()
    with store.connect(read_only=False) as con:
        con.execute("""INSERT INTO runs (id, name, method, status, config, model, data, created_at,
                       started_at, ended_at, heartbeat_at)
                       SELECT 'run' || lpad(i::VARCHAR, 5, '0'), 'run ' || i, 'sft', 'completed', '{}',
                              'demo', 'data', i, i, i + 100, i + 100 FROM range(?) t(i)""", [n_runs])
        # runs report interleaved in time, like concurrent workers: 4 names per step
        con.execute("""INSERT INTO metrics SELECT 'run' || lpad((i % ?)::VARCHAR, 5, '0'),
                       (i // (? * 4)) * 10,
                       ['train_loss', 'val_loss', 'trained_tokens', 'learning_rate'][(i // ?) % 4 + 1],
                       random(), i / 1000.0 FROM range(?) t(i)""", [n_runs, n_runs, n_runs, n_metrics])
    gen = time.perf_counter() - t
    mid = f"run{n_runs // 2:05d}"
    return [
        ("fill the store (bulk SQL)", f"{gen * 1000:.0f} ms"),
        ("run_summaries() (all runs, open + query + .df() + close)", f"{median_ms(store.run_summaries, 10):.1f} ms"),
        ("run_summaries(limit=50)", f"{median_ms(lambda: store.run_summaries(50), 10):.1f} ms"),
        (f"metrics(one run) ({n_metrics // n_runs} rows)", f"{median_ms(lambda: store.metrics(mid), 10):.1f} ms"),
        ("snapshot(one run)", f"{median_ms(lambda: store.snapshot(mid), 10):.1f} ms"),
        ("list_runs()", f"{median_ms(store.list_runs, 10):.1f} ms"),
    ]


def table(rows, headers):
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    line = lambda r: "  ".join(str(x).ljust(w) for x, w in zip(r, widths))
    print(line(headers))
    print(line(["-" * w for w in widths]))
    for r in rows:
        print(line(r))
    print()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    import duckdb
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"duckdb {duckdb.__version__}, python {sys.version.split()[0]}, {os.cpu_count()} cores, "
          f"load average before start {load}\n")

    attach, classic = single_process(True), single_process(False)
    table([(a[0], a[1], c[1]) for a, c in zip(attach, classic)],
          ["single process: median (min)", "ATTACH (default)", "connect per access"])

    secs = 4 if args.quick else 8
    scenarios = [
        ("realistic", dict(pace=0.1, interval=1.0, poll=0.25)),
        ("stress", dict(pace=0.02, interval=0.02, poll=0.1)),
    ]
    rows = []
    variants = [("ATTACH + lock file (default)", "1", "1"), ("ATTACH, retry only", "1", "0"),
                ("connect + lock file", "0", "1"), ("connect, retry only (design doc)", "0", "0")]
    for label, kw in scenarios:
        for name, attach, lockfile in variants:
            r = concurrent(f"{label} | {name}", seconds=secs, lockfile=lockfile, attach=attach, **kw)
            rows.append(list(r.values()))
            headers = list(r)
    print("realistic: 3 workers report every 0.1 s and flush once a second, 2 pollers snapshot() every 0.25 s")
    print("stress: 3 workers flush every 20 ms (the design doc's failing case), 2 pollers every 0.1 s")
    print(f"{secs} s of writing per scenario; 'busy' = StoreBusy raised anywhere (must be 0)")
    table(rows, headers)

    sizes = [(10, 10_000), (100, 100_000), (1000, 1_000_000)]
    columns = [summaries_at_scale(n, m) for n, m in sizes]
    table([(rows[0][0], *(r[1] for r in rows)) for rows in zip(*columns)],
          ["Sessions-page queries as the store grows: median (min)",
           *(f"{n:,} runs / {m:,} rows" for n, m in sizes)])


if __name__ == "__main__":
    main()
