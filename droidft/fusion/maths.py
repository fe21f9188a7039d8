"""The merging maths on numpy arrays: one adapter's update of a layer (LoRA or DoRA), TIES
and DARE, exact and randomised truncated SVD, the SVD of a factored sum without forming it,
and OpenBLAS thread control for these many small calls. No files, no MLX.

FusionError, the error every part of fusion raises, lives here at the bottom of the package.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np


class FusionError(ValueError):
    """A fusion request that cannot be carried out; the message says why and what to do."""


@contextlib.contextmanager
def blas_threads(n: int | None = None):
    """Run numpy's bundled OpenBLAS with `n` threads (default $DROIDFT_BLAS_THREADS, else 1).

    Fusion is many small QR/SVD/matmul calls; on a shared or busy machine OpenBLAS's
    spinning threads make them 10x slower than one thread (measured on a 2-core box: an
    SVD of a 2816x1024 matrix 1.5 s single-threaded vs 13-26 s with 2 threads). Where
    numpy has no OpenBLAS (Accelerate on macOS) this does nothing."""
    import ctypes
    import glob

    if n is None:
        try:
            n = max(1, int(os.environ.get("DROIDFT_BLAS_THREADS", "1")))
        except ValueError:
            n = 1
    lib = getter = setter = None
    try:
        libs_dir = Path(np.__file__).resolve().parent.parent / "numpy.libs"
        found = glob.glob(str(libs_dir / "libscipy_openblas*.so*")) or glob.glob(str(libs_dir / "libopenblas*.so*"))
        if found:
            lib = ctypes.CDLL(found[0])
            for suffix in ("64_", "_64_", ""):
                getter = getattr(lib, f"scipy_openblas_get_num_threads{suffix}", None) or \
                    getattr(lib, f"openblas_get_num_threads{suffix}", None)
                setter = getattr(lib, f"scipy_openblas_set_num_threads{suffix}", None) or \
                    getattr(lib, f"openblas_set_num_threads{suffix}", None)
                if getter and setter:
                    break
    except OSError:
        getter = setter = None
    if not (getter and setter):
        yield
        return
    before = getter()
    setter(ctypes.c_int(n))
    try:
        yield
    finally:
        setter(ctypes.c_int(before))


def lora_update(factors: dict, scale: float, base_weight: np.ndarray | None = None) -> np.ndarray:
    """One adapter's update of one layer, shape (out, in): scale·B^T·A^T for LoRA; for
    DoRA (factors hold "m") the change of the effective weight, which needs the base."""
    delta = scale * (factors["b"].T @ factors["a"].T)
    if "m" not in factors:
        return delta
    if base_weight is None:
        raise FusionError("A DoRA update needs the base weight.")
    adapted = base_weight + delta
    norm = np.linalg.norm(adapted, axis=1)
    norm[norm == 0] = 1.0
    return (factors["m"] / norm)[:, None] * adapted - base_weight


def ties_merge(deltas: list[np.ndarray], weights: list[float], density: float,
               normalize: bool = True, trim: bool = True) -> np.ndarray:
    """TIES-merging (Yadav et al. 2023): trim, elect sign, disjoint (weighted) merge."""
    trimmed = [_trim(d, density) for d in deltas] if trim else deltas
    w = np.asarray(weights, dtype=np.float32).reshape((-1,) + (1,) * deltas[0].ndim)
    stacked = np.stack(trimmed)
    weighted = w * stacked
    sign = np.sign(weighted.sum(axis=0))
    agree = (np.sign(stacked) == sign) & (stacked != 0)
    merged = (weighted * agree).sum(axis=0)
    if normalize:
        divisor = (np.broadcast_to(w, stacked.shape) * agree).sum(axis=0)
        divisor[divisor == 0] = 1.0
        merged = merged / divisor
    return merged


def _trim(delta: np.ndarray, density: float) -> np.ndarray:
    if density >= 1.0:
        return delta
    k = int(round(density * delta.size))
    if k <= 0:
        return np.zeros_like(delta)
    flat = np.abs(delta).ravel()
    threshold = np.partition(flat, delta.size - k)[delta.size - k]
    return np.where(np.abs(delta) >= threshold, delta, 0.0).astype(delta.dtype)


def dare_drop(delta: np.ndarray, density: float, rng: np.random.Generator) -> np.ndarray:
    """DARE (Yu et al. 2023): keep each entry with probability `density`, rescale 1/density."""
    if density >= 1.0:
        return delta
    keep = rng.random(delta.shape, dtype=np.float32) < density
    return np.where(keep, delta / density, 0.0).astype(delta.dtype)


def truncated_svd(d: np.ndarray, rank: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(U_r, S_r, Vt_r, total energy) of a dense matrix; randomised (with power
    iterations) when the rank is small against a large matrix, exact otherwise."""
    total = float(np.square(d, dtype=np.float64).sum())
    k = min(d.shape)
    if k > 512 and rank * 4 < k:
        rng = np.random.default_rng(seed)
        p = min(k, rank + 16)
        y = d @ rng.standard_normal((d.shape[1], p), dtype=np.float32)
        for _ in range(2):
            q, _ = np.linalg.qr(y)
            y = d @ (d.T @ q)
        q, _ = np.linalg.qr(y)
        ub, s, vt = np.linalg.svd(q.T @ d, full_matrices=False)
        u = q @ ub
    else:
        u, s, vt = np.linalg.svd(d, full_matrices=False)
    r = min(rank, len(s))
    return u[:, :r], s[:r], vt[:r], total


def factored_svd(us: list[np.ndarray], vs: list[np.ndarray], rank: int):
    """Truncated SVD of D = U_cat V_cat^T without forming D (thin QRs + a small SVD)."""
    u_cat = np.concatenate(us, axis=1)
    v_cat = np.concatenate(vs, axis=1)
    qu, ru = np.linalg.qr(u_cat)
    qv, rv = np.linalg.qr(v_cat)
    p, s, qt = np.linalg.svd(ru @ rv.T, full_matrices=False)
    total = float(np.square(s, dtype=np.float64).sum())
    r = min(rank, len(s))
    return (qu @ p)[:, :r], s[:r], (qt @ qv.T)[:r], total
