"""The four browser journeys of the dashboard, in order (later ones use earlier runs):

1. Home -> one click starts the demo fine-tune -> Monitor shows the loss chart growing -> completed
2. Compare: the base model and the new adapter each answer the same prompt
3. Fusion of two adapters -> the fused adapter answers in Compare
4. Sessions lists the runs; selecting two overlays their curves
"""

from __future__ import annotations

import re
import time
from urllib.parse import unquote

from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "e2e"
LONG = 900_000  # ms: real training on a shared 2-core machine


def shot(page, name: str) -> Path:
    """A screenshot of the whole page under test-artifacts/e2e/ (look at them)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def wait_app_idle(page, timeout=120_000):
    """Streamlit shows a 'running' status widget while a script runs; wait for it to go."""
    page.wait_for_selector("[data-testid='stApp']", timeout=timeout)
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout)


def choose(page, label: str, option: str, attempts: int = 5) -> None:
    """Pick `option` in Streamlit's select box `label`: open it, click the option. A rerun
    that lands between the two closes the list again, so open it again until the option shows."""
    for attempt in range(attempts):
        wait_app_idle(page)
        page.get_by_label(label, exact=True).click()
        item = page.get_by_role("option", name=option, exact=True)
        try:
            item.wait_for(timeout=10_000)
        except Exception:
            if attempt == attempts - 1:
                raise
            page.keyboard.press("Escape")
            continue
        item.click()
        wait_app_idle(page)
        return


def add_to_multiselect(page, label: str, option: str, attempts: int = 5) -> None:
    """Add `option` to Streamlit's multiselect `label`: type it, click the option. As with
    `choose`, a rerun between the two closes the list, so type it again until the option shows."""
    picker = page.locator("[data-testid='stMultiSelect']").filter(has_text=label)
    chosen = picker.locator("[data-testid='stMultiSelectTagsContainer']").get_by_text(option, exact=True)
    for attempt in range(attempts):
        wait_app_idle(page)
        if chosen.count():  # an earlier click landed after all
            break
        box = picker.locator("input")
        box.click()
        box.fill(option)
        item = page.get_by_role("option", name=option, exact=True)
        try:
            item.wait_for(timeout=10_000)
            item.click(timeout=5_000)
        except Exception:
            if attempt == attempts - 1:
                raise
        page.keyboard.press("Escape")
    wait_app_idle(page)
    assert chosen.count(), f"{option!r} was not added to {label!r}"


def assert_two_answers(page) -> None:
    """Compare shows one column per model, each with its answer above a 'tokens/s' caption."""
    columns = page.locator("[data-testid='stColumn']").filter(has_text="tokens/s")
    assert columns.count() >= 2
    for i in range(columns.count()):
        lines = [ln for ln in columns.nth(i).inner_text().splitlines() if ln.strip()]
        assert len(lines) >= 3, lines  # title, answer, speed


def generate_both(page, screenshot: str) -> None:
    """On Compare: press Generate, wait until both models have answered (each shows its
    speed), take the screenshot and check the two answers."""
    page.get_by_role("button", name="Generate").click()
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=\"stCaptionContainer\"]')]"
        ".filter(e => e.innerText.includes('tokens/s')).length >= 2", timeout=LONG)
    wait_app_idle(page)
    shot(page, screenshot)
    assert_two_answers(page)


def progress_text(page) -> str:
    """The first progress bar's text, or "" when there is none. A bar can vanish between
    finding it and reading it (a download just finished: CI failed waiting 60 s for it)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    loc = page.locator("[data-testid='stProgress']").first
    try:
        return loc.inner_text(timeout=5_000) if loc.count() else ""
    except PlaywrightTimeout:
        return ""


LINE_POINTS_JS = """() => {
    const paths = [...document.querySelectorAll('[data-testid="stVegaLiteChart"] path[aria-roledescription="line mark"], '
                                                + '[data-testid="stVegaLiteChart"] g.mark-line path')];
    if (!paths.length) return 0;
    return Math.max(...paths.map(p => ((p.getAttribute('d') || '').match(/[ML]/g) || []).length));
}"""


