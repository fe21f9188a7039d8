"""Hub downloads as jobs: detached, recorded in DuckDB, cancellable, resumable.

`start("org/name[@rev]")` checks the repo (weights droidft can train, gated or not, room on
the disk), records a `queued` row in `downloads` and spawns `python -m droidft.download JOB`
in its own session, so a download survives page reloads and a restarted server, like a
training run. The job fetches the files mlx-lm loads into the standard Hugging Face cache
(so `mlx_lm.load`, `hf` and every droidft form find the model by its repo id afterwards):

- each file streams through huggingface_hub's own `http_get` into `blobs/<etag>.incomplete`
  and resumes from the bytes already there (HTTP Range), so a killed or cancelled pull
  continues where it stopped; a resumed LFS file is checked against its sha256;
- finished blobs are linked into `snapshots/<commit>/` by `snapshot_download`, which then
  finds every blob present and writes the refs and tree listing the way the library does;
- progress (bytes done and total, speed, current file) is written at most once a second,
  with a heartbeat; a job whose process died is marked failed by whoever looks next.

Statuses: queued -> running -> completed | failed | cancelled; `phase` says what a running
job does (checking, downloading, assembling, converting). The token comes from huggingface_hub
(HF_TOKEN or `hf auth login`) inside the job process; it is never logged, shown or stored.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from . import disk, paths, store
from .hub import HubError, check_repo, endpoint, gated_message, has_token, parse_repo

ACTIVE = ("queued", "running")
TERMINAL = ("completed", "failed", "cancelled")
STARTUP_GRACE_S = 60.0  # a queued job with no live process after this long has failed
FLUSH_S = 1.0  # progress rows at most this often
SPEED_WINDOW_S = 5.0
MAX_WORKERS = 8  # parallel files, as snapshot_download
PROGRESS_CHUNK = 512 * 1024  # bytes per read: the granularity of progress and of cancel


class DownloadError(ValueError):
    """A download that cannot be started or went wrong; the message says what to do."""


class Cancelled(Exception):
    """Raised inside a transfer when the job was asked to stop."""


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment now (not at import)."""
    hub = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if hub:
        return Path(hub).expanduser()
    return Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface").expanduser() / "hub"


def storage_folder(repo_id: str) -> Path:
    return hf_cache_dir() / ("models--" + repo_id.replace("/", "--"))


def logs_dir() -> Path:
    path = paths.home() / "downloads"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _etag(f) -> str | None:
    """The name huggingface_hub gives a file's blob: its LFS sha256, else its git blob id."""
    return f.lfs_sha256 or f.blob_id


def bytes_present(check) -> int:
    """Bytes of the repo's wanted files already on disk: whole blobs and partial downloads."""
    blobs = storage_folder(check.repo_id) / "blobs"
    done = 0
    for f in check.files:
        tag = _etag(f)
        if not tag:
            continue
        if (blobs / tag).exists():
            done += f.size or 0
        elif (blobs / f"{tag}.incomplete").exists():
            done += min((blobs / f"{tag}.incomplete").stat().st_size, f.size or 0)
    return done


def conversion_bytes(check, bits: int | None) -> int:
    """Room a converted copy needs: the weights at `bits` per parameter (plus scales)."""
    if not bits:
        return 0
    params = check.model.params or check.download_bytes // 2
    return int(params * (bits / 8 + 0.0625))


# --------------------------------------------------------------------------- starting, watching

def start(repo: str, *, quantize_bits: int | None = None) -> str:
    """Check the repo, refuse what cannot work (weights, gating, disk), record the job and
    spawn its process. Returns the job id (the running one, if this repo is already pulling)."""
    repo_id, revision = parse_repo(repo)
    if quantize_bits not in (None, 0, 2, 3, 4, 5, 6, 8):
        raise DownloadError(f"Quantise to 2, 3, 4, 5, 6 or 8 bits, not {quantize_bits}.")
    for job in list_jobs(status=ACTIVE, repo_id=repo_id):
        if job.get("revision") == revision:
            return job["id"]
    check = check_repo(repo_id, revision)
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
    spawn(job_id)
    return job_id


_children: dict[str, subprocess.Popen] = {}


