"""Soak: does a LAN dashboard left open for days grow without bound? (issue 17, item 10)

A real training run of the demo model (a detached worker, as the dashboard starts it) runs for
`--minutes` while `--tabs` Chromium tabs watch it on the Monitor of a real `streamlit run`
server; then the run is stopped and the tabs stay `--after` minutes more. Every `--every`
seconds it prints the server's and the worker's resident memory, the server's open files and
threads, and the run's metric rows. At the start and the end of each phase it measures the
Monitor's poll: how long a full Monitor run takes on the server (AppTest, same store) and how
long a new report takes to show in a tab. At the end it prints the growth per minute.

    python bench/bench_soak.py [--minutes 60] [--after 10] [--tabs 3] [--every 30]

`--scaling` measures instead how the server's memory depends on the run's length and the
number of tabs, each on a fresh server: tabs on the Monitor of a running run whose store
already holds 2,000 / 20,000 / 100,000 metric rows (written here as the worker writes them;
what the dashboard holds depends on the rows, not on who wrote them).

    python bench/bench_soak.py --scaling [--rows 2000,20000,100000] [--tab-counts 1,3] [--settle 60]

Nothing here passes or fails; read the numbers (docs/BENCHMARKS.md, "Soak").
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_dashboard import CHROMIUM, dashboard_in_chromium  # noqa: E402


def rss_mb(pid: int | None, children: bool = False) -> float | None:
    """Resident memory of a process (and its descendants) in MB, from /proc or `ps`."""
    if not pid:
        return None
    pids = [pid] + (descendants(pid) if children else [])
    total = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            out = subprocess.run(["ps", "-o", "rss=", "-p", str(p)], capture_output=True, text=True)
            total += int(out.stdout.strip() or 0)
    return total / 1024


def descendants(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout
    kids: dict[int, list[int]] = {}
    for line in out.splitlines():
        child, parent = (int(x) for x in line.split())
        kids.setdefault(parent, []).append(child)
    found, todo = [], [pid]
    while todo:
        for child in kids.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def open_files(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def threads(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return None


def monitor_run_seconds(run_id: str, repeats: int = 5) -> float:
    """Median time of a whole Monitor page run on the server side (AppTest): read the run,
    snapshot the store, merge, build the charts."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "app" / "Home.py"), default_timeout=300).run()
    at.query_params["run"] = run_id
    at.switch_page("views/monitor.py").run()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        at.run()
        times.append(time.perf_counter() - t)
    assert not at.exception, [e.value for e in at.exception]
    return statistics.median(times)


def report_to_tab_seconds(page, run_id: str, samples: int = 5) -> float | None:
    """Median time from a train-loss report (its time in the store, stamped by the worker when
    the trainer reported it) to its value showing in the tab's Train loss tile."""
    from droidft import store

    tile = "[...document.querySelectorAll('[data-testid=\"stMetric\"]')].find(e => e.innerText.startsWith('Train loss'))"
    lat = []
    for _ in range(samples):
        before = page.evaluate(f"() => ({tile}) ? ({tile}).innerText : ''")
        try:
            page.wait_for_function(f"b => ({tile}) && ({tile}).innerText !== b", arg=before,
                                   timeout=60_000, polling=20)
        except Exception:  # noqa: BLE001 - the run ended or stalled: no sample
            break
        seen = time.time()
        shown = page.evaluate(f"() => ({tile}).innerText").split("\n")[-1].strip()
        rows = store.metrics(run_id, names=["train_loss"])
        match = [r for r in reversed(rows) if f"{r['value']:.4g}" == shown]
        if match:
            lat.append(seen - match[0]["time"])
    return statistics.median(lat) if lat else None


def slope(rows: list[dict], key: str) -> float:
    """Least-squares growth of `key` per minute over samples {'min': ..., key: ...}: robust to one
    noisy sample at either end."""
    pts = [(r["min"], r[key]) for r in rows if r.get(key) is not None]
    if len(pts) < 2 or pts[-1][0] == pts[0][0]:
        return 0.0
    mx = statistics.mean(p[0] for p in pts)
    my = statistics.mean(p[1] for p in pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)


