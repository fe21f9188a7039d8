"""`droidft models list | search | pull | rm` as a user runs them (subprocesses), against the
local Hub; after a pull, `--model REPO` works for training and generation."""

import json

import pytest

import hub_server

local_hub, use_hub = hub_server.local_hub, hub_server.use_hub  # fixtures


@pytest.fixture
def hub(local_hub, use_hub, demo_model):
    local_hub.add_model("acme/tiny-chat", demo_model, library_name="mlx", downloads=50, license="mit")
    local_hub.add_model("acme/tiny-gated", demo_model, gated="manual")
    use_hub(local_hub)
    return local_hub


def test_search_list_pull_train_generate_rm(hub, cli):
    found = cli("models", "search", "tiny", "--json")
    assert found.returncode == 0, found.stderr
    assert [m["repo_id"] for m in json.loads(found.stdout)] == ["acme/tiny-chat", "acme/tiny-gated"]
    table = cli("models", "search", "tiny")
    assert "acme/tiny-chat" in table.stdout and "mit" in table.stdout

    pulled = cli("models", "pull", "acme/tiny-chat")
    assert pulled.returncode == 0, pulled.stderr
    folder = pulled.stdout.strip().splitlines()[-1]
    assert folder.endswith(hub.commit("acme/tiny-chat"))
    assert "acme/tiny-chat:" in pulled.stderr and "100.0%" in pulled.stderr  # progress on stderr

    listed = json.loads(cli("models", "list", "--json").stdout)
    assert {"demo", "acme/tiny-chat"} <= {m["name"] for m in listed}
    assert next(m for m in listed if m["name"] == "acme/tiny-chat")["params"] == 787584

    trained = cli("train", "sft", "--model", "acme/tiny-chat", "--data", "demo", "--iters", "2",
                  "--batch-size", "2", "--steps-per-eval", "2", "--save-every", "2", "--wait")
    assert trained.returncode == 0, trained.stderr
    run_id = trained.stdout.strip().splitlines()[-1]
    said = cli("generate", "--model", "acme/tiny-chat", "--adapter", run_id, "--prompt", "Hi", "--max-tokens", "4")
    assert said.returncode == 0, said.stderr

    removed = cli("models", "rm", "acme/tiny-chat")
    assert removed.returncode == 0 and "models--acme--tiny-chat" in removed.stdout
    gone = cli("generate", "--model", "acme/tiny-chat", "--prompt", "Hi")
    assert gone.returncode != 0 and "not downloaded" in gone.stderr and "droidft models pull" in gone.stderr


def test_pull_failures_are_one_line_and_non_zero(hub, cli, use_hub):
    gated = cli("models", "pull", "acme/tiny-gated")
    assert gated.returncode != 0
    assert gated.stderr.strip().count("\n") == 0 and "gated" in gated.stderr
    assert cli("models", "pull", "not a repo").returncode != 0
    assert cli("models", "rm", "demo").stderr.strip() == "droidft: The demo model is built in; it cannot be removed."
    use_hub(hub_server.closed_port_url())
    down = cli("models", "search", "tiny")
    assert down.returncode != 0 and down.stderr.startswith("droidft: Offline:") and down.stderr.count("\n") == 1


def test_ctrl_c_cancels_a_foreground_pull_and_the_next_pull_resumes(hub):
    import os
    import signal
    import subprocess
    import sys

    from droidft import store
    from helpers import wait_for

    hub.rate_limit = 400_000
    proc = subprocess.Popen([sys.executable, "-m", "droidft.cli", "models", "pull", "acme/tiny-chat"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    wait_for(lambda: (rows := store.list_downloads()) and rows[0]["bytes_done"] > 300_000, timeout=120)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "resumes it" in err.strip().splitlines()[-1]
    first = store.list_downloads()[0]
    assert first["status"] == "cancelled"

    hub.rate_limit = None
    proc = subprocess.run([sys.executable, "-m", "droidft.cli", "models", "pull", "acme/tiny-chat"],
                          capture_output=True, text=True, env=dict(os.environ), timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert store.list_downloads()[0]["resumed_bytes"] >= 300_000
