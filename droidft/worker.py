"""`python -m droidft.worker RUN_ID`: the training process.

Started by `jobs.start` in its own session, so it outlives Streamlit reruns,
closed tabs and server restarts. It reads its config from the store, runs the
method's trainer in-process, reports through a `BatchWriter` (whose background
thread also beats the heartbeat), and ends the run as completed, stopped or failed.
SIGTERM/SIGINT or a STOP file in the run folder ask it to stop: the trainer
finishes the current step, saves the adapter and the run ends as `stopped`.
`--standby` starts one ahead of its run, imports done (droidft/standby.py).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
import traceback
from pathlib import Path

from . import disk, paths, store
from .blas import blas_in_use
from .run_files import STOP_FILE, adapter_if_complete, make_logger


def run(run_id: str) -> str:
    """Train one run to its end; returns the final status."""
    from . import methods
    from .reporting import RunContext

    record = store.get_run(run_id)
    if record is None:
        print(f"droidft.worker: no run {run_id} in {paths.db_path()}", file=sys.stderr)
        return "failed"
    run_dir = paths.run_dir(run_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    stop_event = threading.Event()
    stop_file = run_dir / STOP_FILE

    def request_stop(signum, _frame):
        stop_event.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    writer = store.BatchWriter(run_id)
    log = make_logger(run_dir / "worker.log", writer)
    blas = blas_in_use()
    note = os.environ.get("DROIDFT_BLAS_NOTE", "")
    if note and "not installed" in note:
        blas += " - " + note.split(";", 1)[-1].strip(" )")
    store.update_run(run_id, status="running", started_at=time.time(), heartbeat_at=time.time(),
                     pid=os.getpid(), blas=blas, host=socket.gethostname())
    writer.start_background()
    log(f"worker {os.getpid()} started on {socket.gethostname()} with BLAS: {blas}")

    low_disk = disk.LowSpaceWatch(run_dir)
    ctx = RunContext(
        run_id=run_id, run_dir=run_dir, writer=writer, log=log,
        should_stop=lambda: stop_event.is_set() or stop_file.exists() or low_disk.tripped(),
    )
    status, error, reason = "failed", None, None
    try:
        config = methods.config_from_dict(record["config"])
        ctx.step_offset = config.start_step
        ctx.early_stop_patience = config.early_stop_patience
        ctx.early_stop_min_delta = config.early_stop_min_delta
        from .methods.internals import require

        require(config.method)  # a changed mlx-lm(-lora) internal: say which, before loading
        if config.world_size() > 1:
            from .distributed import lead

            lead(config.validate(), ctx)
        else:
            methods.get(config.method).run(config.validate(), ctx)
        status = "stopped" if ctx.should_stop() else "completed"
        if low_disk.reason:
            status, error = "failed", low_disk.reason
        elif status == "stopped":
            reason = _stop_reason(stop_file)
        elif ctx.early_stop:  # ends as completed: it stopped because training was done
            reason = ctx.early_stop
        log(f"run {status} at step {ctx.state.get('stopped_at', ctx.state.get('iters', '?'))}"
            + (f": {reason}" if reason else ""))
    except BaseException as exc:  # the run must end with a status, whatever happened
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if disk.is_disk_full(exc, run_dir):
            error = disk.full_message(paths.home(), "training") + f" ({error})"
        log(f"training failed: {error}", level="error")
        try:
            with open(run_dir / "worker.log", "a", encoding="utf-8") as fh:
                fh.write(traceback.format_exc())
        except OSError:
            traceback.print_exc()
    finally:
        _close_writer(writer)
    fields = dict(status=status, ended_at=time.time(), error=error,
                  adapter_path=adapter_if_complete(run_dir / "adapters"))
    if reason:
        fields["extra"] = {**(record.get("extra") or {}), "end_reason": reason}
    try:
        # compare-and-set: a `stop now` that ended the run meanwhile keeps its own record
        store.update_run_if(run_id, ("queued", "running"), **fields)
    except Exception as exc:  # noqa: BLE001 - the reaper marks the run failed once we are gone
        print(f"droidft.worker: could not record the end of run {run_id}: {exc}", file=sys.stderr)
    _start_next()
    return status


def _stop_reason(stop_file: Path) -> str:
    """What asked this run to stop: the STOP file's text (written by jobs.stop / stop_now)."""
    try:
        return stop_file.read_text().strip() or "stopped on request"
    except OSError:
        return "stopped on request (a signal)"


def _start_next() -> None:
    """This run's slot is free: start the next queued run (no daemon keeps the queue)."""
    try:
        from . import queue

        queue.advance()
    except Exception as exc:  # noqa: BLE001 - the next reaper (any page or CLI call) retries
        print(f"droidft.worker: could not start the next queued run: {exc}", file=sys.stderr)


WRITER_CLOSE_SECONDS = 120.0  # how long the last rows wait for a busy or full disk to clear


def _close_writer(writer: "store.BatchWriter") -> None:
    """Write the last rows, waiting up to WRITER_CLOSE_SECONDS for the database (busy, or on
    a full disk being cleared); says how many rows were lost if it never comes back."""
    try:
        writer.close(timeout=WRITER_CLOSE_SECONDS)
    except Exception as exc:  # noqa: BLE001
        print(f"droidft.worker: {writer.pending} metric/event rows could not be written: {exc}",
              file=sys.stderr)


def _warm_up() -> None:
    """What a fresh worker spends its first second on, done by a standby ahead of its run."""
    import importlib

    from . import methods

    for name in ("mlx.core", "mlx_lm.lora", "mlx_lm.tuner.trainer", "mlx_lm.tuner.datasets"):
        importlib.import_module(name)
    methods.available()


def standby() -> int:
    """`python -m droidft.worker --standby`: import, wait for a run (droidft/standby.py), then
    become its worker: output to the run's stdout.log, the environment the run asked for."""
    from .standby import wait_for_run

    taken = wait_for_run(_warm_up)
    if taken is None:
        return 0
    run_id, env = taken
    sys.stdout.flush()
    sys.stderr.flush()
    with open(paths.run_dir(run_id) / "stdout.log", "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    os.environ.clear()
    os.environ.update(env)
    return main([run_id])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--standby"]:
        return standby()
    if len(argv) == 2 and argv[0] == "--rank":
        from .distributed import run_rank

        return run_rank(argv[1])
    if len(argv) != 1:
        print("usage: python -m droidft.worker [--rank] RUN_ID | --standby", file=sys.stderr)
        return 2
    return 0 if run(argv[0]) in ("completed", "stopped") else 1


if __name__ == "__main__":
    sys.exit(main())
