"""Exports as jobs: `start()` records a `queued` row in the `exports` table and spawns
`python -m droidft.export.jobs JOB` in its own session (so an export survives reloads and a
restarted dashboard, like a training run); the job writes its phase and progress at most once
a second and ends `completed` (with the artifact id and folder) or `failed` (with the message).
A job whose process died is marked failed by whoever looks next (`get`, `for_source`)."""

from __future__ import annotations

import os
import sys
import time

from .. import paths, queue, store
from ..detached import spawn_detached
from .core import TARGETS, export
from .source import ExportError

ACTIVE = ("queued", "running")
OPTIONS = ("name", "quantize", "repo_id", "upload", "private", "update")
STARTUP_GRACE_S = 60.0
FLUSH_S = 1.0
LIGHT_TARGETS = ("peft",)  # a PEFT export renames tensors: it needs no run-queue slot


def start(source: str, to: str, *, role: str | None = "owner", **options) -> str:
    """Record the export and start its process; returns the job id. `role` is the dashboard
    visitor's: in LAN mode only the owner may export or upload (checked here, not only in the UI)."""
    from .. import security

    security.require(role, "upload" if to == "hub" else "export")
    if to not in TARGETS:
        raise ExportError(f"Unknown export target '{to}': choose one of {', '.join(TARGETS)}.")
    unknown = set(options) - set(OPTIONS)
    if unknown:
        raise ExportError(f"Unknown export option(s): {', '.join(sorted(unknown))}.")
    job = store.create_export(source=source, target=to, options=options)
    proc = spawn_detached("droidft.export.jobs", job, paths.home() / "exports" / ".logs" / f"{job}.log",
                          env=dict(os.environ, HF_HUB_DISABLE_PROGRESS_BARS="1"))
    store.update_export(job, pid=proc.pid)
    return job


def _alive(pid) -> bool:
    from ..jobs import pid_alive

    return pid_alive(pid, None)


def _reap(job: dict) -> dict:
    if job["status"] not in ACTIVE or _alive(job.get("pid")):
        return job
    if job.get("pid") is None and time.time() - (job.get("created_at") or 0) < STARTUP_GRACE_S:
        return job
    msg = "The export process died before finishing (killed or out of memory); nothing was kept."
    if store.update_export(job["id"], ACTIVE, status="failed", error=msg, ended_at=time.time()):
        job = {**job, "status": "failed", "error": msg}
    return job


def get(job_id: str) -> dict | None:
    job = store.get_export(job_id)
    return _reap(job) if job else None


def for_source(source: str, limit: int = 20) -> list[dict]:
    return [_reap(j) for j in store.list_exports(str(source), limit=limit)]


def wait(job_id: str, timeout: float = 600.0, poll: float = 0.5) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = get(job_id)
        if job is None or job["status"] not in ACTIVE or time.monotonic() > deadline:
            return job
        time.sleep(poll)


def _slot(job_id: str):
    """A run-queue slot for the export (fusing and converting compute like a training run and
    would compete with one for the cores): the job waits, saying so, while runs hold them all."""
    lease = queue.acquire("export", f"export {job_id}", wait=False)
    while lease is None:
        store.update_export(job_id, phase="waiting for a free run slot (training runs hold them all)",
                            heartbeat_at=time.time())
        lease = queue.acquire("export", f"export {job_id}", wait=True, timeout=5.0)
    return lease


def run(job_id: str) -> int:
    """The job process: run the export, reporting progress; 0 on success."""
    job = store.get_export(job_id)
    if job is None:
        print(f"no export job {job_id}", file=sys.stderr)
        return 2
    store.update_export(job_id, status="running", started_at=time.time(), heartbeat_at=time.time())
    last = [0.0]

    def progress(done: float, total: float, what: str) -> None:
        now = time.monotonic()
        if now - last[0] >= FLUSH_S or done >= total:
            last[0] = now
            store.update_export(job_id, phase=what[:200], done=float(done), total=float(total or 1),
                                heartbeat_at=time.time())

    opts = {k: v for k, v in (job.get("options") or {}).items() if k in OPTIONS and v is not None}
    lease = None
    try:
        if job["target"] not in LIGHT_TARGETS:
            lease = _slot(job_id)
        result = export(job["source"], job["target"], progress=progress, **opts)
    except Exception as exc:  # noqa: BLE001 - every failure becomes the job's message
        msg = str(exc) if isinstance(exc, (ExportError, ValueError)) else f"{type(exc).__name__}: {exc}"
        store.update_export(job_id, status="failed", error=msg, ended_at=time.time())
        print(msg, file=sys.stderr)
        return 1
    finally:
        queue.release(lease)
    store.update_export(job_id, status="completed", phase="done", done=1.0, total=1.0, out=result.out,
                        artifact_id=result.artifact_id, ended_at=time.time())
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1]))
