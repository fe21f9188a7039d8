"""A person judges an online DPO run in the browser: RL setup -> Online DPO with the human
judge -> Start -> the Monitor shows each step's two answers -> three clicks -> the run goes
on to the end, trained on those choices."""

from __future__ import annotations

import re

import pytest

from helpers import wait_for
from test_journeys import LONG, choose, shot, wait_app_idle

pytestmark = pytest.mark.e2e


def set_number(page, label: str, value: int) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(str(value))
    box.press("Enter")
    wait_app_idle(page)


def test_a_person_judges_three_pairs_and_the_run_goes_on(server, server_home, page):
    from droidft import store

    page.goto(f"{server['url']}/rl?method=online_dpo")
    page.get_by_role("button", name="Start training").wait_for(timeout=LONG)
    wait_app_idle(page, timeout=LONG)
    for label, value in (("Iters", 3), ("Batch size", 1), ("Max completion length", 8)):
        set_number(page, label, value)
    choose(page, "Judge", "human")
    shot(page, "6a-online-dpo-human-judge-setup")
    page.get_by_role("button", name="Start training").click()
    page.wait_for_url(re.compile(r".*/monitor\?run=.+"), timeout=120_000)
    run_id = re.search(r"run=([^&]+)", page.url).group(1)
    assert store.get_run(run_id)["config"]["judge"] == "human"

    chosen = []
    for n, button in enumerate(("A is better", "B is better", "A is better")):
        # batch size 1: one new pair per step; its buttons sit in a container keyed by its id
        pair = wait_for(lambda: [r for r in store.judgments(run_id=run_id, status="pending")
                                 if r["id"] not in dict(chosen)], timeout=LONG / 1000, poll=0.3)
        assert len(pair) == 1, pair
        box = page.locator(f".st-key-pair-{pair[0]['id']}")
        box.get_by_role("button", name=button).wait_for(timeout=LONG)
        if n == 0:
            assert pair[0]["prompt"] in box.inner_text()
            shot(page, "6b-monitor-a-pair-to-judge")
        box.get_by_role("button", name=button).click()
        chosen.append((pair[0]["id"], 0 if button.startswith("A") else 1))
        wait_for(lambda: store.judgments(ids=[pair[0]["id"]])[0]["status"] == "decided", timeout=60)

    page.get_by_text("completed", exact=True).first.wait_for(timeout=LONG)
    wait_app_idle(page)
    page.wait_for_timeout(2000)  # the charts finish drawing
    shot(page, "6c-monitor-judged-run-completed")
    rows = {r["id"]: r for r in store.judgments(run_id=run_id)}
    assert len(rows) == 3
    for pair_id, choice in chosen:
        assert (rows[pair_id]["status"], rows[pair_id]["choice"]) == ("decided", choice)
    run = store.get_run(run_id)
    assert run["status"] == "completed" and run["adapter_path"]
    judged = [r["value"] for r in store.metrics(run_id, names=["train_human_judged"])]
    assert judged == [1.0]  # one report (step 3) over three steps, each trained on the person's choice
    assert len([s for s in store.samples(run_id) if s["meta"].get("judge") == "human"]) == 6
