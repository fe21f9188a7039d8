"""OpenBLAS kernel choice: generic kernels on an AVX2/AVX-512 CPU get replaced, after a real
matmul check in a subprocess; a user's OPENBLAS_CORETYPE is kept; the verdict is cached."""

import json
import os
import subprocess
import sys

import pytest

from droidft import blas

LIB = blas.find_openblas()
needs_openblas = pytest.mark.skipif(LIB is None or sys.platform != "linux", reason="needs OpenBLAS on Linux")
FLAGS = blas.cpu_info()["flags"]


def test_better_cores_only_for_generic_kernels_on_newer_cpus():
    avx512 = set(blas.AVX512) | {"avx2", "fma"}
    assert blas.better_cores("Prescott", avx512) == ["SkylakeX", "Haswell"]
    assert blas.better_cores("Prescott", avx512 | {"avx512_bf16"}) == ["Cooperlake", "SkylakeX", "Haswell"]
    assert blas.better_cores("Nehalem", {"avx2", "fma", "sse4_2"}) == ["Haswell"]
    assert blas.better_cores("Sandybridge", {"avx", "avx2", "fma"}) == ["Haswell"]
    assert blas.better_cores("Haswell", avx512) == ["SkylakeX"]
    # OpenBLAS knows the CPU, or the CPU has nothing better to offer: keep its choice.
    assert blas.better_cores("SkylakeX", avx512) == []
    assert blas.better_cores("Haswell", {"avx2", "fma"}) == []
    assert blas.better_cores("Prescott", {"sse2", "sse3"}) == []
    assert blas.better_cores("Sandybridge", {"avx"}) == []


@needs_openblas
def test_probe_runs_a_real_matmul_with_the_asked_kernels():
    own = blas.probe(LIB, None, size=256)
    assert own["ok"], own
    assert own["corename"] and own["max_error"] < blas.TOLERANCE and own["gflops"] > 0
    generic = blas.probe(LIB, "Prescott", size=256)
    assert generic["ok"] and generic["corename"] == "Prescott"


def _generic_machine(lib, coretype=None):
    """The real probe, on a machine where OpenBLAS would pick Prescott by itself."""
    return blas.probe(lib, coretype or "Prescott", size=256)


@needs_openblas
@pytest.mark.skipif(not {"avx2", "fma"} <= FLAGS, reason="needs an AVX2 CPU")
def test_generic_kernels_are_replaced_after_a_check_and_the_verdict_is_cached(droidft_home, monkeypatch):
    calls = []

    def counted(lib, coretype=None):
        calls.append(coretype)
        return _generic_machine(lib, coretype)

    verdict = blas.choose_core(LIB, run_probe=counted, trust_loaded=False)
    expected = blas.better_cores("Prescott", FLAGS)[0]
    assert verdict["detected"] == "Prescott" and verdict["coretype"] == expected
    assert calls == [None, expected]
    assert [p["ok"] for p in verdict["probes"]] == [True, True]
    cached = json.loads((droidft_home / blas.CACHE_FILE).read_text())
    assert cached["verdict"]["coretype"] == expected

    def must_not_probe(lib, coretype=None):
        raise AssertionError("the cached verdict should have answered")

    assert blas.choose_core(LIB, run_probe=must_not_probe, trust_loaded=False)["coretype"] == expected
    # The worker's environment asks for those kernels and marks them as droidft's choice (from a
    # launcher without OpenBLAS loaded: this test process has it, with this CPU's own kernels).
    monkeypatch.setattr(blas, "loaded_openblas", lambda: None)
    env, note = blas.worker_env("auto", base={"PATH": os.environ["PATH"]})
    assert env["OPENBLAS_CORETYPE"] == expected and env[blas.CORETYPE_MARK] == expected
    assert f"{expected} kernels (chosen by droidft: OpenBLAS picked Prescott)" in note
    # ... and a process started with it runs them and says so.
    out = subprocess.run([sys.executable, "-c", "from droidft.blas import blas_in_use; print(blas_in_use())"],
                         env=env, capture_output=True, text=True, check=True).stdout
    assert out.startswith(f"openblas {expected} (") and "chosen by droidft" in out


