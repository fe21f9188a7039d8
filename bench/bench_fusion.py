"""Fusion throughput: GB/s of `fusion.fuse` for each method and output, on the demo model
and on a larger random Llama (to see bandwidth rather than fixed costs).

GB/s counts bytes read (input adapters, plus the base weights for a fused model) and bytes
written (the fused adapter or model), over the wall time of the whole `fuse` call (loading,
merging, SVD, saving). Also prints the stock `mlx_lm fuse` time for one adapter into the
same base, as a yardstick for the `--to model` path.

Usage: LD_PRELOAD=<libopenblas.so.0> python bench/bench_fusion.py [--hidden 1024] [--layers 4]
       [--rank 16] [--adapters 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def random_adapter(model_path: Path, out: Path, rank: int, seed: int) -> Path:
    from droidft.models.synthetic import random_lora_adapter

    return random_lora_adapter(model_path, out, rank=rank, scale=20.0, seed=seed, b_std=0.01, lazy=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--adapters", type=int, default=3)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-fusion-"))
    os.environ.setdefault("DROIDFT_HOME", str(tmp / "home"))
    from droidft import fusion
    from droidft.models.demo import demo_model_path
    from droidft.models.synthetic import random_llama

    demo = demo_model_path()
    bases = {"demo": demo, f"llama-h{args.hidden}-l{args.layers}":
             random_llama(tmp / "big", hidden_size=args.hidden, num_layers=args.layers, like=demo)}
    print(f"LD_PRELOAD={os.environ.get('LD_PRELOAD', '(none)')}; {args.adapters} adapters of rank {args.rank}")
    print(f"{'base':18} {'base MB':>8} {'method':7} {'to':8} {'seconds':>8} {'GB/s':>7} {'energy':>7}")
    for name, base in bases.items():
        base_mb = sum(f.stat().st_size for f in base.glob("*.safetensors")) / 1e6
        ads = [random_adapter(base, tmp / name / f"a{i}", args.rank, i) for i in range(args.adapters)]
        weights = [1.0 / len(ads)] * len(ads)
        for method, to, rank in (("linear", "adapter", None), ("linear", "adapter", args.rank),
                                 ("ties", "adapter", args.rank), ("dare", "adapter", args.rank),
                                 ("linear", "model", None), ("ties", "model", None)):
            out = tmp / name / f"out-{method}-{to}-{rank}"
            r = fusion.fuse(ads, weights, method=method, to=to, rank=rank, out=out, record=False)
            energy = f"{r.retained_energy['total']:.4f}" if r.retained_energy else "-"
            label = f"{method}" + (f"@{r.provenance['rank']}" if to == "adapter" else "")
            print(f"{name:18} {base_mb:8.1f} {label:7} {to:8} {r.seconds:8.3f} {r.gb_per_s:7.3f} {energy:>7}")
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "mlx_lm", "fuse", "--model", str(base), "--adapter-path",
                        str(ads[0]), "--save-path", str(tmp / name / "stock-fused")],
                       check=True, capture_output=True, env=dict(os.environ))
        print(f"{name:18} {base_mb:8.1f} {'stock mlx_lm fuse, 1 adapter (subprocess incl. start-up)':36} "
              f"{time.perf_counter() - t0:8.3f}")


if __name__ == "__main__":
    main()
