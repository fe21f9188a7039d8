"""A dashboard left open for days on a long run holds a bounded amount per tab: the Monitor
keeps every recent report and a thinned history, charts at most a fixed number of points per
series, and forgets runs it no longer shows (bench/bench_soak.py measures the memory)."""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow as pa
from streamlit.testing.v1 import AppTest

from droidft import store
from droidft import studio as us
from helpers import demo_sft

APP = Path(__file__).resolve().parent.parent / "app" / "Home.py"
NAMES = ("train_loss", "learning_rate", "tokens_per_second", "peak_memory_gb", "trained_tokens")


def long_run(steps: int, name: str = "long") -> str:
    rid = store.create_run(method="sft", config=demo_sft(iters=10**6).to_dict(), model="demo", data="demo",
                           name=name)
    now = time.time()
    store.update_run(rid, status="stopped", started_at=now - steps, ended_at=now)
    store.add_metrics([(rid, s, n, 1.0 / s, now - steps + s) for s in range(1, steps + 1) for n in NAMES])
    return rid


def chart_rows(at: AppTest) -> list[int]:
    """Rows of data each Monitor chart was sent (Arrow tables in the chart messages)."""
    out = []
    for chart in at.get("vega_lite_chart"):
        for ds in chart.proto.datasets:
            out.append(pa.ipc.open_stream(ds.data.data).read_all().num_rows)
    return out


def test_thin_history_keeps_recent_rows_and_a_sample_of_the_rest():
    frame = us.metrics_frame([{"step": s, "time": float(s), "name": n, "value": float(s)}
                              for s in range(1, 10_001) for n in ("a", "b")])
    thin = us.thin_history(frame, recent=1000, older=500)
    for name in ("a", "b"):
        steps = list(thin[thin["name"] == name]["step"])
        assert steps == sorted(steps) and len(steps) <= 1500
        assert steps[-1000:] == list(range(9001, 10_001)), "every recent report is kept"
        assert steps[0] == 1, "the start of the run stays on the chart"
    assert us.thin_history(frame.head(100), recent=1000, older=500) is not None
    assert len(us.thin_history(frame.head(100), recent=1000, older=500)) == 100


def test_the_monitor_holds_a_bounded_frame_and_charts_a_bounded_number_of_points(demo_model):
    rid = long_run(12_000)
    other = long_run(50, name="short")
    at = AppTest.from_file(str(APP), default_timeout=240).run()
    at.query_params["run"] = rid
    at.switch_page("views/monitor.py").run()
    assert not at.exception, [e.value for e in at.exception]
    frame = at.session_state["monitor_cache"][rid]["frame"]
    per_name = frame.groupby("name").size()
    assert per_name.max() <= 4000, per_name.to_dict()  # of 12,000 reports of each metric
    assert us.latest_values(frame)["train_loss"] == 1.0 / 12_000  # the newest value is exact
    assert "step 12000" in at.get("progress")[0].proto.text
    rows = chart_rows(at)
    assert rows and max(rows) <= 2 * 1000, rows  # at most 1,000 points per series (2 series per chart)

    at.query_params["run"] = other  # the tab moves to another run: the first one is let go
    at.run()
    assert list(at.session_state["monitor_cache"]) == [other]
