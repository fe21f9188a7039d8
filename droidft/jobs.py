"""Start, stop, resume and reap training runs (detached worker processes).

`start` validates a config at the boundary (config, model, dataset), records a
`queued` run in the run queue and lets the queue (droidft.queue) spawn
`python -m droidft.worker RUN_ID` when a slot is free. Whoever lists runs reaps dead
workers to `failed`, with the last lines of their logs, and so frees their slots.
Stop asks a worker to end after its current step; `stop_now` ends its process group
(SIGTERM, then SIGKILL) for a run stuck in a long step.
"""

from __future__ import annotations

import math
import os
import signal
import time
from pathlib import Path

from . import disk, methods, paths, queue, security, store
from . import data as datasets
from .estimate import run_needs_bytes
from .models import resolve_model
from .models.resolve import display_name
from .queue import STARTUP_GRACE_S, pid_alive
from .run_files import STOP_FILE, adapter_if_complete

ACTIVE = ("queued", "running")
TERMINAL = ("completed", "failed", "stopped")
STOP_GRACE_S = float(os.environ.get("DROIDFT_STOP_GRACE_S", "30"))  # polite stop, then "Stop now"
TERM_WAIT_S = 3.0  # stop now: SIGTERM, this long to go, then SIGKILL
# A worker's writer thread beats the heartbeat every 10 s at least, even mid-step (MLX releases the
# GIL while it computes): this much silence from a live worker means it is hung, paused or
# cannot write (DROIDFT_SILENT_AFTER_S).
SILENT_AFTER_S = 120.0


class RunError(ValueError):
    """A run operation that cannot be done; the message says why and what to do."""


def _check_data(config) -> Path:
    data_dir = datasets.resolve_dataset(config.data, method=config.method)
    report = datasets.validate_dataset(
        data_dir, method=config.method, mask_prompt=getattr(config, "mask_prompt", False),
        batch_size=getattr(config, "batch_size", None))
    if report.errors:
        more = f" (and {len(report.errors) - 5} more)" if len(report.errors) > 5 else ""
        raise datasets.DataError("; ".join(str(p) for p in report.errors[:5]) + more)
    return data_dir


def count_rows(path: Path) -> int:
    with open(path, "rb") as fh:
        return sum(1 for line in fh if line.strip())


