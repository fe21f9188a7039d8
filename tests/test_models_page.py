"""The Models page under Streamlit's AppTest, against the local Hub with the real client:
local models with 'fits this machine?', search, check, download as a job, 'Fine-tune this
model' opening the SFT form with it, the offline line, the Hub down, .bin-only, and the LAN
rule that only the owner downloads (checked where the button is handled)."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

import hub_server
from droidft import store
from droidft.models import download
from helpers import wait_for
from hub_server import closed_port_url
from test_pages import APP, TIMEOUT, assert_clean, open_page, texts

local_hub, use_hub, fresh_hub_cache = hub_server.local_hub, hub_server.use_hub, hub_server.fresh_hub_cache
pytestmark = pytest.mark.usefixtures("fresh_hub_cache")


@pytest.fixture
def hub_models(local_hub, use_hub, demo_model):
    local_hub.add_model("acme/tiny-chat", demo_model, library_name="mlx", downloads=50, license="mit")
    local_hub.add_model("acme/torch-only", files={"config.json": '{"model_type": "llama"}',
                                                  "pytorch_model.bin": b"\0" * 1000},
                        library_name="mlx", downloads=5)
    use_hub(local_hub)
    return local_hub


def search(at: AppTest, query: str) -> AppTest:
    at.text_input(key="models.query").set_value(query)
    at.button(key="FormSubmitter:models.search_form-Search").click().run()
    assert_clean(at)
    return at


def test_local_models_fit_and_fine_tune_opens_the_sft_form_with_it(demo_model):
    at = open_page("views/models.py")
    assert len(at.dataframe[0].value) == 1  # the demo model
    fit = [m for m in texts(at, "markdown") if m.startswith("**Fits this machine?**")]
    assert fit and "LoRA: fits as set up" in fit[0]
    at.number_input(key="models.local_fit.batch").set_value(64).run()
    assert len(at.dataframe[1].value) == 3  # LoRA, QLoRA, full
    at.button(key="models.tune_local").click().run()
    assert_clean(at)
    assert at.query_params["model"] == ["demo"] or at.query_params["model"] == "demo"
    assert at.selectbox(key="sft.model_choice").value == str(demo_model)


def test_search_check_download_then_fine_tune(hub_models):
    at = search(open_page("views/models.py"), "acme")
    results = at.dataframe[-1].value
    assert list(results["Model"]) == ["acme/tiny-chat", "acme/torch-only"]
    assert results["Licence"][0] == "mit" and results["Parameters"][0] == "788 k"
    at.selectbox(key="models.hub_pick").set_value("acme/tiny-chat")
    at.button(key="models.check_btn").click().run()
    assert_clean(at)
    assert any(m.startswith("**Fits this machine?**") for m in texts(at, "markdown"))
    at.button(key="models.download").click().run()
    assert_clean(at)
    job = store.list_downloads()[0]
    assert job["repo_id"] == "acme/tiny-chat"
    assert any("acme/tiny-chat" in str(p.text) for p in at.get("progress")) or \
        download.get(job["id"])["status"] == "completed"
    done = wait_for(lambda: (j := download.get(job["id"]))["status"] in download.TERMINAL and j, timeout=180)
    assert done["status"] == "completed", done
    at.run()
    assert_clean(at)
    assert any("acme/tiny-chat" in m and "downloaded" in m for m in texts(at, "markdown"))
    assert any(r == "acme/tiny-chat" for r in at.dataframe[0].value["Model"])  # now on this machine
    at.button(key=f"tune-{job['id']}").click().run()
    assert_clean(at)
    assert "acme--tiny-chat" in at.selectbox(key="sft.model_choice").value


def test_bin_only_repo_is_explained_and_not_offered(hub_models):
    at = search(open_page("views/models.py"), "torch")
    at.selectbox(key="models.hub_pick").set_value("acme/torch-only")
    at.button(key="models.check_btn").click().run()
    assert_clean(at)
    assert any("only PyTorch .bin weights" in e for e in texts(at, "error"))
    assert not [b for b in at.button if b.key == "models.download"]


def test_offline_is_one_line_and_local_models_still_work(hub_models, use_hub):
    use_hub(hub_models, offline=True)
    at = open_page("views/models.py")
    assert [i for i in texts(at, "info") if i.startswith("Offline: HF_HUB_OFFLINE is set")]
    assert len(at.dataframe[0].value) == 1
    search(at, "tiny")
    assert sum(i.startswith("Offline:") for i in texts(at, "info")) >= 1
    assert not hub_models.requests


def test_hub_down_is_one_line(hub_models, use_hub):
    use_hub(closed_port_url())
    at = search(open_page("views/models.py"), "tiny")
    lines = [i for i in texts(at, "info") if i.startswith("Offline:")]
    assert len(lines) == 1 and "\n" not in lines[0]
    assert not at.error


def test_lan_viewer_cannot_download(hub_models, monkeypatch):
    """The button is disabled for a viewer (and Streamlit discards a forged click on a disabled
    widget); with the button wrongly enabled, the handler still checks the role and refuses."""
    import common

    from droidft import security

    monkeypatch.setenv("DROIDFT_LAN", "1")
    security.set_password("owner-secret", "owner")
    security.set_password("viewer-secret", "viewer")
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    at.text_input[0].input("viewer-secret")
    at.button[0].click().run()
    at.switch_page("views/models.py").run()
    search(at, "tiny")
    at.selectbox(key="models.hub_pick").set_value("acme/tiny-chat")
    at.button(key="models.check_btn").click().run()
    assert at.button(key="models.download").disabled

    monkeypatch.setattr(common, "allowed", lambda action: True)  # a page bug enables the button
    at.run()
    at.button(key="models.download").click().run()
    assert any("Viewers cannot download" in e for e in texts(at, "error"))
    assert store.list_downloads() == []
