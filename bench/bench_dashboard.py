"""Dashboard benchmarks (issue 4): print the numbers, they are not pass/fail tests.

1. Sessions render time with 1,000 runs and 1,000,000 metric rows in the store: the page
   script timed under Streamlit's AppTest (cold first render, then warm renders), with no
   selection and with two runs selected (overlay + config diff), next to the store query alone.
2. Metric-to-chart latency: a metric reported the way the training worker reports it (a
   `store.BatchWriter` with its background flush) until it is in the Monitor's data:
   a) the Monitor's own polling (store.snapshot + merge every POLL_SECONDS), in-process;
   b) end to end in a real browser against `streamlit run` (Playwright + system Chromium),
      until the value shows on the page. Skipped when Chromium is missing.

    python bench/bench_dashboard.py [--runs 100,1000] [--rows-per-run 1000] [--samples 15] [--no-browser]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "app"))
CHROMIUM = os.environ.get("DROIDFT_CHROMIUM", "/usr/bin/chromium")


def stats(xs: list[float]) -> str:
    xs = sorted(xs)
    p95 = xs[min(len(xs) - 1, int(round(0.95 * (len(xs) - 1))))]
    return f"median {statistics.median(xs) * 1000:7.1f} ms  p95 {p95 * 1000:7.1f} ms  max {xs[-1] * 1000:7.1f} ms  (n={len(xs)})"


# -- 1. Sessions at scale --------------------------------------------------------------------------


def fill_store(n_runs: int, n_rows: int) -> list[str]:
    """n_runs finished SFT runs sharing n_rows metric rows (train/val loss, lr, speed, memory)."""
    from droidft import store
    from droidft.config import SFTConfig

    t0 = time.perf_counter()
    rng = random.Random(0)
    ids = []
    per_run = max(1, n_rows // n_runs)
    names = ["train_loss", "learning_rate", "tokens_per_second", "peak_memory_gb", "trained_tokens"]
    steps = max(1, per_run // len(names))
    batch: list[tuple] = []
    for i in range(n_runs):
        cfg = SFTConfig(iters=steps * 10, learning_rate=rng.choice([1e-4, 2e-4, 5e-4]), seed=i).to_dict()
        rid = store.create_run(method=rng.choice(["sft", "sft", "grpo", "dpo"]), config=cfg,
                               model="/models/demo", data=f"/data/set{i % 7}", name=f"run {i}")
        start = time.time() - 86400 + i * 60
        store.update_run(rid, status=rng.choice(["completed", "completed", "stopped", "failed"]),
                         started_at=start, ended_at=start + 600, adapter_path=f"/runs/{rid}/adapters")
        ids.append(rid)
        written = 0
        for s in range(1, steps + 1):
            for name in names:
                if written >= per_run:
                    break
                value = {"train_loss": 3 * 0.99 ** s + rng.random() * 0.05, "learning_rate": 1e-4,
                         "tokens_per_second": 2000 + rng.random() * 500, "peak_memory_gb": 0.04,
                         "trained_tokens": s * 512}[name]
                batch.append((rid, s * 10, name, value, start + s))
                written += 1
        if len(batch) >= 200_000:
            store.add_metrics(batch)
            batch = []
    if batch:
        store.add_metrics(batch)
    print(f"filled the store: {n_runs} runs, {per_run * n_runs:,} metric rows in {time.perf_counter() - t0:.1f} s")
    return ids


def bench_sessions(ids: list[str], repeats: int = 5) -> None:
    from streamlit.testing.v1 import AppTest

    from droidft import store

    q = []
    for _ in range(repeats):
        t = time.perf_counter()
        frame = store.run_summaries()
        q.append(time.perf_counter() - t)
    print(f"store.run_summaries ({len(frame)} rows):           {stats(q)}")

    app = str(REPO / "app" / "Home.py")
    for label, query in (("Sessions, no selection", {}), ("Sessions, 2 runs selected", {"select": ",".join(ids[:2])})):
        times = []
        for i in range(repeats + 1):
            at = AppTest.from_file(app, default_timeout=120)
            at.run()
            for k, v in query.items():
                at.query_params[k] = v
            at.switch_page("views/sessions.py")
            t = time.perf_counter()
            at.run()
            elapsed = time.perf_counter() - t
            assert not at.exception, [e.value for e in at.exception]
            assert len(at.dataframe[0].value) == len(ids)
            if i == 0:
                print(f"{label + ' (cold)':42} {elapsed * 1000:7.1f} ms")
            else:
                times.append(elapsed)
        print(f"{label + ' (warm)':42} {stats(times)}")


# -- 2. metric-to-chart latency ---------------------------------------------------------------------------


def live_run() -> tuple[str, subprocess.Popen]:
    """A run the dashboard sees as running: a live process whose command line names the run
    (what jobs.pid_alive checks), so nothing reaps it; metrics come from a BatchWriter here."""
    from droidft import store
    from droidft.config import SFTConfig

    rid = store.create_run(method="sft", config=SFTConfig(iters=100000).to_dict(), model="demo",
                           data="demo", name="latency probe")
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)", rid])
    store.update_run(rid, status="running", started_at=time.time(), heartbeat_at=time.time(), pid=holder.pid)
    return rid, holder


def bench_poll_latency(samples: int) -> None:
    """Writer (as the worker) -> the Monitor's poll loop (snapshot since last time, merge)."""
    from common import POLL_SECONDS

    from droidft import store
    from droidft import studio as us

    rid, holder = live_run()
    writer = store.BatchWriter(rid)
    writer.start_background()
    seen: dict[int, float] = {}
    stop = threading.Event()

    def poller():
        frame, last = None, None
        while not stop.is_set():
            snap = store.snapshot(rid, since_time=last - 5.0 if last else None)
            frame = us.merge_metrics(frame, snap["metrics"])
            if len(frame):
                last = float(frame["time"].max())
                now = time.perf_counter()
                for step in frame["step"].unique():
                    seen.setdefault(int(step), now)
            stop.wait(POLL_SECONDS)

    th = threading.Thread(target=poller, daemon=True)
    th.start()
    lat = []
    try:
        for i in range(1, samples + 1):
            time.sleep(random.uniform(0.3, 1.7))  # reports at arbitrary moments
            t = time.perf_counter()
            writer.metric(i, "train_loss", 1.0 + i)
            while i not in seen:
                time.sleep(0.005)
            lat.append(seen[i] - t)
    finally:
        stop.set()
        th.join()
        writer.close()
        holder.kill()
    print(f"report -> Monitor data (poll every {POLL_SECONDS} s):  {stats(lat)}")


