"""droidft.store against a real DuckDB file in a temporary DROIDFT_HOME (no mocks).

The concurrency tests start real processes: writers report through BatchWriter like the
training worker does, readers poll like the Monitor page does, and at the end every row
must be there and nobody may have seen an exception."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import duckdb
import pytest

from droidft import paths, store, store_db

REPO = Path(__file__).resolve().parent.parent


def make_run(**kw) -> str:
    args = dict(method="sft", config={"lr": 1e-4, "layers": [1, 2]}, model="demo", data="data/demo")
    args.update(kw)
    return store.create_run(**args)


# --------------------------------------------------------------------------- basics

def test_read_before_any_write_creates_the_schema(droidft_home):
    assert not paths.db_path().exists()
    assert store.list_runs() == []
    assert store.get_run("nope") is None
    assert store.metrics("nope") == []
    assert store.snapshot("nope") == {"run": None, "metrics": [], "events": [], "artifacts": [],
                                      "samples": []}
    assert len(store.run_summaries()) == 0
    assert paths.db_path().exists()
    store.init()  # idempotent
    store.init()


def test_new_run_id_is_readable_sortable_unique():
    ids = {store.new_run_id() for _ in range(200)}
    assert len(ids) > 190  # 4 hex chars per second; create_run retries collisions anyway
    rid = next(iter(ids))
    date, clock, suffix = rid.split("-")
    assert len(date) == 8 and len(clock) == 6 and len(suffix) == 4
    time.sleep(1.05)
    assert store.new_run_id() > max(ids)


def test_create_get_update_list_runs():
    before = time.time()
    a = make_run(name="first")
    after = time.time()
    time.sleep(0.01)
    b = make_run(method="grpo", parent_id=a, run_id="my-run", model=Path("/models/x"))
    assert b == "my-run"
    run = store.get_run(a)
    assert run["status"] == "queued" and run["name"] == "first" and run["method"] == "sft"
    assert run["config"] == {"lr": 1e-4, "layers": [1, 2]}  # decoded from JSON
    assert before <= run["created_at"] <= after
    assert store.get_run(b)["parent_id"] == a and store.get_run(b)["model"] == "/models/x"
    with pytest.raises(ValueError):
        make_run(run_id="my-run")  # duplicate explicit id

    store.update_run(a, status="running", started_at=1.0, pid=1234, heartbeat_at=2.0, blas="openblas",
                     host="box", adapter_path=Path("/x/adapters"), extra={"k": [1]}, error=None)
    run = store.get_run(a)
    assert (run["status"], run["pid"], run["blas"], run["host"]) == ("running", 1234, "openblas", "box")
    assert run["adapter_path"] == "/x/adapters" and run["extra"] == {"k": [1]}
    with pytest.raises(ValueError):
        store.update_run(a, statuss="running")
    with pytest.raises(ValueError):
        store.update_run(a, status="exploded")
    store.update_run(a)  # nothing to do

    assert [r["id"] for r in store.list_runs()] == [b, a]  # newest first
    assert [r["id"] for r in store.list_runs(status="running")] == [a]
    assert [r["id"] for r in store.list_runs(status=("running", "queued"))] == [b, a]
    assert [r["id"] for r in store.list_runs(method="grpo")] == [b]
    assert [r["id"] for r in store.list_runs(limit=1)] == [b]
    assert store.list_runs(status="failed") == []


def test_update_run_if_is_compare_and_set():
    rid = make_run()
    assert store.update_run_if(rid, ("queued", "running"), status="running")
    assert store.update_run_if(rid, "running", status="failed", error="died")
    assert not store.update_run_if(rid, ("queued", "running"), status="stopped")
    assert store.get_run(rid)["status"] == "failed"


def test_metrics_round_trip_and_filters():
    rid, other = make_run(), make_run()
    store.add_metrics([(rid, 2, "train_loss", 1.5, 20.0), (rid, 1, "train_loss", 2.0, 10.0),
                       (rid, 2, "val_loss", 1.7, 21.0), (rid, 3, "train_loss", 1.2, 30.0),
                       (other, 1, "train_loss", 9.0, 11.0)])
    store.add_metrics([])
    rows = store.metrics(rid)
    assert [(r["step"], r["name"]) for r in rows] == [(1, "train_loss"), (2, "train_loss"),
                                                     (2, "val_loss"), (3, "train_loss")]
    assert set(rows[0]) == {"run_id", "step", "name", "value", "time"}
    assert [r["value"] for r in store.metrics(rid, names=["val_loss"])] == [1.7]
    assert [r["step"] for r in store.metrics(rid, since_time=20.0)] == [2, 3]  # exclusive
    assert store.latest_metrics(rid) == {"train_loss": 1.2, "val_loss": 1.7}
    assert store.latest_metrics("nope") == {}

    df = store.metrics_frame([rid, other], names=["train_loss"])
    assert list(df.columns) == ["run_id", "step", "name", "value", "time"]
    assert len(df) == 4 and set(df.run_id) == {rid, other}
    assert len(store.metrics_frame([])) == 0

    store.add_metrics([(rid, 4, "x", float("nan"), 40.0)])  # NaN survives as a float
    assert math.isnan(store.latest_metrics(rid)["x"])


def test_events_and_samples_keep_the_last_n_in_order():
    rid = make_run()
    store.add_events([(rid, float(t), "info" if t % 2 else "warning", f"line {t}") for t in range(10)])
    ev = store.events(rid, limit=3)
    assert [e["message"] for e in ev] == ["line 7", "line 8", "line 9"]
    assert ev[0]["level"] == "info" and ev[1]["level"] == "warning" and set(ev[0]) == {"run_id", "time", "level", "message"}
    assert len(store.events(rid)) == 10

    store.add_samples([(rid, s, float(s), f"p{s}", f"c{s}", s / 10, {"rewards": {"len": s}})
                       for s in range(5)])
    store.add_samples([(rid, 5, 5.0, "p5", "c5", None, json.dumps({"raw": True}))])
    sm = store.samples(rid, limit=2)
    assert [s["step"] for s in sm] == [4, 5]
    assert sm[0]["meta"] == {"rewards": {"len": 4}} and sm[0]["reward"] == 0.4
    assert sm[1]["meta"] == {"raw": True} and sm[1]["reward"] is None
    assert len(store.samples(rid)) == 6


def test_artifacts_and_evaluations():
    rid = make_run()
    a1 = store.add_artifact(kind="checkpoint", path="/r/0000100_adapters.safetensors", run_id=rid,
                            step=100, meta={"val_loss": 1.2})
    a2 = store.add_artifact(kind="final_adapter", path=Path("/r/adapters"), run_id=rid, step=200)
    a3 = store.add_artifact(kind="fused_model", path="/m/fused", meta={"sources": [rid]})
    assert len({a1, a2, a3}) == 3
    arts = store.artifacts(rid)
    assert [a["id"] for a in arts] == [a1, a2]
    assert arts[0]["meta"] == {"val_loss": 1.2} and arts[0]["step"] == 100
    assert arts[1]["path"] == "/r/adapters" and arts[1]["meta"] is None
    assert [a["id"] for a in store.artifacts(kind="fused_model")] == [a3]
    assert [a["id"] for a in store.artifacts(rid, kind="checkpoint")] == [a1]
    assert len(store.artifacts()) == 3

    e1 = store.add_evaluation(suite="perplexity", target="/r/adapters", dataset="valid",
                              results={"ppl": 3.2, "per_item": [1, 2]}, artifact_id=a2, run_id=rid)
    time.sleep(0.01)
    e2 = store.add_evaluation(suite="exact_match", target="/m/fused", dataset="test", results={"em": 0.5})
    assert [e["id"] for e in store.evaluations()] == [e2, e1]  # newest first
    ev = store.evaluations(target="/r/adapters")
    assert len(ev) == 1 and ev[0]["results"] == {"ppl": 3.2, "per_item": [1, 2]}
    assert ev[0]["artifact_id"] == a2 and ev[0]["suite"] == "perplexity"
    assert [e["id"] for e in store.evaluations(run_id=rid)] == [e1]


def test_delete_run_removes_every_row():
    rid, keep = make_run(), make_run()
    for r in (rid, keep):
        store.add_metrics([(r, 1, "train_loss", 1.0, 1.0)])
        store.add_events([(r, 1.0, "info", "x")])
        store.add_samples([(r, 1, 1.0, "p", "c", 1.0, None)])
        store.add_artifact(kind="checkpoint", path="/p", run_id=r, step=1)
        store.add_evaluation(suite="s", target="t", dataset="d", results={}, run_id=r)
    store.delete_run(rid)
    with store.connect() as con:
        for table, col in [("runs", "id"), ("metrics", "run_id"), ("events", "run_id"),
                           ("samples", "run_id"), ("artifacts", "run_id"), ("evaluations", "run_id")]:
            counts = dict(con.execute(f"SELECT {col}, count(*) FROM {table} GROUP BY {col}").fetchall())
            assert rid not in counts and counts[keep] == 1, table


def test_run_summaries_aggregates():
    a = make_run(name="a", model="m1", data="d1")
    time.sleep(0.01)
    b = make_run(name="b", parent_id=a)
    store.update_run(a, status="completed", started_at=100.0, ended_at=160.0, adapter_path="/a")
    store.update_run(b, status="running", started_at=time.time() - 30)
    store.add_metrics([(a, 10, "train_loss", 2.0, 1), (a, 20, "train_loss", 1.5, 2),
                       (a, 30, "train_loss", 1.1, 3), (a, 10, "val_loss", 1.9, 1),
                       (a, 30, "val_loss", 1.4, 3), (a, 20, "val_loss", 1.3, 2),
                       (a, 10, "trained_tokens", 500, 1), (a, 30, "trained_tokens", 1500, 3)])
    df = store.run_summaries()
    assert list(df.id) == [b, a]
    assert list(df.columns) == ["id", "name", "method", "status", "model", "data", "created_at",
                                "started_at", "ended_at", "duration_s", "best_val_loss",
                                "last_train_loss", "trained_tokens", "steps", "adapter_path",
                                "parent_id", "sweep_id", "queue_order"]
    ra = df[df.id == a].iloc[0]
    assert ra.best_val_loss == 1.3 and ra.last_train_loss == 1.1
    assert ra.trained_tokens == 1500 and ra.steps == 30 and ra.duration_s == 60.0
    assert ra.adapter_path == "/a" and ra.model == "m1" and ra.data == "d1"
    rb = df[df.id == b].iloc[0]
    assert 25 < rb.duration_s < 60  # a running run counts up to now
    assert math.isnan(rb.best_val_loss) and rb.parent_id == a
    assert len(store.run_summaries(limit=1)) == 1


def test_snapshot_has_everything_the_monitor_needs():
    rid = make_run()
    store.add_metrics([(rid, s, "train_loss", 1.0 / (s + 1), float(s)) for s in range(10)])
    store.add_events([(rid, float(t), "info", str(t)) for t in range(60)])
    store.add_samples([(rid, s, float(s), "p", "c", 0.0, None) for s in range(30)])
    store.add_artifact(kind="checkpoint", path="/c", run_id=rid, step=5)
    snap = store.snapshot(rid)
    assert snap["run"]["id"] == rid and len(snap["metrics"]) == 10
    assert len(snap["events"]) == 50 and snap["events"][-1]["message"] == "59"
    assert len(snap["samples"]) == 20 and snap["samples"][-1]["step"] == 29
    assert len(snap["artifacts"]) == 1
    assert [m["step"] for m in store.snapshot(rid, since_time=7.0)["metrics"]] == [8, 9]
    opens = store.stats["read_opens"]
    store.snapshot(rid)
    assert store.stats["read_opens"] == opens + 1  # one connection per snapshot


def test_schema_migrates_an_older_file(droidft_home):
    con = duckdb.connect(str(paths.db_path()))
    con.execute("CREATE TABLE runs (id VARCHAR PRIMARY KEY, name VARCHAR, status VARCHAR)")
    con.execute("INSERT INTO runs VALUES ('old', 'legacy', 'completed')")
    con.execute("CREATE TABLE metrics (run_id VARCHAR, step BIGINT, name VARCHAR, value DOUBLE)")
    con.close()
    run = store.get_run("old")
    assert run["name"] == "legacy" and run["blas"] is None and run["extra"] is None
    store.update_run("old", host="h", extra={"a": 1})
    assert store.get_run("old")["extra"] == {"a": 1}
    store.add_metrics([("old", 1, "loss", 1.0, 5.0)])
    assert store.metrics("old")[0]["time"] == 5.0


def test_closing_the_yielded_connection_is_harmless():
    with store.connect() as con:
        assert con.execute("SELECT count(*) FROM runs").fetchone() == (0,)
        con.close()
    make_run()
    assert len(store.list_runs()) == 1


def test_recovers_from_a_stale_attachment(tmp_path):
    other = tmp_path / "other.duckdb"
    duckdb.connect(str(other)).close()
    store.list_runs()
    store_db._engine_con().execute(f"ATTACH '{other}' AS {store_db._ALIAS}")  # as if DETACH had failed
    rid = make_run()
    assert store.get_run(rid)["id"] == rid


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_gets_its_own_engine():
    rid = make_run()
    pid = os.fork()
    if pid == 0:  # child: must not reuse the parent's DuckDB instance or locks
        code = 1
        try:
            store.add_metrics([(rid, 1, "loss", 1.0, 1.0)])
            code = 0 if len(store.metrics(rid)) == 1 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert len(store.metrics(rid)) == 1


def test_nested_connection_is_an_error_not_a_deadlock():
    with store.connect():
        with pytest.raises(RuntimeError, match="nested"):
            store.list_runs()
    assert store.list_runs() == []


def test_connect_read_only_refuses_writes_and_rolls_back_failed_transactions():
    rid = make_run()
    with pytest.raises(duckdb.Error):
        with store.connect() as con:
            con.execute("DELETE FROM runs")
    with pytest.raises(ZeroDivisionError):
        with store._write() as con:
            con.execute("DELETE FROM runs")
            1 / 0
    assert store.get_run(rid) is not None


# --------------------------------------------------------------------------- BatchWriter

def test_batch_writer_buffers_and_flushes_with_heartbeat():
    rid = make_run()
    w = store.BatchWriter(rid, interval=60)
    for s in range(5):
        w.metric(s, "train_loss", 1.0 / (s + 1))
        w.maybe_flush()  # interval not elapsed: nothing written
    w.event("hello", level="warning")
    w.sample(4, "prompt", "completion", reward=0.5, meta={"r": 1})
    assert store.metrics(rid) == [] and w.pending == 7
    assert store.get_run(rid)["heartbeat_at"] is None
    before = time.time()
    assert w.flush() is True and w.pending == 0
    after = time.time()
    assert len(store.metrics(rid)) == 5
    assert store.events(rid)[0]["level"] == "warning"
    assert store.samples(rid)[0]["meta"] == {"r": 1}
    hb = store.get_run(rid)["heartbeat_at"]
    assert before <= hb <= after
    w.interval = 0
    w.metric(5, "train_loss", 0.1, time=123.0)
    w.maybe_flush()
    assert store.metrics(rid)[-1]["time"] == 123.0 and store.metrics(rid)[-1]["step"] == 5
    w.close()


def test_batch_writer_background_thread_beats_the_heartbeat():
    rid = make_run()
    with store.BatchWriter(rid, interval=0.1) as w:
        w.start_background()
        w.start_background()  # idempotent
        beats = set()
        deadline = time.time() + 5
        while len(beats) < 3 and time.time() < deadline:
            beats.add(store.get_run(rid)["heartbeat_at"])
            time.sleep(0.05)
        beats.discard(None)
        assert len(beats) >= 2  # it beats with no rows to write
        for s in range(200):
            w.metric(s, "loss", s)
            w.maybe_flush()  # no-op while the thread runs
    assert len(store.metrics(rid)) == 200  # close() flushed the rest
    assert w.flushes >= 2

def test_batch_writer_writes_the_first_metric_at_once():
    """The chart's first point must not wait for the next tick of a slow interval; later
    rows still wait for it (one short transaction a tick)."""
    rid = make_run()
    with store.BatchWriter(rid, interval=30) as w:
        w.start_background()
        t0 = time.monotonic()
        w.metric(0, "val_loss", 2.0)
        while not store.metrics(rid) and time.monotonic() - t0 < 10:
            time.sleep(0.02)
        assert [m["name"] for m in store.metrics(rid)] == ["val_loss"]
        assert time.monotonic() - t0 < 5
        w.metric(1, "train_loss", 1.5)
        time.sleep(0.5)
        assert len(store.metrics(rid)) == 1  # the second row waits for the interval
    assert len(store.metrics(rid)) == 2  # close() flushed it


def test_threads_of_one_process_share_the_store():
    """A Streamlit server writes from one session while others poll: in one process DuckDB
    refuses a read-only and a read-write connection at once; the store must serialise them."""
    rid = make_run()
    errors, n_writes = [], 40

    def writer():
        try:
            for s in range(n_writes):
                store.add_metrics([(rid, s, "loss", 1.0, time.time())])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def reader():
        try:
            for _ in range(40):
                store.snapshot(rid)
                store.run_summaries()
        except Exception as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(store.metrics(rid)) == n_writes


# --------------------------------------------------------------------------- locked database

HOLDER = textwrap.dedent("""
    import sys, time, duckdb
    from droidft import paths, store
    mode, seconds = sys.argv[1], float(sys.argv[2])
    if mode == "raw":      # a foreign process: plain duckdb, no sidecar lock
        con = duckdb.connect(paths.db_path().as_posix())
        print("locked", flush=True); time.sleep(seconds); con.close()
    else:                  # another droidft process holding a write connection too long
        with store.connect(read_only=False):
            print("locked", flush=True); time.sleep(seconds)
