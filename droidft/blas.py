"""Which BLAS the training worker gets, and which of OpenBLAS's kernels.

The Linux `mlx[cpu]` wheel links the reference netlib BLAS (~5 GFLOP/s on 2 cores);
preloading OpenBLAS into the worker process makes training 7x faster on the demo
model and ~20x on a 23M-parameter one (docs/BENCHMARKS.md; DESIGN.md, "Speed on Linux").
The worker is a child process, so the launcher sets LD_PRELOAD for it when an OpenBLAS
is installed; the worker then reads its own memory map to record what it really runs with.
macOS uses Metal/Accelerate.

OpenBLAS picks its kernels from the CPU model. An older OpenBLAS on a newer CPU (Debian's
0.3.21 on Sapphire Rapids) does not know the model and falls back to generic "Prescott"
kernels, a fifth of the speed. When the CPU's flags show AVX-512 or AVX2, droidft then
asks for the matching kernels (`OPENBLAS_CORETYPE`), after checking once per machine, in
a subprocess, that a matmul through them equals numpy's; the verdict is cached in the
droidft home. A user's own `OPENBLAS_CORETYPE` is never overridden.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import platform
import subprocess
import sys
import time

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

# Kernels OpenBLAS falls back to when it does not know a CPU (pre-AVX2 x86 cores).
GENERIC_CORES = frozenset({
    "prescott", "nehalem", "core2", "penryn", "dunnington", "katmai", "coppermine",
    "northwood", "banias", "atom", "generic", "opteron", "opteron_sse3", "barcelona", "bobcat",
    "unknown", "",
})
AVX512 = frozenset({"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"})
CORETYPE_MARK = "DROIDFT_CORETYPE"  # set beside OPENBLAS_CORETYPE when droidft chose it
CACHE_FILE = "blas.json"  # in the droidft home: the per-machine verdict
PROBE_TIMEOUT_S = 180
TOLERANCE = 1e-4  # max |mlx - float64 reference| / max |reference|; fp32 gemm is ~1e-6


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


# -- the CPU and OpenBLAS's view of it ---------------------------------------------------


def cpu_info() -> dict:
    """Vendor, model name and feature flags of this CPU (from /proc/cpuinfo; empty elsewhere)."""
    info = {"vendor": "", "model": platform.processor() or "", "flags": set()}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "vendor_id" and not info["vendor"]:
                    info["vendor"] = value.strip()
                elif key == "model name" and not info["model"]:
                    info["model"] = value.strip()
                elif key == "flags" and not info["flags"]:
                    info["flags"] = set(value.split())
                elif not line.strip() and info["flags"]:
                    break  # the first processor says it all
    except OSError:
        pass
    return info


def better_cores(corename: str, flags: set[str]) -> list[str]:
    """OPENBLAS_CORETYPE values worth trying, best first, when OpenBLAS chose kernels older
    than the CPU (a generic core on an AVX2 / AVX-512 CPU); [] when its choice is right."""
    name = (corename or "").lower()
    has_avx2 = {"avx2", "fma"} <= flags
    has_avx512 = AVX512 <= flags
    generic = name in GENERIC_CORES or (name == "sandybridge" and has_avx2) or (
        name in ("haswell", "zen") and has_avx512)
    if not generic:
        return []
    out = []
    if has_avx512:
        if "avx512_bf16" in flags:
            out.append("Cooperlake")
        out.append("SkylakeX")
    if has_avx2 and name not in ("haswell", "zen"):
        out.append("Haswell")  # also what OpenBLAS's Zen target runs
    return out


def loaded_openblas() -> str | None:
    """The OpenBLAS mapped into this process, or None."""
    try:
        with open("/proc/self/maps") as fh:
            for line in fh:
                if "libopenblas" in line:
                    return line.split()[-1]
    except OSError:
        pass
    return None


def corename(lib: str) -> str:
    """The kernels OpenBLAS `lib` uses in this process ('' when it cannot say). Opens the
    library: call it only where `lib` is loaded already or loading it is harmless."""
    import ctypes

    try:
        handle = ctypes.CDLL(lib)
        handle.openblas_get_corename.restype = ctypes.c_char_p
        return (handle.openblas_get_corename() or b"").decode()
    except (OSError, AttributeError):
        return ""


# -- the probe: a subprocess, so a kernel that crashes cannot take droidft down -----------


def probe(lib: str | None, coretype: str | None = None, size: int = 1024,
          timeout: float = PROBE_TIMEOUT_S) -> dict:
    """Run a matmul through MLX with OpenBLAS `lib` preloaded (and OPENBLAS_CORETYPE =
    `coretype`, or unset) in a subprocess: the kernels OpenBLAS used, the largest error
    against numpy's float64 result, and GFLOP/s at `size`^3. A crash or a timeout gives
    ok=False with the reason."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", CORETYPE_MARK, "LD_PRELOAD")}
    if lib:  # None: the wheel's own reference BLAS, for comparison
        env["LD_PRELOAD"] = lib
    if coretype:
        env["OPENBLAS_CORETYPE"] = coretype
    cmd = [sys.executable, "-m", "droidft.blas", "--probe", str(size)]
    try:
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout,
                             cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    except subprocess.TimeoutExpired:
        return {"coretype": coretype, "ok": False, "error": f"no answer in {timeout:.0f} s"}
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        why = f"exit {out.returncode}" + (f": {out.stderr.strip().splitlines()[-1]}" if out.stderr.strip() else "")
        return {"coretype": coretype, "ok": False, "error": why}
    try:
        result = json.loads(lines[-1])
    except ValueError:
        return {"coretype": coretype, "ok": False, "error": f"unreadable probe output {lines[-1]!r}"}
    result["coretype"] = coretype
    result["ok"] = bool(result.get("max_error", 1.0) <= TOLERANCE)
    if not result["ok"]:
        result["error"] = f"matmul differs from numpy's by {result.get('max_error'):.3g}"
    return result


