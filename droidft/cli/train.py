"""`droidft train METHOD`: start a training run with any registered method.

Options shared by every method come first (`add_train_options`); each RL, preference and
online method also gets one `--field-name` option per field of its own config class
(`--group-size`, `--beta`, `--reward-functions`, `--loss-type`, `--judge`, ...). Those travel as
`--set KEY=VALUE` items, so `build_config` applies them with the same validation as YAML.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing

from .. import jobs
from .common import follow


SFT_FLAGS = {  # CLI flag dest -> config field
    "iters": "iters", "batch_size": "batch_size", "fine_tune_type": "fine_tune_type",
    "num_layers": "num_layers", "learning_rate": "learning_rate", "name": "name",
    "optimizer": "optimizer", "epochs": "epochs", "max_seq_length": "max_seq_length",
    "steps_per_report": "steps_per_report", "steps_per_eval": "steps_per_eval",
    "save_every": "save_every", "val_batches": "val_batches", "seed": "seed",
    "grad_accumulation_steps": "grad_accumulation_steps", "warmup_steps": "warmup_steps",
    "quantize_bits": "quantize_bits", "blas": "blas",
    "early_stop_patience": "early_stop_patience", "early_stop_min_delta": "early_stop_min_delta",
}


def build_config(args):
    """The method's config from --config YAML, then command-line flags on top."""
    from .. import methods
    from ..config import LoraParameters

    import yaml

    method = methods.get(args.method)
    values = {}
    if args.config:
        from ..config import ConfigError

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
        from ..models import resolve_model
        from ..data import resolve_dataset

        print(config.to_mlx_lm_command(str(resolve_model(config.model)), str(resolve_dataset(config.data, method=config.method))))
        return 0
    run_id = jobs.start(config)
    if getattr(config, "judge", None) == "human":
        print(f"run {run_id} asks you to judge its answers: open the dashboard's Monitor "
              f"(/monitor?run={run_id}); unjudged pairs go to the fallback after "
              f"{config.human_timeout:g} s", file=sys.stderr)
    return follow(run_id, args.wait)


# Fields the shared train options already cover (or that are nested), never generated here.
_SHARED = {"model", "data", "name", "fine_tune_type", "num_layers", "lora_parameters", "seed",
           "quantize_bits", "quantize_group_size", "resume_adapter_file", "start_step", "blas",
           "optimizer", "optimizer_config", "batch_size", "iters", "epochs", "learning_rate",
           "lr_schedule", "warmup_steps", "val_batches", "steps_per_report", "steps_per_eval",
           "save_every", "max_seq_length", "grad_accumulation_steps", "grad_checkpoint",
           "mask_prompt"}


class _SetField(argparse.Action):
    """Store `--flag VALUE` as a `KEY=VALUE` entry of `--set` (YAML-typed)."""

    def __init__(self, option_strings, dest, field_name: str, kind: str = "scalar", **kwargs):
        self.field_name = field_name
        self.kind = kind
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        if self.kind == "list":
            items = [v.strip() for v in str(values).split(",") if v.strip()]
            text = json.dumps([float(v) if _numeric(v) else v for v in items])
        elif self.kind == "flag":
            text = "true"
        elif self.kind == "text":
            text = json.dumps(values)  # a JSON string is YAML that stays a string
        else:
            text = values
        entries = list(getattr(namespace, "set", None) or [])
        entries.append(f"{self.field_name}={text}")
        namespace.set = entries


def _numeric(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _kind(annotation) -> str:
    text = str(annotation)
    if "list" in text:
        return "list"
    if annotation is bool:
        return "flag"
    if annotation is str or text in ("str | None", "typing.Optional[str]"):
        return "text"
    return "scalar"


def method_options(parser: argparse.ArgumentParser, config_class) -> None:
    """Add one `--field-name` option per method-specific config field."""
    hints = typing.get_type_hints(config_class)
    taken = {opt for action in parser._actions for opt in action.option_strings}
    for f in dataclasses.fields(config_class):
        if f.name in _SHARED:
            continue
        flag = "--" + f.name.replace("_", "-")
        if flag in taken:
            continue
        kind = _kind(hints.get(f.name, f.type))
        default = f.default if f.default is not dataclasses.MISSING else None
        helptext = f"(default {default!r})" if default is not None else ""
        if kind == "list":
            helptext = "comma-separated " + helptext
        nargs = 0 if kind == "flag" else None
        parser.add_argument(flag, action=_SetField, field_name=f.name, kind=kind, nargs=nargs,
                            metavar=None if nargs == 0 else f.name.upper(), help=helptext,
                            default=argparse.SUPPRESS)


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
    p.add_argument("--early-stop-patience", type=int, metavar="N",
                   help="end the run (as completed) after N validations without improvement")
    p.add_argument("--early-stop-min-delta", type=float, metavar="D",
                   help="the least change in the validation metric that counts as improvement")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="any other config field (YAML value)")
    p.add_argument("--print-command", action="store_true", help="print the stock mlx_lm command and exit")
    p.add_argument("--wait", action="store_true", help="block until the run ends; non-zero unless completed")


def add_commands(sub) -> None:
    from .. import methods

    p = sub.add_parser("train", help="start a training run")
    tsub = p.add_subparsers(dest="method", required=True)
    for method in methods.available():
        mp = tsub.add_parser(method.name, help=method.description)
        add_train_options(mp)
        if method.family != "sft":
            method_options(mp, method.config_class)
        mp.set_defaults(func=cmd_train)
