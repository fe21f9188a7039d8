"""`droidft demo-model`: print the demo model folder (shipped in data/droidft-demo)."""

from __future__ import annotations

import sys


def cmd_demo_model(args) -> int:
    from ..models.demo import build_demo_model, demo_model_path

    if args.force:  # rebuild a local copy from the recipe (data/models/), e.g. to compare
        print(build_demo_model(force=True, log=lambda m: print(m, file=sys.stderr)))
    else:
        print(demo_model_path())
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("demo-model", help="print the demo model folder (shipped in data/droidft-demo)")
    p.add_argument("--force", action="store_true",
                   help="rebuild it from its recipe into data/models/ (1-2 minutes)")
    p.set_defaults(func=cmd_demo_model)
