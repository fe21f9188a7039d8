"""Data-parallel training across ranks, driven through MLX's own launcher.

droidft does not build a distributed engine: `mlx.launch` starts one process per
rank (ring backend over TCP, or MPI), mlx-lm's trainer averages gradients over
them, and every rank runs the same method code. The run's worker becomes the
*leader*: it starts `mlx.launch`, keeps the heartbeat, turns a stop request into
a STOP file that the ranks agree on collectively, and ends the run from the
launcher's exit code. Rank 0 alone writes metrics, artifacts and adapters; other
ranks log to their own files (`rank<N>.log`), which the run's log tail includes.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from . import blas, paths, store

LOCAL_NAMES = {"localhost", "127.0.0.1", "::1"}
# A DNS host name (RFC 1123): dot-separated labels of letters, digits and inner hyphens. With
# IP addresses, the only hosts accepted: anything else (a leading '-', spaces, '@', quotes)
# could become an ssh option or a second argument where mlx.launch or Check machines runs ssh.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_NAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*\.?$")


def host_problem(host) -> str | None:
    """Why `host` is not a host name or IP address, or None when it is one."""
    if not isinstance(host, str) or not host.strip():
        return f"{host!r} is not a host name or IP address"
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    if _HOST_NAME.match(host) and not host.replace(".", "").isdigit():
        return None
    return (f"{host!r} is not a host name or IP address (letters, digits, dots and inner "
            "hyphens only, e.g. 10.0.0.7 or gpu-box.local)")


def hostfile_problems(path) -> list[str]:
    """Problems of an mlx.launch hostfile: a JSON list (or {"hosts": [...]}) of {"ssh": host,
    "ips": [addresses]}, each host and address checked like `hosts`."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        return [f"hostfile {path} is not readable JSON ({exc})"]
    hosts = data.get("hosts") if isinstance(data, dict) else data
    if not isinstance(hosts, list) or not hosts or not all(isinstance(h, dict) for h in hosts):
        return [f"hostfile {path} must hold a list of {{\"ssh\": host, \"ips\": [...]}} entries"]
    out = []
    for entry in hosts:
        out += [f"hostfile {path}: {p}" for p in [host_problem(entry.get("ssh"))] if p]
        ips = entry.get("ips", [])
        for ip in ips if isinstance(ips, list) else [ips]:
            try:
                ipaddress.ip_address(ip)
            except (ValueError, TypeError):
                out.append(f"hostfile {path}: {ip!r} in ips is not an IP address")
    return out


def _ip(host: str) -> str:
    """The ring backend needs IP addresses; resolve a host name once here."""
    if host in LOCAL_NAMES:
        return "127.0.0.1"
    try:
        return socket.gethostbyname(host)
    except OSError:
        raise ValueError(f"cannot resolve host '{host}': use its IP address") from None


