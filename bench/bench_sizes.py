"""Real sizes: training and generation at demo, 23M and Qwen2.5-0.5B shapes, side by side.

For each size, on one config (LoRA rank 8 on every linear layer of every block, batch 4 x
512-token rows of the corpus, Adam, lr 1e-4), this measures in one run:
  - training tokens/s: droidft worker vs stock `python -m mlx_lm lora` (same YAML, same BLAS
    and kernels, interleaved, best of --repeats);
  - peak memory (the trainer's own mx.get_peak_memory report) for LoRA, QLoRA (4-bit base)
    and LoRA with gradient checkpointing, against droidft's estimate (droidft.estimate.estimate_run);
  - achieved training FLOP/s as a fraction of this machine's MLX matmul peak (2048^3 fp32,
    the same BLAS and kernels, measured in this run): FLOPs per token = 4 x matmul weights
    (forward, and backward through the frozen weights to their inputs; LoRA's own weights
    are < 1%) + 12 x layers x sequence x attention width (QK^T and AV, forward and backward);
    gradient checkpointing adds one more forward (2 x weights);
  - generation tokens/s: droidft inference.generate vs stock mlx-lm in the same process
    (bench_generate.py, base model).
Sizes: demo (the shipped 0.79M demo model), 23m (random Llama h512 l8), 0.5b (random model
shaped like Qwen2.5-0.5B: hidden 896, 24 layers, MLP 4864, 14 heads, 2 KV heads, vocabulary
trimmed to the demo tokenizer's 1,024; saved in float32: stock mlx-lm keeps a checkpoint's
bfloat16, which MLX's CPU backend multiplies ~1000x slower than float32, while droidft casts
it to float32 itself (blas.float32_on_cpu); the half-precision matmul speed is printed too).
Throughput does not depend on trained weights, only on shapes. Slow on 2 cores: the 0.5b
size takes tens of minutes. Stock tokens/s is read from its printed report lines (this
benchmarks the stock CLI; droidft never parses text).

Usage: python bench/bench_sizes.py [--sizes demo,23m,0.5b] [--iters 4] [--repeats 1]
       [--qwen-layers 24] [--no-memory] [--no-generate]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

SEQ, BATCH = 512, 4


def corpus_dataset(out: Path, tokenizer_dir: Path, rows: int = 48) -> Path:
    """A text dataset whose rows are at least SEQ tokens (cut to SEQ by the trainer)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    text = "\n".join(p.read_text() for p in sorted((ROOT / "data" / "corpus").glob("*.txt")))
    ids = tok.encode(text, add_special_tokens=False)
    chunk = SEQ - 4  # re-encoded, a row comes out at about SEQ tokens (padded to SEQ by the trainer)
    pieces = [tok.decode(ids[i:i + chunk]) for i in range(0, len(ids) - chunk, chunk)]
    out.mkdir(parents=True, exist_ok=True)
    for name, part in (("train", pieces[:rows]), ("valid", pieces[rows:rows + BATCH])):
        (out / f"{name}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in part))
    return out


def make_model(size: str, tmp: Path, demo: Path, qwen_layers: int) -> Path:
    from droidft.models.synthetic import QWEN2_5_0_5B, random_llama, random_model

    if size == "demo":
        return demo
    if size == "23m":
        return random_llama(tmp / "llama-h512-l8", hidden_size=512, num_layers=8, like=demo)
    if size == "0.5b":
        cfg = dict(QWEN2_5_0_5B, num_hidden_layers=qwen_layers)
        return random_model(tmp / f"qwen2.5-0.5b-shape-l{qwen_layers}", cfg, like=demo, dtype="float32")
    raise SystemExit(f"unknown size {size!r}")


def flops_per_token(cfg: dict, grad_checkpoint: bool = False) -> tuple[float, int]:
    """Training FLOPs per token (see the module docstring) and the matmul weight count."""
    h, layers, inter = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["intermediate_size"]
    heads, kv = cfg["num_attention_heads"], cfg.get("num_key_value_heads") or cfg["num_attention_heads"]
    head_dim = cfg.get("head_dim") or h // heads
    per_layer = h * heads * head_dim * 2 + h * kv * head_dim * 2 + 3 * h * inter
    weights = layers * per_layer + cfg["vocab_size"] * h  # + the output layer
    attention = 12 * layers * SEQ * heads * head_dim
    return (4 + (2 if grad_checkpoint else 0)) * weights + attention, weights


def droidft_run(config) -> dict:
    """A droidft worker run: tokens/s after the first report, peak memory, seconds per step."""
    from droidft import jobs, store

    run_id = jobs.start(config)
    run = jobs.wait(run_id)
    if run["status"] != "completed":
        raise SystemExit(f"droidft run failed: {run.get('error')}")
    rows = store.metrics(run_id)
    by = {}
    for r in rows:
        by.setdefault(r["name"], {})[r["step"]] = r["value"]
    steps = sorted(by["tokens_per_second"])
    rates = [by["tokens_per_second"][s] for s in steps[1:]] or [by["tokens_per_second"][steps[0]]]
    its = [by["iterations_per_second"][s] for s in steps[1:]] or [by["iterations_per_second"][steps[0]]]
    return {"tokens_per_s": sum(rates) / len(rates), "s_per_step": len(its) / sum(its),
            "peak_gb": max(by["peak_memory_gb"].values()), "blas": run["blas"]}


ANSI = re.compile(r"\x1b\[[0-9;]*m")
REPORT_LINE = re.compile(r"^\s*(\d+)\s+([\d.]+)\s*[▼▲]?\s+([\d,]+)\s+([\d.]+)k\s*$")


def stock_run(config, model: Path, data: Path) -> dict:
    """Stock `python -m mlx_lm lora` with the same YAML and this process's BLAS environment."""
    from droidft.blas import worker_env

    env, _ = worker_env(config.blas)
    env.update(NO_COLOR="1", TERM="dumb", COLUMNS="120")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "config.yaml"
        cfg.write_text(config.to_mlx_lm_yaml(str(model), str(data), str(Path(tmp) / "adapters")))
        out = subprocess.run([sys.executable, "-m", "mlx_lm", "lora", "-c", str(cfg)], capture_output=True,
                             text=True, env=env)
    if out.returncode:
        raise SystemExit(f"stock mlx_lm lora failed:\n{out.stdout[-1500:]}\n{out.stderr[-1500:]}")
    rates = [float(m.group(3).replace(",", "")) for line in ANSI.sub("", out.stdout).splitlines()
             if (m := REPORT_LINE.match(line))]
    if not rates:
        raise SystemExit("could not read tokens/s from stock output:\n" + out.stdout[-1500:])
    return {"tokens_per_s": sum(rates[1:] or rates) / len(rates[1:] or rates)}


def matmul_peak() -> tuple[float, str]:
    """MLX fp32 matmul GFLOP/s at 2048^3 with the workers' BLAS and kernels (a subprocess)."""
    from droidft import blas

    env, note = blas.worker_env("auto")
    lib = blas.find_openblas() if "LD_PRELOAD" in env else None
    result = blas.probe(lib, env.get("OPENBLAS_CORETYPE"), size=2048)
    return float(result.get("gflops") or "nan"), note


HALF_JS = """
import time, mlx.core as mx
for dt in (mx.float32, mx.bfloat16, mx.float16):
    a, b = mx.random.normal((512, 512)).astype(dt), mx.random.normal((512, 512)).astype(dt)
    mx.eval(a, b, a @ b)
    tic = time.perf_counter(); mx.eval(a @ b); took = time.perf_counter() - tic
    print(str(dt).split('.')[-1], round(2 * 512**3 / took / 1e9, 2))
"""


def half_precision_matmul() -> str:
    """MLX matmul GFLOP/s at 512^3 in float32, bfloat16 and float16 (workers' BLAS)."""
    from droidft.blas import worker_env

    out = subprocess.run([sys.executable, "-c", HALF_JS], capture_output=True, text=True,
                         env=worker_env("auto")[0])
    return ", ".join(line.replace(" ", " ") + " GFLOP/s" for line in out.stdout.strip().splitlines())


def generation(model: Path, tokens: int, repeats: int) -> dict | None:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_generate.py"), "--model", str(model),
                          "--max-tokens", str(tokens), "--repeats", str(repeats), "--base-only"],
                         capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    if out.returncode:
        print(f"  generation bench failed: {out.stderr[-800:]}")
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])["base"]


