"""`droidft generate | compare`: a model with adapters answers a prompt; the base and each
adapter answer the same prompt side by side, with the same seed."""

from __future__ import annotations

import argparse
import sys

from .common import floats, print_json


def _prompt(args) -> str:
    prompt = args.prompt
    if prompt == "-":
        prompt = sys.stdin.read()
    if not prompt or not prompt.strip():
        raise ValueError("the prompt is empty: give --prompt TEXT (or --prompt - to read stdin)")
    return prompt


def _sampling(args):
    from ..inference import Sampling

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


def cmd_generate(args) -> int:
    from .. import inference

    prompt = _prompt(args)
    weights = floats(args.weights, "--weights")
    on_text = None if args.json else (lambda piece: print(piece, end="", flush=True))
    result = inference.generate(args.model, prompt, args.adapter or None, sampling=_sampling(args),
                                max_tokens=args.max_tokens, system=args.system,
                                chat=False if args.no_chat_template else None, weights=weights,
                                on_text=on_text)
    for w in result.warnings:
        print(f"droidft: warning: {w}", file=sys.stderr)
    if args.json:
        print_json(result.to_dict())
    else:
        print()
        print(f"[{result.target}] prompt {result.prompt_tokens} tokens at {result.prompt_tps:.1f} tokens/s; "
              f"generated {result.generation_tokens} tokens at {result.tokens_per_second:.1f} tokens/s "
              f"(seed {result.seed}, {result.finish_reason})", file=sys.stderr)
    return 0


def cmd_compare(args) -> int:
    from .. import inference

    if not args.adapter and args.no_base:
        raise ValueError("nothing to compare: give --adapter (one per target) or drop --no-base")
    results = inference.compare(args.model, args.adapter or [], _prompt(args), include_base=not args.no_base,
                                sampling=_sampling(args), max_tokens=args.max_tokens, system=args.system,
                                chat=False if args.no_chat_template else None)
    for w in dict.fromkeys(w for r in results for w in r.warnings):
        print(f"droidft: warning: {w}", file=sys.stderr)
    if args.json:
        print_json([r.to_dict() for r in results])
        return 0
    for r in results:
        print(f"=== {r.target}: {r.generation_tokens} tokens, {r.tokens_per_second:.1f} tokens/s ===")
        print(r.text.strip())
        print()
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("generate", help="generate text from a model, with adapters")
    _add_sampling(p)
    p.add_argument("--adapter", action="append",
                   help="run id or adapter folder; repeat to stack several adapters")
    p.add_argument("--weights", help="weights for stacked adapters, e.g. 0.7,0.3 (default 1 each)")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("compare", help="the same prompt through the base and each adapter")
    _add_sampling(p)
    p.add_argument("--adapter", action="append", help="run id or adapter folder; repeat for more targets")
    p.add_argument("--no-base", action="store_true", help="leave the base model out")
    p.set_defaults(func=cmd_compare)
