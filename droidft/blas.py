"""Which BLAS the training worker gets.

The Linux `mlx[cpu]` wheel links the reference netlib BLAS (~5 GFLOP/s on 2 cores);
preloading OpenBLAS into the worker process makes training 7x faster on the demo
model and ~20x on a 23M-parameter one (docs/BENCHMARKS.md; DESIGN.md, "Speed on Linux"). The worker is a child process, so the launcher
sets LD_PRELOAD for it when an OpenBLAS is installed; the worker then reads its
own memory map to record what it really runs with. macOS uses Metal/Accelerate.
"""

from __future__ import annotations

import glob
import os
import platform
import sys

# Where Debian/Ubuntu/Fedora/Arch put a pthreads OpenBLAS (the project's install
# step, scripts/install-system-deps.sh, installs Debian's libopenblas0-pthread).
OPENBLAS_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib64/libopenblasp.so.0",
    "/usr/lib/libopenblas.so.0",
    "/usr/local/lib/libopenblas.so.0",
)


def find_openblas() -> str | None:
    """Path of an installed OpenBLAS shared library, or None."""
    override = os.environ.get("DROIDFT_OPENBLAS")
    if override and os.path.isfile(override):
        return override
    for path in OPENBLAS_CANDIDATES:
        if os.path.isfile(path):
            return path
    for path in sorted(glob.glob("/usr/lib/*/openblas*/libopenblas*.so*")):
        return path
    return None


def worker_env(choice: str = "auto", base: dict | None = None) -> tuple[dict, str]:
    """Environment for a worker process and a one-line description of the BLAS it asks for.

    choice: auto (OpenBLAS when installed), openblas (same, but say so when missing),
    reference (the wheel's own BLAS, for benchmarks)."""
    env = dict(os.environ if base is None else base)
    if sys.platform == "darwin":
        return env, "metal (macOS)"
    if choice == "reference":
        env.pop("LD_PRELOAD", None)
        return env, "reference (mlx[cpu] wheel)"
    lib = find_openblas()
    if lib is None:
        note = "reference (mlx[cpu] wheel; OpenBLAS not installed: run scripts/install-system-deps.sh)"
        return env, note
    preload = env.get("LD_PRELOAD", "")
    if lib not in preload.split(":"):
        env["LD_PRELOAD"] = f"{lib}:{preload}" if preload else lib
    return env, f"openblas ({lib})"


def blas_in_use() -> str:
    """What this process actually runs with, read from its own memory map."""
    if sys.platform == "darwin":
        return "metal (macOS)"
    try:
        with open("/proc/self/maps") as fh:
            maps = fh.read()
    except OSError:
        return "unknown"
    for line in maps.splitlines():
        if "libopenblas" in line:
            return f"openblas ({line.split()[-1]})"
    return "reference (mlx[cpu] wheel)"


def machine_summary() -> dict:
    """Device facts for the Home page and run records."""
    import mlx.core as mx

    info = {"platform": platform.platform(), "python": platform.python_version(),
            "mlx": getattr(mx, "__version__", "?"), "device": str(mx.default_device()),
            "cpus": os.cpu_count()}
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        info["memory_gb"] = round(pages * page_size / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        info["memory_gb"] = None
    info["worker_blas"] = worker_env("auto")[1]
    return info


def reexec_with_openblas(argv: list[str]) -> None:
    """Restart this command with OpenBLAS preloaded when it is installed but not loaded.

    LD_PRELOAD only works from process start, so CLI commands that compute in-process
    (demo-model, generate, eval, fuse) re-exec once; DROIDFT_REEXEC marks the second start."""
    if sys.platform != "linux" or os.environ.get("DROIDFT_REEXEC") or os.environ.get("DROIDFT_BLAS") == "reference":
        return
    if blas_in_use().startswith("openblas") or find_openblas() is None:
        return
    env, _ = worker_env("auto")
    env["DROIDFT_REEXEC"] = "1"
    try:
        os.execve(sys.executable, [sys.executable, "-m", "droidft.cli", *argv], env)
    except OSError:
        pass  # carry on with the reference BLAS