def spawn(job_id: str) -> int:
    """Start the job's process, detached in its own session. Its environment is this one's
    (HF_ENDPOINT, HF_TOKEN, caches): the token travels only as the library reads it."""
    env = dict(os.environ, DROIDFT_HOME=str(paths.home()), PYTHONUNBUFFERED="1", NO_COLOR="1",
               HF_HUB_DISABLE_PROGRESS_BARS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(paths.REPO_ROOT), env.get("PYTHONPATH")]))
    with open(logs_dir() / f"{job_id}.log", "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "droidft.download", job_id], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                cwd=str(paths.REPO_ROOT), start_new_session=True)
    store.update_download(job_id, pid=proc.pid)
    _children[job_id] = proc
    threading.Thread(target=proc.wait, daemon=True).start()  # no zombie hides a death
    return proc.pid


def _alive(job: dict) -> bool:
    from .jobs import pid_alive

    return pid_alive(job.get("pid"), job["id"])


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


# --------------------------------------------------------------------------- the job process

class Progress:
    """Byte counts from many transfer threads, flushed to the job's row about once a second
    (with the heartbeat) by a background thread; `stop` makes every transfer raise Cancelled."""

    def __init__(self, job_id: str, total: int, done: int, stop: threading.Event):
        self.job_id, self.total, self.done, self.stop = job_id, total, done, stop
        self.abort = threading.Event()  # another file failed: the rest stop too
        self.files_done = 0
        self.current: str | None = None
        self._lock = threading.Lock()
        self._samples: list[tuple[float, int]] = [(time.monotonic(), done)]
        self._quit = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def add(self, n: int) -> None:
        if self.stop.is_set() or self.abort.is_set():
            raise Cancelled()
        with self._lock:
            self.done += n

    def file_done(self) -> None:
        with self._lock:
            self.files_done += 1

    def speed(self) -> float | None:
        now = time.monotonic()
        with self._lock:
            self._samples.append((now, self.done))
            self._samples = [s for s in self._samples if now - s[0] <= SPEED_WINDOW_S] or self._samples[-1:]
            (t0, b0), (t1, b1) = self._samples[0], self._samples[-1]
        return (b1 - b0) / (t1 - t0) if t1 - t0 > 0.2 else None

    def flush(self, **extra) -> None:
        speed = self.speed()
        try:
            store.update_download(self.job_id, bytes_done=self.done, files_done=self.files_done,
                                  current_file=self.current, heartbeat_at=time.time(),
                                  **({"speed_bps": speed} if speed is not None else {}), **extra)
        except store.StoreBusy:
            pass  # the next flush carries the counts

    def _loop(self) -> None:
        while not self._quit.wait(FLUSH_S):
            self.flush()

    def __enter__(self) -> "Progress":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._quit.set()
        self._thread.join()

    def bar(self, **_kwargs):
        """What huggingface_hub's http_get takes as `tqdm_class`: update(n) feeds the counts."""
        progress = self

        class _Bar:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

            def update(self, n=1):
                progress.add(int(n or 0))

            def close(self):
                pass

        return _Bar()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(8 * 2**20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_file(url: str, blob: Path, size: int | None, sha256: str | None, progress: Progress) -> None:
    """One file into `blob`, through `blob.incomplete`, resuming from its bytes (HTTP Range)."""
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers

    partial = blob.with_name(blob.name + ".incomplete")
    have = partial.stat().st_size if partial.exists() else 0
    if size is not None and have > size:  # not ours to trust
        partial.unlink()
        have = 0
    headers = build_hf_headers()  # adds the token huggingface_hub finds; never read here
    with open(partial, "ab") as fh:
        http_get(url, fh, resume_size=have, headers=headers, expected_size=size, tqdm_class=progress.bar)
    if have and sha256 and _sha256(partial) != sha256:
        partial.unlink()
        raise DownloadError(f"{blob.name}: the resumed file did not match its checksum and was "
                            "deleted; pull again to download it afresh.")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(partial, 0o666 & ~umask)
    os.replace(partial, blob)
    progress.file_done()


def _fetch_all(job_id: str, check, progress: Progress) -> None:
    from huggingface_hub import hf_hub_url

    blobs = storage_folder(check.repo_id) / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    todo = []
    for f in check.files:
        tag = _etag(f)
        if tag and (blobs / tag).exists():
            progress.file_done()
        else:
            todo.append(f)
    if not todo:
        return

    def one(f) -> None:
        progress.current = f.path
        url = hf_hub_url(check.repo_id, f.path, revision=check.commit, endpoint=endpoint())
        try:
            fetch_file(url, blobs / _etag(f), f.size, f.lfs_sha256, progress)
        except BaseException:
            progress.abort.set()
            raise

    with ThreadPoolExecutor(max_workers=min(MAX_WORKERS, len(todo))) as pool:
        errors = [fut.exception() for fut in [pool.submit(one, f) for f in todo]]
    errors = [e for e in errors if e is not None]
    if errors:  # the first real failure, not the Cancelled it caused in the other threads
        raise next((e for e in errors if not isinstance(e, Cancelled)), errors[0])


def _assemble(check, revision: str | None) -> Path:
    """Link the finished blobs into snapshots/<commit>/ the way huggingface_hub does (it finds
    every blob present and downloads nothing), then point refs/<revision> at that commit."""
    from huggingface_hub import snapshot_download

    folder = snapshot_download(check.repo_id, revision=check.commit,
                               allow_patterns=[f.path for f in check.files], cache_dir=str(hf_cache_dir()),
                               endpoint=endpoint())
    ref = storage_folder(check.repo_id) / "refs" / (revision or "main")
    ref.parent.mkdir(parents=True, exist_ok=True)
    tmp = ref.with_name(ref.name + f".{os.getpid()}.tmp")
    tmp.write_text(check.commit)
    os.replace(tmp, ref)
    return Path(folder)


def converted_dir(repo_id: str, bits: int) -> Path:
    return paths.models_dir() / f"{repo_id.split('/')[-1]}-mlx-{bits}bit"


def convert(snapshot: Path, repo_id: str, bits: int) -> Path:
    """An MLX `bits`-bit copy of a downloaded Hugging Face model (mlx-lm's own convert)."""
    import shutil

    from mlx_lm import convert as mlx_convert

    out = converted_dir(repo_id, bits)
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    mlx_convert(hf_path=str(snapshot), mlx_path=str(tmp), quantize=True, q_bits=bits, q_group_size=64)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def _describe(exc: BaseException, repo_id: str) -> str:
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError

    if isinstance(exc, GatedRepoError):
        return gated_message(repo_id)
    if isinstance(exc, (HubError, DownloadError)):
        return str(exc)
    if disk.is_disk_full(exc, hf_cache_dir()):
        return disk.full_message(hf_cache_dir(), f"downloading {repo_id}") .replace(
            "then Resume continues from the last checkpoint", "then pull again to resume")
    name = type(exc).__name__
    if isinstance(exc, HfHubHTTPError) and exc.response is not None:
        return f"The Hub answered {exc.response.status_code} while downloading {repo_id}; pull again to resume."
    if any(k in name for k in ("Connect", "Timeout", "Network", "Protocol", "ReadError")):
        return f"The connection to {endpoint()} broke while downloading {repo_id}; pull again to resume."
    first = str(exc).splitlines()[0] if str(exc) else ""
    return f"{name}: {first}" if first else name


def _watch_cancel_file(cancel_file: Path, stop: threading.Event) -> None:
    """`cancel` touches this file too: a job that missed the signal still stops."""
    while not stop.wait(0.5):
        if cancel_file.exists():
            stop.set()


def run(job_id: str) -> str:
    """The job process: download, assemble, optionally convert; returns the final status."""
    job = store.get_download(job_id)
    if job is None:
        print(f"droidft.download: no job {job_id} in {paths.db_path()}", file=sys.stderr)
        return "failed"
    stop = threading.Event()
    cancel_file = logs_dir() / f"{job_id}.cancel"
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    threading.Thread(target=_watch_cancel_file, args=(cancel_file, stop), daemon=True).start()
    if not store.update_download(job_id, ACTIVE, status="running", phase="checking", pid=os.getpid(),
                                 started_at=time.time(), heartbeat_at=time.time()):
        return store.get_download(job_id)["status"]
    from huggingface_hub import constants

    constants.DOWNLOAD_CHUNK_SIZE = PROGRESS_CHUNK  # progress and cancel every 512 KiB, not every 10 MiB
    repo_id = job["repo_id"]
    print(f"pulling {repo_id}@{job.get('revision') or 'main'} from {endpoint()}", flush=True)
    status, error, path = "failed", None, None
    try:
        check = check_repo(repo_id, job.get("commit_sha") or job.get("revision"))
        present = bytes_present(check)
        store.update_download(job_id, phase="downloading", bytes_total=check.download_bytes,
                              bytes_done=present, resumed_bytes=present, files_total=len(check.files))
        with Progress(job_id, check.download_bytes, present, stop) as progress:
            _fetch_all(job_id, check, progress)
            progress.current = None
            progress.flush(phase="assembling")
            if stop.is_set():
                raise Cancelled()
            path = _assemble(check, job.get("revision"))
            bits = job.get("quantize_bits")
            if bits:
                progress.flush(phase="converting")
                path = convert(path, repo_id, int(bits))
        status = "completed"
        print(f"done: {path}", flush=True)
    except Cancelled:
        status, error = "cancelled", "Cancelled; pull again to resume from the bytes already here."
    except BaseException as exc:  # noqa: BLE001 - every job ends with a status and one line
        status = "cancelled" if stop.is_set() else "failed"
        error = "Cancelled; pull again to resume." if stop.is_set() else _describe(exc, repo_id)
        import traceback

        traceback.print_exc()
    print(f"{status}: {error or path}", flush=True)
    fields = dict(status=status, ended_at=time.time(), error=error, phase="done" if status == "completed" else None)
    if path is not None:
        fields["path"] = str(path)
    if status == "completed":
        job_now = store.get_download(job_id) or {}
        fields["bytes_done"] = job_now.get("bytes_total") or job_now.get("bytes_done")
    store.update_download(job_id, ACTIVE, **fields)
    cancel_file.unlink(missing_ok=True)
    return status


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m droidft.download JOB_ID", file=sys.stderr)
        return 2
    return 0 if run(argv[0]) == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())


def remove(model: str) -> Path:
    """Delete a pulled model (its whole Hugging Face cache folder: every revision, partial
    downloads) or a model droidft made (its folder under the models folder); returns what was
    deleted. The demo model, LM Studio's models and typed folders are not droidft's to delete,
    nor a model an active run or download is using."""
    import shutil

    from .jobs import ACTIVE as RUN_ACTIVE
    from .jobs import list_runs

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