def line_points(page) -> int:
    """How many points the Monitor's longest line has (Vega draws SVG paths: one command per point)."""
    return page.evaluate(LINE_POINTS_JS)


def wait_points(page, n: int, timeout: int = LONG) -> None:
    """Wait until the loss line has at least n points."""
    page.wait_for_function(f"() => ({LINE_POINTS_JS})() >= {n}", timeout=timeout)


def test_1_demo_finetune_from_home_to_a_completed_run(server, page):
    page.goto(server["url"])
    page.get_by_role("button", name="Fine-tune the demo model").click()
    page.wait_for_url(re.compile(r".*/monitor\?run=.+"), timeout=120_000)
    run_id = re.search(r"run=([^&]+)", page.url).group(1)

    page.get_by_text("Loss", exact=True).first.wait_for(timeout=LONG)
    first_points, first_text = line_points(page), progress_text(page)
    shot(page, "1a-monitor-early")
    deadline = time.monotonic() + LONG / 1000
    grew = False
    while time.monotonic() < deadline:
        time.sleep(2)
        if page.get_by_text("completed", exact=True).count():
            break
        if line_points(page) > first_points:
            grew = True
    points_end = line_points(page)
    grew = grew or points_end > first_points
    page.get_by_text("completed", exact=True).first.wait_for(timeout=LONG)
    page.wait_for_timeout(1500)
    shot(page, "1b-monitor-completed")
    assert grew, f"the loss chart never grew (points {first_points} -> {points_end}; {first_text})"
    from droidft import studio as us

    iters = us.demo_config().iters
    assert f"step {iters} / {iters}" in progress_text(page), progress_text(page)
    assert page.get_by_role("button", name="Compare with base").count() == 1
    server["demo_run"] = run_id


def test_2_compare_base_vs_the_new_adapter(server, page):
    run_id = server.get("demo_run")
    if not run_id:
        pytest.skip("journey 1 did not produce a run")
    page.goto(f"{server['url']}/monitor?run={run_id}")
    page.get_by_role("button", name="Compare with base").click()
    page.wait_for_url(re.compile(r".*/compare.*"), timeout=60_000)
    generate_both(page, "2-compare-base-vs-adapter")
    assert page.get_by_text("Base model", exact=True).count() >= 1


def test_3_fusion_of_two_adapters_appears_in_compare(server, server_home, page):
    from droidft import jobs
    from droidft.config import LoraParameters, SFTConfig

    # a second adapter on the same base (the first is the demo run of journey 1, if any)
    rid = jobs.start(SFTConfig(model="demo", data="demo", name="second adapter", iters=20, batch_size=4,
                               learning_rate=1e-3, steps_per_report=5, steps_per_eval=10, save_every=10,
                               val_batches=2, max_seq_length=128, seed=3,
                               lora_parameters=LoraParameters(rank=8, scale=20.0)))
    assert jobs.wait(rid, timeout=LONG / 1000)["status"] == "completed"
    if len([r for r in jobs.list_runs() if r.get("adapter_path")]) < 2:
        rid2 = jobs.start(SFTConfig(model="demo", data="demo", name="third adapter", iters=10, batch_size=4,
                                    steps_per_report=5, steps_per_eval=10, save_every=10, val_batches=2,
                                    max_seq_length=128, seed=4))
        assert jobs.wait(rid2, timeout=LONG / 1000)["status"] == "completed"

    page.goto(f"{server['url']}/fusion")
    page.get_by_role("button", name="Fuse", exact=True).wait_for()
    wait_app_idle(page)
    shot(page, "3a-fusion-setup")
    page.get_by_role("button", name="Fuse", exact=True).click()
    page.get_by_text("Fused adapter saved", exact=False).wait_for(timeout=LONG)
    shot(page, "3b-fusion-done")
    page.get_by_role("button", name="Compare it with the base model").click()
    page.wait_for_url(re.compile(r".*/compare\?adapter=.+"), timeout=60_000)
    page.get_by_text("fused adapter", exact=False).first.wait_for()
    generate_both(page, "3c-compare-fused")