def _probe_main(size: int) -> None:
    """The probe's own process: print one JSON line."""
    import mlx.core as mx
    import numpy as np

    lib = loaded_openblas()
    rng = np.random.default_rng(0)
    worst = 0.0
    # Shapes and transposes that take different kernel paths (edges, odd sizes).
    for m, k, n, ta, tb in ((256, 384, 192, False, False), (333, 517, 129, True, False),
                            (64, 1000, 77, False, True), (1, 256, 513, False, False)):
        a = rng.standard_normal((k, m) if ta else (m, k), dtype=np.float32)
        b = rng.standard_normal((n, k) if tb else (k, n), dtype=np.float32)
        am, bm = mx.array(a), mx.array(b)
        got = np.array((am.T if ta else am) @ (bm.T if tb else bm))
        want = (a.T if ta else a).astype(np.float64) @ (b.T if tb else b).astype(np.float64)
        worst = max(worst, float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30)))
    x, y = mx.random.normal((size, size)), mx.random.normal((size, size))
    mx.eval(x, y, x @ y)
    best = float("inf")
    for _ in range(3):
        tic = time.perf_counter()
        mx.eval(x @ y)
        best = min(best, time.perf_counter() - tic)
    print(json.dumps({"corename": corename(lib) if lib else "", "library": lib or "",
                      "max_error": worst, "gflops": round(2 * size**3 / best / 1e9, 1)}))


# -- the verdict: which kernels the worker asks for -------------------------------------


def _fingerprint(lib: str) -> str:
    cpu = cpu_info()
    try:
        stat = os.stat(os.path.realpath(lib))
        lib_id = [os.path.realpath(lib), stat.st_size, int(stat.st_mtime)]
    except OSError:
        lib_id = [lib]
    text = json.dumps([lib_id, cpu["vendor"], cpu["model"], sorted(cpu["flags"]), platform.node()])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _cache_path():
    from . import paths

    return paths.home() / CACHE_FILE


def choose_core(lib: str, *, run_probe=probe, refresh: bool = False, trust_loaded: bool = True) -> dict:
    """This machine's verdict for OpenBLAS `lib`: {'detected': kernels OpenBLAS picks itself,
    'coretype': what to ask for instead (None = its own pick is right), 'probes': [...]}.

    Cheap when `lib` is loaded in this process already and picks the right kernels (no probe);
    otherwise read from the cache in the droidft home, else probed and cached."""
    cpu = cpu_info()
    if trust_loaded and not refresh and loaded_openblas() and "OPENBLAS_CORETYPE" not in os.environ:
        detected = corename(loaded_openblas())
        if detected and not better_cores(detected, cpu["flags"]):
            return {"detected": detected, "coretype": None, "probes": []}
    key = _fingerprint(lib)
    try:
        cached = json.loads(_cache_path().read_text())
        if not refresh and cached.get("key") == key:
            return cached["verdict"]
    except (OSError, ValueError, KeyError, AttributeError):
        pass
    except Exception:  # noqa: BLE001 - an unusable home: decide without a cache
        pass
    default = run_probe(lib, None)
    verdict = {"detected": default.get("corename", ""), "coretype": None, "probes": [default]}
    if default.get("ok"):
        for candidate in better_cores(verdict["detected"], cpu["flags"]):
            result = run_probe(lib, candidate)
            verdict["probes"].append(result)
            if result.get("ok") and result.get("corename", "").lower() == candidate.lower():
                verdict["coretype"] = candidate
                break
    try:
        path = _cache_path()
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"key": key, "checked_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                   "cpu": cpu["model"], "verdict": verdict}, indent=2))
        os.replace(tmp, path)
    except Exception:  # noqa: BLE001 - a read-only home probes again next time
        pass
    return verdict


