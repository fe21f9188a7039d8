"""Pulling models from the (local) Hub as jobs: progress rows in DuckDB, a download process
killed midway and resumed by the next pull, cancel, and the refusals that come before any byte
moves (gated without a token, the Hub down, a disk too small, .bin-only, unknown architecture)."""

import hashlib
import json
import os
import signal
import time

import pytest

import hub_server
from droidft import store
from droidft.models import download
from droidft.models.hub import HubUnavailable
from helpers import wait_for
from hub_server import closed_port_url

local_hub, use_hub = hub_server.local_hub, hub_server.use_hub  # fixtures


@pytest.fixture
def hub(local_hub, use_hub, demo_model):
    local_hub.add_model("acme/tiny", demo_model, library_name="mlx", downloads=10)
    local_hub.add_model("acme/tiny-gated", demo_model, gated="manual")
    local_hub.add_model("acme/torch-only", files={"config.json": '{"model_type": "llama"}',
                                                  "pytorch_model.bin": b"\0" * 1000})
    local_hub.add_model("acme/alien", files={"config.json": '{"model_type": "alien_arch_9000"}',
                                             "model.safetensors": b"\0" * 100})
    use_hub(local_hub)
    return local_hub


def _weights_sha(hub, repo="acme/tiny"):
    return hashlib.sha256((hub.root / "models" / repo / "model.safetensors").read_bytes()).hexdigest()


def test_pull_records_progress_and_lands_in_the_hf_cache(hub):
    from droidft.models import resolve_model

    job_id = download.start("acme/tiny")
    job = download.wait(job_id, timeout=120)
    assert job["status"] == "completed", job
    assert job["bytes_done"] == job["bytes_total"] > 3_000_000
    assert job["files_done"] == job["files_total"] == 7
    from droidft.models.resolve import display_name

    path = resolve_model("acme/tiny")
    assert str(path) == job["path"] and path.name == hub.commit("acme/tiny")
    assert display_name(path) == "acme/tiny"  # what run names and the Monitor call it
    assert resolve_model(f"acme/tiny@{hub.commit('acme/tiny')}") == path == resolve_model("acme/tiny@main")
    assert hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest() == _weights_sha(hub)
    refs = download.storage_folder("acme/tiny") / "refs" / "main"
    assert refs.read_text() == hub.commit("acme/tiny")
    from mlx_lm import load

    load(str(path))  # stock mlx-lm opens what was pulled


def test_journey_search_pull_killed_midway_pull_again_resumes_train_compare(hub):
    """Issue 12's journey with the real huggingface_hub client: search -> pull (progress rows in
    DuckDB) -> the download process killed midway -> pull again resumes -> train -> compare."""
    from droidft import inference, jobs
    from droidft.models.hub import search_models
    from helpers import demo_sft

    assert [m.repo_id for m in search_models("tiny", mlx_only=True).models] == ["acme/tiny"]
    hub.rate_limit = 600_000  # bytes/s: the 3 MB weights take ~5 s, time enough to kill midway
    first = download.start("acme/tiny")
    rows = []
    job = wait_for(lambda: rows.append((j := store.get_download(first))["bytes_done"]) or
                   (j["bytes_done"] > 1_000_000 and j), timeout=60)
    assert job["status"] == "running" and job["bytes_done"] < job["bytes_total"]
    assert len({r for r in rows if r}) >= 2 and job["speed_bps"] > 0  # progress rows, not one jump
    os.kill(int(job["pid"]), signal.SIGKILL)
    dead = wait_for(lambda: (j := download.get(first))["status"] != "running" and j, timeout=30)
    assert dead["status"] == "failed" and "pull again to resume" in dead["error"]
    blobs = download.storage_folder("acme/tiny") / "blobs"
    partial = blobs / f"{_weights_sha(hub)}.incomplete"
    kept = partial.stat().st_size
    assert 0 < kept < 3_200_000

    hub.rate_limit = None
    second = download.start("acme/tiny")
    assert second != first
    job = download.wait(second, timeout=120)
    assert job["status"] == "completed", job
    assert job["resumed_bytes"] >= kept
    ranges = [r for m, p, r in hub.requests if m == "GET" and p.endswith("/model.safetensors") and r]
    assert ranges and ranges[-1] == f"bytes={kept}-"  # the rest only, not the whole file again
    assert hashlib.sha256((blobs / _weights_sha(hub)).read_bytes()).hexdigest() == _weights_sha(hub)
    assert not partial.exists()

    run_id = jobs.start(demo_sft(model="acme/tiny", iters=6, steps_per_report=2, steps_per_eval=6,
                                 save_every=6, val_batches=1))
    run = jobs.wait(run_id, timeout=600)
    assert run["status"] == "completed", (run.get("error"), jobs.log_tail(run_id))
    assert run["name"].startswith("sft acme/tiny on")
    results = inference.compare("acme/tiny", [run_id], "I like teal. What is your favourite colour?",
                                sampling=inference.Sampling.greedy(), max_tokens=12)
    assert [r.target for r in results][0] == "base" and len(results) == 2
    assert all(r.generation_tokens >= 1 for r in results)


