"""Detached job processes: a training run, a download and an export each run as
`python -m MODULE ID` in their own session, so they outlive the page, the CLI and the
server that started them, and `stop now` can end a whole process group."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from . import paths


def job_env(env: dict | None = None) -> dict:
    """The environment a job process gets from `env` (default: this process's): this droidft
    home and checkout, plain unbuffered output. Applying it twice changes nothing."""
    env = dict(os.environ if env is None else env)
    env["DROIDFT_HOME"] = str(paths.home())
    path = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(paths.REPO_ROOT)]
    env["PYTHONPATH"] = os.pathsep.join([str(paths.REPO_ROOT), *path])
    env["PYTHONUNBUFFERED"] = "1"
    env["NO_COLOR"] = "1"  # progress lines land in a log file: keep them plain
    return env


def spawn_detached(module: str, job_id: str, log_file: Path, env: dict | None = None) -> subprocess.Popen:
    """Start `python -m module job_id` with stdout and stderr appended to `log_file`, in this
    droidft home and checkout; `env` (default: this process's) passes on e.g. HF_ENDPOINT,
    HF_TOKEN or the BLAS choice."""
    env = job_env(env)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", module, job_id], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, cwd=str(paths.REPO_ROOT),
                                start_new_session=True)
    # Wait on the child in the background so a dead job never lingers as a zombie
    # (a zombie still answers kill(pid, 0), which would hide its death from reaping).
    threading.Thread(target=proc.wait, name=f"droidft-wait-{job_id}", daemon=True).start()
    return proc
