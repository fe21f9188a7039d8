"""GGUF export throughput: droidft's writer (the `gguf` package) against mlx-lm's own
`--export-gguf` writer (mlx_lm.gguf.convert_to_gguf, MLX's C++ save_gguf), in the same run.

Both write f16 GGUF files of the same model: a float16 copy of the demo model and of a random
Llama of ~100M parameters (hidden 1024, 9 layers). GB/s = bytes of the GGUF written / wall time
from the safetensors on disk to the finished file, tokenizer included; median of --repeat runs,
the two writers alternating. Also: droidft from the float32 originals (f16 conversion on the
way) and q8_0, and end to end `mlx_lm.fuse --export-gguf` vs `droidft export ADAPTER --to gguf`
(fuse a random LoRA adapter, then write the GGUF; separate processes, imports included).
mlx-lm's writer covers llama/mistral/mixtral only, so the comparison is on Llama.

Usage: LD_PRELOAD=<libopenblas.so.0> python bench/bench_export.py [--hidden 1024] [--layers 9] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def f16_copy(src: Path, out: Path) -> Path:
    import shutil

    import mlx.core as mx

    out.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file() and f.suffix != ".safetensors":
            shutil.copy(f, out)
    w = mx.load(str(src / "model.safetensors"))
    mx.save_safetensors(str(out / "model.safetensors"), {k: v.astype(mx.float16) for k, v in w.items()})
    cfg = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**cfg, "torch_dtype": "float16"}))
    return out


def mlx_lm_writer(model: Path, out: Path) -> float:
    import mlx.core as mx
    from mlx_lm.gguf import convert_to_gguf

    t0 = time.perf_counter()
    cfg = json.loads((model / "config.json").read_text())
    weights = mx.load(str(model / "model.safetensors"))
    convert_to_gguf(model, weights, cfg, str(out))
    return time.perf_counter() - t0


def droidft_writer(model: Path, out: Path, outtype: str = "f16") -> float:
    from droidft.export.gguf import write_gguf

    t0 = time.perf_counter()
    write_gguf(model, out, outtype=outtype)
    return time.perf_counter() - t0


def params(model: Path) -> int:
    import mlx.core as mx

    return sum(v.size for v in mx.load(str(model / "model.safetensors")).values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=9)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-end-to-end", action="store_true")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-export-"))
    os.environ.setdefault("DROIDFT_HOME", str(tmp / "home"))
    import contextlib
    import io

    from droidft.models.demo import demo_model_path
    from droidft.models.synthetic import random_llama, random_lora_adapter

    demo = demo_model_path()
    big = random_llama(tmp / "big32", hidden_size=args.hidden, num_layers=args.layers, like=demo)
    models = {"demo": (demo, f16_copy(demo, tmp / "demo16")),
              f"llama-h{args.hidden}-l{args.layers}": (big, f16_copy(big, tmp / "big16"))}
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; "
          f"LD_PRELOAD={os.environ.get('LD_PRELOAD', '(none)')}; median of {args.repeat}")
    print(f"{'model':18} {'params':>7} {'writer':26} {'GGUF MB':>8} {'seconds':>8} {'GB/s':>7}")
    summary = []
    for name, (f32, f16) in models.items():
        n = params(f16)
        rows: dict[str, list[float]] = {"mlx-lm convert_to_gguf f16": [], "droidft f16": []}
        sizes = {}
        for i in range(args.repeat):
            for label in (rows if i % 2 == 0 else reversed(list(rows))):
                out = tmp / f"{name}-{label.split()[0]}-{i}.gguf"
                with contextlib.redirect_stdout(io.StringIO()):
                    secs = (mlx_lm_writer(f16, out) if label.startswith("mlx") else droidft_writer(f16, out))
                rows[label].append(secs)
                sizes[label] = out.stat().st_size
                out.unlink()
        extra = {}
        for label, model, outtype in (("droidft f32 source -> f16", f32, "f16"), ("droidft q8_0", f32, "q8_0")):
            out = tmp / f"{name}-{outtype}-x.gguf"
            extra[label] = [droidft_writer(model, out, outtype) for _ in range(1)]
            sizes[label] = out.stat().st_size
            out.unlink()
        gbs = {}
        for label, secs in {**rows, **extra}.items():
            med = statistics.median(secs)
            gbs[label] = sizes[label] / 1e9 / med
            print(f"{name:18} {n / 1e6:6.1f}M {label:26} {sizes[label] / 1e6:8.1f} {med:8.3f} {gbs[label]:7.4f}")
        ratio = gbs["droidft f16"] / gbs["mlx-lm convert_to_gguf f16"]
        summary.append((name, ratio))
        print(f"{name:18} droidft / mlx-lm (f16, same model, same bytes): {ratio:.2f}x")
    if not args.no_end_to_end:
        name, (f32, f16) = list(models.items())[-1]
        adapter = random_lora_adapter(f16, tmp / "adapter", rank=16, seed=1, lazy=True)
        env = dict(os.environ, DROIDFT_HOME=str(tmp / "home"))
        t = {"mlx_lm.fuse --export-gguf": [], "droidft export --to gguf": []}
        for i in range(args.repeat):
            for label in (t if i % 2 == 0 else reversed(list(t))):
                if label.startswith("mlx"):
                    cmd = [sys.executable, "-m", "mlx_lm", "fuse", "--model", str(f16), "--adapter-path", str(adapter),
                           "--save-path", str(tmp / f"fused-{i}"), "--export-gguf"]
                else:
                    cmd = [sys.executable, "-m", "droidft.cli", "export", str(adapter), "--to", "gguf",
                           "--out", str(tmp / f"dexp-{i}"), "--json"]
                t0 = time.perf_counter()
                subprocess.run(cmd, check=True, capture_output=True, env=env)
                t[label].append(time.perf_counter() - t0)
        for label, secs in t.items():
            print(f"{name:18} end to end {label:28} {statistics.median(secs):6.1f} s (processes, imports included)")
    for name, ratio in summary:
        print(f"SUMMARY {name}: droidft GGUF f16 throughput = {ratio:.2f}x mlx-lm's")


if __name__ == "__main__":
    main()