""")


def hold_lock(tmp_path, mode: str, seconds: float) -> subprocess.Popen:
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    proc = subprocess.Popen([sys.executable, str(script), mode, str(seconds)], cwd=REPO,
                            stdout=subprocess.PIPE, text=True, env=dict(os.environ))
    assert proc.stdout.readline().strip() == "locked"
    return proc


@pytest.mark.parametrize("mode", ["raw", "store"])
def test_batch_writer_keeps_rows_while_the_db_is_locked(tmp_path, monkeypatch, mode):
    rid = make_run()
    w = store.BatchWriter(rid, interval=0.05)
    w.metric(0, "loss", 1.0)
    assert w.flush()
    holder = hold_lock(tmp_path, mode, 4.0)  # far longer than the 0.2 s busy timeout below
    monkeypatch.setattr(store_db, "BUSY_TIMEOUT", 0.2)
    for s in range(1, 51):
        w.metric(s, "loss", float(s))
    w.event("while locked")
    assert w.flush() is False  # busy: kept, not dropped, not raised
    assert holder.poll() is None, "the flush gave up while the lock was still held (it did not wait it out)"
    assert w.pending == 51 and isinstance(w.last_error, store.StoreBusy) and w.busy_flushes == 1
    with pytest.raises(store.StoreBusy, match="busy"):
        store.metrics(rid)  # readers get the human message, not a raw lock error
    w.metric(51, "loss", 51.0)  # more rows arrive meanwhile
    holder.wait(timeout=10)
    assert w.flush() is True and w.pending == 0
    assert [r["step"] for r in store.metrics(rid)] == list(range(52))
    assert store.events(rid)[-1]["message"] == "while locked"


def test_default_timeout_waits_out_a_short_lock(tmp_path):
    rid = make_run()
    holder = hold_lock(tmp_path, "raw", 1.0)
    before = dict(store.stats)
    store.add_metrics([(rid, 1, "loss", 1.0, 1.0)])  # retries with backoff until the lock goes
    assert store.stats["retries"] > before["retries"] and store.stats["busy"] == before["busy"]
    holder.wait(timeout=10)
    assert len(store.metrics(rid)) == 1


def test_writer_close_waits_for_a_busy_db(tmp_path, monkeypatch):
    rid = make_run()
    w = store.BatchWriter(rid, interval=10)
    w.start_background()
    for s in range(20):
        w.metric(s, "loss", 1.0)
    holder = hold_lock(tmp_path, "store", 1.0)
    monkeypatch.setattr(store_db, "BUSY_TIMEOUT", 0.3)
    w.close(timeout=10)  # retries its busy flushes until the holder lets go
    holder.wait(timeout=10)
    assert len(store.metrics(rid)) == 20


# --------------------------------------------------------------------------- processes

LOAD = textwrap.dedent("""
    import json, sys, time, traceback
    from droidft import store
    role, out, args = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    report = {"role": role, "errors": [], "polls": 0, "contended_polls": 0, "max_poll_s": 0.0}
    try:
        if role == "writer":
            w = store.BatchWriter(args["run_id"], interval=args["interval"])
            w.start_background()
            for i in range(args["n"]):
                w.metric(i, "loss", float(i))
                if i % 10 == 0:
                    w.event(f"step {i}")
                w.maybe_flush()
                time.sleep(args["pace"])
            w.close()
            report.update(flushes=w.flushes, busy_flushes=w.busy_flushes,
                          last_error=repr(w.last_error) if w.last_error else None)
        else:
            stop = args["stop_file"]
            import os
            k = 0
            while not os.path.exists(stop):
                before = store.stats["contended"]
                t0 = time.monotonic()
                rid = args["run_ids"][k % len(args["run_ids"])]
                try:
                    store.snapshot(rid)
                    store.metrics(rid, names=["loss"])
                except Exception as exc:
                    report["errors"].append(repr(exc))
                report["max_poll_s"] = max(report["max_poll_s"], time.monotonic() - t0)
                report["polls"] += 1
                report["contended_polls"] += store.stats["contended"] > before
                k += 1
                time.sleep(args["poll"])
    except Exception:
        report["errors"].append(traceback.format_exc())
    report["stats"] = store.stats
    json.dump(report, open(out, "w"))
