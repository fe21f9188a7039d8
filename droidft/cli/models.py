"""`droidft demo-model`: build (once) and print the demo model folder."""

from __future__ import annotations

import sys


def cmd_demo_model(args) -> int:
    from ..models.demo import build_demo_model

    print(build_demo_model(force=args.force, log=lambda m: print(m, file=sys.stderr)))
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("demo-model", help="build (once) and print the demo model folder")
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=cmd_demo_model)
