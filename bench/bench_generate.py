"""Generation throughput: droidft `inference.generate` vs stock mlx-lm, same model, same process.

For the base model and for base + one LoRA adapter, alternates N times between
  droidft:  inference.generate(...)  (cache lookup, chat template, seeded sampler, lock,
            mlx-lm's stream_generate)
  stock:    mlx_lm.load(model[, adapter_path]) once, then apply_chat_template +
            mlx_lm.stream_generate with make_sampler / make_logits_processors
with identical sampling settings and seed, and prints the median decode tokens/s (as
stream_generate reports it) and end-to-end tokens/s (wall clock of the whole call), plus
droidft/stock ratios. End-of-sequence is disabled on both sides so every call decodes
exactly --max-tokens tokens. On a busy machine other processes make single timings noisy,
so it reports the best of N (least disturbed) and the median. With --stock-cli it also runs `python -m mlx_lm generate`
in a subprocess and reads its printed "Generation: ... tokens-per-sec" line.

Usage: LD_PRELOAD=<libopenblas.so.0> python bench/bench_generate.py [--model demo]
       [--adapter RUN_ID|PATH] [--max-tokens 200] [--repeats 5] [--stock-cli]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def random_adapter(model_path: Path, out: Path, rank: int = 8) -> Path:
    """A LoRA adapter on every linear layer with random non-zero factors (throughput only)."""
    from droidft.models.synthetic import random_lora_adapter

    return random_lora_adapter(model_path, out, rank=rank, scale=20.0, b_std=0.01)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="demo")
    ap.add_argument("--adapter", help="run id or adapter folder (default: a random rank-8 LoRA)")
    ap.add_argument("--prompt", default="Tell me about the river and the garden.")
    ap.add_argument("--max-tokens", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--temp", type=float, default=0.7)
    ap.add_argument("--stock-cli", action="store_true", help="also time `python -m mlx_lm generate`")
    ap.add_argument("--base-only", action="store_true", help="the base model only (no adapter)")
    args = ap.parse_args()

    import mlx.core as mx
    from mlx_lm import load, stream_generate
    from mlx_lm.sample_utils import make_logits_processors, make_sampler

    from droidft import inference
    from droidft.adapters import resolve_adapter
    from droidft.models import resolve_model

    model_path = resolve_model(args.model)
    adapter = None if args.base_only else (
        args.adapter or str(random_adapter(model_path, Path(tempfile.mkdtemp()) / "adapter")))
    sampling = inference.Sampling(temperature=args.temp, seed=0)
    print(f"model {model_path}; adapter {adapter}; {args.max_tokens} tokens x {args.repeats}; "
          f"LD_PRELOAD={os.environ.get('LD_PRELOAD', '(none)')}")
    print(f"{'target':8} {'side':8} {'best decode':>12} {'best e2e':>9} {'median decode':>14} {'median e2e':>11}"
          "   (tokens/s)")

    summary = {}
    for label, adapters in (("base", None), ("adapter", adapter))[: 1 if args.base_only else 2]:
        loaded = inference.load(model_path, adapters)
        loaded.tokenizer.eos_token_ids = []  # decode exactly max_tokens on both sides
        stock_model, stock_tok = load(str(model_path), adapter_path=str(resolve_adapter(adapter).path)
                                      if adapters else None)
        stock_tok.eos_token_ids = []

        def run_droidft():
            t0 = time.perf_counter()
            r = inference.generate(model_path, args.prompt, adapters, sampling=sampling,
                                   max_tokens=args.max_tokens)
            return r.tokens_per_second, r.generation_tokens / (time.perf_counter() - t0)

        def run_stock():
            t0 = time.perf_counter()
            tokens = stock_tok.apply_chat_template([{"role": "user", "content": args.prompt}],
                                                   add_generation_prompt=True)
            mx.random.seed(0)
            last = None
            for last in stream_generate(stock_model, stock_tok, tokens, max_tokens=args.max_tokens,
                                        sampler=make_sampler(temp=args.temp, top_p=0.9, min_p=0.05),
                                        logits_processors=make_logits_processors()):
                pass
            return last.generation_tps, last.generation_tokens / (time.perf_counter() - t0)

        run_droidft(), run_stock()  # warm-up (compilation, caches)
        results = {"droidft": [], "stock": []}
        for _ in range(args.repeats):
            results["droidft"].append(run_droidft())
            results["stock"].append(run_stock())
        stats = {side: (max(r[0] for r in rs), max(r[1] for r in rs),
                        statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs))
                 for side, rs in results.items()}
        for side, vals in stats.items():
            print(f"{label:8} {side:8} {vals[0]:12.1f} {vals[1]:9.1f} {vals[2]:14.1f} {vals[3]:11.1f}")
        ratio = tuple(d / s for d, s in zip(stats["droidft"], stats["stock"]))
        print(f"{label:8} {'ratio':8} {ratio[0]:12.3f} {ratio[1]:9.3f} {ratio[2]:14.3f} {ratio[3]:11.3f}"
              "   (droidft / stock)")
        summary[label] = {"droidft": stats["droidft"], "stock": stats["stock"], "ratio": ratio}

    if args.stock_cli:
        cmd = [sys.executable, "-m", "mlx_lm", "generate", "--model", str(model_path), "--prompt",
               args.prompt, "--max-tokens", str(args.max_tokens), "--temp", str(args.temp),
               "--top-p", "0.9", "--min-p", "0.05", "--seed", "0"]
        out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ)).stdout
        m = re.search(r"Generation: (\d+) tokens, ([\d.]+) tokens-per-sec", out)
        if m:
            print(f"stock CLI `mlx_lm generate` (base, stops at EOS): {m.group(1)} tokens at "
                  f"{float(m.group(2)):.1f} tokens/s")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
