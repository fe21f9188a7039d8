"""`droidft runs | show | metrics | logs | stop | resume | command`: the runs droidft knows."""

from __future__ import annotations

import sys

from .. import jobs, queue, store
from .common import fmt_time, follow, print_json


def _run_row(run: dict, positions: dict | None = None) -> dict:
    keys = ("id", "name", "method", "status", "model", "data", "adapter_path", "parent_id",
            "created_at", "started_at", "ended_at", "pid", "blas", "error", "sweep_id")
    row = {k: run.get(k) for k in keys}
    row["queue_position"] = (positions or {}).get(run["id"])  # None unless waiting in the queue
    row["end_reason"] = jobs.end_reason(run)
    return row


def cmd_runs(args) -> int:
    runs = jobs.list_runs()
    places = queue.positions(runs)
    if args.json:
        print_json([_run_row(r, places) for r in runs])
        return 0
    if not runs:
        print("no runs yet: try `droidft train sft --model demo --data demo`")
        return 0
    print(f"{'id':22} {'status':10} {'method':7} name")
    for r in runs:
        status = f"queued #{places[r['id']]}" if r["id"] in places else r["status"]
        print(f"{r['id']:22} {status:10} {r['method']:7} {r.get('name') or ''}")
    return 0


def cmd_show(args) -> int:
    run = jobs.get(args.run)
    latest = store.latest_metrics(args.run)
    arts = store.artifacts(args.run)
    best = jobs.best_adapter(args.run) or {}
    row = {**_run_row(run, queue.positions()), "best_adapter_path": best.get("path"),
           "best_step": best.get("step"), "best_metric": best.get("metric"), "best_value": best.get("value")}
    if args.json:
        print_json({**row, "config": run.get("config"), "latest_metrics": latest, "artifacts": arts})
        return 0
    for key, value in row.items():
        if key.endswith("_at"):
            value = fmt_time(value)
        if value is not None:
            print(f"{key:13} {value}")
    if note := jobs.silence(run):
        print(f"warning       {note}")
    for name, value in sorted(latest.items()):
        print(f"  {name:24} {value:.6g}")
    for art in arts:
        print(f"  artifact {art['kind']:14} step {art.get('step')}: {art['path']}")
    return 0


def cmd_metrics(args) -> int:
    jobs.get(args.run)
    rows = store.metrics(args.run, names=args.name or None)
    if args.json:
        print_json([{"step": r["step"], "name": r["name"], "value": r["value"], "time": r["time"]}
                     for r in rows])
        return 0
    for r in rows:
        print(f"{r['step']:>6} {r['name']:24} {r['value']:.6g}")
    return 0


def cmd_logs(args) -> int:
    jobs.get(args.run)
    for event in store.events(args.run, limit=args.lines):
        print(f"{fmt_time(event['time'])} {event['level']:5} {event['message']}")
    return 0


def cmd_stop(args) -> int:
    if args.now:
        run = jobs.stop_now(args.run, reason="stopped now from the command line")
        print(f"run {args.run} {run['status']}: {jobs.end_reason(run) or ''}".rstrip(": "))
        return 0
    jobs.stop(args.run)
    print(f"stop requested for {args.run}; it saves its adapter and ends as 'stopped' "
          f"(if a long step keeps it busy, `droidft stop {args.run} --now` ends it at once)")
    if args.wait:
        run = jobs.wait(args.run)
        print(f"run {args.run} {run['status']}")
    return 0


def cmd_resume(args) -> int:
    return follow(jobs.resume(args.run), args.wait)


def cmd_command(args) -> int:
    """The stock mlx_lm command (and YAML) equivalent to a run's config."""
    from .. import methods

    run = jobs.get(args.run)
    config = methods.config_from_dict(run["config"])
    if not hasattr(config, "to_mlx_lm_command"):
        print(f"method {config.method} has no stock mlx_lm equivalent", file=sys.stderr)
        return 1
    adapter = str(jobs.paths.run_dir(args.run) / "adapters")
    if args.yaml:
        print(config.to_mlx_lm_yaml(run["model"], run["data"], adapter), end="")
    else:
        print(config.to_mlx_lm_command(run["model"], run["data"], adapter))
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("runs", help="list runs")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_runs)
    for name, func, helptext in (("show", cmd_show, "one run"), ("metrics", cmd_metrics, "a run's metrics"),
                                 ("logs", cmd_logs, "a run's log"), ("stop", cmd_stop, "stop a run"),
                                 ("resume", cmd_resume, "resume a run from its last checkpoint"),
                                 ("command", cmd_command, "the equivalent stock mlx_lm command")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("run")
        if name in ("show", "metrics"):
            p.add_argument("--json", action="store_true")
        if name == "metrics":
            p.add_argument("--name", action="append", help="only this metric (repeatable)")
        if name == "logs":
            p.add_argument("--lines", type=int, default=200)
        if name in ("stop", "resume"):
            p.add_argument("--wait", action="store_true")
        if name == "stop":
            p.add_argument("--now", action="store_true",
                           help="end the worker at once (SIGTERM, then SIGKILL), keeping the last checkpoint")
        if name == "command":
            p.add_argument("--yaml", action="store_true")
        p.set_defaults(func=func)