""")


def run_load(tmp_path, *, writers=3, readers=2, n=60, pace=0.05, interval=1.0, poll=0.15,
             env_extra=None, timeout=60):
    """Start writer and reader processes; returns (reports, run_ids)."""
    script = tmp_path / "load.py"
    script.write_text(LOAD)
    store.init()
    run_ids = [make_run(name=f"load{i}") for i in range(writers)]
    stop_file = tmp_path / "stop"
    env = dict(os.environ, **(env_extra or {}))

    def start(role, i, args):
        out = tmp_path / f"{role}{i}.json"
        proc = subprocess.Popen([sys.executable, str(script), role, str(out), json.dumps(args)],
                                cwd=REPO, env=env)
        return proc, out

    rs = [start("reader", i, {"run_ids": run_ids, "poll": poll, "stop_file": str(stop_file)})
          for i in range(readers)]
    ws = [start("writer", i, {"run_id": rid, "n": n, "pace": pace, "interval": interval})
          for i, rid in enumerate(run_ids)]
    for proc, _ in ws:
        assert proc.wait(timeout=timeout) == 0
    stop_file.touch()
    for proc, _ in rs:
        assert proc.wait(timeout=timeout) == 0
    reports = [json.loads(out.read_text()) for _, out in ws + rs]
    return reports, run_ids


def check_load(reports, run_ids, n):
    for rep in reports:
        assert rep["errors"] == [], rep
        assert rep["stats"]["busy"] == 0, rep
    for rid in run_ids:
        rows = store.metrics(rid)
        assert [r["step"] for r in rows] == list(range(n)), rid  # exact: none lost, none twice
        assert len(store.events(rid, limit=10_000)) == len(range(0, n, 10))
        assert store.get_run(rid)["heartbeat_at"] is not None
    readers = [r for r in reports if r["role"] == "reader"]
    writers = [r for r in reports if r["role"] == "writer"]
    polls = sum(r["polls"] for r in readers)
    contended = sum(r["contended_polls"] for r in readers)
    assert polls > 0
    print(f"\npolls={polls} contended={contended} "
          f"reader_retries={sum(r['stats']['retries'] for r in readers)} "
          f"writer_flushes={sum(r['flushes'] for r in writers)} "
          f"writer_waits={sum(r['stats']['contended'] for r in writers)} "
          f"max_poll={max(r['max_poll_s'] for r in readers):.3f}s")
    return polls, contended


def test_concurrent_writers_and_pollers_lose_nothing(tmp_path):
    """3 workers reporting every 50 ms (flushing once a second) and 2 pages polling."""
    n = 60
    reports, run_ids = run_load(tmp_path, n=n, pace=0.05, interval=1.0, poll=0.15)
    polls, contended = check_load(reports, run_ids, n)
    assert polls >= 10  # how long it takes is bench/bench_store.py's business


@pytest.mark.slow
@pytest.mark.parametrize("env", [{}, {"DROIDFT_STORE_LOCKFILE": "0"}, {"DROIDFT_STORE_ATTACH": "0"}],
                         ids=["default", "duckdb-lock-and-retry-only", "connect-per-access"])
def test_stress_fast_writers_and_pollers(tmp_path, env):
    """Flushing every 20 ms per writer and polling every 20 ms: far past the realistic load;
    proves no loss and no StoreBusy, also with the fallbacks (no lock file: DuckDB's own
    lock and the retry loop alone; no ATTACH: a fresh DuckDB instance per access)."""
    n = 400
    reports, run_ids = run_load(tmp_path, n=n, pace=0.002, interval=0.02, poll=0.02, env_extra=env)
    check_load(reports, run_ids, n)


# --------------------------------------------------------------------------- properties

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(st.integers(-2**40, 2**40), _text,
                               st.floats(allow_nan=False, width=64)), max_size=30),
       message=_text, meta=st.dictionaries(_text, st.integers() | _text, max_size=3))
def test_batch_writer_round_trips_any_text_and_numbers(rows, message, meta):
    rid = make_run()
    w = store.BatchWriter(rid)
    for step, name, value in rows:
        w.metric(step, name, value, time=1.0)
    w.event(message)
    w.sample(0, message, message[::-1], reward=None, meta=meta)
    assert w.flush()
    got = sorted((r["step"], r["name"], r["value"]) for r in store.metrics(rid))
    assert got == sorted(rows)
    assert store.events(rid)[0]["message"] == message
    s = store.samples(rid)[0]
    assert (s["prompt"], s["completion"], s["meta"]) == (message, message[::-1], meta)
    store.delete_run(rid)


def test_older_files_gain_the_queue_and_sweep_columns_and_table(droidft_home):
    """A home made before the queue (no queue_order / sweep_id, no sweeps table) keeps working."""
    con = duckdb.connect(str(paths.db_path()))
    con.execute("CREATE TABLE runs (id VARCHAR PRIMARY KEY, name VARCHAR, status VARCHAR, created_at DOUBLE)")
    con.execute("INSERT INTO runs VALUES ('old', 'legacy', 'queued', 1.0)")
    con.close()
    assert store.get_run("old")["queue_order"] is None and store.get_run("old")["sweep_id"] is None
    new = store.create_run(method="sft", config={}, model="m", data="d", enqueue=True)
    assert store.get_run(new)["queue_order"] == 1.0, "first in an empty queue"
    sid = store.create_sweep(method="sft", spec={"grid": {"seed": [1, 2]}}, name="s")
    assert store.sweeps(sid)[0]["spec"] == {"grid": {"seed": [1, 2]}}
