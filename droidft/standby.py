"""A training worker started ahead of time, so a Start trains sooner.

A fresh worker spends its first ~1.2-1.5 s (2 idle cores) importing MLX, mlx-lm and
transformers before it reads its run. The dashboard keeps one worker waiting with those imports
done (`python -m droidft.worker --standby`): `queue.spawn` hands it the run id over a Unix
socket in the droidft home and it becomes that run's worker — the same `worker.run`, log file and process
group a fresh worker has. It takes a run only when nothing that matters at import time differs:
the environment the run's worker would get (BLAS library and kernels, Hub endpoint, ...) and
the code (droidft, mlx, mlx-lm, mlx-lm-lora and transformers unchanged since it started).
Otherwise, or when none is waiting, `queue.spawn` starts a fresh worker as before.

The dashboard calls `keep_ready` while nothing trains, so a standby's imports never compete
with a run for the cores. A waiting standby exits when the dashboard that started it has gone,
when its home is gone, or after IDLE_EXIT_S without a run. DROIDFT_STANDBY=0 switches it off
(the test suite does, except where it tests it).
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
from pathlib import Path

from . import paths
from .detached import job_env, spawn_detached

IDLE_EXIT_S = float(os.environ.get("DROIDFT_STANDBY_IDLE_S", 6 * 3600))
STARTING_WAIT_S = 5.0  # how long a Start waits for a standby that is still importing
CHECK_S = 5.0  # how often a waiting standby looks whether its home and socket are still there
PER_RUN_ENV = ("DROIDFT_BLAS_NOTE",)  # set per run; everything else must match the standby's own
LIBRARIES = ("mlx", "mlx_lm", "mlx_lm_lora", "transformers")
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,80}")  # a folder name under runs/, never a path


def enabled() -> bool:
    return os.environ.get("DROIDFT_STANDBY", "1") != "0" and hasattr(socket, "AF_UNIX")


def socket_path() -> Path:
    return paths.home() / "standby.sock"


def _usable(path: Path) -> bool:
    return len(os.fsencode(path)) < 100  # AF_UNIX paths are limited to ~104-108 bytes


# --------------------------------------------------------------------------- the asking side


def _ask(message: dict, timeout: float, confirm: bool = False) -> dict | None:
    """Send one request to the standby of this home; its answer, or None when none listens.
    `confirm`: acknowledge an accepting answer, which the standby waits for before it takes
    the run, so a run is never both taken by it and given a fresh worker here."""
    path = socket_path()
    if not path.exists() or not _usable(path):
        return None
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(json.dumps(message).encode() + b"\n")
            answer = json.loads(sock.makefile("rb").readline() or b"null")
            if confirm and isinstance(answer, dict) and "pid" in answer:
                sock.sendall(b"ok\n")
        return answer if isinstance(answer, dict) else None
    except (OSError, ValueError):
        return None


def ready() -> int | None:
    """The pid of the standby waiting for this home, if one is."""
    answer = _ask({"ping": True}, timeout=2.0)
    return int(answer["pid"]) if answer and "pid" in answer else None


def take(run_id: str, env: dict) -> int | None:
    """Hand `run_id` to the waiting standby; its pid once it has become the run's worker, or
    None (none waiting, or it refused: another environment or changed code)."""
    if not enabled():
        return None
    deadline = time.monotonic() + STARTING_WAIT_S
    while not socket_path().exists() and _starting() and time.monotonic() < deadline:
        time.sleep(0.05)  # one is importing: it will be ready sooner than a fresh worker would
    answer = _ask({"run": run_id, "env": job_env(env)}, timeout=10.0, confirm=True)
    return int(answer["pid"]) if answer and "pid" in answer else None


def _starting() -> bool:
    """Is a standby of this home importing (it holds the lock but does not listen yet)?"""
    import fcntl

    try:
        with open(paths.home() / "standby.lock", "rb") as probe:
            try:
                fcntl.flock(probe, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                return True
            fcntl.flock(probe, fcntl.LOCK_UN)
    except OSError:
        pass  # no lock file: no standby ever started here
    return False


_last_check = 0.0
_check_lock = threading.Lock()


def keep_ready(every: float = 10.0) -> None:
    """Called by the dashboard's pages: when nothing trains or waits to, make sure a standby
    waits, started with the environment this dashboard gives its workers. At most one check
    per `every` seconds, in a background thread."""
    global _last_check
    if not enabled():
        return
    with _check_lock:
        if time.monotonic() - _last_check < every:
            return
        _last_check = time.monotonic()
    threading.Thread(target=_ensure_if_idle, name="droidft-standby", daemon=True).start()


def _ensure_if_idle() -> None:
    try:
        from . import blas, store

        if not _usable(socket_path()) or store.list_runs(status=("queued", "running")) or ready() is not None:
            return
        env, _ = blas.worker_env("auto")
        spawn_detached("droidft.worker", "--standby", paths.home() / "standby.log", env=env)
    except Exception:  # noqa: BLE001 - a Start then spawns a fresh worker, as without a standby
        pass


def adopted(pid: int, run_id: str) -> bool:
    """Is `pid` a standby that became the worker of `run_id`? (Its command line does not name
    the run, so the reaper asks here before calling the pid reused.)"""
    try:
        return (paths.run_dir(run_id) / "standby.pid").read_text().strip() == str(pid)
    except OSError:
        return False


# --------------------------------------------------------------------------- the standby itself


def code_stamp() -> dict:
    """What the imports came from: the newest droidft source file and each library's
    version folder. A standby whose stamp changed would train with stale code."""
    import importlib.util

    stamp = {"droidft": max((p.stat().st_mtime for p in Path(__file__).parent.rglob("*.py")), default=0.0)}
    for name in LIBRARIES:
        spec = importlib.util.find_spec(name)
        origin = spec.origin if spec and spec.origin else None
        stamp[name] = os.stat(origin).st_mtime if origin else None
    return stamp


def _mismatch(own: dict, wanted: dict) -> str | None:
    """Why a run that asks for environment `wanted` cannot use a standby started with `own`."""
    keys = (set(own) | set(wanted)) - set(PER_RUN_ENV)
    differ = sorted(k for k in keys if own.get(k) != wanted.get(k))
    return f"environment differs in {', '.join(differ[:5])}" if differ else None


def _lock(home: Path):
    """The standby lock of this home, or None when another standby holds it (waiting, or
    still importing)."""
    import fcntl

    lock_file = open(home / "standby.lock", "w")
    try:
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock_file.close()
        return None
    return lock_file


def _listen(path: Path) -> socket.socket:
    path.unlink(missing_ok=True)  # left by one that was killed
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # only this user may hand runs to it
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    sock.listen(4)
    sock.settimeout(CHECK_S)
    return sock


def _serve_one(conn: socket.socket, own_env: dict, stamp: dict) -> tuple[tuple[str, dict] | None, bool]:
    """One request on an accepted connection: ((run id, its environment) when taken, else
    None; is the code stale?)."""
    conn.settimeout(5.0)
    reader = conn.makefile("rb")
    message = json.loads(reader.readline() or b"{}")
    if message.get("ping"):
        conn.sendall(json.dumps({"pid": os.getpid()}).encode() + b"\n")
        return None, False
    run_id, env = str(message.get("run", "")), dict(message.get("env") or {})
    reason = _mismatch(own_env, env) if RUN_ID.fullmatch(run_id) else f"not a run id: {run_id[:40]!r}"
    stale = reason is None and code_stamp() != stamp
    if stale:
        reason = "the code changed since this standby started"
    if reason:
        conn.sendall(json.dumps({"refused": reason}).encode() + b"\n")
        print(f"droidft.standby: refused run {run_id}: {reason}", flush=True)
        return None, stale
    pid_file = paths.run_dir(run_id) / "standby.pid"  # for `adopted`, before anyone records the pid
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.write_text(str(os.getpid()))
    try:
        conn.sendall(json.dumps({"pid": os.getpid()}).encode() + b"\n")
        confirmed = reader.readline().strip() == b"ok"
    except OSError:
        confirmed = False
    if not confirmed:  # the asker gave up waiting and starts a fresh worker instead
        pid_file.unlink(missing_ok=True)
        return None, False
    return (run_id, env), False


def wait_for_run(warm_up) -> tuple[str, dict] | None:
    """Run `warm_up` (the imports), then wait for a run: (run id, its environment), or None
    when it is time to go (another standby waits, idle too long, its dashboard or home gone,
    code changed)."""
    home, path = paths.home(), socket_path()
    if not _usable(path):
        return None
    lock_file = _lock(home)
    if lock_file is None:
        return None
    own_env, stamp, parent = dict(os.environ), code_stamp(), os.getppid()
    warm_up()
    sock = _listen(path)
    inode, deadline = path.stat().st_ino, time.monotonic() + IDLE_EXIT_S
    print(f"droidft.standby {os.getpid()}: ready for a run in {home}", flush=True)
    taken = None
    try:
        while taken is None and time.monotonic() < deadline:
            try:
                conn, _ = sock.accept()
            except socket.timeout:
                if os.getppid() != parent:
                    break  # the dashboard that started it has gone: so has the reason to wait
                try:
                    if path.stat().st_ino != inode:
                        break  # someone removed our socket: we are no longer the one to ask
                except OSError:
                    break  # the home (or the socket) is gone
                continue
            with conn:
                try:
                    taken, stale = _serve_one(conn, own_env, stamp)
                except (OSError, ValueError):
                    continue  # the asker went away mid-request
            if stale:
                break
    finally:
        sock.close()
        try:
            if path.stat().st_ino == inode:
                path.unlink()
        except OSError:
            pass
        lock_file.close()  # a successor may start now
    return taken
