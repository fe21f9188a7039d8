"""Hugging Face Hub search and repo checks: online only when the user asks.

Every call has a short deadline (no page waits more than about 2 s on the network), search
results are cached for a few minutes, and a Hub that cannot be reached becomes one line
(`HubUnavailable`), remembered for a little while so the next call does not wait again. The
endpoint (`HF_ENDPOINT`), the offline switch (`HF_HUB_OFFLINE`) and the token (`HF_TOKEN` or
the file `hf auth login` writes) are huggingface_hub's own; the token is never read here
except to say whether there is one.
"""

from __future__ import annotations

import fnmatch
import functools
import logging
import os
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

SEARCH_DEADLINE_S = 2.0  # a page waits no longer than this for search results
INFO_DEADLINE_S = 5.0  # repo details before a download (the CLI; pages pass SEARCH_DEADLINE_S)
CACHE_TTL_S = 300.0  # search results are reused this long
DOWN_TTL_S = 20.0  # after a failed call, say "offline" at once for this long
SORTS = {"downloads": "downloads", "recent": "last_modified", "likes": "likes", "trending": "trending_score"}
SEARCH_EXPAND = ["author", "downloads", "likes", "lastModified", "createdAt", "gated", "private",
                 "library_name", "pipeline_tag", "tags", "safetensors", "usedStorage", "config", "cardData"]
# The files a pull fetches: what mlx_lm.load reads (its DEFAULT_ALLOW_PATTERNS), plus the
# README so the model card is there to read offline.
ALLOW_PATTERNS = ["*.json", "model*.safetensors", "*.py", "tokenizer.model", "*.tiktoken",
                  "tiktoken.model", "*.txt", "*.jsonl", "*.jinja", "README.md"]
REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


class HubError(ValueError):
    """A Hub operation that cannot be done; the message is one line that says what to do."""


class HubUnavailable(HubError):
    """The Hub cannot be reached (offline, down, blocked, or HF_HUB_OFFLINE is set)."""


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def offline_switched_on() -> bool:
    return (os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or "").strip().lower() \
        in ("1", "true", "yes", "on")


def has_token() -> bool:
    """Is a Hugging Face token configured (HF_TOKEN or the token file)? Never returns it."""
    from huggingface_hub import get_token

    return bool(get_token())


def offline_message(reason: str = "") -> str:
    if offline_switched_on():
        return "Offline: HF_HUB_OFFLINE is set, so the Hugging Face Hub is not asked. Local models work as usual."
    why = f" ({reason})" if reason else ""
    return f"Offline: the Hugging Face Hub at {endpoint()} cannot be reached{why}. Local models work as usual."


def parse_repo(text: str) -> tuple[str, str | None]:
    """'org/name' or 'org/name@revision' -> (repo_id, revision or None); HubError if malformed."""
    text = (text or "").strip()
    repo, _, revision = text.partition("@")
    if text.startswith(("https://", "http://")):
        repo = re.sub(r"^https?://[^/]+/", "", repo).split("/tree/")[0].strip("/")
    if not REPO_ID.match(repo):
        raise HubError(f"'{text}' is not a Hub model id: write it as owner/name, e.g. "
                       "mlx-community/Qwen3-0.6B-4bit (optionally @revision).")
    return repo, (revision.strip() or None)


# --------------------------------------------------------------------------- deadlines, cache

_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="droidft-hub")
_lock = threading.Lock()
_cache: dict[tuple, tuple[float, object]] = {}
_down: dict[str, tuple[float, str]] = {}  # endpoint -> (when, reason)


def _reason(exc: BaseException) -> str:
    name = type(exc).__name__
    if "Timeout" in name or isinstance(exc, FutureTimeout):
        return "no answer in time"
    if "Connect" in name:
        return "connection refused or no network"
    if "OfflineMode" in name:
        return "offline mode"
    return f"{name}: {str(exc).splitlines()[0][:120]}" if str(exc) else name


def _is_network_error(exc: BaseException) -> bool:
    """No answer at all (no network, refused, timed out, offline mode); an HTTP error status
    is an answer, handled by the caller."""
    if getattr(exc, "response", None) is not None:
        return False
    name = type(exc).__name__
    return isinstance(exc, (FutureTimeout, ConnectionError, TimeoutError)) or any(
        k in name for k in ("Connect", "Timeout", "Network", "OfflineMode", "Protocol", "Proxy"))


