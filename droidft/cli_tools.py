"""`droidft generate | compare | fuse | eval`: inference, fusion and evaluation from a shell.

`add_commands(subparsers)` registers the four commands on droidft's CLI; each command
function takes the parsed `args` and returns an exit code. Errors a user can cause raise
ValueError subclasses, which `droidft.cli.main` prints as one line (exit 2).
"""

from __future__ import annotations

import argparse
import json
import sys


def _print_json(value) -> None:
    print(json.dumps(value, indent=2, default=str))


def _split(text: str | None) -> list[str]:
    return [p.strip() for p in (text or "").split(",") if p.strip()]


def _floats(text: str | None, what: str) -> list[float] | None:
    if text is None:
        return None
    out = []
    for part in _split(text):
        try:
            out.append(float(part))
        except ValueError:
            raise ValueError(f"{what}: {part!r} is not a number (give e.g. 0.7,0.3)") from None
    if not out:
        raise ValueError(f"{what}: no numbers given")
    return out


def _prompt(args) -> str:
    prompt = args.prompt
    if prompt == "-":
        prompt = sys.stdin.read()
    if not prompt or not prompt.strip():
        raise ValueError("the prompt is empty: give --prompt TEXT (or --prompt - to read stdin)")
    return prompt


def _sampling(args):
    from .inference import Sampling

    return Sampling(temperature=args.temp, top_p=args.top_p, min_p=args.min_p, top_k=args.top_k,
                    repetition_penalty=args.repetition_penalty, seed=args.seed).validate()


def _add_sampling(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="demo", help="'demo' (default), a model folder, or a downloaded hub id")
    p.add_argument("--prompt", required=True, help="the prompt text ('-' reads it from stdin)")
    p.add_argument("--system", help="a system message")
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--seed", type=int, default=0, help="sampling seed, the same for every target (default 0)")
    p.add_argument("--temp", type=float, default=0.7, help="temperature (0 = greedy); default 0.7")
    p.add_argument("--top-p", type=float, default=0.9, help="nucleus sampling (default 0.9)")
    p.add_argument("--min-p", type=float, default=0.05, help="min-p sampling (default 0.05)")
    p.add_argument("--top-k", type=int, default=0, help="top-k sampling (0 = off)")
    p.add_argument("--repetition-penalty", type=float, help="e.g. 1.1 (off by default)")
    p.add_argument("--no-chat-template", action="store_true", help="send the prompt as raw text")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


# -- commands -----------------------------------------------------------------------------


def cmd_generate(args) -> int:
    from . import inference

    prompt = _prompt(args)
    weights = _floats(args.weights, "--weights")
    on_text = None if args.json else (lambda piece: print(piece, end="", flush=True))
    result = inference.generate(args.model, prompt, args.adapter or None, sampling=_sampling(args),
                                max_tokens=args.max_tokens, system=args.system,
                                chat=False if args.no_chat_template else None, weights=weights,
                                on_text=on_text)
    for w in result.warnings:
        print(f"droidft: warning: {w}", file=sys.stderr)
    if args.json:
        _print_json(result.to_dict())
    else:
        print()
        print(f"[{result.target}] prompt {result.prompt_tokens} tokens at {result.prompt_tps:.1f} tokens/s; "
              f"generated {result.generation_tokens} tokens at {result.tokens_per_second:.1f} tokens/s "
              f"(seed {result.seed}, {result.finish_reason})", file=sys.stderr)
    return 0


def cmd_compare(args) -> int:
    from . import inference

    if not args.adapter and args.no_base:
        raise ValueError("nothing to compare: give --adapter (one per target) or drop --no-base")
    results = inference.compare(args.model, args.adapter or [], _prompt(args), include_base=not args.no_base,
                                sampling=_sampling(args), max_tokens=args.max_tokens, system=args.system,
                                chat=False if args.no_chat_template else None)
    for w in dict.fromkeys(w for r in results for w in r.warnings):
        print(f"droidft: warning: {w}", file=sys.stderr)
    if args.json:
        _print_json([r.to_dict() for r in results])
        return 0
    for r in results:
        print(f"=== {r.target}: {r.generation_tokens} tokens, {r.tokens_per_second:.1f} tokens/s ===")
        print(r.text.strip())
        print()
    return 0


