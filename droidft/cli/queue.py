"""`droidft queue | settings`: the run queue and machine settings from a shell.

- `droidft queue [--json]`: waiting runs with position and estimated start, and the slots;
  `droidft queue move RUN POSITION | start-now RUN | cancel RUN` act on one of them.
- `droidft settings [--json]`, `droidft settings set max_concurrent_runs N|auto`.
"""

from __future__ import annotations

import time

from .. import jobs, queue, settings
from .common import print_json as _print_json


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


# -- registration ---------------------------------------------------------------------------


def add_commands(subparsers) -> None:
    """Register queue and settings (cheap: no training method is imported)."""
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
