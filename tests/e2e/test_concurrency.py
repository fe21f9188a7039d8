"""Two runs at once, watched by several browser tabs polling the same DuckDB file: no lock
error reaches a page or a worker, and every metric row the trainers reported is stored."""

from __future__ import annotations

import pytest

from test_journeys import LONG, shot, wait_points

pytestmark = pytest.mark.e2e
ITERS = 300  # ~30-60 s each on 2 cores, both at once


def test_two_runs_watched_by_four_tabs_lose_nothing(server, server_home, browser):
    from droidft import jobs, paths, settings, store
    from droidft.config import LoraParameters, SFTConfig

    settings.set("max_concurrent_runs", 2)  # two at once, whatever this machine would queue

    config = SFTConfig(model="demo", data="demo", iters=ITERS, batch_size=4, steps_per_report=1,
                       steps_per_eval=100, save_every=100, val_batches=1, max_seq_length=128,
                       lora_parameters=LoraParameters(rank=4))
    runs = [jobs.start(config.replace(name=f"concurrent {i}")) for i in (1, 2)]
    context = browser.new_context(viewport={"width": 1280, "height": 1100})
    tabs = []
    try:
        for run_id in runs + runs:  # two tabs per run
            tab = context.new_page()
            tab.set_default_timeout(LONG)
            tab.goto(f"{server['url']}/monitor?run={run_id}")
            tabs.append(tab)
        sessions = context.new_page()
        sessions.goto(f"{server['url']}/sessions")
        for tab in tabs:
            wait_points(tab, 5)
        for tab in tabs:
            tab.get_by_text("completed", exact=True).first.wait_for(timeout=LONG)
        for run_id in runs:
            assert jobs.wait(run_id, timeout=300)["status"] == "completed"
        tabs[0].wait_for_timeout(1500)
        shot(tabs[0], "7-concurrent-run-1")
        shot(tabs[1], "7-concurrent-run-2")
        for tab in tabs + [sessions]:
            text = tab.locator("[data-testid='stMain']").inner_text().lower()
            for bad in ("lock", "busy", "traceback", "error"):
                assert bad not in text, (bad, tab.url)
    finally:
        context.close()
        settings.set("max_concurrent_runs", "auto")  # the later journeys share this home
        for run_id in runs:
            if store.get_run(run_id)["status"] in jobs.ACTIVE:
                jobs.stop(run_id)
    for run_id in runs:  # count them: one row per step for every train metric, none lost
        counts = {}
        for row in store.metrics(run_id):
            counts[row["name"]] = counts.get(row["name"], 0) + 1
        for name in ("train_loss", "learning_rate", "tokens_per_second", "trained_tokens"):
            assert counts[name] == ITERS, (run_id, name, counts)
        assert counts["val_loss"] == 4  # before step 1, and at 100, 200, 300
        log = (paths.run_dir(run_id) / "worker.log").read_text().lower()
        assert "lock" not in log and "busy" not in log