def test_pull_can_convert_to_an_mlx_4_bit_model(hub):
    from mlx_lm import load

    job = download.wait(download.start("acme/tiny", quantize_bits=4), timeout=300)
    assert job["status"] == "completed", job
    out = download.converted_dir("acme/tiny", 4)
    assert job["path"] == str(out)
    assert json.loads((out / "config.json").read_text())["quantization"]["bits"] == 4
    model, tokenizer = load(str(out))
    from droidft.models import resolve_model

    assert resolve_model(out.name) == out  # by name, like any model droidft made


def test_conversion_waits_for_a_run_queue_slot(hub):
    """mlx-lm convert computes like a training run: with every slot held (here by a lease, as
    a run would), the download finishes but the conversion waits, then runs once one frees."""
    from droidft import queue, settings

    settings.set("max_concurrent_runs", 1)
    lease = queue.acquire("test", "a run holds the only slot", wait=False)
    try:
        job_id = download.start("acme/tiny", quantize_bits=4)
        log = download.logs_dir() / f"{job_id}.log"
        wait_for(lambda: log.exists() and "waits for one" in log.read_text(), timeout=120)
        time.sleep(1.5)
        assert store.get_download(job_id)["status"] == "running"
        assert store.get_download(job_id)["phase"] == "converting"
        assert not download.converted_dir("acme/tiny", 4).exists()
    finally:
        queue.release(lease)
    job = download.wait(job_id, timeout=300)
    assert job["status"] == "completed", job
    assert download.converted_dir("acme/tiny", 4).exists()
    assert queue.leases() == [], "the conversion gave its slot back"


def test_cancel_keeps_the_partial_file_for_the_next_pull(hub):
    hub.rate_limit = 400_000
    job_id = download.start("acme/tiny")
    wait_for(lambda: (store.get_download(job_id) or {}).get("bytes_done", 0) > 100_000, timeout=60)
    download.cancel(job_id)
    job = download.wait(job_id, timeout=30)
    assert job["status"] == "cancelled"
    assert (download.storage_folder("acme/tiny") / "blobs" / f"{_weights_sha(hub)}.incomplete").stat().st_size > 0
    with pytest.raises(download.DownloadError, match="already cancelled"):
        download.cancel(job_id)


def test_a_second_pull_of_a_running_repo_joins_it(hub):
    hub.rate_limit = 400_000
    first = download.start("acme/tiny")
    assert download.start("acme/tiny") == first
    download.cancel(first)
    download.wait(first, timeout=30)


def _no_downloads(hub):
    assert store.list_downloads() == []
    assert not any("/resolve/" in p for m, p, _ in hub.requests if m == "GET")


def test_gated_without_a_token_is_refused_with_what_to_do(hub):
    with pytest.raises(download.DownloadError) as err:
        download.start("acme/tiny-gated")
    assert "gated" in str(err.value) and "hf auth login" in str(err.value)
    _no_downloads(hub)


def test_gated_with_a_token_downloads_and_the_token_is_stored_nowhere(hub, monkeypatch, droidft_home):
    monkeypatch.setenv("HF_TOKEN", hub.token)
    job = download.wait(download.start("acme/tiny-gated"), timeout=120)
    assert job["status"] == "completed", job
    for path in droidft_home.rglob("*"):
        if path.is_file():
            assert hub.token.encode() not in path.read_bytes(), path


def test_bin_only_and_unknown_architecture_are_refused_before_downloading(hub):
    with pytest.raises(download.DownloadError, match=r"only PyTorch \.bin weights"):
        download.start("acme/torch-only")
    with pytest.raises(download.DownloadError, match="alien_arch_9000.*cannot load"):
        download.start("acme/alien")
    _no_downloads(hub)


def test_disk_too_small_is_refused_before_downloading(hub, monkeypatch):
    from droidft.disk import DiskFull, free_bytes

    monkeypatch.setenv("DROIDFT_MIN_FREE_MB", str(free_bytes(download.hf_cache_dir()) // 2**20))
    with pytest.raises(DiskFull, match="Not enough free disk space for downloading acme/tiny"):
        download.start("acme/tiny")
    _no_downloads(hub)


def test_hub_down_is_one_line_and_quick(hub, use_hub):
    use_hub(closed_port_url())
    tic = time.monotonic()
    with pytest.raises(HubUnavailable) as err:
        download.start("acme/tiny")
    assert time.monotonic() - tic < 3
    assert str(err.value).startswith("Offline:") and "\n" not in str(err.value)
    assert store.list_downloads() == []


def test_malformed_repo_ids_never_reach_the_hub(hub):
    from droidft.models.hub import HubError

    for bad in ("acme", "../etc/passwd", "acme/tiny/extra", "a b/c", "acme/tiny; rm -rf /"):
        with pytest.raises(HubError, match="not a Hub model id"):
            download.start(bad)
    _no_downloads(hub)
