"""The local Hub server answers the real huggingface_hub client the way the Hub does: search,
repo info, tree, downloads with Range and ETags, gated and private repos, a server that is down,
offline mode, datasets through `datasets.load_dataset`, models through `mlx_lm.load`."""

import os

import httpx2
import pytest

import hub_server
from hub_server import apply_hub_env, closed_port_url, hub_env

local_hub, use_hub = hub_server.local_hub, hub_server.use_hub  # fixtures

DEMO = "data/models/droidft-demo"


@pytest.fixture
def hub(local_hub, use_hub, demo_model):
    local_hub.add_model("acme/tiny", demo_model, downloads=50, likes=3, library_name="mlx",
                         license="apache-2.0", last_modified="2025-03-01T00:00:00.000Z")
    local_hub.add_model("acme/tiny-gated", demo_model, gated="manual", downloads=10)
    local_hub.add_model("acme/tiny-private", demo_model, private=True)
    local_hub.add_model("other/old", demo_model, downloads=900, last_modified="2023-01-01T00:00:00.000Z")
    use_hub(local_hub)
    return local_hub


def test_search_sort_filter_and_expand(hub):
    from huggingface_hub import HfApi

    api = HfApi()
    by_downloads = [m.id for m in api.list_models(sort="downloads", limit=10)]
    assert by_downloads == ["other/old", "acme/tiny", "acme/tiny-gated"]  # the private one is hidden
    assert [m.id for m in api.list_models(sort="last_modified")][0] == "acme/tiny"
    assert [m.id for m in api.list_models(search="TINY")] == ["acme/tiny", "acme/tiny-gated"]
    assert [m.id for m in api.list_models(filter="mlx")] == ["acme/tiny"]
    assert [m.id for m in api.list_models(author="other")] == ["other/old"]
    assert [m.id for m in api.list_models(gated=True)] == ["acme/tiny-gated"]
    hit = next(iter(api.list_models(search="acme/tiny", limit=1,
                                    expand=["downloads", "gated", "safetensors", "tags", "usedStorage"])))
    assert hit.downloads == 50 and hit.gated is False
    assert hit.safetensors.total > 700_000 and "license:apache-2.0" in hit.tags
    assert hit.used_storage > hit.safetensors.total  # float32 weights plus tokenizer files


def test_search_pages_follow_the_link_header(hub, monkeypatch):
    from huggingface_hub import HfApi

    for i in range(7):
        hub.add_model(f"bulk/m{i}", files={"config.json": "{}"}, downloads=i)
    monkeypatch.setattr(hub_server, "PAGE_SIZE", 3)
    ids = [m.id for m in HfApi().list_models(author="bulk", sort="downloads")]
    assert ids == [f"bulk/m{i}" for i in range(6, -1, -1)]
    assert sum(1 for method, path, _ in hub.requests if path.startswith("/api/models?")) == 3


def test_repo_info_with_file_metadata_and_revisions(hub):
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RevisionNotFoundError

    api = HfApi()
    info = api.model_info("acme/tiny", files_metadata=True)
    files = {s.rfilename: s for s in info.siblings}
    assert info.sha == hub.commit("acme/tiny")
    weights = files["model.safetensors"]
    assert weights.lfs is not None and weights.lfs.size == weights.size > 1_000_000
    assert files["config.json"].lfs is None and files["config.json"].blob_id
    assert api.model_info("acme/tiny", revision=info.sha).sha == info.sha
    with pytest.raises(RevisionNotFoundError):
        api.model_info("acme/tiny", revision="no-such-branch")
    tree = {f.path for f in api.list_repo_tree("acme/tiny", recursive=True)}
    assert tree == set(files)


