"""Dataset import from the Hugging Face Hub, with the real huggingface_hub and datasets clients
against the local Hub server (tests/hub_server.py) — never the internet: a dataset with configs
and splits, the server down, offline mode with and without a cache, a gated dataset and the
token, the Data page's import flow, and a LAN viewer refused in the handler."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from streamlit.testing.v1 import AppTest

import hub_server
from droidft import data as D
from droidft.data import imports as I
from droidft.data import mapping as M
from droidft.data import DataError

local_hub = hub_server.local_hub
use_hub = hub_server.use_hub

APP = Path(__file__).resolve().parent.parent / "app" / "Home.py"
README = """---
configs:
- config_name: main
  data_files:
  - split: train
    path: main/train-00000-of-00001.parquet
  - split: test
    path: main/test-00000-of-00001.parquet
- config_name: socratic
  data_files:
  - split: train
    path: socratic/train-00000-of-00001.parquet
---
# Small math word problems
"""
MAIN = [{"question": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(30)]
SOCRATIC = [{"question": f"Why is {i} even?", "answer": "Because it is divisible by two."} for i in range(8)]


def parquet(rows) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buf)
    return buf.getvalue()


def add_math(hub, repo="acme/math", **meta) -> str:
    hub.add_dataset(repo, files={
        "README.md": README,
        "main/train-00000-of-00001.parquet": parquet(MAIN),
        "main/test-00000-of-00001.parquet": parquet(MAIN[:6]),
        "socratic/train-00000-of-00001.parquet": parquet(SOCRATIC)}, **meta)
    return hub.commit(repo, "datasets")


@pytest.fixture
def hub(local_hub, use_hub):
    add_math(local_hub)
    use_hub(local_hub)
    return local_hub


def test_a_config_and_split_import_with_pinned_provenance(hub):
    src = I.read_source("acme/math", config="main", split="test")
    assert src.columns == ["question", "answer"] and src.rows == MAIN[:6]
    commit = hub.commit("acme/math", "datasets")
    assert src.origin == {"kind": "hub", "repo": "acme/math", "config": "main", "split": "test",
                          "revision": commit, "requested_revision": "main", "endpoint": hub.url}
    assert len(I.read_source("acme/math", config="socratic").rows) == 8
    result = I.import_dataset(I.read_source("acme/math", config="main"), M.auto_map(["question", "answer"],
                              method="grpo"), "math", method="grpo")
    assert D.validate_dataset(result.path, "grpo").ok
    prov = I.read_provenance(result.path)
    assert prov["source"]["revision"] == commit and prov["rows"]["source"] == 30
    assert I.source_label(prov) == f"Hub: acme/math (main, train) @ {commit[:7]}"


def test_hub_mistakes_are_one_line(hub):
    with pytest.raises(DataError, match=r"Config name is missing. Please pick one among the available configs: "
                                        r"\['main', 'socratic'\]$"):
        I.read_source("acme/math")
    with pytest.raises(DataError, match=r"Unknown split \"dev\""):
        I.read_source("acme/math", config="main", split="dev")
    with pytest.raises(DataError, match="no dataset acme/nothing on the Hub"):
        I.read_source("acme/nothing")
    with pytest.raises(DataError, match="has no such revision"):
        I.read_source("acme/math", config="main", revision="v9")
    with pytest.raises(DataError, match="not a Hub dataset id"):
        I.read_hub("not an id")


def test_server_down_is_one_offline_line(local_hub, use_hub):
    use_hub(hub_server.closed_port_url())
    with pytest.raises(DataError) as info:
        I.read_source("acme/math", config="main")
    assert str(info.value).startswith("the Hugging Face Hub (http://127.0.0.1:") and "cannot be reached" in str(info.value)
    assert "\n" not in str(info.value)


def test_a_hub_that_never_answers_is_the_same_offline_line(use_hub):
    """A listening socket that never replies: the first request's short timeout ends the wait."""
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        use_hub(f"http://127.0.0.1:{silent.getsockname()[1]}")
        with pytest.raises(DataError, match="cannot be reached: this machine is offline or the Hub is down"):
            I.read_source("acme/math", config="main")


def test_offline_mode_reads_the_cache_and_never_the_network(hub, use_hub):
    first = I.read_source("acme/math", config="main", split="test")
    use_hub(hub, offline=True)
    seen = len(hub.requests)
    again = I.read_source("acme/math", config="main", split="test")
    assert again.rows == first.rows and again.origin["revision"] == first.origin["revision"]
    assert len(hub.requests) == seen, "offline mode made no request"
    with pytest.raises(DataError, match="acme/other is not in the local cache and HF_HUB_OFFLINE is set"):
        I.read_source("acme/other", config="main")