def cmd_fuse(args) -> int:
    from . import fusion

    adapters = _split(args.adapters)
    if len(adapters) < 1:
        raise fusion.FusionError("--adapters needs at least one adapter (run ids or folders, comma-separated)")
    result = fusion.fuse(
        adapters, _floats(args.weights, "--weights"), out=args.out, to=args.to, method=args.method,
        rank=args.rank, layer_weights=args.layer_weights, model=args.model, density=args.density,
        normalize=not args.no_normalize, ties_sign=args.ties_sign, seed=args.seed,
        allow_any_sum=args.allow_any_sum, keep_quantization=args.keep_quantization,
        overwrite=args.overwrite)
    if args.json:
        d = result.to_dict()
        d.pop("layers", None)
        _print_json(d)
        return 0
    what = "adapter" if result.to == "adapter" else "model"
    print(f"fused {len(adapters)} adapter(s) ({result.method}) into a new {what}: {result.out}")
    if result.retained_energy:
        e = result.retained_energy
        print(f"rank {result.provenance['rank']}: retained energy {e['total']:.4f} overall, "
              f"{e['min']:.4f} in the worst layer")
    print(f"{result.seconds:.2f} s, {result.gb_per_s:.3f} GB/s; artifact {result.artifact_id}")
    return 0


def cmd_eval(args) -> int:
    from . import evaluate

    report = evaluate.evaluate(
        args.model, args.adapter or [], args.data, args.suite, include_base=not args.no_base,
        split=args.split, limit=args.limit, max_tokens=args.max_tokens, pattern=args.pattern,
        mask_prompt=args.mask_prompt, reward_functions=_split(args.reward_functions) or None,
        reward_weights=_floats(args.reward_weights, "--reward-weights"), judge_model=args.judge_model,
        record=not args.no_record,
        progress=None if args.json else (lambda t, s: print(f"evaluating {t}: {s}", file=sys.stderr)))
    for r in report.results:
        for w in r.get("warnings") or []:
            print(f"droidft: warning: {w}", file=sys.stderr)
    if args.json:
        _print_json(report.to_dict())
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


# -- registration -------------------------------------------------------------------------


def add_commands(subparsers) -> None:
    p = subparsers.add_parser("generate", help="generate text from a model, with adapters")
    _add_sampling(p)
    p.add_argument("--adapter", action="append",
                   help="run id or adapter folder; repeat to stack several adapters")
    p.add_argument("--weights", help="weights for stacked adapters, e.g. 0.7,0.3 (default 1 each)")
    p.set_defaults(func=cmd_generate)

    p = subparsers.add_parser("compare", help="the same prompt through the base and each adapter")
    _add_sampling(p)
    p.add_argument("--adapter", action="append", help="run id or adapter folder; repeat for more targets")
    p.add_argument("--no-base", action="store_true", help="leave the base model out")
    p.set_defaults(func=cmd_compare)

    p = subparsers.add_parser("fuse", help="fuse adapters into one adapter or a full model")
    p.add_argument("--adapters", required=True, help="comma-separated run ids or adapter folders")
    p.add_argument("--weights", help="one weight per adapter, e.g. 0.7,0.3 (default equal)")
    p.add_argument("--layer-weights", metavar="FILE.json",
                   help="per-layer weights: {\"table\": [...]} | {\"ranges\": [...]} | {\"linear\": {...}}")
    p.add_argument("--method", choices=["linear", "ties", "dare"], default="linear")
    p.add_argument("--density", type=float, help="ties/dare: fraction of each update kept (default 0.5)")
    p.add_argument("--no-normalize", action="store_true", help="ties: sum agreeing updates instead of averaging")
    p.add_argument("--ties-sign", action="store_true", help="dare: elect signs as TIES does (DARE-TIES)")
    p.add_argument("--seed", type=int, default=0, help="dare: random seed of the drop mask")
    p.add_argument("--rank", type=int, help="rank of a fused adapter (default: sum of input ranks)")
    p.add_argument("--to", choices=["adapter", "model"], default="adapter")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--model", help="the base model (default: the one the adapters were trained on)")
    p.add_argument("--allow-any-sum", action="store_true",
                   help="weights need not sum to 1 (add or subtract updates)")
    p.add_argument("--keep-quantization", action="store_true",
                   help="--to model on a quantised base: re-quantise fused layers instead of de-quantising")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_fuse)

    p = subparsers.add_parser("eval", help="evaluate the base and adapters / fused models")
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
