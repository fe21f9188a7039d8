"""The run queue: how many runs train at once, and who starts the next one.

`jobs.start` records every run as `queued` with a place in the queue (`runs.queue_order`).
No daemon keeps the queue: whoever starts a run, and whoever ends one (its worker as it
exits, the reaper that finds a dead worker, `stop now`), calls `advance()`, which starts as
many waiting runs as there are free slots. `advance` holds an exclusive flock on
`queue.lock` in the droidft home, so two runs ending at once cannot both take the last
slot; the queue itself is rows in the run database, so it outlives a dashboard restart.

Slots: the `max_concurrent_runs` setting (droidft.settings), else what this machine holds:
one run per CORES_PER_RUN cores (a CPU training run keeps about that many busy, so on a
2-core machine a second run only halves the first one's speed) and no more than fit in
MEMORY_SHARE of RAM by the memory estimate of the run at the head of the queue; at least 1.

Other compute jobs (downloads, exports) can count against the same slots:

    with queue.slot("export", "gguf of run X"):   # waits for a free slot, holds it
        ...

A slot held this way is a lease file naming its process, so a holder that crashes frees it.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import math
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Iterator

from . import blas, paths, settings, standby, store
from .detached import spawn_detached

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: one user, no cross-process lock
    fcntl = None

SETTING = "max_concurrent_runs"
CORES_PER_RUN = 4
MEMORY_SHARE = 0.8
STARTUP_GRACE_S = 120  # a claimed run with no worker pid after this long has failed
STARTUP_S = 8.0  # model and data loading before a run's first step, for start-time estimates
LOCK_TIMEOUT = 60.0


class QueueError(ValueError):
    """A queue operation that cannot be done; the message says why."""


# --------------------------------------------------------------------------- processes


def spawn(run_id: str, blas_choice: str = "auto") -> int:
    """Start the worker process for a recorded run, detached in its own session (so it
    outlives whoever started it, and `stop now` can end its whole process group)."""
    env, note = blas.worker_env(blas_choice)
    env["DROIDFT_BLAS_NOTE"] = note
    pid = standby.take(run_id, env)  # a worker started ahead, imports done, if one waits
    if pid is None:
        pid = spawn_detached("droidft.worker", run_id, paths.run_dir(run_id) / "stdout.log", env=env).pid
    store.update_run(run_id, pid=pid)
    return pid


def pid_alive(pid: int | None, run_id: str | None = None) -> bool:
    """Is this pid a live (non-zombie) process and, where /proc tells, the worker of this run?"""
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path(f"/proc/{pid}")
    if proc.exists():
        try:
            if (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return False
            if (run_id and run_id not in (proc / "cmdline").read_bytes().decode(errors="replace")
                    and not standby.adopted(pid, run_id)):
                return False  # the pid was reused by another process
        except OSError:
            return False
    return True


# --------------------------------------------------------------------------- slots


def machine() -> dict:
    """Cores and RAM (GB) of this machine."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        memory = None
    return {"cores": os.cpu_count() or 1, "memory_gb": memory}


def run_memory_gb(run: dict) -> float | None:
    """The memory estimate of a recorded run (None when its model cannot be read)."""
    try:
        from . import methods
        from .models import read_model_config
        from .estimate import estimate_run

        config = methods.config_from_dict(run.get("config") or {})
        return estimate_run(config, read_model_config(run.get("model") or config.model)).memory_gb
    except Exception:  # noqa: BLE001 - no estimate: the cores alone decide
        return None