def test_gated_dataset_needs_the_token_which_is_never_stored_or_shown(local_hub, use_hub, monkeypatch, cli):
    add_math(local_hub, "acme/gated", gated="manual")
    env = use_hub(local_hub)
    with pytest.raises(DataError, match="acme/gated is gated on the Hub: .*hf auth login"):
        I.read_source("acme/gated", config="main")
    monkeypatch.setenv("HF_TOKEN", local_hub.token)
    out = cli("data", "import", "acme/gated", "--config", "main", "--source-split", "train[:12]",
              "--name", "gated", "--method", "grpo")
    assert out.returncode == 0, out.stderr
    folder = Path(out.stdout.strip().splitlines()[-1])
    assert D.validate_dataset(folder, "grpo").splits == {"train": 11, "valid": 1}
    assert local_hub.token not in out.stdout + out.stderr
    for path in [*folder.rglob("*"), *Path(os.environ["DROIDFT_HOME"]).rglob("*")]:
        if path.is_file():
            assert local_hub.token.encode() not in path.read_bytes(), path
    assert "HF_TOKEN" not in env  # the test's own environment starts without one


def test_cli_hub_import_and_offline_line(hub, cli):
    out = cli("data", "import", "acme/math", "--config", "socratic", "--name", "why", "--split", "75/25")
    assert out.returncode == 0, out.stderr
    folder = Path(out.stdout.strip().splitlines()[-1])
    prov = I.read_provenance(folder)
    assert (prov["source"]["config"], prov["schema"], prov["format"]) == ("socratic", "qa", "completions")
    assert prov["rows"] == {"source": 8, "imported": 8, "dropped": 0, "train": 6, "valid": 2, "test": 0}
    hub.stop()
    out = cli("data", "import", "acme/math", "--config", "main", "--name", "down")
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip().count("\n") == 0 and "cannot be reached" in out.stderr, out.stderr


# --------------------------------------------------------------------------- the Data page


def open_data_page() -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=240)
    at.run()
    at.switch_page("views/data.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_data_page_imports_a_hub_dataset(hub):
    at = open_data_page()
    at.selectbox(key="data.method").select("grpo").run()
    at.radio(key="imp.kind").set_value("hub").run()
    seen = len(hub.requests)
    assert seen == 0, "nothing goes online before Load"
    at.text_input(key="imp.repo").input("acme/math")
    at.text_input(key="imp.config").input("main")
    at.text_input(key="imp.hub_split").input("train").run()
    assert len(hub.requests) == 0
    at.button(key="imp.load").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("30 rows from acme/math (train)" in str(s.value) for s in at.success)
    assert any("question/answer" in str(c.value) for c in at.caption)
    assert at.selectbox(key="imp.format.grpo").value == "grpo"
    shown = [c.value for c in at.code]
    assert json.dumps({"prompt": "What is 0 + 0?", "answer": "0"}, indent=1) in shown
    at.text_input(key="imp.name").input("math from hub").run()
    at.button(key="imp.save").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    folder = Path(at.session_state["data.selected"])
    assert folder == D.datasets_dir() / "math_from_hub"
    assert I.read_provenance(folder)["source"]["repo"] == "acme/math"
    assert any("Ready for GRPO" in str(s.value) for s in at.success)


def test_lan_viewer_is_refused_in_the_load_handler_not_only_by_the_disabled_button(hub, monkeypatch):
    from droidft import security

    monkeypatch.setenv("DROIDFT_LAN", "1")
    security.set_password("owner-secret-1", "owner")
    security.set_password("viewer-secret-1", "viewer")
    at = AppTest.from_file(str(APP), default_timeout=240).run()
    at.text_input[0].input("viewer-secret-1")
    at.button[0].click().run()
    at.switch_page("views/data.py").run()
    at.radio(key="imp.kind").set_value("hub").run()
    at.text_input(key="imp.repo").input("acme/math")
    at.text_input(key="imp.config").input("main").run()
    assert at.button(key="imp.load").disabled
    # The disabled button is only a hint (Streamlit 1.67 also drops forged clicks on disabled
    # widgets). Take the hint away, as a page bug would, and the handler's own check refuses.
    import sys

    monkeypatch.setattr(sys.modules["importer"], "allowed", lambda action: True)
    at.run()
    assert not at.button(key="imp.load").disabled
    at.button(key="imp.load").click().run()
    assert any("Viewers cannot import" in str(e.value) for e in at.error), [e.value for e in at.error]
    assert hub.requests == [] and "imp.source" not in at.session_state
