"""`droidft sample-data METHOD --out DIR`: a small valid train/valid/test set for any method."""

from __future__ import annotations

import sys


def cmd_sample_data(args) -> int:
    from .. import data

    out = data.sample_data(args.method, args.out, n_train=args.train_rows, n_valid=args.valid_rows,
                           seed=args.seed)
    report = data.validate_dataset(out, method=args.method)
    print(report.summary(), file=sys.stderr)
    print(out)
    return 0 if report.ok else 1


def add_commands(sub) -> None:
    p = sub.add_parser("sample-data", help="write a small valid train/valid/test set for a method")
    from .. import methods

    p.add_argument("method", help="any training method: " + ", ".join(m.name for m in methods.available()))
    p.add_argument("--out", required=True, help="folder to write train.jsonl, valid.jsonl, test.jsonl into")
    p.add_argument("--train-rows", type=int, default=40)
    p.add_argument("--valid-rows", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_sample_data)
