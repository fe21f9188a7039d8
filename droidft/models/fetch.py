"""`python -m droidft.models.fetch JOB`: the download job process (started by
`droidft.models.download.start`).

It fetches the files mlx-lm loads into the standard Hugging Face cache:

- each file streams through huggingface_hub's own `http_get` into `blobs/<etag>.incomplete`
  and resumes from the bytes already there (HTTP Range), so a killed or cancelled pull
  continues where it stopped; a resumed LFS file is checked against its sha256;
- finished blobs are linked into `snapshots/<commit>/` by `snapshot_download`, which finds
  every blob present and downloads nothing, then `refs/<revision>` points at that commit;
- progress (bytes done and total, speed, current file) is written at most once a second,
  with a heartbeat; SIGTERM or a `.cancel` file stops it, keeping the partial files;
- optionally mlx-lm's convert makes an MLX quantised copy under droidft's models folder.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .. import disk, paths, queue, store
from .download import ACTIVE, DownloadError, bytes_present, converted_dir, etag_of, logs_dir, storage_folder
from .hub import HubError, check_repo, endpoint, gated_message
from .resolve import hf_cache_dir

FLUSH_S = 1.0  # progress rows at most this often
SPEED_WINDOW_S = 5.0
MAX_WORKERS = 8  # parallel files, as snapshot_download
PROGRESS_CHUNK = 512 * 1024  # bytes per read: the granularity of progress and of cancel


class Cancelled(Exception):
    """Raised inside a transfer when the job was asked to stop."""


class Progress:
    """Byte counts from many transfer threads, flushed to the job's row about once a second
    (with the heartbeat) by a background thread; `stop` makes every transfer raise Cancelled."""

    def __init__(self, job_id: str, total: int, done: int, stop: threading.Event, on_flush=None):
        self.job_id, self.total, self.done, self.stop = job_id, total, done, stop
        self.on_flush = on_flush  # called with the fields of each flush (the CLI's progress line)
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
        fields = dict(bytes_done=self.done, files_done=self.files_done, current_file=self.current,
                      heartbeat_at=time.time(), **({"speed_bps": speed} if speed is not None else {}), **extra)
        try:
            store.update_download(self.job_id, **fields)
        except store.StoreBusy:
            pass  # the next flush carries the counts
        if self.on_flush is not None:
            self.on_flush(fields)

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
        tag = etag_of(f)
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
            if not etag_of(f):
                raise DownloadError(f"The Hub sent no checksum for {f.path}, so it cannot be stored "
                                    "in the Hugging Face cache; try again later.")
            fetch_file(url, blobs / etag_of(f), f.size, f.lfs_sha256, progress)
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


def compute_slot(stop: threading.Event, log, label: str) -> Path:
    """A run-queue slot (droidft.queue) for the conversion: mlx-lm convert computes like a
    training run and would compete with one for the cores, so it waits while runs hold every
    slot (a cancel still ends the wait). The download itself needs none: it waits on the network."""
    lease = queue.acquire("convert", label, wait=False)
    if lease is None:
        log("every run-queue slot is taken: the conversion waits for one")
    while lease is None:
        if stop.wait(1.0):
            raise Cancelled()
        lease = queue.acquire("convert", label, wait=False)
    return lease


def convert(snapshot: Path, repo_id: str, bits: int) -> Path:
    """An MLX `bits`-bit copy of a downloaded Hugging Face model (mlx-lm's own convert)."""
    import shutil

    from mlx_lm import convert as mlx_convert

    out = converted_dir(repo_id, bits)
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # mlx-lm prints its progress: not our stdout
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


def _logger(job_id: str):
    """Lines for the job's log file (never the token: huggingface_hub does not log it either),
    not stdout: in the foreground, stdout is the CLI's answer."""
    path = logs_dir() / f"{job_id}.log"

    def log(text: str) -> None:
        try:
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(f"{time.strftime('%H:%M:%S')} {text.rstrip()}\n")
        except OSError:
            pass

    return log


def _watch_cancel_file(cancel_file: Path, stop: threading.Event) -> None:
    """`cancel` touches this file too: a job that missed the signal still stops."""
    while not stop.wait(0.5):
        if cancel_file.exists():
            stop.set()


def run(job_id: str, check=None, on_flush=None) -> str:
    """The job: download, assemble, optionally convert; returns the final status. Runs in its
    own process (`python -m droidft.models.fetch JOB`) or in the foreground (`pull`); `check`:
    the repo check `prepare` made for this job, so it is not asked for again; `on_flush`:
    called with the progress fields each time they are written."""
    job = store.get_download(job_id)
    if job is None:
        print(f"droidft.models.fetch: no job {job_id} in {paths.db_path()}", file=sys.stderr)
        return "failed"
    stop = threading.Event()
    cancel_file = logs_dir() / f"{job_id}.cancel"
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    threading.Thread(target=_watch_cancel_file, args=(cancel_file, stop), daemon=True).start()
    if check is None and not store.update_download(job_id, ACTIVE, status="running", phase="checking",
                                                   pid=os.getpid(), started_at=time.time(),
                                                   heartbeat_at=time.time()):
        return store.get_download(job_id)["status"]
    from huggingface_hub import constants
    from huggingface_hub.utils import disable_progress_bars, logging as hf_logging

    constants.DOWNLOAD_CHUNK_SIZE = PROGRESS_CHUNK  # progress and cancel every 512 KiB, not every 10 MiB
    disable_progress_bars()  # our progress is the job row; in the foreground stderr is one line
    hf_logging.set_verbosity_error()
    repo_id = job["repo_id"]
    log = _logger(job_id)
    log(f"pulling {repo_id}@{job.get('revision') or 'main'} from {endpoint()}")
    status, error, path = "failed", None, None
    try:
        fields = dict(phase="downloading")
        if check is None or check.commit != job.get("commit_sha"):
            check = check_repo(repo_id, job.get("commit_sha") or job.get("revision"))
        else:  # checked by `prepare` in this process: one write marks it running and sized
            fields.update(status="running", pid=os.getpid(), started_at=time.time(), heartbeat_at=time.time())
        present = bytes_present(check)
        if not store.update_download(job_id, ACTIVE, bytes_total=check.download_bytes, bytes_done=present,
                                     resumed_bytes=present, files_total=len(check.files), **fields):
            return store.get_download(job_id)["status"]
        with Progress(job_id, check.download_bytes, present, stop, on_flush) as progress:
            _fetch_all(job_id, check, progress)
            progress.current = None
            if stop.is_set():
                raise Cancelled()
            path = _assemble(check, job.get("revision"))
            bits = job.get("quantize_bits")
            if bits:
                progress.flush(phase="converting")
                lease = compute_slot(stop, log, f"converting {repo_id} to {bits}-bit")
                try:
                    path = convert(path, repo_id, int(bits))
                finally:
                    queue.release(lease)
        status = "completed"
    except Cancelled:
        status, error = "cancelled", "Cancelled; pull again to resume from the bytes already here."
    except BaseException as exc:  # noqa: BLE001 - every job ends with a status and one line
        status = "cancelled" if stop.is_set() else "failed"
        error = "Cancelled; pull again to resume." if stop.is_set() else _describe(exc, repo_id)
        import traceback

        log(traceback.format_exc())
    log(f"{status}: {error or path}")
    fields = dict(status=status, ended_at=time.time(), error=error, phase="done" if status == "completed" else None)
    if path is not None:
        fields["path"] = str(path)
    if status == "completed":
        fields.update(bytes_done=check.download_bytes, files_done=len(check.files), current_file=None)
    store.update_download(job_id, ACTIVE, **fields)
    cancel_file.unlink(missing_ok=True)
    return status


def pull(repo: str, *, quantize_bits: int | None = None, on_progress=None, poll: float = 1.0) -> dict:
    """Download in this process (`droidft models pull`): the same job, row and resume as the
    page's, with `on_progress(job row)` every `poll` s; Ctrl-C cancels (partial files stay).
    If the repo is already being pulled elsewhere, follows that job instead. Returns the row."""
    from .download import prepare, wait

    job_id, check = prepare(repo, quantize_bits=quantize_bits)
    if check is None:
        return wait(job_id, poll=poll, on_progress=on_progress)
    row = {"id": job_id, "repo_id": check.repo_id, "status": "running", "phase": "downloading",
           "bytes_total": check.download_bytes}

    def report(fields: dict) -> None:  # from the progress flush: no extra database reads
        row.update(fields)
        if on_progress is not None:
            on_progress(dict(row))

    run(job_id, check=check, on_flush=report)
    job = store.get_download(job_id)
    if on_progress is not None:
        on_progress(job)
    return job


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m droidft.models.fetch JOB_ID", file=sys.stderr)
        return 2
    return 0 if run(argv[0]) == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())