def start(config, *, parent_id: str | None = None, sweep_id: str | None = None) -> str:
    """Validate `config` and record the run last in the queue; it starts at once when a
    slot is free (droidft.queue). Returns the run id."""
    methods.get(config.method)
    security.check_run_paths(config)  # LAN mode: nothing outside the allowed folders is even read
    config.validate()
    model_path = resolve_model(config.model)
    data_dir = _check_data(config)
    if getattr(config, "epochs", None):
        # Fix the iteration count now, so progress, ETA and resume all agree on it.
        rows = count_rows(data_dir / "train.jsonl")
        config = config.replace(iters=max(1, math.ceil(config.epochs * rows / config.batch_size)))
    disk.require_free(paths.home(), run_needs_bytes(config, model_path), "this run's checkpoints")
    run_id = store.create_run(
        method=config.method, config=config.to_dict(), model=str(model_path), data=str(data_dir),
        name=config.name or f"{config.method} {display_name(model_path)} on {data_dir.name}",
        parent_id=parent_id, sweep_id=sweep_id, enqueue=True,
    )
    run_dir = paths.run_dir(run_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    import yaml

    (run_dir / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    queue.advance()
    return run_id


def log_tail(run_id: str, lines: int = 20) -> str:
    """The last lines the worker wrote (its own log, then the trainer's stdout)."""
    out = []
    for name in ("worker.log", "stdout.log", "ranks.log"):
        path = paths.run_dir(run_id) / name
        if path.exists():
            with open(path, "rb") as fh:
                fh.seek(max(0, path.stat().st_size - 16384))
                text = fh.read().decode("utf-8", errors="replace")
            tail = [line for line in text.splitlines() if line.strip()][-lines:]
            if tail:
                out.append(f"--- {name} ---\n" + "\n".join(tail))
    return "\n".join(out)


def reap() -> list[str]:
    """Mark runs whose worker died without saying so as failed. Returns their ids."""
    reaped = []
    now = time.time()
    active = store.list_runs(status=ACTIVE)
    for run in active:
        if queue.is_waiting(run) or pid_alive(run.get("pid"), run["id"]):
            continue
        if run.get("pid") is None and now - (run.get("heartbeat_at") or run.get("created_at") or now) \
                < STARTUP_GRACE_S:
            continue  # being spawned right now
        tail = log_tail(run["id"])
        error = "The training process died without finishing (killed, crashed or out of memory)."
        if tail:
            error += "\nLast log lines:\n" + tail
        if store.update_run_if(run["id"], ACTIVE, status="failed", ended_at=now, error=error):
            reaped.append(run["id"])
    queue.advance(active)  # the dead ones' slots are free (a restarted dashboard picks up here)
    return reaped


def silence(run: dict, now: float | None = None) -> str | None:
    """What to tell the user when a running run's worker is alive but has not beaten its
    heartbeat for SILENT_AFTER_S (a dead one is reaped instead); None when all is well."""
    if run.get("status") != "running":
        return None
    now = time.time() if now is None else now
    quiet = now - (run.get("heartbeat_at") or run.get("started_at") or now)
    try:
        limit = float(os.environ.get("DROIDFT_SILENT_AFTER_S", SILENT_AFTER_S))
    except ValueError:
        limit = SILENT_AFTER_S
    if quiet < limit or not pid_alive(run.get("pid"), run["id"]):
        return None
    try:
        full = disk.free_bytes(paths.home()) < disk.min_free_bytes()
    except OSError:
        full = False
    cause = ("the disk holding the droidft home is full, so it cannot write; free some space"
             if full else "it may be hung or paused")
    pid = run.get("pid")
    return (f"The training process (pid {pid}) is alive but has not reported for {quiet / 60:.0f} min "
            f"{quiet % 60:02.0f} s: {cause}. Stop asks it to end; if it stays silent, `kill -9 {pid}` "
            "ends it (the run is then marked failed, and Resume continues from its last checkpoint).")


def list_runs(**filters) -> list[dict]:
    reap()
    return store.list_runs(**filters)


def get(run_id: str) -> dict:
    run = store.get_run(run_id)
    if run is None:
        raise RunError(f"No run '{run_id}'. `droidft runs` lists them.")
    if run["status"] in ACTIVE and not pid_alive(run.get("pid"), run_id):
        reap()
        run = store.get_run(run_id)
    return run


def end_reason(run: dict) -> str | None:
    """Why a run ended when it was not simply its last step (stop, stop now, early stopping,
    cancelled in the queue), as recorded in its `extra`."""
    return (run.get("extra") or {}).get("end_reason") if isinstance(run.get("extra"), dict) else None


def stop(run_id: str, reason: str = "stopped on request") -> dict:
    """Ask a run to stop: a waiting run leaves the queue; a started one ends after its current
    step, saves the adapter and ends as `stopped`. `stop_now` if it has not after STOP_GRACE_S."""
    run = get(run_id)
    if run["status"] not in ACTIVE:
        raise RunError(f"Run {run_id} is already {run['status']}; nothing to stop.")
    if queue.is_waiting(run):
        try:
            queue.cancel(run_id, "stopped before it started (cancelled in the queue)")
            return store.get_run(run_id)
        except queue.QueueError:
            run = get(run_id)  # it just started: stop it like any other
    stop_file = paths.run_dir(run_id) / STOP_FILE
    if not stop_file.exists():
        paths.run_dir(run_id).mkdir(parents=True, exist_ok=True)
        # its mtime is when the stop was asked for (the grace countdown); its text, the reason
        stop_file.write_text(reason)
    # Signal only a worker that says it is running: it installs its SIGTERM handler before
    # it says so, and a signal during start-up would kill it. A starting worker sees the
    # STOP file at its first step instead.
    if run["status"] == "running" and pid_alive(run.get("pid"), run_id):
        try:
            os.kill(int(run["pid"]), signal.SIGTERM)
        except ProcessLookupError:
            pass
    return run


def stop_requested_at(run_id: str) -> float | None:
    """When a stop was asked for (epoch seconds), or None."""
    try:
        return (paths.run_dir(run_id) / STOP_FILE).stat().st_mtime
    except OSError:
        return None


def stop_now(run_id: str, reason: str = "stopped now") -> dict:
    """End a run's worker at once, whatever it is doing: SIGTERM to its process group, then
    SIGKILL after TERM_WAIT_S. The run keeps its last checkpoint (mlx-lm's adapters.safetensors
    of the last save) and ends `stopped` with the reason; the next queued run starts."""
    run = get(run_id)
    if run["status"] not in ACTIVE:
        raise RunError(f"Run {run_id} is already {run['status']}; nothing to stop.")
    if queue.is_waiting(run):
        return stop(run_id)
    asked = stop_requested_at(run_id)
    stop_file = paths.run_dir(run_id) / STOP_FILE
    stop_file.parent.mkdir(parents=True, exist_ok=True)
    stop_file.write_text(reason)  # a worker that still gets to end itself says this reason
    pid = run.get("pid")
    for sig, wait_s in ((signal.SIGTERM, TERM_WAIT_S), (signal.SIGKILL, 10.0)):
        if not pid_alive(pid, run_id):
            break
        try:
            os.killpg(int(pid), sig)  # the worker leads its own session: ranks and helpers too
        except ProcessLookupError:
            break
        except PermissionError as exc:
            raise RunError(f"Run {run_id}'s process {pid} belongs to another user; cannot end it.") from exc
        deadline = time.monotonic() + wait_s
        while pid_alive(pid, run_id) and time.monotonic() < deadline:
            time.sleep(0.05)
    run = store.get_run(run_id)
    if run["status"] in ACTIVE:  # the worker did not get to record its own end
        adapters = paths.run_dir(run_id) / "adapters"
        found = _last_saved(adapters, run)
        waited = f" after {time.time() - asked:.0f} s of waiting for a polite stop" if asked else ""
        note = (f"the adapter is the last checkpoint, step {found[1]}" if found
                else "it had saved no checkpoint yet")
        extra = {**(run.get("extra") or {}), "end_reason": f"{reason}{waited}: the worker was ended mid-step; {note}"}
        if store.update_run_if(run_id, ACTIVE, status="stopped", ended_at=time.time(), extra=extra,
                               adapter_path=adapter_if_complete(adapters)) and found:
            store.add_artifact(kind="final_adapter", path=str(adapters), run_id=run_id, step=found[1],
                               meta={"stopped_now": True})
    queue.advance()
    return store.get_run(run_id)


def _last_saved(adapters: Path, run: dict) -> tuple[Path, int] | None:
    """The newest numbered checkpoint mlx-lm wrote in a run's adapter folder, with its global
    step, if `adapters.safetensors` beside it is whole (it holds the same weights)."""
    if adapter_if_complete(adapters) is None:
        return None
    numbered = sorted(adapters.glob("[0-9]" * 7 + "_adapters.safetensors"))
    if not numbered:
        return None
    offset = int((run.get("config") or {}).get("start_step") or 0)
    return numbered[-1], int(numbered[-1].name[:7]) + offset


def wait(run_id: str, timeout: float | None = None, poll: float = 0.5) -> dict:
    """Block until the run ends (or timeout); returns its final record."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        run = get(run_id)
        if run["status"] in TERMINAL:
            return run
        if deadline is not None and time.monotonic() > deadline:
            return run
        time.sleep(poll)


def last_checkpoint(run_id: str) -> tuple[Path, int] | None:
    """The newest adapter weights a run saved and the (global) step they hold."""
    get(run_id)  # an unknown run raises RunError
    final = [a for a in store.artifacts(run_id, kind="final_adapter") if a.get("step") is not None]
    if final:
        path = Path(final[-1]["path"]) / "adapters.safetensors"
        if path.exists():
            return path, int(final[-1]["step"])
    ckpts = sorted(store.artifacts(run_id, kind="checkpoint"), key=lambda a: a.get("step") or 0)
    for art in reversed(ckpts):
        if Path(art["path"]).exists():
            return Path(art["path"]), int(art["step"])
    return None


def best_adapter(run_id: str) -> dict | None:
    """The best adapter a run kept, {path, step, metric, value}, or None: its artifact, else
    (a run ended by `stop now`) what the worker wrote beside the weights."""
    import json

    from .reporting import BEST_INFO

    arts = store.artifacts(run_id, kind="best_adapter")
    if arts and Path(arts[-1]["path"], "adapters.safetensors").exists():
        meta = arts[-1].get("meta") or {}
        metric, value = next(iter(meta.items()), (None, None))
        return {"path": arts[-1]["path"], "step": arts[-1].get("step"), "metric": metric, "value": value}
    folder = paths.run_dir(run_id) / "adapters" / "best"
    try:
        info = json.loads((folder / BEST_INFO).read_text())
    except (OSError, ValueError):
        return None
    if not (folder / "adapters.safetensors").exists():
        return None
    return {"path": str(folder), "step": info.get("step"), "metric": info.get("metric"),
            "value": info.get("value")}


def resume(run_id: str) -> str:
    """Continue a stopped or failed run from its last checkpoint as a new, linked run."""
    run = get(run_id)
    if run["status"] in ACTIVE:
        raise RunError(f"Run {run_id} is still {run['status']}; stop it before resuming.")
    found = last_checkpoint(run_id)
    if found is None:
        raise RunError(f"Run {run_id} saved no checkpoint to resume from "
                       "(it ended before its first save). Start it again instead.")
    path, step = found
    config = methods.config_from_dict(run["config"])
    done_here = step - config.start_step
    total = getattr(config, "iters", None)
    if total is not None and done_here >= total:
        raise RunError(f"Run {run_id} already trained all {total} iterations; start a new run "
                       f"with resume_adapter_file={path} to train further.")
    changes = {"resume_adapter_file": str(path), "start_step": step,
               "name": (run.get("name") or run_id) + " (resumed)"}
    if total is not None:
        changes["iters"] = total - done_here
    if hasattr(config, "epochs"):
        changes["epochs"] = None  # iters above already counts what is left
    return start(config.replace(**changes), parent_id=run_id)


def delete(run_id: str) -> None:
    """Remove a finished run: its rows and its folder (adapters, logs, checkpoints)."""
    import shutil

    run = get(run_id)
    if run["status"] in ACTIVE:
        raise RunError(f"Run {run_id} is {run['status']}; stop it before deleting.")
    store.delete_run(run_id)
    shutil.rmtree(paths.run_dir(run_id), ignore_errors=True)
