"""Measure what the default demo fine-tune teaches the demo model.

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0 \
        .venv/bin/python scripts/demo_accuracy.py [--iters N] [--home DIR]

Builds the demo model, scores exact match on data/demo/chat/test.jsonl, runs the
default demo LoRA fine-tune (DEMO_SFT_DEFAULTS) in-process with mlx-lm, scores again
and prints both numbers with the time taken.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def load_rows(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", help="DROIDFT_HOME to build the model in (default: a temp dir)")
    parser.add_argument("--model", help="use this model folder instead of building the demo model")
    parser.add_argument("--data", default=None, help="dataset folder (default data/demo/chat)")
    parser.add_argument("--show", type=int, default=3, help="examples to print")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                        help="override a default, e.g. --set iters=300 --set lora_parameters.rank=16")
    args = parser.parse_args()
    os.environ["DROIDFT_HOME"] = args.home or tempfile.mkdtemp(prefix="droidft-acc-")

    import mlx.core as mx
    import numpy as np
    from mlx_lm import load
    from mlx_lm.lora import CONFIG_DEFAULTS, train_model
    from mlx_lm.tuner.datasets import load_dataset

    from droidft import paths
    from droidft.models.demo import DEMO_SFT_DEFAULTS, build_demo_model, chat_answer, exact_match

    tic = time.perf_counter()
    folder = Path(args.model) if args.model else build_demo_model()
    build_s = time.perf_counter() - tic
    print(f"model: {folder} (build/load {build_s:.1f}s)")

    data = Path(args.data) if args.data else paths.DATA_DIR / "demo" / "chat"
    test_rows = load_rows(data / "test.jsonl")
    model, tokenizer = load(str(folder))

    tic = time.perf_counter()
    before = exact_match(model, tokenizer, test_rows)
    eval_s = time.perf_counter() - tic
    for row in test_rows[: args.show]:
        print(f"  base  | {row['messages'][-2]['content']!r} -> "
              f"{chat_answer(model, tokenizer, row['messages'][:-1]) !r}")

    config = json.loads(json.dumps(CONFIG_DEFAULTS))
    config.update(json.loads(json.dumps(DEMO_SFT_DEFAULTS)))
    for item in args.set:
        key, value = item.split("=", 1)
        *parents, leaf = key.split(".")
        target = config
        for parent in parents:
            target = target[parent]
        target[leaf] = json.loads(value)
    config.update(data=str(data), train=True,
                  adapter_path=tempfile.mkdtemp(prefix="droidft-acc-adapters-"))
    cfg = SimpleNamespace(**config)

    np.random.seed(cfg.seed)
    train_set, valid_set, _ = load_dataset(cfg, tokenizer)
    tic = time.perf_counter()
    cpu0 = time.process_time()
    train_model(cfg, model, train_set, valid_set)
    train_s = time.perf_counter() - tic
    train_cpu = time.process_time() - cpu0

    after = exact_match(model, tokenizer, test_rows)
    misses = []
    for row in test_rows:
        got = chat_answer(model, tokenizer, row["messages"][:-1])
        if got != row["messages"][-1]["content"].strip():
            misses.append((row["messages"][-2]["content"], got))
    for question, got in misses[: args.show]:
        print(f"  miss  | {question!r} -> {got!r}")
    for row in test_rows[: args.show]:
        print(f"  tuned | {row['messages'][-2]['content']!r} -> "
              f"{chat_answer(model, tokenizer, row['messages'][:-1]) !r}")
    summary = {
        "test_rows": len(test_rows),
        "exact_match_before": round(before, 3),
        "exact_match_after": round(after, 3),
        "finetune_seconds": round(train_s, 1),
        "finetune_cpu_seconds": round(train_cpu, 1),
        "eval_seconds": round(eval_s, 1),
        "build_seconds": round(build_s, 1),
        "config": {k: config[k] for k in DEMO_SFT_DEFAULTS},
        "openblas": "openblas" in os.environ.get("LD_PRELOAD", ""),
    }
    print(json.dumps(summary, indent=2))
    mx.clear_cache()


if __name__ == "__main__":
    main()