@needs_openblas
def test_a_candidate_that_crashes_or_is_not_what_was_asked_is_not_chosen(droidft_home, tmp_path, monkeypatch):
    crasher = tmp_path / "python"
    crasher.write_text("#!/bin/sh\nkill -SEGV $$\n")
    crasher.chmod(0o755)

    def crashing_candidates(lib, coretype=None):
        if coretype is None:
            return _generic_machine(lib)
        with monkeypatch.context() as m:
            m.setattr(sys, "executable", str(crasher))
            return blas.probe(lib, coretype, size=256)

    verdict = blas.choose_core(LIB, run_probe=crashing_candidates, trust_loaded=False,
                               refresh=True)
    if blas.better_cores("Prescott", FLAGS):
        assert verdict["coretype"] is None
        assert not verdict["probes"][1]["ok"] and "exit" in verdict["probes"][1]["error"]
    # A library that cannot be preloaded runs MLX's own BLAS: correct, but not the kernels asked.
    missing = blas.probe(str(tmp_path / "libopenblas.so.0"), "SkylakeX", size=256)
    assert missing["ok"] and missing["corename"] == ""

    def unloadable(lib, coretype=None):
        return _generic_machine(lib) if coretype is None else blas.probe(str(tmp_path / "x.so"), coretype, 256)

    assert blas.choose_core(LIB, run_probe=unloadable, trust_loaded=False, refresh=True)["coretype"] is None


@needs_openblas
def test_a_users_own_coretype_is_never_overridden():
    env, note = blas.worker_env("auto", base={"PATH": os.environ["PATH"], "OPENBLAS_CORETYPE": "Haswell"})
    assert env["OPENBLAS_CORETYPE"] == "Haswell" and blas.CORETYPE_MARK not in env
    assert note.endswith("Haswell kernels (OPENBLAS_CORETYPE set by you))")
    out = subprocess.run([sys.executable, "-c", "from droidft.blas import blas_in_use; print(blas_in_use())"],
                         env=env, capture_output=True, text=True, check=True).stdout
    assert out.startswith("openblas Haswell (") and "set by you" in out


@needs_openblas
def test_shell_exports_preload_openblas():
    out = subprocess.run([sys.executable, "-m", "droidft.blas", "--env"], capture_output=True, text=True,
                         env={**os.environ, "LD_PRELOAD": ""}, check=True).stdout
    assert f"export LD_PRELOAD={LIB}" in out


def test_half_precision_models_train_and_generate_in_float32_on_the_cpu(tmp_path, demo_model):
    """A bfloat16 checkpoint (what the Hub ships) would run ~1000x slower on MLX's CPU backend."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    from droidft import inference, jobs, store
    from droidft.models.synthetic import QWEN2_5_0_5B, random_model
    from helpers import demo_sft

    if mx.default_device() != mx.cpu:
        pytest.skip("the cast is for MLX's CPU backend")
    small = dict(QWEN2_5_0_5B, hidden_size=64, num_hidden_layers=2, intermediate_size=128,
                 num_attention_heads=2, num_key_value_heads=1)
    path = random_model(tmp_path / "bf16", small, like=demo_model, dtype="bfloat16")
    loaded = inference.load(str(path))
    dtypes = {v.dtype for _, v in tree_flatten(loaded.model.parameters())}
    assert dtypes == {mx.float32}
    assert inference.generate(str(path), "Hello", max_tokens=3).generation_tokens >= 1

    run_id = jobs.start(demo_sft(model=str(path), iters=2, steps_per_report=1, steps_per_eval=2,
                                 save_every=2, val_batches=1))
    run = jobs.wait(run_id, timeout=600)
    assert run["status"] == "completed", run.get("error")
    log = " ".join(e["message"] for e in store.events(run_id))
    assert "cast from bfloat16 to float32" in log
