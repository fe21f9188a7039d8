"""Browser journey: Data page -> Import -> a Hub dataset (config and split) from the local Hub
server -> preview -> Import -> the checks say ready -> a real run trains on it -> Sessions draws
the Hub source in the lineage. The dashboard is a real `streamlit run` whose HF_ENDPOINT is the
local server (tests/hub_server.py): nothing reaches the internet."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import hub_server  # noqa: E402
from e2e.conftest import launch_server, stop_server  # noqa: E402 (a server with the Hub in its env)
from test_journeys import LONG, shot, wait_app_idle  # noqa: E402

pytestmark = pytest.mark.e2e

README = """---
configs:
- config_name: main
  data_files:
  - split: train
    path: main/train.parquet
  - split: test
    path: main/test.parquet
---
"""


def parquet(rows) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buf)
    return buf.getvalue()


def test_import_a_hub_dataset_train_on_it_and_see_its_source_in_the_lineage(tmp_path, droidft_home, monkeypatch,
                                                                            page, demo_model):
    rows = [{"question": f"What is {i} + {i}?", "answer": f"{2 * i}."} for i in range(40)]
    with hub_server.HubServer(tmp_path / "repos") as hub:
        hub.add_dataset("acme/sums", files={"README.md": README, "main/train.parquet": parquet(rows),
                                            "main/test.parquet": parquet(rows[:5])})
        for key, value in hub.env(tmp_path / "hf-home").items():
            monkeypatch.setenv(key, value)
        proc, url = launch_server(droidft_home)  # the server and this test share one droidft home
        try:
            page.goto(f"{url}/data")
            page.get_by_role("tab", name="Import").click()
            page.get_by_text("Hugging Face Hub", exact=True).click()
            wait_app_idle(page)
            page.get_by_role("textbox", name="Dataset id").fill("acme/sums")
            page.get_by_role("textbox", name="Config").fill("main")
            page.get_by_role("textbox", name="Split").fill("train")
            page.get_by_role("textbox", name="Split").press("Enter")
            wait_app_idle(page)
            assert hub.requests == [], "nothing goes online before Load"
            page.get_by_role("button", name="Load", exact=True).click()
            page.get_by_text("40 rows from acme/sums (train)").wait_for(timeout=LONG)
            page.get_by_text("Recognised:").wait_for()
            page.locator("[data-testid='stCode']").filter(has_text="What is 0 + 0?").first.wait_for()
            picker = page.locator("[data-testid='stMultiSelect']").filter(has_text="prompt").first
            picker.get_by_text("question").wait_for()  # the mapping shows which column feeds the prompt
            wait_app_idle(page)
            page.get_by_text("Preview").scroll_into_view_if_needed()
            shot(page, "import-1-preview")
            page.get_by_role("textbox", name="Dataset name").fill("sums")
            page.get_by_role("textbox", name="Dataset name").press("Enter")
            wait_app_idle(page)
            page.get_by_role("button", name="Import", exact=True).click()
            page.get_by_text("Checks: sums").wait_for(timeout=LONG)  # the new dataset, not the demo
            wait_app_idle(page)
            page.get_by_text("Checks: sums").scroll_into_view_if_needed()
            shot(page, "import-2-saved")
            assert page.get_by_text("Ready for SFT: no problems found.").is_visible()

            from droidft import jobs
            from droidft import data as datasets
            from helpers import demo_sft

            folder = datasets.datasets_dir() / "sums"
            assert (folder / "provenance.json").is_file()
            run_id = jobs.start(demo_sft(data=str(folder), iters=4, steps_per_report=2, steps_per_eval=4,
                                         save_every=4, val_batches=1, max_seq_length=64, name="on sums"))
            assert jobs.wait(run_id, timeout=LONG / 1000)["status"] == "completed"
            page.goto(f"{url}/sessions")
            page.get_by_text("Lineage: source").click()
            graph = page.locator("[data-testid='stGraphVizChart']")
            graph.get_by_text("acme/sums (main, train)", exact=False).wait_for(timeout=LONG)
            wait_app_idle(page)
            shot(page, "import-3-lineage")
            text = graph.inner_text()
            assert "import: question/answer → prompt/completion" in text and "on sums" in text
        finally:
            stop_server(proc)
