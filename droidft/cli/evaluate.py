"""`droidft eval`: evaluation suites (loss, accuracy, reward, judge) on the base and adapters."""

from __future__ import annotations

import sys

from .common import floats, print_json, split_list


def cmd_eval(args) -> int:
    from .. import evaluate

    report = evaluate.evaluate(
        args.model, args.adapter or [], args.data, args.suite, include_base=not args.no_base,
        split=args.split, limit=args.limit, max_tokens=args.max_tokens, pattern=args.pattern,
        mask_prompt=args.mask_prompt, reward_functions=split_list(args.reward_functions) or None,
        reward_weights=floats(args.reward_weights, "--reward-weights"), judge_model=args.judge_model,
        record=not args.no_record,
        progress=None if args.json else (lambda t, s: print(f"evaluating {t}: {s}", file=sys.stderr)))
    for r in report.results:
        for w in r.get("warnings") or []:
            print(f"droidft: warning: {w}", file=sys.stderr)
    if args.json:
        print_json(report.to_dict())
        return 0
    rows = report.table()
    cols = [c for c in ("loss", "perplexity", "exact_match", "contains", "similarity", "regex", "reward", "judge")
            if any(c in r for r in rows)]
    width = max(12, *(len(r["target"]) for r in rows))
    print(f"{'target':{width}} " + " ".join(f"{c:>11}" for c in cols))
    for r in rows:
        cells = [f"{r[c]:11.4f}" if c in r else f"{'-':>11}" for c in cols]
        print(f"{r['target']:{width}} " + " ".join(cells))
    for suite, path in report.dataset.items():
        print(f"{suite}: {path}", file=sys.stderr)
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("eval", help="evaluate the base and adapters / fused models")
    p.add_argument("--model", default="demo")
    p.add_argument("--adapter", action="append",
                   help="run id, adapter folder or fused model folder; repeat for more targets")
    p.add_argument("--data", default="demo", help="'demo', a dataset folder, or a .jsonl file")
    p.add_argument("--suite", default="loss,accuracy", help="comma-separated: loss,accuracy,reward,judge")
    p.add_argument("--split", default="test", help="split of a dataset folder (default test, else valid)")
    p.add_argument("--limit", type=int, help="at most this many rows per suite")
    p.add_argument("--max-tokens", type=int, default=48, help="answer length for accuracy/reward")
    p.add_argument("--pattern", help="accuracy: a regex the answer must match")
    p.add_argument("--mask-prompt", action="store_true", help="loss: score only the answers")
    p.add_argument("--reward-functions", help="reward: comma-separated names (default exact_answer,answer_similarity)")
    p.add_argument("--reward-weights", help="reward: one weight per function")
    p.add_argument("--judge-model", help="judge: a local model that grades answers yes/no")
    p.add_argument("--no-base", action="store_true", help="leave the base model out")
    p.add_argument("--no-record", action="store_true", help="do not store the results")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval)
