"""`droidft sweep`: grid or random search over any config field, queued as one group.

- `droidft sweep METHOD --model M --data D --grid KEY=V1,V2 ... [--random N --range
  KEY=LO:HI[:log]] [any train flag] [--wait]`: prints each run id, then the sweep id last;
  `droidft sweep list`, `droidft sweep show SWEEP [--json]`.

Like `train`, its options come from importing every training method, so the CLI builds this
group only for `droidft sweep`.
"""

from __future__ import annotations

import sys

from .. import jobs, sweeps
from .common import print_json as _print_json
from .train import add_train_options, build_config, method_options


# -- commands --------------------------------------------------------------------------------


def cmd_sweep(args) -> int:
    config = build_config(args)
    spec = sweeps.SweepSpec(grid=sweeps.parse_grid(args.grid, type(config)),
                            ranges=sweeps.parse_ranges(args.range, type(config)),
                            random=args.random or 0, seed=args.sweep_seed)
    sweep_id, run_ids = sweeps.start(config, spec, name=args.name)
    for run_id in run_ids:
        print(run_id)
    if args.wait:
        print(f"sweep {sweep_id}: {len(run_ids)} runs queued; waiting for all of them", file=sys.stderr)
        finals = [jobs.wait(r) for r in run_ids]
        result = sweeps.summary(sweep_id)
        best = result["best"]
        print(f"sweep {sweep_id}: {sum(r['status'] == 'completed' for r in finals)} of {len(finals)} completed"
              + (f"; best {best}" if best else ""), file=sys.stderr)
        print(sweep_id)
        return 0 if all(r["status"] == "completed" for r in finals) else 1
    print(sweep_id)
    return 0


def cmd_sweep_list(args) -> int:
    rows = sweeps.list_sweeps()
    if args.json:
        _print_json(rows)
        return 0
    if not rows:
        print("no sweeps yet: try `droidft sweep sft --model demo --data demo --grid learning_rate=1e-4,1e-3`")
    for s in rows:
        print(f"{s['id']:32} {s['method']:6} {s['done']}/{s['trials']} ended  {s.get('name') or ''}")
    return 0


def cmd_sweep_show(args) -> int:
    result = sweeps.summary(args.sweep)
    if args.json:
        _print_json(result)
        return 0
    metric = result["objective"]["metric"]
    print(f"sweep {result['id']} ({result['method']}): {result['done']}/{result['total']} ended; "
          f"ranked by {'highest' if result['objective']['higher_is_better'] else 'lowest'} {metric}")
    for t in result["trials"]:
        settings = " ".join(f"{k.split('.')[-1]}={v}" for k, v in t["settings"].items())
        value = t.get("objective")
        mark = "*" if t["best"] else " "
        print(f"{mark} {t['run_id']:22} {t['status']:9} {settings:40} "
              f"{metric} {'-' if value is None else f'{value:.4f}'}")
    return 0


# -- registration ---------------------------------------------------------------------------


def add_commands(subparsers) -> None:
    """Register sweep; its parser takes every `train` option of every method."""
    from .. import methods

    p = subparsers.add_parser("sweep", help="grid or random search over settings, queued as one group")
    wsub = p.add_subparsers(dest="method", required=True)
    for method in methods.available():
        mp = wsub.add_parser(method.name, help=f"sweep {method.name} runs")
        add_train_options(mp)
        if method.family != "sft":
            method_options(mp, method.config_class)
        mp.add_argument("--grid", action="append", metavar="KEY=V1,V2",
                        help="values to try for a setting (repeat for more settings; all combinations)")
        mp.add_argument("--random", type=int, metavar="N", help="N random samples of the --range settings")
        mp.add_argument("--range", action="append", metavar="KEY=LO:HI[:log]",
                        help="a numeric setting's range for --random (log: sample on a log scale)")
        mp.add_argument("--sweep-seed", type=int, default=0, help="seed of the random samples (default 0)")
        mp.set_defaults(func=cmd_sweep)
    lp = wsub.add_parser("list", help="every sweep")
    lp.add_argument("--json", action="store_true")
    lp.set_defaults(func=cmd_sweep_list)
    sp = wsub.add_parser("show", help="a sweep's trials, settings and results, the best marked")
    sp.add_argument("sweep")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_sweep_show)