def test_download_heads_etags_and_byte_ranges(hub, tmp_path):
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.file_download import http_get

    url = hf_hub_url("acme/tiny", "model.safetensors")
    meta = get_hf_file_metadata(url)
    local = hub.root / "models/acme/tiny/model.safetensors"
    data = local.read_bytes()
    import hashlib

    assert meta.etag == hashlib.sha256(data).hexdigest() and meta.size == len(data)
    assert meta.commit_hash == hub.commit("acme/tiny")
    half = len(data) // 2
    out = tmp_path / "part"
    out.write_bytes(data[:half])
    with open(out, "ab") as fh:
        http_get(url, fh, resume_size=half, expected_size=len(data))
    assert out.read_bytes() == data
    assert ("GET", "/acme/tiny/resolve/main/model.safetensors", f"bytes={half}-") in hub.requests
    assert httpx2.get(url, headers={"Range": f"bytes={len(data)}-"}).status_code == 416


def test_snapshot_download_then_mlx_lm_load(hub):
    from huggingface_hub import snapshot_download
    from mlx_lm import load

    path = snapshot_download("acme/tiny")
    assert os.path.basename(path) == hub.commit("acme/tiny")
    model, tokenizer = load(path)
    assert tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)


def test_gated_and_private_repos_need_the_token(hub):
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    assert HfApi().model_info("acme/tiny-gated").gated == "manual"  # the card is public
    with pytest.raises(GatedRepoError):
        hf_hub_download("acme/tiny-gated", "config.json")
    assert hf_hub_download("acme/tiny-gated", "config.json", token=hub.token)
    with pytest.raises(RepositoryNotFoundError):
        HfApi().model_info("acme/tiny-private")
    assert HfApi().model_info("acme/tiny-private", token=hub.token).private
    with pytest.raises(RepositoryNotFoundError):
        HfApi().model_info("acme/none")
    assert HfApi().whoami(token=hub.token)["name"] == "tester"


def test_missing_file_is_entry_not_found(hub):
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    with pytest.raises(EntryNotFoundError):
        hf_hub_download("acme/tiny", "pytorch_model.bin")


def test_cdn_redirect_drops_the_token_and_still_downloads(hub, tmp_path):
    from huggingface_hub import hf_hub_download

    hub.cdn_redirect = True
    path = hf_hub_download("acme/tiny-gated", "model.safetensors", token=hub.token)
    assert os.path.getsize(path) == (hub.root / "models/acme/tiny-gated/model.safetensors").stat().st_size
    assert any(p.startswith("/cdn/models/acme/tiny-gated/") for m, p, _ in hub.requests if m == "GET")


def test_server_down_and_offline_mode(hub, use_hub):
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import OfflineModeIsEnabled

    cached = hf_hub_download("acme/tiny", "config.json")
    use_hub(closed_port_url())
    with pytest.raises(httpx2.ConnectError):
        HfApi().model_info("acme/tiny")
    assert hf_hub_download("acme/tiny", "config.json") == cached  # the cache answers
    use_hub(hub, offline=True)
    seen = len(hub.requests)
    with pytest.raises(OfflineModeIsEnabled):
        HfApi().model_info("acme/tiny")
    assert len(hub.requests) == seen  # offline means no request at all


def test_datasets_load_dataset_from_the_local_hub(hub):
    from datasets import load_dataset

    hub.add_dataset("acme/chat", files={
        "train.jsonl": '{"prompt": "a", "completion": "b"}\n{"prompt": "c", "completion": "d"}\n',
        "test.jsonl": '{"prompt": "e", "completion": "f"}\n'})
    ds = load_dataset("acme/chat")
    assert ds["train"].num_rows == 2 and ds["test"][0]["completion"] == "f"


def test_env_keeps_the_developer_token_and_cache_out(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_real_user_token")
    env = hub_env("http://127.0.0.1:9", tmp_path)
    apply_hub_env(monkeypatch, env)
    from huggingface_hub import constants, get_token

    assert "HF_TOKEN" not in os.environ and get_token() is None
    assert constants.HF_HUB_CACHE == str(tmp_path / "hub")
    assert constants.ENDPOINT == "http://127.0.0.1:9"
