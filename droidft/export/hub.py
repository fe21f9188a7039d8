"""Hugging Face Hub upload of an export (adapter, fused model or GGUF folder).

Private by default. The token is huggingface_hub's own (HF_TOKEN, or the file `hf auth login`
writes): droidft passes no token around, logs none and stores none. Files go up one by one
(`preupload_lfs_files`, so progress is per file) and land in one commit (`create_commit`), so
a broken upload leaves the repo as it was. A repo that already exists is refused unless the
caller says to update it (a new commit on top; the Hub keeps the old one in its history).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .source import ExportError

SKIP = {".DS_Store"}


@dataclass
class UploadResult:
    repo_id: str
    url: str
    commit: str
    files: list[str]
    bytes: int
    private: bool
    updated: bool  # the repo existed and got a new commit


def _chain(exc: BaseException):
    while exc is not None:
        yield exc
        exc = exc.__cause__ or exc.__context__


def _offline(exc: Exception) -> bool:
    """A connection that never got an answer (refused, no route, DNS, time-out), whichever HTTP
    library huggingface_hub runs on."""
    for e in _chain(exc):
        name = type(e).__name__
        if isinstance(e, (ConnectionError, TimeoutError)) or name in (
                "ConnectError", "ConnectTimeout", "ReadTimeout", "NetworkError", "TimeoutException"):
            return True
    return False


def _clear(exc: Exception, repo_id: str) -> ExportError:
    """One clear line for what went wrong talking to the Hub."""
    from huggingface_hub.errors import HfHubHTTPError

    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status is None and _offline(exc):
        return ExportError("Cannot reach the Hugging Face Hub (no network?); nothing was uploaded.")
    if status == 401:
        return ExportError("The Hub refused the token (401): check HF_TOKEN or run `hf auth login` "
                           "with a token that may write.")
    if status == 403:
        return ExportError(f"The token may not write to {repo_id} (403): use a write token, or a "
                           "name under your own account.")
    if isinstance(exc, HfHubHTTPError):
        return ExportError(f"The Hub said no ({status}): {str(exc).splitlines()[0]}")
    return ExportError(f"Upload to {repo_id} failed: {type(exc).__name__}: {exc}")


def check_repo_id(repo_id: str) -> str:
    repo_id = (repo_id or "").strip()
    parts = repo_id.split("/")
    ok = len(parts) == 2 and all(p and len(p) <= 96 and all(c.isalnum() or c in "-_." for c in p)
                                 and not p.startswith((".", "-")) for p in parts)
    if not ok:
        raise ExportError(f"'{repo_id}' is not a Hub name: use USER/NAME (letters, digits, - _ .).")
    return repo_id


def upload_folder(folder: Path, repo_id: str, *, private: bool = True, update: bool = False,
                  message: str = "Upload from droidft",
                  progress: Callable[[int, int, str], None] | None = None) -> UploadResult:
    """Upload every file in `folder` to model repo `repo_id` in one commit."""
    from huggingface_hub import CommitOperationAdd, HfApi, get_token

    repo_id = check_repo_id(repo_id)
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in SKIP
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    if not files:
        raise ExportError(f"{folder} holds no files to upload.")
    if not get_token():
        raise ExportError("No Hugging Face token: set HF_TOKEN or run `hf auth login` (a write token).")
    api = HfApi()
    try:
        exists = api.repo_exists(repo_id)
        if exists and not update:
            raise ExportError(f"{repo_id} already exists on the Hub; nothing was uploaded. Pick another "
                              "name, or choose to update it (a new commit on top of the old files).")
        if not exists:
            api.create_repo(repo_id, private=private, exist_ok=False)
        total = sum(p.stat().st_size for p in files)
        done = 0
        ops = []
        for p in files:
            rel = p.relative_to(folder).as_posix()
            op = CommitOperationAdd(path_in_repo=rel, path_or_fileobj=str(p))
            api.preupload_lfs_files(repo_id, additions=[op])
            ops.append(op)
            done += p.stat().st_size
            if progress:
                progress(done, total, rel)
        info = api.create_commit(repo_id, operations=ops, commit_message=message)
    except ExportError:
        raise
    except Exception as exc:  # noqa: BLE001 - every Hub failure becomes one clear line
        raise _clear(exc, repo_id) from None
    return UploadResult(repo_id, f"{api.endpoint}/{repo_id}", info.oid, [p.relative_to(folder).as_posix()
                        for p in files], total, private, exists)
