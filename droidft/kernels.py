"""MLX's CPU kernels, compiled before the first run needs them.

Off Apple silicon, MLX's CPU backend compiles every fused kernel (`mx.compile`, which
mlx-lm's training step uses) with the system C++ compiler the first time it runs, and
keeps the library in `$TMPDIR/mlx/<version>/cpu`. On a cold cache the demo fine-tune
spends most of its time compiling: 32 s cold against 14 s warm on 2 cores, and 3.3 s
against 2.2 s to its first metric. `warm()` runs two real steps of the demo fine-tune
once, in a throwaway droidft home (nothing lands in the user's history), so a newcomer's
first press runs at full speed. A marker beside the libraries lists what that run found
there; when /tmp is cleaned (a reboot) they are gone and `warm()` runs again.

Doing it here, before any run, also keeps two processes from compiling the same kernel
at once, where one can load the other's half-written library.

    python -m droidft.kernels          # warm the cache if needed; prints what it did
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

MARKER = "droidft-demo-kernels.json"


def kernel_dir() -> Path:
    """Where MLX keeps its compiled CPU kernels (std::filesystem::temp_directory_path)."""
    import mlx.core as mx

    return Path(tempfile.gettempdir()) / "mlx" / mx.__version__ / "cpu"


def _libraries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.so")) if folder.is_dir() else []


def needed() -> bool:
    """Would the demo run compile kernels now? False on a GPU (Metal compiles its own) and
    when every library the warm-up run left is still there."""
    import mlx.core as mx

    if mx.metal.is_available():
        return False
    folder = kernel_dir()
    try:
        marker = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return True
    libraries = marker.get("libraries") or []
    return not libraries or any(not (folder / name).is_file() for name in libraries)


def warm(log: Callable[[str], None] = lambda message: None, timeout: float = 600) -> bool:
    """Compile the demo run's kernels if they are not cached; returns whether it ran.
    Raises RuntimeError (with the run's log tail) if the two-step run fails."""
    if not needed():
        return False
    log("compiling MLX's CPU kernels for the demo fine-tune (once; about 20 s) ...")
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="droidft-warm-") as home:
        env = {**os.environ, "DROIDFT_HOME": home}
        for name in ("DROIDFT_LAN", "DROIDFT_ALLOWED_ROOTS"):  # the throwaway home is the user's own
            env.pop(name, None)
        done = subprocess.run([sys.executable, "-m", "droidft.kernels", "--demo-steps"], env=env,
                              capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError("the kernel warm-up run failed: " + (done.stdout + done.stderr).strip()[-1500:])
    folder = kernel_dir()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARKER).write_text(json.dumps({"libraries": _libraries(folder), "seconds": time.monotonic() - t0}))
    log(f"MLX's CPU kernels compiled in {time.monotonic() - t0:.0f} s ({folder})")
    return True


def _demo_steps() -> int:
    """In the throwaway home: two steps (and one validation batch) of the demo preset."""
    from . import jobs
    from .config import SFTConfig
    from .models.demo import DEMO_SFT_DEFAULTS

    config = SFTConfig.from_dict({**DEMO_SFT_DEFAULTS, "model": "demo", "data": "demo", "iters": 2,
                                  "val_batches": 1, "steps_per_eval": 1000, "save_every": 1000})
    run_id = jobs.start(config)
    if jobs.wait(run_id, poll=0.2)["status"] != "completed":
        print(jobs.log_tail(run_id), file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--demo-steps"]:
        return _demo_steps()
    try:
        ran = warm(log=lambda message: print(message, file=sys.stderr))
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"droidft: {exc}", file=sys.stderr)
        return 1
    if not ran:
        print("droidft: MLX's CPU kernels for the demo fine-tune are already compiled", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
