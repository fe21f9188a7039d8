"""Browser journey: sweep two settings from the SFT form, watch the queue work through the
trials, read the Sweeps page with the best trial marked, and compare the best with the base."""

from __future__ import annotations

import re

import pytest

from test_journeys import LONG, add_to_multiselect, generate_both, shot, wait_app_idle

pytestmark = pytest.mark.e2e


def fill(page, label: str, value: str) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(value)
    box.press("Enter")
    wait_app_idle(page)


def test_sweep_from_the_sft_form_to_the_best_trial_in_compare(server, server_home, page):
    from droidft import jobs, settings, store

    settings.set("max_concurrent_runs", 1)
    page.goto(f"{server['url']}/sft")
    wait_app_idle(page)
    fill(page, "Iters", "12")
    page.get_by_text("Sweep these settings").click()
    add_to_multiselect(page, "Settings to sweep", "Rank")
    fill(page, "Values of learning rate (comma-separated)", "1e-4, 2e-3")
    fill(page, "Values of rank (comma-separated)", "2, 8")
    page.get_by_text("4 runs", exact=False).first.wait_for()
    shot(page, "8a-sweep-form")
    page.get_by_role("button", name="Start sweep (4 runs)").click()
    page.wait_for_url(re.compile(r".*/sweep\?sweep=.+"), timeout=300_000)
    sweep_id = re.search(r"sweep=([^&]+)", page.url).group(1)
    runs = [r for r in store.list_runs() if r.get("sweep_id") == sweep_id]
    assert len(runs) == 4

    sessions = page.context.new_page()
    sessions.goto(f"{server['url']}/sessions")
    sessions.get_by_text(re.compile(r"Queue: 1 of 1 slots in use, [1-3] waiting")).first.wait_for(timeout=120_000)
    sessions.get_by_role("button", name="Start now").first.wait_for(timeout=120_000)
    wait_app_idle(sessions)
    shot(sessions, "8b-sessions-queue")
    sessions.close()

    page.get_by_text("Every trial has ended.").wait_for(timeout=LONG)
    page.reload()  # the page as anyone opening it now sees it
    page.get_by_text("Every trial has ended.").wait_for(timeout=120_000)
    wait_app_idle(page)
    page.wait_for_timeout(1500)
    shot(page, "8c-sweep-page")
    table = page.locator("[data-testid='stDataFrame']").first
    assert table.is_visible()
    assert page.get_by_text("Best trial:").count() == 1
    finals = [jobs.get(r["id"]) for r in runs]
    assert all(r["status"] == "completed" for r in finals), [r.get("error") for r in finals]
    starts = sorted((r["started_at"], r["ended_at"]) for r in finals)
    assert all(b[0] >= a[1] for a, b in zip(starts, starts[1:])), "the queue ran one trial at a time"
    charts = page.locator("[data-testid='stVegaLiteChart']")
    assert charts.count() >= 3  # learning rate, rank, validation curves

    page.get_by_role("button", name="Compare the best with the base").click()
    page.wait_for_url(re.compile(r".*/compare.*"), timeout=120_000)
    page.get_by_text("· best").first.wait_for(timeout=120_000)
    generate_both(page, "8d-compare-best")
