"""Do the methods added with issue 14 do what they are for on the demo task? Measured through
the real worker, each method with its demo config (demo model, its demo data).

    .venv/bin/python bench/bench_methods_demo.py [--methods online_dpo,ftpo,...] [--json]

Before = the trainer's own validation before step 1 (or the base model); after = its last
validation (or the trained adapter):

- online_dpo, xpo, ppo, rlhf_reinforce (reward judge `droidft_demo_reward`: name three items
  of a category): the judge's mean reward of the validation samples; held out, the mean demo
  reward of 8 samples per test prompt, base model vs adapter; and whether answers the judge
  prefers become more likely: log p(chosen) - log p(rejected) on the preference demo's test
  pairs (chosen = three items of the category, which the demo reward prefers).
- klpo: the mean demo reward of the validation samples (val_reward_mean).
- ftpo: the share of validation contexts where a chosen token beats the rejected "I"
  (val_chosen_win), and the share of greedy replies to the test questions that open with "I".
- dsla: the policy's log-probability margin chosen - rejected on the validation pairs.

Runs in a throwaway DROIDFT_HOME; the demo model is shared (data/models). With
DROIDFT_STOCK_LOSSES=1 the workers keep mlx-lm-lora's own PPO and RLHF-REINFORCE losses
(droidft/methods/online_losses.py says what it corrects), for a side-by-side comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ONLINE = dict(iters=60, steps_per_eval=30, val_batches=-1, steps_per_report=10, save_every=60)
CONFIGS = {
    "online_dpo": ONLINE, "xpo": ONLINE, "ppo": ONLINE, "rlhf_reinforce": ONLINE,
    "klpo": dict(iters=60, steps_per_eval=30, val_batches=-1, steps_per_report=10, save_every=60),
    "ftpo": dict(iters=40, steps_per_eval=20, val_batches=-1, steps_per_report=10, save_every=40),
    "dsla": dict(iters=60, steps_per_eval=30, val_batches=-1, steps_per_report=10, save_every=60),
}
FIGURES = {  # method -> metric names read from the run (first and last value)
    "online_dpo": ["val_judge_reward_mean"],
    "xpo": ["val_judge_reward_mean"],
    "ppo": ["val_judge_reward_mean"],
    "rlhf_reinforce": ["val_rewards"],
    "klpo": ["val_reward_mean"],
    "ftpo": ["val_chosen_win", "val_mean_delta"],
    "dsla": ["val_policy_chosen_logps", "val_policy_rejected_logps", "val_accuracies"],
}


def first_last(store, run_id: str, name: str) -> tuple[float | None, float | None]:
    rows = sorted(store.metrics(run_id, names=[name]), key=lambda r: r["step"])
    return (rows[0]["value"], rows[-1]["value"]) if rows else (None, None)


def sampled_reward(model_path: str, adapter: str | None, rows: list[dict], n: int = 8, seed: int = 0) -> float:
    """Mean droidft_demo_reward of n sampled replies (temperature 0.8, 24 tokens) per held-out prompt."""
    import mlx.core as mx
    from mlx_lm import generate, load
    from mlx_lm.sample_utils import make_sampler

    from droidft.rewards import droidft_demo_reward

    model, tokenizer = load(model_path, adapter_path=adapter)
    mx.random.seed(seed)
    scores = []
    for row in rows:
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": row["prompt"]}],
                                               add_generation_prompt=True, tokenize=False)
        for _ in range(n):
            text = generate(model, tokenizer, prompt, max_tokens=24, sampler=make_sampler(0.8))
            scores.append(droidft_demo_reward([row["prompt"]], [text], [row["answer"]])[0])
    return sum(scores) / len(scores)


def pair_margin(model_path: str, adapter: str | None, rows: list[dict]) -> float:
    """Mean log p(chosen) - log p(rejected) of the answer tokens, for held-out pairs whose
    chosen answer the demo reward prefers (data/demo/preference/test.jsonl): do the answers
    the judge prefers become more likely?"""
    import mlx.core as mx
    import mlx.nn as nn
    from mlx_lm import load

    model, tokenizer = load(model_path, adapter_path=adapter)

    def logp(prompt: str, answer: str) -> float:
        head = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                             tokenize=False)
        start = len(tokenizer.encode(head))
        ids = tokenizer.encode(head + answer)
        logits = model(mx.array([ids[:-1]]))[0]
        scores = -nn.losses.cross_entropy(logits, mx.array(ids[1:]), reduction="none")
        return float(scores[start - 1:].sum().item())

    margins = [logp(r["prompt"], r["chosen"]) - logp(r["prompt"], r["rejected"]) for r in rows]
    return sum(margins) / len(margins)


def opens_with_i(model_path: str, adapter: str | None, rows: list[dict]) -> float:
    """Share of greedy replies (first token) to the FTPO test contexts that are "I"."""
    import mlx.core as mx
    from mlx_lm import load

    model, tokenizer = load(model_path, adapter_path=adapter)
    hits = 0
    for row in rows:
        ids = tokenizer.encode(row["context_with_chat_template"])
        token = int(mx.argmax(model(mx.array([ids]))[0, -1]).item())
        hits += tokenizer.decode([token]).strip() == "I"
    return hits / len(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=",".join(CONFIGS))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field of every method run (YAML value)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    import yaml

    def value(text: str):
        try:
            return float(text) if any(c in text for c in ".eE") else int(text)
        except ValueError:
            return yaml.safe_load(text)

    overrides = {k: value(v) for k, _, v in (item.partition("=") for item in args.set)}

    os.environ["DROIDFT_HOME"] = tempfile.mkdtemp(prefix="droidft-bench-methods-")
    from droidft import jobs, methods, paths, store
    from droidft.data import load_rows

    results = []
    for name in args.methods.split(","):
        config = methods.get(name).config_class(model="demo", data="demo", **{**CONFIGS[name], **overrides})
        started = time.monotonic()
        run_id = jobs.start(config)
        run = jobs.wait(run_id, timeout=7200)
        row = {"method": name, "run_id": run_id, "status": run["status"], "error": run.get("error"),
               "seconds": round(time.monotonic() - started, 1), "iters": config.iters,
               "figures": {m: first_last(store, run_id, m) for m in FIGURES[name]}}
        if run["status"] == "completed" and methods.get(name).family == "online":
            test = load_rows(paths.DATA_DIR / "demo" / "online" / "test.jsonl")
            row["test_sampled_reward"] = (round(sampled_reward(run["model"], None, test), 4),
                                          round(sampled_reward(run["model"], run["adapter_path"], test), 4))
            pairs = load_rows(paths.DATA_DIR / "demo" / "preference" / "test.jsonl")
            row["test_pair_logp_margin"] = (round(pair_margin(run["model"], None, pairs), 3),
                                            round(pair_margin(run["model"], run["adapter_path"], pairs), 3))
        if run["status"] == "completed" and name == "ftpo":
            test = load_rows(paths.DATA_DIR / "demo" / "ftpo" / "test.jsonl")
            row["test_opens_with_I"] = (opens_with_i(run["model"], None, test),
                                        opens_with_i(run["model"], run["adapter_path"], test))
        results.append(row)
        print(json.dumps(row), file=sys.stderr)

    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"{'method':15} {'iters':>5} {'s':>6}  figure: before -> after")
    for r in results:
        head = f"{r['method']:15} {r['iters']:>5} {r['seconds']:>6}"
        if r["status"] != "completed":
            print(f"{head}  {r['status']}: {(r['error'] or '').splitlines()[0] if r['error'] else ''}")
            continue
        parts = [f"{m} {a:.3f} -> {b:.3f}" for m, (a, b) in r["figures"].items() if a is not None]
        for key in ("test_sampled_reward", "test_pair_logp_margin", "test_opens_with_I"):
            if key in r:
                parts.append(f"{key} {r[key][0]:.3f} -> {r[key][1]:.3f}")
        print(f"{head}  " + "; ".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
