"""`droidft queue | settings | sweep`: the run queue, machine settings and sweeps from a shell.

- `droidft queue [--json]`: waiting runs with position and estimated start, and the slots;
  `droidft queue move RUN POSITION | start-now RUN | cancel RUN` act on one of them.
- `droidft settings [--json]`, `droidft settings set max_concurrent_runs N|auto`.
- `droidft sweep METHOD --model M --data D --grid KEY=V1,V2 ... [--random N --range
  KEY=LO:HI[:log]] [any train flag] [--wait]`: prints each run id, then the sweep id last;
  `droidft sweep list`, `droidft sweep show SWEEP [--json]`.
"""

from __future__ import annotations

import sys
import time

from .. import jobs, queue, settings, sweeps
from .common import print_json as _print_json
from .train import add_train_options, build_config, method_options


def _when(ts) -> str:
    """An estimated start as clock time and how long from now."""
    if ts is None:
        return "unknown"
    wait = ts - time.time()
    if wait < 1:
        return "now"
    clock = time.strftime("%H:%M:%S", time.localtime(ts))
    return f"{clock} (in {wait / 60:.0f} min)" if wait >= 90 else f"{clock} (in {wait:.0f} s)"


# -- queue ------------------------------------------------------------------------------


def cmd_queue(args) -> int:
    jobs.reap()  # frees the slots of dead workers and starts what can start
    action = getattr(args, "queue_action", None)
    if action == "move":
        print(f"run {args.run} is now number {queue.move(args.run, args.position)} in the queue")
        return 0
    if action == "start-now":
        queue.start_now(args.run)
        print(f"run {args.run} started (outside the queue's slots)")
        return 0
    if action == "cancel":
        queue.cancel(args.run, "cancelled in the queue from the command line")
        print(f"run {args.run} left the queue; it ends as 'stopped' without starting")
        return 0
    runs = jobs.list_runs(status=jobs.ACTIVE)
    waiting = queue.entries()
    info = queue.slot_info(queue.waiting(runs)[0] if waiting else None)
    info["busy"] = queue.busy_slots(runs)
    running = [{"id": r["id"], "name": r.get("name"), "status": r["status"]}
               for r in runs if not queue.is_waiting(r)]
    if args.json:
        _print_json({"slots": info, "running": running, "waiting": waiting, "leases": queue.leases()})
        return 0
    print(f"slots: {info['busy']} of {info['slots']} in use (max_concurrent_runs {info['setting']}: "
          f"{info['reason']})")
    for r in running:
        print(f"  {r['status']:8} {r['id']:22} {r.get('name') or ''}")
    for lease in queue.leases():
        print(f"  {lease['kind']:8} {'pid ' + str(lease['pid']):22} {lease.get('label') or ''}")
    if not waiting:
        print("nothing is waiting")
    for e in waiting:
        print(f"  #{e['position']:<7} {e['id']:22} starts {_when(e['estimated_start'])}  {e.get('name') or ''}")
    return 0


def cmd_settings(args) -> int:
    if getattr(args, "settings_action", None) == "set":
        value = settings.set(args.key, args.value)
        print(f"{args.key} = {'auto' if value is None else value}")
        return 0
    values = {name: settings.get(name) for name in settings.KNOWN}
    if args.json:
        _print_json({**{k: ("auto" if v is None else v) for k, v in values.items()},
                     "effective": {"max_concurrent_runs": queue.slot_info()["slots"]}})
        return 0
    for name, spec in settings.KNOWN.items():
        value = values[name]
        shown = "auto" if value is None else value
        if name == "max_concurrent_runs" and value is None:
            info = queue.slot_info()
            shown = f"auto ({info['slots']}: {info['reason']})"
        print(f"{name} = {shown}    # {spec.help}")
    return 0


# -- sweeps --------------------------------------------------------------------------------


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
    """Register queue, settings and sweep; a sweep's parser takes every `train` option."""
    from .. import methods

    p = subparsers.add_parser("queue", help="the run queue: waiting runs, slots, reorder, cancel, start now")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_queue)
    qsub = p.add_subparsers(dest="queue_action")
    q = qsub.add_parser("move", help="put a waiting run at a position (1 = next)")
    q.add_argument("run")
    q.add_argument("position", type=int)
    q = qsub.add_parser("start-now", help="start a waiting run now, even with every slot taken")
    q.add_argument("run")
    q = qsub.add_parser("cancel", help="take a waiting run out of the queue")
    q.add_argument("run")

    p = subparsers.add_parser("settings", help="machine settings kept in the droidft home")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_settings)
    ssub = p.add_subparsers(dest="settings_action")
    s = ssub.add_parser("set", help="set a setting (auto = droidft decides)")
    s.add_argument("key")
    s.add_argument("value")

    p = subparsers.add_parser("sweep", help="grid or random search over settings, queued as one group")
    wsub = p.add_subparsers(dest="method", required=True)
    for method in methods.available():
        mp = wsub.add_parser(method.name, help=f"sweep {method.name} runs")
        add_train_options(mp)
        if method.family in ("grpo", "preference"):
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