@contextlib.contextmanager
def dashboard_in_chromium():
    """`streamlit run app/Home.py` on a free port (this process's DROIDFT_HOME) and a headless
    Chromium; yields (url, browser, server process) and stops both afterwards."""
    from playwright.sync_api import sync_playwright

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(REPO / "app" / "Home.py"), "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1"],
        cwd=REPO, env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                if urllib.request.urlopen(url + "/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"],
                                        env={k: v for k, v in os.environ.items() if k != "LD_PRELOAD"})
            try:
                yield url, browser, server
            finally:
                browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)


def bench_browser_latency(samples: int) -> None:
    """Writer (as the worker) -> the value on the Monitor page in Chromium (end to end)."""
    if not Path(CHROMIUM).exists():
        print(f"browser latency: skipped (no Chromium at {CHROMIUM})")
        return
    from droidft import store

    rid, holder = live_run()
    writer = store.BatchWriter(rid)
    writer.start_background()
    lat = []
    try:
        with dashboard_in_chromium() as (url, browser, _):
            page = browser.new_page()
            page.goto(f"{url}/monitor?run={rid}")
            writer.metric(0, "train_loss", 5.0)
            page.get_by_text("5", exact=True).first.wait_for(timeout=120_000)
            for i in range(1, samples + 1):
                time.sleep(random.uniform(0.3, 1.7))
                value = f"{100 + i}.5"
                t = time.perf_counter()
                writer.metric(i, "train_loss", float(value))
                page.wait_for_function(
                    "v => [...document.querySelectorAll('[data-testid=\"stMetricValue\"]')]"
                    ".some(e => e.innerText.trim() === v)", arg=value, timeout=30_000, polling=20)
                lat.append(time.perf_counter() - t)
    finally:
        writer.close()
        holder.kill()
    print(f"report -> shown in the browser (end to end):     {stats(lat)}")