class _QuietInOurThreads(logging.Filter):
    """huggingface_hub logs each retry of a failed request as a warning; in droidft's Hub
    threads the caller already got one line (HubUnavailable), so those are dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not threading.current_thread().name.startswith("droidft-hub")


logging.getLogger("huggingface_hub.utils._http").addFilter(_QuietInOurThreads())


def _probe(ep: str, seconds: float) -> None:
    """A TCP connect to the endpoint: no network, no DNS, refused or dropped connections show
    here at once (huggingface_hub would retry them for ~20 s). Skipped behind a proxy, where
    only the proxy knows the way."""
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy",
                                       "ALL_PROXY", "all_proxy")):
        return
    parts = urlsplit(ep)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=seconds).close()
    except socket.gaierror:
        raise ConnectionError("no network (the name does not resolve)") from None
    except ConnectionRefusedError:
        raise ConnectionError("connection refused") from None
    except (socket.timeout, TimeoutError):
        raise ConnectionError("no answer in time") from None


def _retry_if_client_closed(fn):
    """fn(), once more if huggingface_hub's shared HTTP client was closed under it: its retry
    loop calls close_session() on any ConnectError, in any thread, which breaks requests other
    threads are making with that client ("Cannot send a request, as the client has been
    closed", or a read on a socket closed under it: "Bad file descriptor"); the next
    get_session() builds a new one."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - only the two symptoms of that race are retried
        if "client has been closed" not in str(exc) and "Bad file descriptor" not in str(exc):
            raise
        return fn()


def with_deadline(fn, seconds: float):
    """fn() on a worker thread, waiting at most `seconds`: a Hub that is down or blackholed
    costs the caller that long at most. Network failures become HubUnavailable and are
    remembered for DOWN_TTL_S, so the next call answers at once."""
    if offline_switched_on():
        raise HubUnavailable(offline_message())
    ep = endpoint()
    with _lock:
        down = _down.get(ep)
    if down and time.monotonic() - down[0] < DOWN_TTL_S:
        raise HubUnavailable(offline_message(down[1]))
    tic = time.monotonic()
    try:
        _probe(ep, seconds)
        future = _pool.submit(_retry_if_client_closed, fn)
        result = future.result(timeout=max(0.1, seconds - (time.monotonic() - tic)))
    except FutureTimeout:  # slow, not down: not remembered, and the answer may still arrive
        raise HubUnavailable(f"The Hugging Face Hub at {ep} gave no answer in time ({seconds:.0f} s); "
                             "try again in a moment. Local models work as usual.") from None
    except BaseException as exc:  # noqa: BLE001 - sorted below
        if _is_network_error(exc):
            reason = str(exc) if isinstance(exc, ConnectionError) and str(exc) else _reason(exc)
            with _lock:
                _down[ep] = (time.monotonic(), reason)
            raise HubUnavailable(offline_message(reason)) from None
        raise
    with _lock:
        _down.pop(ep, None)
    return result


def forget_cache() -> None:
    """Drop cached search results and the remembered 'offline' (a Retry button)."""
    with _lock:
        _cache.clear()
        _down.clear()


# --------------------------------------------------------------------------- search

@dataclass
class HubModel:
    """One search hit, in the terms the Models page shows."""

    repo_id: str
    author: str | None = None
    downloads: int = 0
    likes: int = 0
    last_modified: str | None = None
    library: str | None = None
    pipeline_tag: str | None = None
    model_type: str | None = None
    gated: str | bool = False  # False, "auto" or "manual"
    private: bool = False
    size_bytes: int | None = None
    params: int | None = None
    quant_bits: int | None = None
    license: str | None = None
    mlx_ready: bool = False
    tags: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def quant_bits_of(repo_id: str, config: dict | None, tags: list[str] | None) -> int | None:
    """Bits of a quantised model, from its config (MLX `quantization`, HF `quantization_config`),
    else its tags (`4-bit`) or name (`-4bit`, `-q4`, `Q4_K_M`)."""
    for key in ("quantization", "quantization_config"):
        bits = ((config or {}).get(key) or {}).get("bits")
        if bits:
            return int(bits)
    for tag in tags or []:
        m = re.fullmatch(r"(\d{1,2})-bit", tag)
        if m:
            return int(m.group(1))
    m = re.search(r"(?:^|[-_.])(\d{1,2})-?bits?(?:$|[-_.])|(?:^|[-_.])q(\d)(?:$|[-_.k])",
                  repo_id.split("/")[-1].lower())
    if m:
        return int(m.group(1) or m.group(2))
    return None


def params_of(safetensors, bits: int | None) -> int | None:
    """Parameters from the Hub's safetensors counts; packed U32 words of a quantised model hold
    32/bits weights each."""
    if safetensors is None:
        return None
    counts = getattr(safetensors, "parameters", None) or {}
    total = 0
    for dtype, n in counts.items():
        total += n * (32 // bits) if (dtype == "U32" and bits) else n
    return total or getattr(safetensors, "total", None)


def _license(info) -> str | None:
    card = getattr(info, "card_data", None)
    lic = getattr(card, "license", None) if card is not None else None
    if lic:
        return str(lic)
    for tag in info.tags or []:
        if tag.startswith("license:"):
            return tag.split(":", 1)[1]
    return None


def to_hub_model(info) -> HubModel:
    """A huggingface_hub ModelInfo as a HubModel."""
    config = info.config or {}
    tags = list(info.tags or [])
    bits = quant_bits_of(info.id, config, tags)
    author = info.author or info.id.split("/")[0]
    size = info.used_storage
    if size is None and info.siblings and all(s.size is not None for s in info.siblings):
        size = sum(s.size for s in info.siblings)
    return HubModel(
        repo_id=info.id, author=author, downloads=int(info.downloads or 0), likes=int(info.likes or 0),
        last_modified=info.last_modified.isoformat() if info.last_modified else None,
        library=info.library_name, pipeline_tag=info.pipeline_tag,
        model_type=config.get("model_type"), gated=info.gated or False, private=bool(info.private),
        size_bytes=size, params=params_of(info.safetensors, bits), quant_bits=bits,
        license=_license(info), mlx_ready=info.library_name == "mlx" or author == "mlx-community" or "mlx" in tags,
        tags=tags)


@dataclass
class SearchResult:
    models: list[HubModel]
    cached: bool = False  # served from the cache, not a fresh request
    seconds: float = 0.0


def search_models(query: str = "", *, sort: str = "downloads", mlx_only: bool = False,
                  author: str | None = None, limit: int = 50, deadline: float = SEARCH_DEADLINE_S,
                  use_cache: bool = True) -> SearchResult:
    """Search the Hub's text-generation models. `mlx_only` keeps repos tagged for MLX (what
    mlx-community publishes). Raises HubUnavailable (one line) when the Hub cannot be reached."""
    if sort not in SORTS:
        raise HubError(f"Sort by one of {', '.join(SORTS)}, not '{sort}'.")
    limit = max(1, min(int(limit), 1000))
    key = (endpoint(), query.strip(), sort, bool(mlx_only), author, limit)
    with _lock:
        hit = _cache.get(key)
    if use_cache and hit and time.monotonic() - hit[0] < CACHE_TTL_S:
        return SearchResult(hit[1], cached=True)

    def fetch() -> list[HubModel]:
        from huggingface_hub import HfApi

        api = HfApi(endpoint=endpoint())
        found = api.list_models(search=query.strip() or None, sort=SORTS[sort], limit=limit,
                                filter=["mlx"] if mlx_only else None, author=author or None,
                                pipeline_tag="text-generation", expand=SEARCH_EXPAND)
        models = [to_hub_model(info) for info in found]
        with _lock:  # cached here, so an answer that comes after the deadline serves the next search
            _cache[key] = (time.monotonic(), models)
        return models

    tic = time.monotonic()
    models = with_deadline(fetch, deadline)
    return SearchResult(models, cached=False, seconds=time.monotonic() - tic)


# --------------------------------------------------------------------------- one repo, before a pull

@dataclass
class RepoFile:
    path: str
    size: int | None
    lfs_sha256: str | None = None  # LFS files: their sha256, which is also their cache name
    blob_id: str | None = None  # git files: their blob id, their cache name


@dataclass
class RepoCheck:
    """What a pull needs to know about a repo, and whether droidft can use it."""

    repo_id: str
    revision: str | None
    commit: str
    model: HubModel
    files: list[RepoFile]  # the files a pull fetches
    all_files: list[str]
    problem: str | None = None  # why droidft cannot train it (None: it can)
    config: dict | None = None  # its config.json, when asked for (with_config)

    @property
    def download_bytes(self) -> int:
        return sum(f.size or 0 for f in self.files)


def wanted(path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    return "/" not in path and any(fnmatch.fnmatch(name, p) for p in ALLOW_PATTERNS)


@functools.lru_cache(maxsize=1)
def _mlx_lm_source() -> tuple[Path | None, dict, str]:
    """(mlx_lm's models folder, its MODEL_REMAPPING, its version), read from its files:
    importing mlx_lm.utils pulls in transformers, seconds a page and a job need not wait."""
    import ast
    import importlib.metadata
    import importlib.util

    spec = importlib.util.find_spec("mlx_lm")  # finds, does not import
    if spec is None or not spec.submodule_search_locations:
        return None, {}, "?"
    root = Path(list(spec.submodule_search_locations)[0])
    remap: dict = {}
    try:
        for node in ast.parse((root / "utils.py").read_text()).body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "MODEL_REMAPPING" for t in node.targets):
                remap = ast.literal_eval(node.value)
    except (OSError, SyntaxError, ValueError):
        pass
    try:
        version = importlib.metadata.version("mlx-lm")
    except importlib.metadata.PackageNotFoundError:
        version = "?"
    return root / "models", remap, version


def supported_model_type(model_type: str | None) -> bool:
    """Does this mlx-lm have a model class for `model_type` (config.json's model_type)?"""
    models, remap, _ = _mlx_lm_source()
    if not model_type or models is None or not re.fullmatch(r"[A-Za-z0-9_]+", model_type):
        return False
    return (models / f"{remap.get(model_type, model_type)}.py").is_file()


def weights_problem(repo_id: str, names: list[str], model_type: str | None) -> str | None:
    """Why the weights of a repo cannot be trained with mlx-lm, or None."""
    if any(fnmatch.fnmatch(n, "model*.safetensors") for n in names):
        if model_type and not supported_model_type(model_type):
            return (f"{repo_id} is a '{model_type}' model, an architecture mlx-lm {_mlx_lm_source()[2]} "
                    "cannot load; pick a model of a supported family (llama, qwen, gemma, phi, mistral, ...).")
        return None
    if any(n.endswith((".bin", ".pt", ".pth")) for n in names):
        return (f"{repo_id} has only PyTorch .bin weights, which mlx-lm cannot read; pick a safetensors "
                f"or MLX version of it (search mlx-community/{repo_id.split('/')[-1]}).")
    if any(n.endswith(".gguf") for n in names):
        return (f"{repo_id} has only GGUF files (for llama.cpp / LM Studio), which mlx-lm cannot train; "
                f"pick a safetensors or MLX version (search mlx-community/{repo_id.split('/')[-1]}).")
    if any(n.endswith(".safetensors") for n in names):
        return (f"{repo_id} has safetensors files but none named model*.safetensors, the layout mlx-lm "
                "loads; pick a standard or MLX version of it.")
    return f"{repo_id} holds no model weights droidft can use (no model*.safetensors)."


def check_repo(repo_id: str, revision: str | None = None, *, deadline: float = INFO_DEADLINE_S,
               with_config: bool = False) -> RepoCheck:
    """Repo details for a pull: commit, the files to fetch and their sizes, and any reason the
    model cannot be trained (`with_config`: its config.json too, for a memory estimate; it goes
    into the Hugging Face cache, where the pull finds it). Gated, private and missing repos
    raise HubError with what to do."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    def fetch():
        return HfApi(endpoint=endpoint()).model_info(repo_id, revision=revision, files_metadata=True,
                                                     timeout=deadline)

    try:
        tic = time.monotonic()
        info = with_deadline(fetch, deadline)
    except GatedRepoError:
        raise HubError(gated_message(repo_id)) from None
    except RevisionNotFoundError:
        raise HubError(f"{repo_id} has no revision '{revision}' (a branch, tag or commit).") from None
    except RepositoryNotFoundError:
        raise HubError(f"No model '{repo_id}' on the Hub (or it is private"
                       + (" and your token cannot see it)." if has_token()
                          else "; then log in with `hf auth login` or set HF_TOKEN).")) from None
    model = to_hub_model(info)
    siblings = info.siblings or []
    names = [s.rfilename for s in siblings]
    files = [RepoFile(s.rfilename, s.size, s.lfs.sha256 if s.lfs else None, s.blob_id)
             for s in siblings if wanted(s.rfilename)]
    problem = weights_problem(repo_id, names, model.model_type)
    config = None
    if with_config and "config.json" in names and not (model.gated and not has_token()):
        config = with_deadline(lambda: _read_config(repo_id, info.sha),
                               max(0.5, deadline - (time.monotonic() - tic)))  # one deadline for both
        model.model_type = model.model_type or config.get("model_type")
        problem = problem or weights_problem(repo_id, names, model.model_type)
    return RepoCheck(repo_id, revision, info.sha, model, files, names, problem, config)


def _read_config(repo_id: str, commit: str) -> dict:
    import json

    from huggingface_hub import hf_hub_download

    from .resolve import hf_cache_dir

    path = hf_hub_download(repo_id, "config.json", revision=commit, endpoint=endpoint(),
                           cache_dir=str(hf_cache_dir()))
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        raise HubError(f"{repo_id}'s config.json is not valid JSON.") from None


def gated_message(repo_id: str) -> str:
    if has_token():
        return (f"{repo_id} is gated and your Hugging Face token has no access yet: accept its terms "
                f"at {endpoint()}/{repo_id}, then pull again.")
    return (f"{repo_id} is gated: accept its terms at {endpoint()}/{repo_id}, log in with "
            "`hf auth login` (or set HF_TOKEN), then pull again.")
