"""`droidft ...`: the same engine from a shell.

Every command prints plain text (or JSON with --json); `train` and `resume` print
the run id as their last line. Bad input exits non-zero with one clear line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from . import jobs, store

EXIT_BAD_INPUT = 2
# Commands that run MLX in this process (not in a worker) and so want OpenBLAS on Linux.
COMPUTE_COMMANDS = {"demo-model", "generate", "compare", "fuse", "eval"}


def _print_json(value) -> None:
    print(json.dumps(value, indent=2, default=str))


def _fmt_time(ts) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


# -- commands -------------------------------------------------------------------------


def cmd_demo_model(args) -> int:
    from .models.demo import build_demo_model

    print(build_demo_model(force=args.force, log=lambda m: print(m, file=sys.stderr)))
    return 0


SFT_FLAGS = {  # CLI flag dest -> config field
    "iters": "iters", "batch_size": "batch_size", "fine_tune_type": "fine_tune_type",
    "num_layers": "num_layers", "learning_rate": "learning_rate", "name": "name",
    "optimizer": "optimizer", "epochs": "epochs", "max_seq_length": "max_seq_length",
    "steps_per_report": "steps_per_report", "steps_per_eval": "steps_per_eval",
    "save_every": "save_every", "val_batches": "val_batches", "seed": "seed",
    "grad_accumulation_steps": "grad_accumulation_steps", "warmup_steps": "warmup_steps",
    "quantize_bits": "quantize_bits", "blas": "blas",
}


def build_config(args):
    """The method's config from --config YAML, then command-line flags on top."""
    from . import methods
    from .config import LoraParameters

    import yaml

    method = methods.get(args.method)
    values = {}
    if args.config:
        from .config import ConfigError

        try:
            with open(args.config) as fh:
                values = yaml.safe_load(fh) or {}
        except OSError as exc:
            raise ConfigError([f"cannot read config file {args.config}: {exc.strerror}"]) from None
        except yaml.YAMLError as exc:
            raise ConfigError([f"{args.config} is not valid YAML: {exc}"]) from None
        if not isinstance(values, dict):
            raise ConfigError([f"{args.config} must hold a mapping of options"])
    for key in ("model", "data"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    fields = method.config_class.field_names()
    for dest, field in SFT_FLAGS.items():
        value = getattr(args, dest, None)
        if value is not None and field in fields:
            values[field] = value
    for flag in ("mask_prompt", "grad_checkpoint"):
        if getattr(args, flag, False) and flag in fields:
            values[flag] = True
    lora = dict(values.get("lora_parameters") or {})
    for dest, key in (("rank", "rank"), ("scale", "scale"), ("dropout", "dropout")):
        if getattr(args, dest, None) is not None:
            lora[key] = getattr(args, dest)
    if args.lora_keys:
        lora["keys"] = [k.strip() for k in args.lora_keys.split(",") if k.strip()]
    if lora:
        values["lora_parameters"] = {**LoraParameters().__dict__, **lora}
    for item in args.set or []:
        key, _, raw = item.partition("=")
        values[key.strip().replace("-", "_")] = yaml.safe_load(raw)
    return method.config_class.from_dict(values)


def cmd_train(args) -> int:
    config = build_config(args)
    if args.print_command:
        from .models import resolve_model
        from .data import resolve_dataset

        print(config.to_mlx_lm_command(str(resolve_model(config.model)), str(resolve_dataset(config.data, method=config.method))))
        return 0
    run_id = jobs.start(config)
    return _follow(run_id, args.wait)


def _follow(run_id: str, wait: bool) -> int:
    if wait:
        print(f"run {run_id} started; waiting for it to end", file=sys.stderr)
        run = jobs.wait(run_id)
        print(f"run {run_id} {run['status']}" + (f": {run['error'].splitlines()[0]}" if run.get("error") else ""),
              file=sys.stderr)
        print(run_id)
        return 0 if run["status"] == "completed" else 1
    print(run_id)
    return 0


def _run_row(run: dict) -> dict:
    keys = ("id", "name", "method", "status", "model", "data", "adapter_path", "parent_id",
            "created_at", "started_at", "ended_at", "pid", "blas", "error")
    return {k: run.get(k) for k in keys}


def cmd_runs(args) -> int:
    runs = jobs.list_runs()
    if args.json:
        _print_json([_run_row(r) for r in runs])
        return 0
    if not runs:
        print("no runs yet: try `droidft train sft --model demo --data demo`")
        return 0
    print(f"{'id':22} {'status':10} {'method':7} name")
    for r in runs:
        print(f"{r['id']:22} {r['status']:10} {r['method']:7} {r.get('name') or ''}")
    return 0


def cmd_show(args) -> int:
    run = jobs.get(args.run)
    latest = store.latest_metrics(args.run)
    arts = store.artifacts(args.run)
    if args.json:
        _print_json({**_run_row(run), "config": run.get("config"), "latest_metrics": latest,
                     "artifacts": arts})
        return 0
    for key, value in _run_row(run).items():
        if key.endswith("_at"):
            value = _fmt_time(value)
        if value is not None:
            print(f"{key:13} {value}")
    for name, value in sorted(latest.items()):
        print(f"  {name:24} {value:.6g}")
    for art in arts:
        print(f"  artifact {art['kind']:14} step {art.get('step')}: {art['path']}")
    return 0


def cmd_metrics(args) -> int:
    jobs.get(args.run)
    rows = store.metrics(args.run, names=args.name or None)
    if args.json:
        _print_json([{"step": r["step"], "name": r["name"], "value": r["value"], "time": r["time"]}
                     for r in rows])
        return 0
    for r in rows:
        print(f"{r['step']:>6} {r['name']:24} {r['value']:.6g}")
    return 0


def cmd_logs(args) -> int:
    jobs.get(args.run)
    for event in store.events(args.run, limit=args.lines):
        print(f"{_fmt_time(event['time'])} {event['level']:5} {event['message']}")
    return 0


def cmd_stop(args) -> int:
    jobs.stop(args.run)
    print(f"stop requested for {args.run}; it saves its adapter and ends as 'stopped'")
    if args.wait:
        run = jobs.wait(args.run)
        print(f"run {args.run} {run['status']}")
    return 0


def cmd_resume(args) -> int:
    return _follow(jobs.resume(args.run), args.wait)


def cmd_command(args) -> int:
    """The stock mlx_lm command (and YAML) equivalent to a run's config."""
    from . import methods

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


def cmd_set_password(args) -> int:
    """Set the LAN password (owner or viewer); only its scrypt hash is stored."""
    import getpass

    from .security import set_password

    if args.stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("new password: ")
        if getpass.getpass("again: ") != password:
            raise ValueError("the two passwords differ")
    role = "viewer" if args.viewer else "owner"
    if args.print_hash:  # for DROIDFT_PASSWORD_HASH / Streamlit secrets instead of auth.json
        from .security import check_new_password, hash_password

        check_new_password(password)
        print(hash_password(password))
        return 0
    set_password(password, role)
    print(f"{role} password set")
    return 0


# -- parser ---------------------------------------------------------------------------


def add_train_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="'demo', a model folder, or a downloaded hub id")
    p.add_argument("--data", help="'demo', or a folder with train.jsonl and valid.jsonl")
    p.add_argument("--config", "-c", help="YAML config (the same keys `mlx_lm lora -c` reads)")
    p.add_argument("--name")
    p.add_argument("--iters", type=int)
    p.add_argument("--epochs", type=float)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--fine-tune-type", choices=["lora", "dora", "full"])
    p.add_argument("--num-layers", type=int, help="layers to adapt from the top; -1 for all")
    p.add_argument("--rank", type=int)
    p.add_argument("--scale", type=float, help="LoRA scale (alpha)")
    p.add_argument("--dropout", type=float)
    p.add_argument("--lora-keys", help="comma-separated linear layers, e.g. self_attn.q_proj,self_attn.v_proj")
    p.add_argument("--learning-rate", type=float)
    p.add_argument("--warmup-steps", type=int)
    p.add_argument("--optimizer", choices=["adam", "adamw", "sgd", "adafactor", "muon"])
    p.add_argument("--max-seq-length", type=int)
    p.add_argument("--steps-per-report", type=int)
    p.add_argument("--steps-per-eval", type=int)
    p.add_argument("--save-every", type=int)
    p.add_argument("--val-batches", type=int)
    p.add_argument("--grad-accumulation-steps", type=int)
    p.add_argument("--grad-checkpoint", action="store_true")
    p.add_argument("--mask-prompt", action="store_true")
    p.add_argument("--quantize-bits", type=int, help="QLoRA: quantise the base to this many bits")
    p.add_argument("--seed", type=int)
    p.add_argument("--blas", choices=["auto", "openblas", "reference"])
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="any other config field (YAML value)")
    p.add_argument("--print-command", action="store_true", help="print the stock mlx_lm command and exit")
    p.add_argument("--wait", action="store_true", help="block until the run ends; non-zero unless completed")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="droidft", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo-model", help="build (once) and print the demo model folder")
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=cmd_demo_model)

    p = sub.add_parser("train", help="start a training run")
    tsub = p.add_subparsers(dest="method", required=True)
    from . import methods

    for method in methods.available():
        mp = tsub.add_parser(method.name, help=method.description)
        add_train_options(mp)
        mp.set_defaults(func=cmd_train)
    from .cli_rl import add_commands as add_rl_commands
    add_rl_commands(sub)
    from . import cli_tools
    cli_tools.add_commands(sub)

    p = sub.add_parser("set-password", help="password for sharing the dashboard on a LAN")
    p.add_argument("--viewer", action="store_true", help="the read-only viewer password")
    p.add_argument("--stdin", action="store_true", help="read the password from standard input")
    p.add_argument("--print-hash", action="store_true",
                   help="print the hash instead of storing it (for DROIDFT_PASSWORD_HASH, "
                        "DROIDFT_VIEWER_PASSWORD_HASH or .streamlit/secrets.toml)")
    p.set_defaults(func=cmd_set_password)

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
        if name == "command":
            p.add_argument("--yaml", action="store_true")
        p.set_defaults(func=func)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .blas import reexec_with_openblas
    from .config import ConfigError

    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.command in COMPUTE_COMMANDS:
        reexec_with_openblas(argv)
    try:
        return args.func(args) or 0
    except ConfigError as exc:
        print("droidft: invalid config: " + "; ".join(exc.problems), file=sys.stderr)
    except store.StoreBusy as exc:
        print(f"droidft: {exc}", file=sys.stderr)
    except (ValueError, KeyError, FileNotFoundError, OSError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"droidft: {message}", file=sys.stderr)
    except KeyboardInterrupt:
        print("droidft: interrupted", file=sys.stderr)
        return 130
    return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