def auto_slots(run: dict | None = None) -> tuple[int, str]:
    """(slots, why) when the setting is auto: by cores, and by the memory estimate of `run`."""
    info = machine()
    by_cores = max(1, info["cores"] // CORES_PER_RUN)
    why = f"{info['cores']} cores: {by_cores} run{'s' if by_cores > 1 else ''} at once"
    need = run_memory_gb(run) if run else None
    if need and info["memory_gb"]:
        by_memory = max(1, math.floor(MEMORY_SHARE * info["memory_gb"] / max(need, 0.01)))
        if by_memory < by_cores:
            return by_memory, (f"{info['memory_gb']:.0f} GB RAM holds {by_memory} run(s) of "
                               f"~{need:.1f} GB")
    return by_cores, why


def slots(run: dict | None = None) -> int:
    """How many runs may train at once (the setting, else auto for the run next in line)."""
    value = settings.get(SETTING)
    return int(value) if value else auto_slots(run)[0]


def slot_info(run: dict | None = None) -> dict:
    """{slots, setting ('auto' or N), reason} for pages and `droidft queue`."""
    value = settings.get(SETTING)
    if value:
        return {"slots": int(value), "setting": int(value), "reason": "set by the owner"}
    count, why = auto_slots(run)
    return {"slots": count, "setting": "auto", "reason": why}


# --------------------------------------------------------------------------- the lock


@contextlib.contextmanager
def _locked(timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """One queue decision at a time across every droidft process of this home."""
    if fcntl is None:
        yield
        return
    fd = os.open(str(paths.home() / "queue.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise store.StoreBusy("The run queue is busy (another process holds it). "
                                          "Try again in a moment.") from None
                time.sleep(0.01)
        yield
    finally:
        os.close(fd)  # releases the flock


# --------------------------------------------------------------------------- queue state


def is_waiting(run: dict) -> bool:
    return run.get("status") == "queued" and run.get("queue_order") is not None


def _active() -> list[dict]:
    return store.list_runs(status=("queued", "running"))


def waiting(runs: list[dict] | None = None) -> list[dict]:
    """Runs waiting for a slot, first in line first."""
    runs = _active() if runs is None else runs
    return sorted((r for r in runs if is_waiting(r)), key=lambda r: (r["queue_order"], r["created_at"] or 0))


def positions(runs: list[dict] | None = None) -> dict[str, int]:
    """run id -> place in the queue (1 = next to start)."""
    return {r["id"]: i for i, r in enumerate(waiting(runs), start=1)}


def _occupying(runs: list[dict], now: float) -> list[dict]:
    """Runs holding a slot: started (or being started) and alive."""
    out = []
    for r in runs:
        if is_waiting(r) or r.get("status") not in ("queued", "running"):
            continue
        claimed = r.get("heartbeat_at") or r.get("created_at") or now  # claim time, until it beats
        if pid_alive(r.get("pid"), r["id"]) or (r.get("pid") is None and now - claimed < STARTUP_GRACE_S):
            out.append(r)
    return out


def _lease_dir() -> Path:
    return paths.home() / "queue"


def leases() -> list[dict]:
    """Slots held by other jobs (downloads, exports), live holders only; stale files go."""
    out = []
    folder = _lease_dir()
    for path in sorted(folder.glob("*.lease")) if folder.is_dir() else []:
        try:
            lease = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if pid_alive(lease.get("pid")):
            out.append({**lease, "path": str(path)})
        else:
            path.unlink(missing_ok=True)
    return out


def busy_slots(runs: list[dict] | None = None) -> int:
    runs = _active() if runs is None else runs
    return len(_occupying(runs, time.time())) + len(leases())


def _claim_and_spawn(run: dict) -> bool:
    """Take a waiting run out of the queue and start its worker (under the lock)."""
    if not store.update_run_if(run["id"], "queued", queue_order=None, heartbeat_at=time.time()):
        return False  # stopped or cancelled meanwhile
    try:
        pid = spawn(run["id"], (run.get("config") or {}).get("blas", "auto"))
    except Exception as exc:  # noqa: BLE001 - the run ends with the reason instead
        store.update_run_if(run["id"], "queued", status="failed", ended_at=time.time(),
                            error=f"Could not start the training process: {exc}")
        return False
    store.add_events([(run["id"], time.time(), "info",
                       f"left the queue: worker {pid} started by {' '.join(sys.argv[:2])[-80:]} (pid {os.getpid()})")])
    return True


def advance(runs: list[dict] | None = None) -> list[str]:
    """Start waiting runs while slots are free; returns the ids started. Cheap (no lock,
    no write) when nothing waits (`runs`: the active runs, if the caller just read them)."""
    if not any(is_waiting(r) for r in (_active() if runs is None else runs)):
        return []
    started = []
    with _locked():
        runs = _active()
        queue = waiting(runs)
        if not queue:
            return []
        free = slots(queue[0]) - busy_slots(runs)
        for run in queue[:max(0, free)]:
            if _claim_and_spawn(run):
                started.append(run["id"])
    return started


def _get_waiting(run_id: str) -> dict:
    run = store.get_run(run_id)
    if run is None:
        raise QueueError(f"No run '{run_id}'. `droidft runs` lists them.")
    if not is_waiting(run):
        raise QueueError(f"Run {run_id} is not waiting in the queue (it is {run['status']}).")
    return run


def start_now(run_id: str) -> None:
    """Start a waiting run at once, even when every slot is taken."""
    with _locked():
        run = _get_waiting(run_id)
        if not _claim_and_spawn(run):
            raise QueueError(f"Run {run_id} could not be started; see its record for why.")


def move(run_id: str, position: int) -> int:
    """Put a waiting run at `position` (1 = next to start; clamped); returns the new position."""
    with _locked():
        _get_waiting(run_id)
        others = [r for r in waiting() if r["id"] != run_id]
        index = min(max(int(position), 1), len(others) + 1) - 1
        before = others[index - 1]["queue_order"] if index > 0 else None
        after = others[index]["queue_order"] if index < len(others) else None
        if before is None and after is None:
            order = 1.0
        elif before is None:
            order = after - 1.0
        elif after is None:
            order = before + 1.0
        else:
            order = (before + after) / 2.0  # a double halves ~50 times before two orders meet
        store.update_run(run_id, queue_order=order)
        return index + 1


def cancel(run_id: str, reason: str = "cancelled while waiting in the queue") -> None:
    """Take a waiting run out of the queue; it ends `stopped` without ever starting."""
    with _locked():
        run = _get_waiting(run_id)
        extra = {**(run.get("extra") or {}), "end_reason": reason}
        if not store.update_run_if(run_id, "queued", status="stopped", ended_at=time.time(),
                                   queue_order=None, extra=extra):
            raise QueueError(f"Run {run_id} has just left the queue; stop it instead.")


# --------------------------------------------------------------------------- estimated starts


def _remaining_s(run: dict, frame, now: float, history: dict) -> float:
    """Seconds until a started run ends: its steps left at the speed of its reports so far,
    else its estimated duration minus the time it has run."""
    config = run.get("config") or {}
    total = int(config.get("iters") or 0) + int(config.get("start_step") or 0)
    rows = frame[(frame["run_id"] == run["id"]) & (frame["name"] == "train_loss")] if frame is not None else None
    if rows is not None and len(rows) >= 2 and total:
        first, last = rows.iloc[0], rows.iloc[-1]
        if last["time"] > first["time"] and last["step"] > first["step"]:
            rate = (last["step"] - first["step"]) / (last["time"] - first["time"])
            return max(0.0, (total - last["step"]) / rate - (now - last["time"]))
    duration = _duration_s(run, history)
    started = run.get("started_at") or run.get("created_at") or now
    return max(0.0, duration - (now - started)) if duration is not None else 0.0


def _duration_s(run: dict, history: dict) -> float | None:
    """Estimated wall time of a run from start to end: from earlier completed runs on the same
    model (their wall time per trained example), else the memory/time estimate's FLOP count."""
    config = run.get("config") or {}
    model = run.get("model") or config.get("model")
    iters, batch = int(config.get("iters") or 0), int(config.get("batch_size") or 1)
    if model not in history:
        done = [r for r in store.list_runs(status="completed", limit=200) if r.get("model") == model]
        history[model] = [((r["ended_at"] - r["started_at"] - STARTUP_S)
                           / max(1, int((r.get("config") or {}).get("iters") or 1)
                                 * int((r.get("config") or {}).get("batch_size") or 1)))
                          for r in done[:10] if r.get("ended_at") and r.get("started_at")]
    if history[model] and iters:
        per_example = max(0.0, sorted(history[model])[len(history[model]) // 2])  # the median
        return STARTUP_S + per_example * iters * batch
    try:
        from . import methods
        from .models import read_model_config
        from .estimate import estimate_run

        est = estimate_run(methods.config_from_dict(config), read_model_config(model))
        return None if est.seconds is None else est.seconds + STARTUP_S
    except Exception:  # noqa: BLE001 - no estimate for this one
        return None


def entries(now: float | None = None) -> list[dict]:
    """The waiting runs with position, estimated duration and estimated start time (epoch
    seconds; None when a run ahead has no estimate)."""
    now = time.time() if now is None else now
    runs = _active()
    queue = waiting(runs)
    if not queue:
        return []
    history: dict = {}
    started = _occupying(runs, now)
    frame = store.metrics_frame([r["id"] for r in started], names=["train_loss"]) if started else None
    capacity = max(1, slots(queue[0]))
    free_at = sorted(_remaining_s(r, frame, now, history) for r in started)
    free_at += [0.0] * len(leases())  # a lease's end is unknown: counted as free soon
    free_at = sorted(free_at)[-capacity:] if len(free_at) >= capacity else free_at + [0.0] * (capacity - len(free_at))
    heapq.heapify(free_at)
    out, known = [], True
    for position, run in enumerate(queue, start=1):
        duration = _duration_s(run, history)
        start = heapq.heappop(free_at)
        out.append({"id": run["id"], "name": run.get("name"), "method": run.get("method"),
                    "sweep_id": run.get("sweep_id"), "position": position,
                    "estimated_seconds": duration,
                    "estimated_start": now + start if known else None})
        if duration is None:
            known = False
        heapq.heappush(free_at, start + (duration or 0.0))
    return out


# --------------------------------------------------------------------------- other jobs


def acquire(kind: str, label: str = "", *, wait: bool = True, timeout: float | None = None,
            poll: float = 1.0) -> Path | None:
    """Take a slot for a job that is not a training run (a download, an export); returns the
    lease to `release`, or None when `wait` is False (or `timeout` passed) and none is free."""
    folder = _lease_dir()
    folder.mkdir(parents=True, exist_ok=True)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        with _locked():
            if busy_slots() < slots(None):
                path = folder / f"{kind}-{os.getpid()}-{secrets.token_hex(4)}.lease"
                path.write_text(json.dumps({"kind": kind, "label": label, "pid": os.getpid(),
                                            "created_at": time.time()}))
                return path
        if not wait or (deadline is not None and time.monotonic() >= deadline):
            return None
        time.sleep(poll)


def release(lease: Path | None) -> None:
    """Give a slot back and let the next queued run start."""
    if lease is not None:
        Path(lease).unlink(missing_ok=True)
        advance()


@contextlib.contextmanager
def slot(kind: str, label: str = "", timeout: float | None = None) -> Iterator[Path]:
    """Hold a slot for the duration of a block (waiting for one first)."""
    lease = acquire(kind, label, timeout=timeout)
    if lease is None:
        raise QueueError(f"No free slot for this {kind} after {timeout:.0f} s: training runs hold them all.")
    try:
        yield lease
    finally:
        release(lease)