def test_4_sessions_lists_runs_and_overlays_two(server, server_home, page):
    from droidft import store

    runs = store.list_runs()
    if len(runs) < 2:
        pytest.skip("needs two runs from the earlier journeys")
    page.goto(f"{server['url']}/sessions")
    grid = page.locator("[data-testid='stDataFrame']").first
    grid.wait_for()
    wait_app_idle(page)
    # The table is drawn on a canvas; its accessible grid cells carry the same text.
    cells = page.locator("[data-testid='stDataFrame'] [role='gridcell']")
    page.wait_for_function("n => document.querySelectorAll(\"[data-testid='stDataFrame'] [role='gridcell']\")"
                           ".length >= n", arg=len(runs))
    shown = set(cells.all_inner_texts())
    for run in runs:
        assert (run.get("name") or run["id"]) in shown, (run.get("name"), sorted(shown)[:20])
    box = grid.bounding_box()
    # click the selection checkboxes of the first two rows (header ~35 px, rows ~35 px)
    for row in range(2):
        page.mouse.click(box["x"] + 18, box["y"] + 35 + 35 * row + 17)
        wait_app_idle(page)
        page.wait_for_timeout(500)
    page.get_by_text("Curves", exact=True).wait_for(timeout=60_000)
    page.get_by_text("Settings that differ", exact=True).wait_for(timeout=60_000)
    wait_app_idle(page)
    page.wait_for_timeout(1000)
    shot(page, "4-sessions-overlay")
    selected = unquote(page.url.split("select=")[1]).split(",") if "select=" in page.url else []
    assert len(selected) == 2 and set(selected) <= {r["id"] for r in runs}
    # The overlay's legend (read from the chart's own accessible description) names both runs.
    legend = page.locator("[data-testid='stVegaLiteChart'] [aria-label^='Symbol legend']").first
    label = legend.get_attribute("aria-label")
    names = {r["id"]: r.get("name") or r["id"] for r in runs}
    for rid in selected:
        assert f"{names[rid]} ({rid[-4:]})" in label, label
    assert "2 values" in label, label


def test_5_monitor_reattaches_after_a_server_restart_mid_run(restartable_server, page, monkeypatch):
    """Training lives in its own process: restart the dashboard mid-run, reload the same
    Monitor link, and every point the trainer reported is on the chart."""
    from droidft import jobs, store
    from droidft.config import LoraParameters, SFTConfig

    monkeypatch.setenv("DROIDFT_HOME", str(restartable_server["home"]))
    rid = jobs.start(SFTConfig(model="demo", data="demo", name="survives restarts", iters=100000,
                               batch_size=4, steps_per_report=5, steps_per_eval=100000, save_every=100000,
                               val_batches=2, max_seq_length=128, lora_parameters=LoraParameters(rank=4)))
    try:
        link = f"/monitor?run={rid}"
        page.goto(restartable_server["url"] + link)
        wait_points(page, 2)
        before = line_points(page)
        restartable_server["restart"]()
        assert store.get_run(rid)["status"] == "running", "the run outlived the dashboard"
        stored = len(store.metrics(rid, names=["train_loss"]))  # all of these must be shown
        page.goto(restartable_server["url"] + link)  # the reopened tab, same link
        wait_points(page, stored)
        shown = line_points(page)
        page.wait_for_timeout(2000)  # let every chart draw before the screenshot
        shot(page, "5-monitor-after-restart")
        assert shown >= stored > before, (before, stored, shown)
        assert page.get_by_text("running", exact=True).count() >= 1
    finally:
        jobs.stop(rid)
        jobs.wait(rid, timeout=300)