def browser_mb() -> float | None:
    """Resident memory of the Chromium processes this bench started (all tabs)."""
    total = 0.0
    for pid in descendants(os.getpid()):
        try:
            if "chrom" in Path(f"/proc/{pid}/comm").read_text():
                total += rss_mb(pid) or 0.0
        except OSError:
            continue
    return total or None


def scaling(row_counts: list[int], tab_counts: list[int], settle: float, every: float = 30.0) -> None:
    """Server memory with `tabs` Monitor tabs on a running run of `rows` metric rows, each on a
    fresh server, against the same server with no tab open."""
    from bench_dashboard import live_run

    from droidft import store

    names = ("train_loss", "learning_rate", "tokens_per_second", "peak_memory_gb", "trained_tokens")
    print(f"{'rows':>8} {'tabs':>4} {'server MB, after one visit':>27} {'with tabs':>10} {'per tab':>8} {'browser MB':>11}")
    for rows in row_counts:
        with tempfile.TemporaryDirectory(prefix="droidft-soak-") as home:
            os.environ["DROIDFT_HOME"] = home
            rid, holder = live_run()
            now = time.time()
            steps = rows // len(names)
            store.add_metrics([(rid, s, n, 1.0 / s, now - steps + s) for s in range(1, steps + 1) for n in names])
            try:
                for tabs in tab_counts:
                    with dashboard_in_chromium() as (url, browser, server):
                        warm = browser.new_page()  # one Monitor visit first: imports and caches loaded
                        warm.goto(f"{url}/monitor?run={rid}")
                        warm.get_by_text("Train loss").first.wait_for(timeout=300_000)
                        warm.close()
                        time.sleep(35)  # its session is gone (presence forgets it after 30 s)
                        base = rss_mb(server.pid)
                        pages = []
                        for _ in range(tabs):
                            page = browser.new_page()
                            page.goto(f"{url}/monitor?run={rid}")
                            page.get_by_text("Train loss").first.wait_for(timeout=300_000)
                            pages.append(page)
                        seen = []  # memory while the tabs poll a run whose length does not change
                        end = time.monotonic() + settle
                        while time.monotonic() < end:
                            time.sleep(min(every, max(0.0, end - time.monotonic())))
                            seen.append({"min": (settle - (end - time.monotonic())) / 60, "mb": rss_mb(server.pid)})
                        full = seen[-1]["mb"]
                        if len(seen) > 3:
                            half = seen[len(seen) // 2:]
                            print(f"         steady {tabs} tab(s), {rows:,} rows: {half[0]['mb']:.1f} -> "
                                  f"{half[-1]['mb']:.1f} MB, {slope(half, 'mb'):+.2f} MB/min over the last "
                                  f"{half[-1]['min'] - half[0]['min']:.1f} of {settle / 60:.1f} min", flush=True)
                        print(f"{rows:>8,} {tabs:>4} {base:>27.1f} {full:>10.1f} {(full - base) / tabs:>8.1f} "
                              f"{browser_mb() or 0:>11.0f}", flush=True)
            finally:
                holder.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scaling", action="store_true", help="memory against run length and tabs instead")
    ap.add_argument("--rows", default="2000,20000,100000", help="with --scaling: metric rows of the run")
    ap.add_argument("--tab-counts", default="1,3", help="with --scaling: tabs to open")
    ap.add_argument("--settle", type=float, default=60.0, help="with --scaling: seconds the tabs poll")
    ap.add_argument("--minutes", type=float, default=60.0, help="how long the run trains while watched")
    ap.add_argument("--after", type=float, default=10.0, help="minutes the tabs stay after the run ends")
    ap.add_argument("--tabs", type=int, default=3)
    ap.add_argument("--every", type=float, default=30.0, help="seconds between memory samples")
    ap.add_argument("--steps-per-report", type=int, default=None,
                    help="the run's report cadence (default: the demo preset's); 1 grows the store "
                         "10x faster, as a faster machine would")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("bench_soak: terminated"))  # still stop what it started
    if not Path(CHROMIUM).exists():
        sys.exit(f"bench_soak needs Chromium at {CHROMIUM} (DROIDFT_CHROMIUM)")
    if args.scaling:
        scaling([int(n) for n in args.rows.split(",")], [int(n) for n in args.tab_counts.split(",")], args.settle,
                min(args.every, args.settle))
        return

    with tempfile.TemporaryDirectory(prefix="droidft-soak-") as home:
        os.environ["DROIDFT_HOME"] = home
        from droidft import jobs, store
        from droidft import studio as us

        config = us.demo_config().replace(name="soak", iters=10**7, steps_per_eval=10**7, save_every=10**7)
        if args.steps_per_report:
            config = config.replace(steps_per_report=args.steps_per_report)
        run_id = jobs.start(config)
        print(f"soak: run {run_id} ({config.steps_per_report} steps per report), {args.tabs} tabs, "
              f"{args.minutes:g} min running + {args.after:g} min after; home {home}")
        with dashboard_in_chromium() as (url, browser, server):
            pages = []
            for _ in range(args.tabs):
                page = browser.new_page()
                page.goto(f"{url}/monitor?run={run_id}")
                page.get_by_text("Train loss").first.wait_for(timeout=300_000)
                pages.append(page)
            t0 = time.monotonic()
            samples = []

            def sample(phase: str) -> None:
                run = store.get_run(run_id)
                row = {"min": (time.monotonic() - t0) / 60, "phase": phase,
                       "rows": len(store.metrics(run_id)), "server": rss_mb(server.pid),
                       "worker": rss_mb(run.get("pid"), children=True) if run["status"] in jobs.ACTIVE else None,
                       "fds": open_files(server.pid), "threads": threads(server.pid), "browser": browser_mb()}
                samples.append(row)
                worker = f"{row['worker']:8.1f}" if row["worker"] else "       -"
                print(f"{row['min']:6.1f} {phase:8} {row['rows']:>8} {row['server']:10.1f} {worker} "
                      f"{row['fds'] or '-':>6} {row['threads'] or '-':>7} {row['browser'] or 0:>10.0f}", flush=True)

            def latency(label: str) -> None:
                tab = report_to_tab_seconds(pages[0], run_id) if label.startswith("running") else None
                page_s = monitor_run_seconds(run_id)
                print(f"       poll, {label}: Monitor page run {page_s * 1000:.0f} ms (server, AppTest)"
                      + (f", report -> tab {tab:.2f} s" if tab is not None else ""), flush=True)

            print("   min phase        rows  server MB worker MB   fds  threads browser MB")
            sample("running")
            latency("running, start")
            deadline = t0 + args.minutes * 60
            while time.monotonic() < deadline:
                time.sleep(min(args.every, max(0.0, deadline - time.monotonic())))
                sample("running")
            latency("running, end")
            jobs.stop(run_id)
            jobs.wait(run_id, timeout=600)
            sample("ended")
            end_of_run = time.monotonic()
            deadline = end_of_run + args.after * 60
            while time.monotonic() < deadline:
                time.sleep(min(args.every, max(0.0, deadline - time.monotonic())))
                sample("ended")
            latency("ended, end")
            for page in pages:
                page.close()

        run_rows = [s for s in samples if s["phase"] == "running"]
        after = [s for s in samples if s["phase"] == "ended"]

        rows_per_min = slope(run_rows, "rows")
        print(f"\nsummary ({args.tabs} tabs): metric rows +{rows_per_min:,.0f}/min while running; "
              f"server {run_rows[0]['server']:.0f} -> {run_rows[-1]['server']:.0f} MB "
              f"({slope(run_rows, 'server'):+.2f} MB/min running, {slope(after, 'server'):+.2f} MB/min after); "
              f"worker {slope(run_rows, 'worker'):+.2f} MB/min; browser {slope(run_rows, 'browser'):+.2f} MB/min; "
              f"server open files "
              f"{run_rows[0]['fds']} -> {after[-1]['fds'] if after else run_rows[-1]['fds']}")
        if rows_per_min > 0:
            print(f"         server growth per 1,000 metric rows: "
                  f"{slope(run_rows, 'server') / rows_per_min * 1000:.2f} MB")


if __name__ == "__main__":
    main()
