"""Hub downloads as jobs: started, watched, cancelled, listed and removed here; the job
process itself is `droidft.models.fetch`.

`start("org/name[@rev]")` checks the repo (weights droidft can train, gated or not, room on
the disk), records a `queued` row in `downloads` and spawns `python -m droidft.models.fetch
JOB` in its own session, so a download survives page reloads and a restarted server, like a
training run. Models land in the standard Hugging Face cache, so `mlx_lm.load`, `hf` and
every droidft form find them by their repo id afterwards.

Statuses: queued -> running -> completed | failed | cancelled; `phase` says what a running
job does (checking, downloading, assembling, converting). A job whose process died is marked
failed by whoever looks next; its partial files stay, and the next pull resumes from them.
The token (HF_TOKEN or `hf auth login`) is read by huggingface_hub inside the job process;
it is never logged, shown or stored.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from .. import disk, paths, store
from ..detached import spawn_detached
from .hub import INFO_DEADLINE_S, check_repo, gated_message, has_token, parse_repo
from .resolve import hf_cache_dir

ACTIVE = ("queued", "running")
TERMINAL = ("completed", "failed", "cancelled")
STARTUP_GRACE_S = 60.0  # a queued job with no live process after this long has failed


class DownloadError(ValueError):
    """A download that cannot be started or went wrong; the message says what to do."""


def storage_folder(repo_id: str) -> Path:
    return hf_cache_dir() / ("models--" + repo_id.replace("/", "--"))


def logs_dir() -> Path:
    path = paths.home() / "downloads"
    path.mkdir(parents=True, exist_ok=True)
    return path


def etag_of(f) -> str | None:
    """The name huggingface_hub gives a file's blob: its LFS sha256, else its git blob id."""
    return f.lfs_sha256 or f.blob_id


def bytes_present(check) -> int:
    """Bytes of the repo's wanted files already on disk: whole blobs and partial downloads."""
    blobs = storage_folder(check.repo_id) / "blobs"
    done = 0
    for f in check.files:
        tag = etag_of(f)
        if not tag:
            continue
        if (blobs / tag).exists():
            done += f.size or 0
        elif (blobs / f"{tag}.incomplete").exists():
            done += min((blobs / f"{tag}.incomplete").stat().st_size, f.size or 0)
    return done


def converted_dir(repo_id: str, bits: int) -> Path:
    """Where `pull --quantize BITS` puts the MLX copy (a model droidft made, found by name)."""
    return paths.models_dir() / f"{repo_id.split('/')[-1]}-mlx-{bits}bit"


def conversion_bytes(check, bits: int | None) -> int:
    """Room a converted copy needs: the weights at `bits` per parameter (plus scales)."""
    if not bits:
        return 0
    params = check.model.params or check.download_bytes // 2
    return int(params * (bits / 8 + 0.0625))


# --------------------------------------------------------------------------- starting, watching

def prepare(repo: str, *, quantize_bits: int | None = None, check=None,
            deadline: float = INFO_DEADLINE_S) -> tuple[str, object | None]:
    """Check the repo, refuse what cannot work (weights, gating, disk) and record a queued job.
    Returns (job id, the check), or (the running job's id, None) if this repo is already
    pulling. `check`: a fresh `hub.check_repo` result for this repo (the page's "Check it"), so
    the Download button does not wait on the network again; `deadline`: what the check may take."""
    repo_id, revision = parse_repo(repo)
    if quantize_bits not in (None, 0, 2, 3, 4, 5, 6, 8):
        raise DownloadError(f"Quantise to 2, 3, 4, 5, 6 or 8 bits, not {quantize_bits}.")
    for job in store.list_downloads(status=ACTIVE, repo_id=repo_id):  # one read, not a full reap
        if job.get("revision") != revision:
            continue
        starting = job.get("pid") is None and time.time() - (job.get("created_at") or 0) < STARTUP_GRACE_S
        if starting or _alive(job):
            return job["id"], None
        reap()  # its process died: mark it failed; this pull resumes from its partial files
    if check is None or check.repo_id != repo_id or check.revision != revision:
        check = check_repo(repo_id, revision, deadline=deadline)
    if check.problem:
        raise DownloadError(check.problem)
    if check.model.gated and not has_token():
        raise DownloadError(gated_message(repo_id))
    cache = hf_cache_dir()
    need = max(0, check.download_bytes - bytes_present(check))
    disk.require_free(cache, need, f"downloading {repo_id} ({disk.human_bytes(check.download_bytes)})")
    if quantize_bits:
        disk.require_free(paths.models_dir(), conversion_bytes(check, quantize_bits) + need,
                          f"downloading and converting {repo_id}")
    job_id = store.create_download(
        repo_id=repo_id, revision=revision, commit_sha=check.commit, phase="checking",
        bytes_total=check.download_bytes, bytes_done=0, files_total=len(check.files), files_done=0,
        quantize_bits=quantize_bits or None)
    return job_id, check


def start(repo: str, *, quantize_bits: int | None = None, check=None,
          deadline: float = INFO_DEADLINE_S) -> str:
    """`prepare` the job and spawn its process, detached (the Models page). Returns the job id
    (the running one, if this repo is already pulling)."""
    job_id, checked = prepare(repo, quantize_bits=quantize_bits, check=check, deadline=deadline)
    if checked is not None:
        spawn(job_id)
    return job_id


