"""`droidft rewards [--file F]`: the reward functions a GRPO run can use."""

from __future__ import annotations

import json


def cmd_rewards(args) -> int:
    from .. import rewards

    found = rewards.available(args.file)
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    for item in found:
        print(f"{item['name']:32} {item['source']:12} {item['description']}")
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("rewards", help="list the reward functions GRPO runs can use")
    p.add_argument("--file", help="also list the functions of this reward file (read, not run)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_rewards)
