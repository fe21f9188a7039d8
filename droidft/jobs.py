"""Start, stop, resume and reap training runs (detached worker processes).

`start` validates a config at the boundary (config, model, dataset), records a
`queued` run and spawns `python -m droidft.worker RUN_ID` in a new session with
the best BLAS available. Whoever lists runs reaps dead workers to `failed`,
with the last lines of their logs.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from . import blas, disk, methods, paths, security, store
from . import data as datasets
from .estimate import run_needs_bytes
from .models import resolve_model
from .models.resolve import display_name
from .run_files import STOP_FILE

ACTIVE = ("queued", "running")
TERMINAL = ("completed", "failed", "stopped")
STARTUP_GRACE_S = 120  # a queued run with no live worker after this long has failed
# A worker's writer thread beats the heartbeat every second, even mid-step (MLX releases the
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


def start(config, *, parent_id: str | None = None) -> str:
    """Validate `config`, record the run and spawn its worker. Returns the run id."""
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
        parent_id=parent_id,
    )
    run_dir = paths.run_dir(run_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    import yaml

    (run_dir / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    spawn(run_id, config.blas)
    return run_id


_children: dict[str, subprocess.Popen] = {}


def spawn(run_id: str, blas_choice: str = "auto") -> int:
    """Start the worker process for a recorded run, detached in its own session."""
    env, note = blas.worker_env(blas_choice)
    env["DROIDFT_BLAS_NOTE"] = note
    env["DROIDFT_HOME"] = str(paths.home())
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(paths.REPO_ROOT), env.get("PYTHONPATH")]))
    env.setdefault("PYTHONUNBUFFERED", "1")
    env["NO_COLOR"] = "1"  # the trainer's own progress lines land in stdout.log: keep them plain
    run_dir = paths.run_dir(run_id)
    with open(run_dir / "stdout.log", "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "droidft.worker", run_id],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, cwd=str(paths.REPO_ROOT), start_new_session=True,
        )
    store.update_run(run_id, pid=proc.pid)
    # Wait on the child in the background so a dead worker never lingers as a zombie
    # (a zombie still answers kill(pid, 0), which would hide its death from reaping).
    _children[run_id] = proc
    threading.Thread(target=proc.wait, daemon=True).start()
    return proc.pid


def pid_alive(pid: int | None, run_id: str | None = None) -> bool:
    """Is this pid a live (non-zombie) worker, and, where /proc tells, ours for this run?"""
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
            if run_id and run_id not in (proc / "cmdline").read_bytes().decode(errors="replace"):
                return False  # the pid was reused by another process
        except OSError:
            return False
    return True


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
    for run in store.list_runs(status=ACTIVE):
        if pid_alive(run.get("pid"), run["id"]):
            continue
        if run.get("pid") is None and now - (run.get("created_at") or now) < STARTUP_GRACE_S:
            continue  # being spawned right now
        tail = log_tail(run["id"])
        error = "The training process died without finishing (killed, crashed or out of memory)."
        if tail:
            error += "\nLast log lines:\n" + tail
        if store.update_run_if(run["id"], ACTIVE, status="failed", ended_at=now, error=error):
            reaped.append(run["id"])
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


def stop(run_id: str) -> dict:
    """Ask a run's worker to stop: it saves the adapter and ends as `stopped`."""
    run = get(run_id)
    if run["status"] not in ACTIVE:
        raise RunError(f"Run {run_id} is already {run['status']}; nothing to stop.")
    (paths.run_dir(run_id) / STOP_FILE).touch()
    # Signal only a worker that says it is running: it installs its SIGTERM handler before
    # it says so, and a signal during start-up would kill it. A starting worker sees the
    # STOP file at its first step instead.
    if run["status"] == "running" and pid_alive(run.get("pid"), run_id):
        try:
            os.kill(int(run["pid"]), signal.SIGTERM)
        except ProcessLookupError:
            pass
    return run


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
