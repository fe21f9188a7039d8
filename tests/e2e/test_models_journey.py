"""The Models journey in a real browser against `streamlit run` and the local Hub (issue 12):
Models page -> search the Hub -> check a model (fits this machine?) -> Download, with its
progress bar moving -> "Fine-tune this model" -> the SFT form with that model chosen ->
Start training -> the Monitor draws the run."""

from __future__ import annotations

import re
import time

import pytest

import hub_server
from test_journeys import LONG, progress_text, shot, wait_app_idle, wait_points

pytestmark = pytest.mark.e2e
local_hub, use_hub = hub_server.local_hub, hub_server.use_hub  # fixtures


@pytest.fixture
def hub_ready(local_hub, use_hub, demo_model):
    """The local Hub with two small models, and this process's environment pointing at it
    (HF_ENDPOINT, a private HF cache), which the dashboard server started next inherits."""
    local_hub.add_model("acme/tiny-chat", demo_model, library_name="mlx", downloads=120, license="mit")
    local_hub.add_model("acme/tiny-other", demo_model, library_name="mlx", downloads=30)
    local_hub.rate_limit = 300_000  # bytes/s: the 3 MB model takes ~10 s, so the bar is seen moving
    use_hub(local_hub)
    return local_hub


def test_search_download_fine_tune_monitor(hub_ready, restartable_server, page, monkeypatch):
    url = restartable_server["url"]
    monkeypatch.setenv("DROIDFT_HOME", str(restartable_server["home"]))
    page.goto(url + "/models")
    wait_app_idle(page)
    page.get_by_role("tab", name="On this machine").wait_for()
    shot(page, "models-1-local")

    page.get_by_role("tab", name="Hugging Face Hub").click()
    page.get_by_label("Search the Hub").fill("tiny")
    page.get_by_role("button", name="Search").click()
    wait_app_idle(page)
    page.locator("[data-testid='stDataFrame']").last.wait_for()
    page.get_by_role("button", name="Check it").wait_for()
    assert page.get_by_role("combobox", name="Model").last.input_value() == "acme/tiny-chat"
    page.get_by_role("button", name="Check it").click()
    page.get_by_role("tabpanel", name="Hugging Face Hub").get_by_text("Fits this machine?").wait_for()
    download_button = page.get_by_role("button", name="Download", exact=True)
    download_button.wait_for()
    wait_app_idle(page)
    shot(page, "models-2-search-and-check")

    download_button.click()
    page.locator("[data-testid='stProgress']").first.wait_for(timeout=60_000)
    seen, with_eta = set(), []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not page.get_by_text("downloaded", exact=False).count():
        text = progress_text(page)
        if text:
            seen.add(text.split("·")[1].strip() if "·" in text else text)
            if " left" in text and not with_eta:
                with_eta.append(text)
                shot(page, "models-3-download-progress")
        time.sleep(0.3)
    assert len(seen) >= 3, seen  # the bar moved: bytes done changed while we watched
    assert with_eta and "/s" in with_eta[0], seen  # speed and time left, as a run's ETA
    done = page.locator("[class*='st-key-dl-']").filter(has_text="downloaded")
    done.first.wait_for(timeout=120_000)
    wait_app_idle(page)
    shot(page, "models-4-downloaded")

    done.first.get_by_role("button", name="Fine-tune this model").click()
    page.wait_for_url(re.compile(r".*/sft\?.*model=acme%2Ftiny-chat.*"), timeout=60_000)
    wait_app_idle(page)
    assert page.get_by_role("combobox", name="Model").first.input_value().startswith("acme/tiny-chat")
    shot(page, "models-5-sft-preselected")

    page.get_by_role("button", name="Start training").click()
    page.wait_for_url(re.compile(r".*/monitor\?run=.*"), timeout=LONG)
    wait_points(page, 2)
    page.get_by_text("acme/tiny-chat on chat").first.wait_for()  # the repo id, not the snapshot's hash
    shot(page, "models-6-monitor")

    from droidft import store

    from droidft import jobs

    run = store.list_runs()[0]
    assert "models--acme--tiny-chat" in run["model"]  # trained on the pulled snapshot
    jobs.stop(run["id"])