def core_env(lib: str, env: dict) -> tuple[dict, str]:
    """OPENBLAS_CORETYPE for a process preloading `lib` and a note on the kernels it gets."""
    own = env.get("OPENBLAS_CORETYPE")
    if own:
        mine = env.get(CORETYPE_MARK) == own
        return {}, f"{own} kernels ({'chosen by droidft' if mine else 'OPENBLAS_CORETYPE set by you'})"
    verdict = choose_core(lib)
    if verdict.get("coretype"):
        ct = verdict["coretype"]
        return ({"OPENBLAS_CORETYPE": ct, CORETYPE_MARK: ct},
                f"{ct} kernels (chosen by droidft: OpenBLAS picked {verdict['detected'] or '?'})")
    detected = verdict.get("detected")
    return {}, f"{detected} kernels" if detected else "kernels unknown"


# -- environments for processes -----------------------------------------------------------


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
    extra, kernels = core_env(lib, env)
    env.update(extra)
    return env, f"openblas ({lib}; {kernels})"


def blas_in_use() -> str:
    """What this process actually runs with: the library from its own memory map and the
    kernels OpenBLAS reports using."""
    if sys.platform == "darwin":
        return "metal (macOS)"
    try:
        lib = loaded_openblas()
    except OSError:
        return "unknown"
    if lib is None:
        return "reference (mlx[cpu] wheel)"
    core = corename(lib) or "?"
    mark = os.environ.get(CORETYPE_MARK)
    if os.environ.get("OPENBLAS_CORETYPE"):
        who = "chosen by droidft" if mark == os.environ["OPENBLAS_CORETYPE"] else "OPENBLAS_CORETYPE set by you"
        return f"openblas {core} ({lib}; {who})"
    return f"openblas {core} ({lib})"


def machine_summary() -> dict:
    """Device facts for the Home page and run records."""
    import mlx.core as mx

    info = {"platform": platform.platform(), "python": platform.python_version(),
            "mlx": getattr(mx, "__version__", "?"), "device": str(mx.default_device()),
            "cpus": os.cpu_count(), "cpu": cpu_info()["model"]}
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        info["memory_gb"] = round(pages * page_size / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        info["memory_gb"] = None
    info["worker_blas"] = worker_env("auto")[1]
    return info


def float32_on_cpu(model) -> str | None:
    """Cast a model's float16/bfloat16 weights to float32 when MLX computes on the CPU.

    MLX's CPU backend multiplies half-precision matrices without BLAS: about 0.1 GFLOP/s
    on 2 cores against ~100 for float32 through OpenBLAS, so a bfloat16 checkpoint (what
    Hugging Face ships) would train hundreds of times slower. Twice the weight memory
    buys that back. Returns the dtype it cast from, or None (GPU, or already float32;
    quantised weights stay quantised, their scales become float32)."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    if mx.default_device() != mx.cpu:
        return None
    halves = {str(v.dtype) for _, v in tree_flatten(model.parameters()) if v.dtype in (mx.bfloat16, mx.float16)}
    if not halves:
        return None
    model.set_dtype(mx.float32)
    return ", ".join(sorted(h.replace("mlx.core.", "") for h in halves))


def kernels_of(note: str | None) -> str:
    """'openblas (/lib...; SkylakeX kernels (chosen ...))' -> 'SkylakeX'; '' when not said."""
    text = str(note or "")
    if "; " in text and " kernels" in text:
        return text.split("; ", 1)[1].split(" kernels", 1)[0]
    return ""


def reexec_with_openblas(argv: list[str]) -> None:
    """Restart this command with OpenBLAS preloaded when it is installed but not loaded.

    LD_PRELOAD only works from process start, so CLI commands that compute in-process
    (demo-model, generate, eval, fuse) re-exec once; DROIDFT_REEXEC marks the second start."""
    if sys.platform != "linux" or os.environ.get("DROIDFT_REEXEC") or os.environ.get("DROIDFT_BLAS") == "reference":
        return
    if loaded_openblas() or find_openblas() is None:
        return
    env, _ = worker_env("auto")
    env["DROIDFT_REEXEC"] = "1"
    try:
        os.execve(sys.executable, [sys.executable, "-m", "droidft.cli", *argv], env)
    except OSError:
        pass  # carry on with the reference BLAS


def shell_exports() -> str:
    """`export` lines for scripts/blas-env.sh: OpenBLAS preloaded with the right kernels."""
    import shlex

    if sys.platform != "linux" or os.environ.get("DROIDFT_BLAS") == "reference":
        return ""
    lib = find_openblas()
    if lib is None:
        return ""
    env, _ = worker_env("auto")
    names = ["LD_PRELOAD"] + [n for n in ("OPENBLAS_CORETYPE", CORETYPE_MARK) if n in env]
    return "\n".join(f"export {n}={shlex.quote(env[n])}" for n in names)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--probe"]:
        _probe_main(int(sys.argv[2]) if len(sys.argv) > 2 else 1024)
    elif sys.argv[1:2] == ["--env"]:
        print(shell_exports())
    elif sys.argv[1:2] == ["--check"]:
        found = find_openblas()
        print(json.dumps(choose_core(found, refresh=True) if found else {"openblas": None}, indent=2))
    else:
        print("usage: python -m droidft.blas --env | --check | --probe [SIZE]", file=sys.stderr)
        sys.exit(2)
