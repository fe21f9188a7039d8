"""Read a Hugging Face Hub dataset (a config and a split) with the ``datasets`` package.

Only called when a person asks for a Hub dataset: droidft never touches the network on its
own. The first request is a short-timeout ``dataset_info`` that pins the revision to a commit
(so the provenance names exactly what was read) and turns "no network", "gated", "not found"
into one clear line; ``datasets.load_dataset`` then reads that commit (its cache serves it
again offline). The token comes from where huggingface_hub looks (``HF_TOKEN``, the file
``hf auth login`` writes); droidft never passes, logs, shows or stores it.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from .formats import DataError

HUB_TIMEOUT = 5.0  # seconds for the first request; a page never waits long on a dead network
REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[\w.-]{1,96}")


def endpoint() -> str:
    """The Hub address in use (HF_ENDPOINT), without any user:password part."""
    from huggingface_hub import constants

    parts = urlsplit(constants.ENDPOINT)
    return urlunsplit(parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")))


def offline_message() -> str:
    return (f"the Hugging Face Hub ({endpoint()}) cannot be reached: this machine is offline or the Hub is "
            "down. Import a local file, try again later, or set HF_HUB_OFFLINE=1 to read a dataset "
            "imported before from the cache.")


def _scrub(text: str) -> str:
    """An error text without the token in it, whatever a library put there."""
    from huggingface_hub import get_token

    try:
        token = get_token()
    except Exception:  # noqa: BLE001 - no token source is fine here
        token = None
    return text.replace(token, "***") if token else text


def _is_network(exc: BaseException) -> bool:
    from huggingface_hub.utils import httpx  # httpx2 under the name the Hub libraries use
    from huggingface_hub.errors import OfflineModeIsEnabled

    return any(isinstance(e, (httpx.TransportError, OfflineModeIsEnabled, ConnectionError, TimeoutError))
               for e in _chain(exc))


def _chain(exc: BaseException | None):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _explain(exc: BaseException, repo_id: str) -> DataError:
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    from datasets.exceptions import DatasetNotFoundError

    hub_error = next((e for e in _chain(exc) if isinstance(e, HfHubHTTPError)), None)
    exc = hub_error or exc
    gated = isinstance(exc, DatasetNotFoundError) and "gated" in str(exc)  # datasets drops the cause
    if isinstance(exc, GatedRepoError) or gated:
        return DataError(f"{repo_id} is gated on the Hub: accept its terms on the dataset page, then sign in "
                         "with `hf auth login` (or set HF_TOKEN) and try again")
    if isinstance(exc, RevisionNotFoundError):
        return DataError(f"{repo_id} has no such revision on the Hub")
    if isinstance(exc, (RepositoryNotFoundError, DatasetNotFoundError)):
        return DataError(f"no dataset {repo_id} on the Hub (or it is private: sign in with `hf auth login` "
                         "or set HF_TOKEN)")
    if _is_network(exc):
        return DataError(offline_message())
    if isinstance(exc, HfHubHTTPError) and exc.response is not None:
        return DataError(f"the Hub answered {exc.response.status_code} for {repo_id}; try again later")
    text = _scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    return DataError(f"{repo_id}: {text}")


def load_hub_rows(repo_id: str, *, config: str | None = None, split: str = "train", revision: str | None = None,
                  limit: int | None = None, timeout: float = HUB_TIMEOUT) -> tuple[str, list[str], list[dict], dict]:
    """(label, columns, rows, origin) of one split of a Hub dataset (``split`` may slice:
    ``train[:1000]``); ``droidft.data.imports.read_hub`` wraps them as a Source."""
    from huggingface_hub import HfApi, constants

    repo_id = str(repo_id or "").strip()
    if not REPO_ID.fullmatch(repo_id):
        raise DataError(f"{repo_id!r} is not a Hub dataset id; write it as owner/name")
    for what, value in (("config", config), ("split", split), ("revision", revision)):
        if value is not None and not re.fullmatch(r"[\w.\-/\[\]:%+ ]{1,200}", str(value)):
            raise DataError(f"{what} {value!r} has characters a Hub {what} cannot have")
    sha = revision
    if not constants.HF_HUB_OFFLINE:
        try:
            info = _within(timeout, lambda: HfApi().dataset_info(repo_id, revision=revision, timeout=timeout))
            sha = info.sha or revision
        except Exception as exc:  # noqa: BLE001 - every failure becomes one line
            raise _explain(exc, repo_id) from None
    import datasets

    try:
        ds = datasets.load_dataset(repo_id, name=config or None, split=split or "train", revision=sha)
    except Exception as exc:  # noqa: BLE001
        if constants.HF_HUB_OFFLINE and _is_network(exc):
            raise DataError(f"{repo_id} is not in the local cache and HF_HUB_OFFLINE is set; unset it to "
                            "download it") from None
        if isinstance(exc, ValueError) and not _is_network(exc):
            raise DataError(f"{repo_id}: {_scrub(_headline(exc))}") from None
        raise _explain(exc, repo_id) from None
    if limit is not None:
        ds = ds.select(range(min(int(limit), len(ds))))
    rows = ds.to_list()
    if not rows:
        raise DataError(f"{repo_id} ({config or 'default'}, {split}) has no rows")
    origin = {"kind": "hub", "repo": repo_id, "config": config or ds.config_name, "split": split,
              "revision": sha or _cached_commit(ds), "requested_revision": revision or "main", "endpoint": endpoint()}
    return f"{repo_id} ({split})", list(ds.column_names), rows, origin


def _within(seconds: float, fn):
    """fn() on a daemon thread, waited for at most ``seconds`` (httpx's timeout is per phase
    and huggingface_hub may retry, so a silent Hub could hold the caller several times longer).
    A call still running is left to end on its own (a daemon: it never delays exit)."""
    import threading

    box: dict = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc

    worker = threading.Thread(target=run, name="droidft-hub-dataset", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise TimeoutError(f"no answer in {seconds:.0f} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def _headline(exc: BaseException) -> str:
    """datasets' multi-line ValueErrors ("Config name is missing. / Please pick one among the
    available configs: [...] / Example of usage: ...") as one line, without the example."""
    lines = [x.strip() for x in str(exc).strip().splitlines() if x.strip()]
    keep = []
    for line in lines:
        if line.lower().startswith("example"):
            break
        keep.append(line)
    return " ".join(keep) or type(exc).__name__


def _cached_commit(ds) -> str | None:
    """The commit a dataset read from the offline cache came from (its cache folder's name)."""
    for item in getattr(ds, "cache_files", None) or []:
        name = Path(str(item.get("filename", ""))).parent.name
        if re.fullmatch(r"[0-9a-f]{40}", name):
            return name
    return None
