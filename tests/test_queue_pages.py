"""The queue, sweeps, best/last and chart controls in the dashboard (Streamlit AppTest)."""

from __future__ import annotations

import os
import time

from droidft import jobs, queue, settings, store
import helpers
from test_pages import assert_clean, charts, fake_run, open_page, texts, tiny


one_slot_held = helpers.one_slot_held  # a fixture


def waiting_run(name="waits", **config) -> str:
    """A run waiting in the queue (a real queue row; no worker, since the test holds the slot)."""
    return store.create_run(method="sft", config=tiny(**config).to_dict(), model="demo", data="demo",
                            name=name, enqueue=True)


def live_fake(name="live", **config) -> str:
    """A run row that looks running (fresh heartbeat, no worker), for Monitor tests."""
    rid = fake_run(status="running", name=name, **config)
    store.update_run(rid, heartbeat_at=time.time() + 3600, ended_at=None)
    return rid


# -- Monitor ------------------------------------------------------------------------------------------


def test_monitor_of_a_queued_run_shows_its_place_and_queue_buttons_work(demo_model, one_slot_held):
    a, b = waiting_run("first in line"), waiting_run("second in line")
    at = open_page("views/monitor.py", run=b)
    info = " ".join(texts(at, "info"))
    assert "Number 2 of 2 in the queue" in info and "starts" in info
    assert at.get("progress")[0].proto.text == "Waiting in the queue"
    at.button(key="q.front").click().run()
    assert_clean(at)
    assert list(queue.positions()) == [b, a]
    at.button(key="q.cancel").click().run()
    assert_clean(at)
    run = store.get_run(b)
    assert run["status"] == "stopped" and "queue" in jobs.end_reason(run)
    assert any("Why it ended" in t for t in texts(at, "info"))


def test_stop_counts_down_then_offers_stop_now(demo_model, monkeypatch):
    monkeypatch.setattr(jobs, "STOP_GRACE_S", 30.0)
    rid = live_fake()
    jobs.paths.run_dir(rid).mkdir(parents=True, exist_ok=True)
    stop_file = jobs.paths.run_dir(rid) / "STOP"
    stop_file.write_text("stopped on request")
    at = open_page("views/monitor.py", run=rid)
    assert any("Stop now** is offered in" in w for w in texts(at, "warning"))
    assert not [b for b in at.button if b.key == "stop_now"]
    past = time.time() - 60
    os.utime(stop_file, (past, past))  # the grace period is over
    at.run()
    assert any("has not ended 60 s after Stop" in w for w in texts(at, "warning"))
    at.button(key="stop_now").click().run()
    assert_clean(at)
    run = store.get_run(rid)
    assert run["status"] == "stopped" and "stopped now from the dashboard" in jobs.end_reason(run)


def test_monitor_charts_have_controls_and_redraw_only_when_new_rows_arrive(demo_model):
    rid = live_fake()
    at = open_page("views/monitor.py", run=rid)
    builds = at.session_state["monitor_chart_builds"]
    assert builds >= 1 and charts(at)
    at.run()
    at.run()
    assert at.session_state["monitor_chart_builds"] == builds, "no new rows: the same charts"
    now = time.time()
    store.add_metrics([(rid, s, "train_loss", 1.0 / s, now + s) for s in range(11, 15)])
    at.run()
    assert at.session_state["monitor_chart_builds"] == builds + 1, "new rows: one rebuild"

    def loss_spec():
        spec = next(c for c in charts(at) if "loss" in c.proto.spec)
        return spec.proto.spec

    assert '"log"' in loss_spec(), "loss charts start on a log axis"
    at.toggle(key="monitor.view.log").set_value(False).run()
    assert '"log"' not in loss_spec()
    at.slider(key="monitor.view.smooth").set_value(0.6).run()
    assert "smoothed" in loss_spec() and "0.25" in loss_spec(), "an EMA line, raw values faint behind"
    at.slider(key="monitor.view.steps").set_value((5, 9)).run()
    assert_clean(at)
    steps = {row["step"] for row in _chart_rows(at, "loss")}
    assert steps and min(steps) >= 5 and max(steps) <= 9, "only the chosen steps (the y axis fits them)"
    tooltip_fields = loss_spec()
    assert '"step"' in tooltip_fields and "tooltip" in tooltip_fields


def _chart_rows(at, word: str) -> list[dict]:
    """The data rows of the first chart whose spec mentions `word` (Arrow datasets)."""
    import pyarrow as pa

    chart = next(c for c in charts(at) if word in c.proto.spec)
    rows = []
    for ds in chart.proto.datasets:
        rows += pa.ipc.open_stream(ds.data.data).read_all().to_pylist()
    if chart.proto.data.data:
        rows += pa.ipc.open_stream(chart.proto.data.data).read_all().to_pylist()
    return rows


# -- Sessions ---------------------------------------------------------------------------------------------