def spawn(job_id: str) -> int:
    """Start the job's process, detached in its own session. Its environment is this one's
    (HF_ENDPOINT, HF_TOKEN, caches): the token travels only as the library reads it."""
    proc = spawn_detached("droidft.models.fetch", job_id, logs_dir() / f"{job_id}.log",
                          env=dict(os.environ, HF_HUB_DISABLE_PROGRESS_BARS="1"))
    store.update_download(job_id, pid=proc.pid)
    return proc.pid


def _alive(job: dict) -> bool:
    """Is the job's process alive: its own (`... fetch JOB`), or a `droidft models pull REPO`
    running it in the foreground (whose command line names the repo)?"""
    from ..jobs import pid_alive

    return pid_alive(job.get("pid"), job["id"]) or pid_alive(job.get("pid"), job["repo_id"])


def reap() -> list[str]:
    """Mark jobs whose process died without saying so as failed (their partial files stay,
    so pulling again resumes). Returns their ids."""
    reaped, now = [], time.time()
    for job in store.list_downloads(status=ACTIVE):
        if _alive(job) or (job.get("pid") is None and now - (job.get("created_at") or now) < STARTUP_GRACE_S):
            continue
        done = job.get("bytes_done") or 0
        error = ("The download process stopped without finishing (killed, crashed or the machine "
                 f"restarted) after {disk.human_bytes(done)}; pull again to resume from there.")
        if store.update_download(job["id"], ACTIVE, status="failed", ended_at=now, error=error):
            reaped.append(job["id"])
    return reaped


def list_jobs(**filters) -> list[dict]:
    reap()
    return store.list_downloads(**filters)


def get(job_id: str) -> dict:
    job = store.get_download(job_id)
    if job is None:
        raise DownloadError(f"No download '{job_id}'. `droidft models downloads` lists them.")
    if job["status"] in ACTIVE and not _alive(job):
        reap()
        job = store.get_download(job_id)
    return job


def cancel(job_id: str) -> dict:
    """Ask a job to stop: it keeps its partial files (a later pull resumes) and ends cancelled."""
    job = get(job_id)
    if job["status"] not in ACTIVE:
        raise DownloadError(f"Download {job_id} is already {job['status']}; nothing to cancel.")
    (logs_dir() / f"{job_id}.cancel").touch()
    if _alive(job):
        try:
            os.kill(int(job["pid"]), signal.SIGTERM)
        except ProcessLookupError:
            pass
    else:
        store.update_download(job_id, ACTIVE, status="cancelled", ended_at=time.time(),
                              error="Cancelled before it started.")
    return job


def wait(job_id: str, timeout: float | None = None, poll: float = 0.5, on_progress=None) -> dict:
    """Block until the job ends (or timeout), calling `on_progress(job)` at each poll."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        job = get(job_id)
        if on_progress is not None:
            on_progress(job)
        if job["status"] in TERMINAL or (deadline is not None and time.monotonic() > deadline):
            return job
        time.sleep(poll)


@dataclass
class ProgressView:
    """A job's progress as the page and the CLI show it."""

    fraction: float
    done: int
    total: int
    speed_bps: float | None
    eta_s: float | None
    text: str


def progress_view(job: dict) -> ProgressView:
    done, total = int(job.get("bytes_done") or 0), int(job.get("bytes_total") or 0)
    speed = job.get("speed_bps")
    fraction = min(1.0, done / total) if total else (1.0 if job.get("status") == "completed" else 0.0)
    eta = (total - done) / speed if speed and speed > 0 and total > done else None
    h = disk.human_bytes
    text = f"{h(done)} of {h(total)}"
    if job.get("status") == "running":
        if job.get("phase") in ("assembling", "converting"):
            text += f" · {job['phase']}"
        elif speed:
            text += f" · {h(speed)}/s"
            if eta is not None:
                text += f" · {_fmt_eta(eta)} left"
    elif job.get("status"):
        text += f" · {job['status']}"
    return ProgressView(fraction, done, total, speed, eta, text)


def _fmt_eta(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


def remove(model: str) -> Path:
    """Delete a pulled model (its whole Hugging Face cache folder: every revision, partial
    downloads) or a model droidft made (its folder under the models folder); returns what was
    deleted. The demo model, LM Studio's models and typed folders are not droidft's to delete,
    nor a model an active run or download is using."""
    import shutil

    from ..jobs import ACTIVE as RUN_ACTIVE
    from ..jobs import list_runs

    name = (model or "").strip()
    if name in ("", "demo"):
        raise DownloadError("The demo model is built in; it cannot be removed.")
    if "/" in name and not name.startswith(("/", ".", "~")):
        repo_id, _ = parse_repo(name)
        folder = storage_folder(repo_id)
        if any(j.get("repo_id") == repo_id for j in list_jobs(status=ACTIVE)):
            raise DownloadError(f"{repo_id} is downloading; cancel the download first.")
    else:
        folder = paths.models_dir() / name
        if not name.replace("-", "").replace("_", "").replace(".", "").isalnum() or not folder.is_dir():
            raise DownloadError(f"No model '{name}' in droidft's models folder; `droidft models list` "
                                "shows what can be removed (pulled hub ids and models droidft made).")
    if not folder.is_dir():
        raise DownloadError(f"{name} is not downloaded; nothing to remove.")
    resolved = folder.resolve()
    for run in list_runs(status=RUN_ACTIVE):
        if str(run.get("model") or "").startswith(str(resolved)) or str(run.get("model") or "").startswith(str(folder)):
            raise DownloadError(f"Run {run['id']} is training on {name}; stop it before removing the model.")
    shutil.rmtree(folder)
    return folder