def bench_monitor_traffic(steps_list=(100, 1000), seconds: float = 10.0) -> None:
    """Bytes a watching tab receives per second from the Monitor's 0.5 s poll, for a running
    run with N reported steps (5 metrics each), while the run adds no new rows: the cost
    every extra viewer on a LAN adds, and how it grows with the length of the run."""
    if not Path(CHROMIUM).exists():
        print(f"monitor traffic: skipped (no Chromium at {CHROMIUM})")
        return
    from droidft import store

    holders = []
    try:
        with dashboard_in_chromium() as (url, browser, _):
            for steps in steps_list:
                rid, holder = live_run()
                holders.append(holder)
                now = time.time()
                store.add_metrics([(rid, s, name, 1.0 / s, now - steps + s) for s in range(1, steps + 1)
                                   for name in ("train_loss", "learning_rate", "tokens_per_second",
                                                "peak_memory_gb", "trained_tokens")])
                page = browser.new_page()
                received: list[tuple[float, int]] = []
                cdp = page.context.new_cdp_session(page)
                cdp.send("Network.enable")
                cdp.on("Network.webSocketFrameReceived",
                       lambda e: received.append((time.time(), len(e["response"]["payloadData"]))))
                page.goto(f"{url}/monitor?run={rid}")
                page.get_by_text("Train loss").first.wait_for(timeout=120_000)
                page.wait_for_timeout(3000)
                t0 = time.time()
                page.wait_for_timeout(int(seconds * 1000))  # lets Playwright deliver the events
                late = [n for t, n in received if t >= t0]
                biggest = max(late, default=0) * 0.75 / 1024
                # binary frames arrive base64-encoded in CDP: 4 characters per 3 bytes
                print(f"Monitor traffic per watching tab, {steps:>5} steps x 5 metrics: "
                      f"{sum(late) * 0.75 / seconds / 1024:7.1f} KB/s ({len(late) / seconds:.1f} messages/s, "
                      f"largest {biggest:.1f} KB)")
                page.close()
    finally:
        for holder in holders:
            holder.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="100,1000",
                    help="comma-separated store sizes (number of runs) to render Sessions at")
    ap.add_argument("--rows-per-run", type=int, default=1000)
    ap.add_argument("--samples", type=int, default=15)
    ap.add_argument("--no-browser", action="store_true")
    args = ap.parse_args()

    for n_runs in (int(n) for n in args.runs.split(",")):
        with tempfile.TemporaryDirectory(prefix="droidft-bench-") as home:
            os.environ["DROIDFT_HOME"] = home
            print(f"== Sessions page at {n_runs:,} runs / {n_runs * args.rows_per_run:,} metric rows")
            ids = fill_store(n_runs, n_runs * args.rows_per_run)
            bench_sessions(ids)
    with tempfile.TemporaryDirectory(prefix="droidft-bench-") as home:
        os.environ["DROIDFT_HOME"] = home
        print("== metric-to-chart latency")
        bench_poll_latency(args.samples)
        if not args.no_browser:
            bench_browser_latency(args.samples)
    if not args.no_browser:
        with tempfile.TemporaryDirectory(prefix="droidft-bench-") as home:
            os.environ["DROIDFT_HOME"] = home
            print("== Monitor traffic")
            bench_monitor_traffic()


if __name__ == "__main__":
    main()