def launch_command(config, run_id: str) -> list[str]:
    """The `mlx.launch` command line that trains `run_id` on the config's ranks."""
    env, _ = blas.worker_env(config.blas)
    per_host_threads = max(1, (os.cpu_count() or 1) // config.ranks_per_host)
    passed = {
        "DROIDFT_HOME": str(paths.home()),
        "DROIDFT_RUN_CONFIG": json.dumps(config.to_dict()),
        "PYTHONPATH": str(paths.REPO_ROOT),
        "OPENBLAS_NUM_THREADS": str(per_host_threads),
        "PYTHONUNBUFFERED": "1",
    }
    if env.get("LD_PRELOAD"):
        passed["LD_PRELOAD"] = env["LD_PRELOAD"]
    launcher = Path(sys.executable).parent / "mlx.launch"
    cmd = [str(launcher)] if launcher.exists() else [
        sys.executable, "-c", "import sys; from mlx._distributed_utils.launch import main; sys.exit(main())"]
    cmd += ["--backend", config.distributed_backend, "--python", sys.executable,
            "--cwd", str(paths.REPO_ROOT)]
    if config.hostfile:
        cmd += ["--hostfile", config.hostfile]
    else:
        hosts = config.hosts or ["127.0.0.1"]
        if config.distributed_backend == "ring":
            hosts = [_ip(h) for h in hosts]
        cmd += ["--hosts", ",".join(hosts)]
    cmd += ["-n", str(config.ranks_per_host)]
    for key, value in passed.items():
        cmd += ["--env", f"{key}={value}"]
    return cmd + ["--", "-m", "droidft.worker", "--rank", run_id]


def lead(config, ctx) -> None:
    """Run the ranks under mlx.launch and wait; raise if any rank failed."""
    from . import methods

    method = methods.get(config.method)
    if not method.distributed:
        raise ValueError(f"{config.method} cannot train data-parallel (mlx-lm-lora's trainer for it does "
                         "not average gradients over ranks); train it on one machine")
    ranks = config.world_size()
    ctx.log(f"starting {ranks} ranks with mlx.launch ({config.distributed_backend} backend), "
            f"{config.batch_size // ranks} rows per rank per step (global batch {config.batch_size})")
    result = ctx.run_dir / "rank0.json"
    result.unlink(missing_ok=True)
    cmd = launch_command(config, ctx.run_id)
    (ctx.run_dir / "launch.sh").write_text(shlex.join(cmd) + "\n")
    with open(ctx.run_dir / "ranks.log", "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=str(paths.REPO_ROOT))
    stop_file = ctx.run_dir / "STOP"

    def forward_stop():
        while proc.poll() is None:
            if ctx.should_stop() and not stop_file.exists():
                stop_file.touch()
            time.sleep(0.2)

    threading.Thread(target=forward_stop, daemon=True).start()
    code = proc.wait()
    # mlx.launch exits 0 even when ranks fail, so success is rank 0's own word: it writes
    # rank0.json only after training ended well (a dead peer makes rank 0's all-reduce fail).
    if code != 0 or not result.exists():
        raise RuntimeError(f"a rank failed (mlx.launch exit code {code}); the run was ended on every rank.\n"
                           + _tail(ctx.run_dir / "ranks.log"))
    ctx.state.update(json.loads(result.read_text()))


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join([line for line in text.splitlines() if line.strip()][-lines:])


class _NullWriter:
    """What ranks other than 0 report into: nothing (rank 0 speaks for the run)."""

    def metric(self, *args, **kwargs):
        pass

    event = sample = metric

    def maybe_flush(self):
        pass

    def close(self):
        pass


def run_rank(run_id: str) -> int:
    """One rank's process under mlx.launch: the same method code as a local run."""
    import mlx.core as mx

    from . import methods
    from .reporting import RunContext
    from .run_files import STOP_FILE, make_logger

    group = mx.distributed.init()
    rank, size = group.rank(), group.size()
    config = methods.config_from_dict(json.loads(os.environ["DROIDFT_RUN_CONFIG"]))
    run_dir = paths.run_dir(run_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    writer = store.BatchWriter(run_id) if rank == 0 else _NullWriter()
    if rank == 0:
        writer.start_background()
    log = make_logger(run_dir / f"rank{rank}.log", writer)
    stop_file = run_dir / STOP_FILE
    ctx = RunContext(run_id=run_id, run_dir=run_dir, writer=writer, log=log,
                     should_stop=stop_file.exists, step_offset=config.start_step,
                     rank=rank, world_size=size, early_stop_patience=config.early_stop_patience,
                     early_stop_min_delta=config.early_stop_min_delta)
    log(f"rank {rank}/{size} on {socket.gethostname()} (pid {os.getpid()}, BLAS {blas.blas_in_use()})")
    try:
        if rank == 0:
            ctx.metric(0, "world_size", size)
            ctx.metric(0, "effective_batch_size", config.batch_size)
            ctx.metric(0, "per_rank_batch_size", config.batch_size // size)
        methods.get(config.method).run(config, ctx)
        if rank == 0:
            (run_dir / "rank0.json").write_text(json.dumps(
                {k: v for k, v in ctx.state.items() if isinstance(v, (int, float, str))}))
        return 0
    except BaseException as exc:
        log(f"rank {rank} failed: {type(exc).__name__}: {exc}", level="error")
        raise
    finally:
        writer.close()
        if rank != 0:  # the RL trainers' own saves on this rank (methods.rl_training.output_dir)
            import shutil

            shutil.rmtree(run_dir / f"rank{rank}-adapters", ignore_errors=True)


def check_hosts(hosts: list[str], paths_needed: list[str], timeout: float = 5.0) -> list[dict]:
    """Is each host reachable, with this Python and the model/data folders at the same paths?
    Local hosts are checked directly; others over `ssh -o BatchMode=yes` (no password prompts)."""
    results = []
    for host in hosts:
        row = {"host": host, "reachable": False, "python": False, "missing": [], "message": ""}
        problem = host_problem(host)
        if problem:
            row["message"] = problem
        elif host in LOCAL_NAMES or host == socket.gethostname():
            row.update(reachable=True, python=Path(sys.executable).exists(),
                       missing=[p for p in paths_needed if not Path(p).exists()])
        else:
            probe = "; ".join([f"test -x {shlex.quote(sys.executable)} && echo PY"]
                              + [f"test -e {shlex.quote(p)} || echo MISSING:{shlex.quote(p)}" for p in paths_needed])
            try:
                # `--`: whatever follows is the host and the command, never an ssh option
                out = subprocess.run(["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={int(timeout)}",
                                      "--", host, probe], capture_output=True, text=True, timeout=timeout + 5)
            except (OSError, subprocess.TimeoutExpired) as exc:
                row["message"] = f"ssh failed: {exc}"
                results.append(row)
                continue
            if out.returncode == 255:
                row["message"] = (out.stderr.strip().splitlines() or ["ssh failed"])[-1] + \
                    " (set up passwordless ssh to this host)"
            else:
                lines = out.stdout.splitlines()
                row.update(reachable=True, python="PY" in lines,
                           missing=[line[len("MISSING:"):] for line in lines if line.startswith("MISSING:")])
        if row["reachable"] and not row["python"]:
            row["message"] = f"no Python at {sys.executable} there: install droidft at the same path"
        elif row["missing"]:
            row["message"] = "missing there: " + ", ".join(row["missing"]) + " (copy them to the same paths)"
        elif row["reachable"]:
            row["message"] = "ready"
        results.append(row)
    return results


def rank_status(run_id: str) -> list[dict]:
    """Per-rank state of a distributed run from the rank logs on this machine:
    rank, its last log line, and whether that line reports a failure."""
    out = []
    for log in sorted(paths.run_dir(run_id).glob("rank*.log")):
        try:
            rank = int(log.stem[len("rank"):])
        except ValueError:
            continue
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
        last = lines[-1] if lines else ""
        out.append({"rank": rank, "last_line": last, "failed": " ERROR " in f" {last} ",
                    "lines": len(lines)})
    return sorted(out, key=lambda r: r["rank"])
