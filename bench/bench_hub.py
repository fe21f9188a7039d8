"""Models benchmarks (issue 12): print the numbers, they are not pass/fail tests.

1. Pull throughput from a local Hub (tests/hub_server.py on 127.0.0.1): `droidft models pull`
   against a plain `hf download` of the same repo, each a fresh process into a fresh cache,
   alternating which goes first, in the same run. Ratio = droidft's MB/s / hf's MB/s.
2. Models page render under Streamlit's AppTest with 200 local models on disk and a
   1,000-result Hub search on screen (cold first render, then warm), next to the Home page.

    python bench/bench_hub.py [--mb 512] [--shards 4] [--rounds 3] [--local 200] [--results 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "app"))

from hub_server import HubServer, hub_env  # noqa: E402


def demo_model() -> Path:
    from droidft.models.demo import demo_model_path

    return demo_model_path()


# -- 1. pull throughput -------------------------------------------------------------------------


def big_repo(hub: HubServer, mb: int, shards: int) -> int:
    """A llama repo with the demo's config and tokenizer and `shards` weight files of random
    bytes (`mb` MB in all): what a pull fetches, nothing it skips. Returns its size in bytes."""
    files = {}
    for path in demo_model().iterdir():
        if path.suffix in (".json",) and path.name != "droidft_build.json":
            files[path.name] = path.read_bytes()
    folder = hub.add_model("bench/big-model", files=files, library_name="mlx")
    per = mb * 2**20 // shards
    for i in range(1, shards + 1):  # valid safetensors: one uint8 tensor of random bytes
        header = json.dumps({f"w{i}": {"dtype": "U8", "shape": [per], "data_offsets": [0, per]}}).encode()
        with open(folder / f"model-{i:05d}-of-{shards:05d}.safetensors", "wb") as fh:
            fh.write(len(header).to_bytes(8, "little") + header)
            for _ in range(per // 2**20):
                fh.write(os.urandom(2**20))
    hub.commit("bench/big-model")  # hash once now, not inside the first timing
    return sum(p.stat().st_size for p in folder.iterdir())


def timed(cmd: list[str], env: dict) -> float:
    t = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    elapsed = time.perf_counter() - t
    if done.returncode != 0:
        raise RuntimeError(f"{cmd[:4]} failed: {done.stderr[-2000:]}")
    return elapsed


def _report(label: str, times: dict, size: int) -> None:
    rates = {}
    for name, ts in times.items():
        rates[name] = size / 2**20 / statistics.median(ts)
        print(f"  {name:34} median {statistics.median(ts):6.2f} s  ({rates[name]:6.1f} MiB/s)  "
              f"runs: {', '.join(f'{t:.2f}' for t in ts)} s")
    a, b = list(rates)
    print(f"  {label}: throughput ratio {a.split()[0]} / {b.split()[0]} = {rates[a] / rates[b]:.2f}")


def bench_pull(mb: int, shards: int, rounds: int) -> None:
    """Two comparisons, alternating which goes first in each round: whole commands (each a new
    process, start-up included), and the library calls alone in this process (fetch.pull, which
    also records the job in DuckDB, against huggingface_hub's snapshot_download)."""
    work = Path(tempfile.mkdtemp(prefix="bench-hub-"))
    try:
        with HubServer(work / "repos") as hub:
            size = big_repo(hub, mb, shards)
            print(f"repo: {shards} weight files + config/tokenizer, {size / 2**20:,.0f} MiB, served from 127.0.0.1")
            hf = str(Path(sys.executable).with_name("hf"))
            commands = {"droidft models pull": [], "hf download": []}
            for r in range(rounds):
                for name in (list(commands) if r % 2 == 0 else list(commands)[::-1]):
                    cache = work / f"hf-{r}-{name.split()[0]}"
                    env = {**os.environ, **hub_env(hub.url, cache), "DROIDFT_HOME": str(work / "home")}  # one home, as a user has
                    cmd = ([sys.executable, "-m", "droidft.cli", "models", "pull", "bench/big-model"]
                           if name.startswith("droidft") else [hf, "download", "bench/big-model", "--quiet"])
                    commands[name].append(timed(cmd, env))
                    got = sum(p.stat().st_size for p in (cache / "hub").rglob("*") if p.is_file() and "blobs" in p.parts)
                    assert got >= size, (name, got, size)
                    shutil.rmtree(cache, ignore_errors=True)
            print("commands (each a fresh process into a fresh cache):")
            _report("commands", commands, size)

            os.environ.update(hub_env(hub.url, work / "inproc"))
            os.environ["DROIDFT_HOME"] = str(work / "home-inproc")
            from huggingface_hub import constants, snapshot_download
            from huggingface_hub.utils import disable_progress_bars

            from droidft.models import fetch

            constants.ENDPOINT = hub.url
            disable_progress_bars()
            calls = {"droidft.models.fetch.pull": [], "huggingface_hub.snapshot_download": []}
            for r in range(rounds):
                for name in (list(calls) if r % 2 == 0 else list(calls)[::-1]):
                    cache = work / f"inproc-{r}-{name[:7]}"
                    os.environ["HF_HUB_CACHE"] = str(cache)
                    t = time.perf_counter()
                    if name.startswith("droidft"):
                        assert fetch.pull("bench/big-model")["status"] == "completed"
                    else:
                        snapshot_download("bench/big-model", cache_dir=str(cache))
                    calls[name].append(time.perf_counter() - t)
                    shutil.rmtree(cache, ignore_errors=True)
            print("library calls in this process (no start-up):")
            _report("library", calls, size)
    finally:
        shutil.rmtree(work, ignore_errors=True)


# -- 2. the Models page -----------------------------------------------------------------------


def fill_local_models(n: int) -> None:
    """n small models in droidft's models folder (config.json + a real safetensors header)."""
    import mlx.core as mx

    from droidft import paths

    weights = {"model.embed_tokens.weight": mx.zeros((64, 16))}
    cfg = json.loads((demo_model() / "config.json").read_text())
    for i in range(n):
        folder = paths.models_dir() / f"local-model-{i:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(cfg))
        mx.save_safetensors(str(folder / "model.safetensors"), weights)


def fill_hub(hub: HubServer, n: int) -> None:
    cfg = (demo_model() / "config.json").read_text()
    for i in range(n):
        hub.add_model(f"org{i % 20}/bench-model-{i:04d}", files={"config.json": cfg},
                      downloads=n - i, library_name="mlx", license="apache-2.0")


def bench_page(n_local: int, n_results: int, repeats: int) -> None:
    from streamlit.testing.v1 import AppTest

    from droidft.models import hub as hub_mod

    def render(page: str | None, state: dict | None = None) -> tuple[float, AppTest]:
        at = AppTest.from_file(str(REPO / "app" / "Home.py"), default_timeout=300)
        at.run()
        if page:
            at.switch_page(page)
        for k, v in (state or {}).items():
            at.session_state[k] = v
        t = time.perf_counter()
        at.run()
        elapsed = time.perf_counter() - t
        assert not at.exception, [e.value for e in at.exception]
        return elapsed, at

    work = Path(tempfile.mkdtemp(prefix="bench-models-page-"))
    os.environ["DROIDFT_HOME"] = str(work / "home")
    os.environ.update(hub_env(None, work / "hf"))
    try:
        fill_local_models(n_local)
        with HubServer(work / "repos") as hub:
            fill_hub(hub, n_results)
            os.environ["HF_ENDPOINT"] = hub.url
            from huggingface_hub import constants

            constants.ENDPOINT = hub.url
            t = time.perf_counter()
            found = hub_mod.search_models("bench-model", limit=n_results, deadline=60, use_cache=False)
            print(f"search of {len(found.models)} results through huggingface_hub: {time.perf_counter() - t:.2f} s "
                  "(local server; the network is not part of the render below)")
            results = [m.to_dict() for m in found.models]
        for label, page, state in (
                ("Home (reference)", None, None),
                (f"Models, {n_local} local models", "views/models.py", None),
                (f"Models, {n_local} local + {len(results)} search results", "views/models.py",
                 {"models.results": results})):
            times = []
            for i in range(repeats + 1):
                elapsed, at = render(page, state)
                if i == 0:
                    print(f"{label + ' (cold)':52} {elapsed * 1000:7.1f} ms")
                else:
                    times.append(elapsed)
            if page:
                frames = [len(d.value) for d in at.dataframe]
                assert n_local + 1 in frames, frames  # + the demo model
                if state:
                    assert len(results) in frames, frames
            print(f"{label + ' (warm)':52} median {statistics.median(times) * 1000:7.1f} ms  "
                  f"max {max(times) * 1000:7.1f} ms  (n={len(times)})")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=512)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--local", type=int, default=200)
    parser.add_argument("--results", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", choices=["pull", "page"])
    args = parser.parse_args()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"machine: {os.cpu_count()} cores, load average {load:.1f} at start (shared with other jobs)")
    if args.only in (None, "pull"):
        print("\n## Pull throughput vs `hf download`")
        bench_pull(args.mb, args.shards, args.rounds)
    if args.only in (None, "page"):
        print("\n## Models page render (AppTest)")
        bench_page(args.local, args.results, args.repeats)


if __name__ == "__main__":
    main()