def test_sessions_shows_the_queue_with_positions_and_the_runs_at_once_setting(demo_model, one_slot_held):
    a, b = waiting_run("alpha"), waiting_run("beta")
    at = open_page("views/sessions.py")
    table = at.dataframe[0].value
    status = dict(zip(table["id"], table["status"]))
    assert status[a] == "queued #1" and status[b] == "queued #2"
    assert any("Queue: 1 of 1 slots in use, 2 waiting" in e.label for e in at.expander)
    at.button(key=f"q.{b}.front").click().run()
    assert_clean(at)
    assert list(queue.positions()) == [b, a]
    at.toggle(key="q.auto").set_value(False).run()
    at.number_input(key="q.slots").set_value(3).run()
    at.button(key="q.save").click().run()
    assert_clean(at)
    assert settings.get("max_concurrent_runs") == 3
    settings.set("max_concurrent_runs", 1)


def test_sessions_overlay_has_the_same_chart_controls(demo_model):
    a, b = fake_run(status="completed", name="one"), fake_run(status="completed", name="two")
    at = open_page("views/sessions.py", select=f"{a},{b}")
    assert at.toggle(key="sessions.view.log").value is True
    at.slider(key="sessions.view.smooth").set_value(0.5).run()
    assert_clean(at)
    spec = charts(at)[0].proto.spec
    assert "smoothed" in spec and "log" in spec


# -- the SFT form's sweep, and the Sweeps page ---------------------------------------------------------


def test_sft_form_sweeps_the_chosen_settings_and_opens_the_sweep(demo_model, one_slot_held):
    at = open_page("views/sft_setup.py")
    at.multiselect(key="sft.sweep.fields").set_value(["learning_rate", "lora_parameters.rank"]).run()
    at.text_input(key="sft.sweep.learning_rate.values").input("1e-4, 1e-3").run()
    at.text_input(key="sft.sweep.lora_parameters.rank.values").input("2,4").run()
    assert any("4 runs" in c for c in texts(at, "caption"))
    at.text_input(key="sft.sweep.lora_parameters.rank.values").input("2,four").run()
    assert any("not a whole number" in e for e in texts(at, "error"))
    assert at.button(key="sft.sweep.start").disabled
    at.text_input(key="sft.sweep.lora_parameters.rank.values").input("2,4").run()
    at.button(key="sft.sweep.start").click().run()
    assert_clean(at)
    sweeps_made = store.sweeps()
    assert len(sweeps_made) == 1
    assert "Sweeps" in texts(at, "title")
    runs = [r for r in store.list_runs() if r.get("sweep_id") == sweeps_made[0]["id"]]
    assert len(runs) == 4 and len(queue.positions()) == 4
    assert sorted((r["config"]["learning_rate"], r["config"]["lora_parameters"]["rank"]) for r in runs) == \
        [(1e-4, 2), (1e-4, 4), (1e-3, 2), (1e-3, 4)]
    assert any("queued #1" in str(v) for v in at.dataframe[0].value["status"])


def test_sweeps_page_shows_trials_marks_the_best_and_compares_it(demo_model):
    from droidft import sweeps

    settings.set("max_concurrent_runs", 1)
    sweep_id, run_ids = sweeps.start(tiny(iters=4, steps_per_eval=2), sweeps.SweepSpec(
        grid={"learning_rate": [1e-4, 2e-3], "lora_parameters.rank": [2, 4]}))
    for rid in run_ids:
        assert jobs.wait(rid, timeout=600)["status"] == "completed"
    at = open_page("views/sweep.py", sweep=sweep_id)
    table = at.dataframe[0].value
    assert len(table) == 4 and list(table["best"]).count("★") == 1
    best = table[table["best"] == "★"]["run_id"].iloc[0]
    assert best == sweeps.summary(sweep_id)["best"]
    assert len(charts(at)) >= 3, "a chart per setting and the validation curves"
    assert any("Best trial" in s for s in texts(at, "success"))
    at.button(key="sweep.compare").click().run()
    assert_clean(at)
    assert "Compare" in texts(at, "title")
    picked = at.multiselect(key="cmp.targets").value
    assert picked == [f"run:{best}"]
    assert "· best" in at.multiselect(key="cmp.targets").format_func(picked[0])


def test_sweeps_page_without_sweeps_says_what_to_do(demo_model):
    at = open_page("views/sweep.py")
    assert any("No sweeps yet" in t for t in texts(at, "info"))


def test_compare_and_evaluate_pick_best_or_last(demo_model):
    rid = jobs.start(tiny(iters=6, steps_per_eval=2))
    assert jobs.wait(rid, timeout=600)["status"] == "completed"
    at = open_page("views/compare.py", run=rid)
    label = at.multiselect(key="cmp.targets").format_func(f"run:{rid}")
    assert label.endswith("· best") and at.segmented_control(key="cmp.checkpoint").value == "best"
    at.segmented_control(key="cmp.checkpoint").set_value("last").run()
    assert at.multiselect(key="cmp.targets").format_func(f"run:{rid}").endswith("· last")
    ev = open_page("views/evaluate.py", run=rid)
    ev.multiselect(key="ev.suites").set_value(["loss"]).run()
    ev.number_input(key="ev.limit").set_value(4).run()
    ev.button(key="ev.go").click().run()
    assert_clean(ev)
    targets = list(ev.dataframe[0].value["target"])
    assert any(t.endswith("(best)") for t in targets), targets
    assert f"{rid}@best" in {e["target"] for e in store.evaluations()}
