"""Browser journey: Sessions -> Export -> GGUF + Modelfile, with the files listed and downloadable."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import demo_sft

pytestmark = pytest.mark.e2e
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "e2e"
LONG = 900_000


def wait_app_idle(page, timeout=120_000):
    page.wait_for_selector("[data-testid='stApp']", timeout=timeout)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout)


def test_sessions_export_to_gguf_and_modelfile_lists_and_downloads_the_files(server, server_home, page, tmp_path):
    from droidft import jobs, store

    done = [r for r in store.list_runs(status="completed") if r.get("adapter_path")]
    if done:
        run_id = done[0]["id"]
    else:
        run_id = jobs.start(demo_sft(iters=6, steps_per_report=2, steps_per_eval=3, save_every=3, val_batches=1,
                                     max_seq_length=128, name="for-export"))
        assert jobs.wait(run_id, timeout=900)["status"] == "completed"
    page.goto(f"{server['url']}/sessions?select={run_id}")
    button = page.get_by_role("button", name="Export to Ollama (GGUF + Modelfile)")
    button.wait_for(timeout=120_000)
    wait_app_idle(page)
    page.get_by_label("Name").fill("droid-e2e")
    page.get_by_label("Name").press("Enter")
    wait_app_idle(page)
    button.click()
    page.get_by_text("droid-e2e-f16.gguf").first.wait_for(timeout=LONG)
    wait_app_idle(page)
    page.get_by_text("Written to").first.wait_for(timeout=60_000)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "6-sessions-export-gguf.png"), full_page=True)
    art = store.artifacts(kind="export_ollama")[-1]
    folder = Path(art["path"])
    for name in ("droid-e2e-f16.gguf", "Modelfile", "README.md"):
        assert page.get_by_text(name, exact=True).count() >= 1, name
    rows = {name: page.locator("[data-testid='stHorizontalBlock']").filter(has_text=name).last
            for name in ("Modelfile", "droid-e2e-f16.gguf")}
    with page.expect_download() as dl:
        rows["Modelfile"].get_by_role("button", name="Download").click()
    got = tmp_path / "Modelfile"
    dl.value.save_as(got)
    assert got.read_text() == (folder / "Modelfile").read_text()
    assert got.read_text().startswith("FROM ./droid-e2e-f16.gguf")
    with page.expect_download(timeout=120_000) as dl:
        rows["droid-e2e-f16.gguf"].get_by_role("button", name="Download").click()
    got = tmp_path / "m.gguf"
    dl.value.save_as(got)
    assert got.read_bytes() == (folder / "droid-e2e-f16.gguf").read_bytes()