def target(name: str, measured: str, goal: str, met: bool | None) -> None:
    """One machine-readable line for run_all's targets table."""
    print("TARGET " + json.dumps({"what": name, "measured": measured, "target": goal, "met": met}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="demo,23m,0.5b")
    parser.add_argument("--iters", type=int, default=0, help="steps per run (default: 12 demo, 8 23m, 4 0.5b)")
    parser.add_argument("--repeats", type=int, default=1, help="best of N for the droidft/stock pair")
    parser.add_argument("--qwen-layers", type=int, default=24, help="fewer for a quick check of the script")
    parser.add_argument("--no-memory", action="store_true", help="skip the QLoRA / grad-checkpoint runs")
    parser.add_argument("--qlora-all", action="store_true", help="QLoRA at 0.5B too (hours on a CPU)")
    parser.add_argument("--no-generate", action="store_true")
    parser.add_argument("--gen-tokens", type=int, default=0, help="default: 100 demo, 64 23m, 24 0.5b")
    args = parser.parse_args()
    os.environ.setdefault("DROIDFT_HOME", tempfile.mkdtemp(prefix="droidft-bench-sizes-"))

    from droidft.config import LoraParameters, SFTConfig
    from droidft.models.demo import demo_model_path
    from droidft.estimate import estimate_run

    demo = demo_model_path()
    peak, blas_note = matmul_peak()
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; workers' BLAS: {blas_note}")
    print(f"MLX fp32 matmul peak (2048^3, same BLAS): {peak:.1f} GFLOP/s")
    print(f"MLX matmul 512^3 by dtype (why droidft trains half-precision checkpoints in float32 on "
          f"the CPU): {half_precision_matmul()}\n", flush=True)
    iters_default = {"demo": 12, "23m": 8, "0.5b": 4}
    gen_default = {"demo": 100, "23m": 64, "0.5b": 24}
    table = []
    with tempfile.TemporaryDirectory(prefix="bench-sizes-") as tmp_name:
        tmp = Path(tmp_name)
        data = corpus_dataset(tmp / "data", demo)
        for size in [s.strip() for s in args.sizes.split(",") if s.strip()]:
            load_before = os.getloadavg()[0]
            model = make_model(size, tmp, demo, args.qwen_layers)
            cfg = json.loads((model / "config.json").read_text())
            iters = args.iters or iters_default.get(size, 4)
            base = SFTConfig(model=str(model), data=str(data), iters=iters, batch_size=BATCH,
                             max_seq_length=SEQ, learning_rate=1e-4, steps_per_report=1,
                             steps_per_eval=10**6, val_batches=1, save_every=10**6, mask_prompt=False,
                             lora_parameters=LoraParameters(rank=8, scale=20.0))
            fpt, weights = flops_per_token(cfg)
            print(f"[{size}] {model.name}: {weights / 1e6:.1f}M matmul weights, {iters} steps of "
                  f"{BATCH} x {SEQ} tokens", flush=True)
            best_d = best_s = None
            for _ in range(args.repeats):
                d = droidft_run(base)
                s = stock_run(base, model, data)
                best_d = d if best_d is None or d["tokens_per_s"] > best_d["tokens_per_s"] else best_d
                best_s = s if best_s is None or s["tokens_per_s"] > best_s["tokens_per_s"] else best_s
            ratio = best_d["tokens_per_s"] / best_s["tokens_per_s"]
            achieved = fpt * best_d["tokens_per_s"] / 1e9
            row = {"size": size, "weights_m": weights / 1e6, "droidft_tps": best_d["tokens_per_s"],
                   "stock_tps": best_s["tokens_per_s"], "ratio": ratio, "s_per_step": best_d["s_per_step"],
                   "gflops": achieved, "fraction": achieved / peak, "memory": {}}
            print(f"  training tokens/s: droidft {best_d['tokens_per_s']:.1f}, stock {best_s['tokens_per_s']:.1f}"
                  f" -> {ratio:.3f}x; {best_d['s_per_step']:.2f} s/step; {achieved:.1f} GFLOP/s achieved = "
                  f"{achieved / peak:.0%} of the matmul peak", flush=True)

            variants = [("LoRA", base, best_d)]
            if not args.no_memory:
                # One step is enough for the peak. MLX's CPU quantised matmul runs ~50x slower
                # than its float32 one (no BLAS), so QLoRA at 0.5B would take hours on 2 cores.
                if size != "0.5b" or args.qlora_all or sys.platform == "darwin":
                    variants.append(("QLoRA 4-bit", base.replace(quantize_bits=4, iters=1), None))
                else:
                    print("  QLoRA at 0.5B skipped: MLX's CPU quantised matmul is ~50x slower than float32 "
                          "(hours per step on 2 cores); --qlora-all runs it")
                variants.append(("LoRA + grad checkpoint", base.replace(grad_checkpoint=True, iters=2), None))
            for label, config, measured in variants:
                measured = measured or droidft_run(config)
                est = estimate_run(config, cfg, avg_tokens=SEQ)
                peak_gib = measured["peak_gb"] * 1e9 / 2**30
                row["memory"][label] = (peak_gib, est.memory_gb)
                print(f"  peak memory {label:24} measured {peak_gib:7.3f} GiB, estimate {est.memory_gb:7.3f} GiB "
                      f"({est.memory_gb / peak_gib - 1:+.0%})", flush=True)

            if not args.no_generate:
                gen = generation(model, args.gen_tokens or gen_default.get(size, 32), 3)
                if gen:
                    row["gen"] = (gen["droidft"][2], gen["stock"][2], gen["ratio"][2])
                    print(f"  generation tokens/s (median decode): droidft {gen['droidft'][2]:.1f}, "
                          f"stock {gen['stock'][2]:.1f} -> {gen['ratio'][2]:.3f}x", flush=True)
            print(f"  load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after\n", flush=True)
            table.append(row)

    print("How each cost grows with size (batch 4 x 512 tokens, LoRA rank 8, all layers):")
    print(f"{'size':6} {'weights':>8} {'train tok/s':>11} {'stock':>8} {'ratio':>6} {'s/step':>8} "
          f"{'GFLOP/s':>8} {'of peak':>7} {'LoRA GiB':>9} {'est GiB':>8} {'gen tok/s':>9} {'stock':>7} {'ratio':>6}")
    for r in table:
        mem = r["memory"].get("LoRA", (float("nan"),) * 2)
        gen = r.get("gen", (float("nan"),) * 3)
        print(f"{r['size']:6} {r['weights_m']:7.1f}M {r['droidft_tps']:11.1f} {r['stock_tps']:8.1f} "
              f"{r['ratio']:6.3f} {r['s_per_step']:8.2f} {r['gflops']:8.1f} {r['fraction']:7.0%} "
              f"{mem[0]:9.3f} {mem[1]:8.3f} {gen[0]:9.1f} {gen[1]:7.1f} {gen[2]:6.3f}")
    for r in table:
        if r["size"] != "0.5b":
            continue
        target("0.5B: droidft / stock mlx_lm lora tokens/s", f"{r['ratio']:.3f}x", ">= 0.97x", r["ratio"] >= 0.97)
        for label, (measured, est) in r["memory"].items():
            off = est / measured - 1
            target(f"0.5B peak memory, {label}: estimate vs measured",
                   f"{est:.2f} vs {measured:.2f} GiB ({off:+.0%})", "within 25%", abs(off) <= 0.25)
        target("0.5B training FLOP/s / MLX matmul peak", f"{r['fraction']:.0%} ({r['gflops']:.0f} of {peak:.0f} GFLOP/s)",
               ">= 30% (else explained)", r["fraction"] >= 0.30)
        if "gen" in r:
            target("0.5B generation droidft / stock tokens/s", f"{r['gen'][2]:.3f}x", ">= 0.95x", r["gen"][2] >= 0.95)


if __name__ == "__main__":
    main()
