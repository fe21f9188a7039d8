"""CLI pieces for the RL and preference methods, added to `droidft` by `add_commands`.

- `droidft sample-data METHOD --out DIR`: a small valid train/valid/test set for any method.
- `droidft rewards [--file F]`: the reward functions a GRPO run can use.
- Method options on `droidft train grpo|gspo|dr_grpo|bnpo|dapo|dpo|orpo|cpo`
  (`--group-size`, `--beta`, `--reward-functions`, `--loss-type`, ...), generated from each
  config class's own fields. They travel as `--set KEY=VALUE` items, so the shared
  `build_config` applies them with the same validation as YAML.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing

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


def cmd_sample_data(args) -> int:
    from . import data

    out = data.sample_data(args.method, args.out, n_train=args.train_rows, n_valid=args.valid_rows,
                           seed=args.seed)
    report = data.validate_dataset(out, method=args.method)
    print(report.summary(), file=sys.stderr)
    print(out)
    return 0 if report.ok else 1


def cmd_rewards(args) -> int:
    from . import rewards

    found = rewards.available(args.file)
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    for item in found:
        print(f"{item['name']:32} {item['source']:12} {item['description']}")
    return 0


def add_commands(subparsers) -> None:
    """Add `sample-data` and `rewards`, and method options to the `train <method>` parsers."""
    from . import methods

    p = subparsers.add_parser("sample-data", help="write a small valid train/valid/test set for a method")
    p.add_argument("method", help="sft, grpo, gspo, dr_grpo, bnpo, dapo, dpo, orpo or cpo")
    p.add_argument("--out", required=True, help="folder to write train.jsonl, valid.jsonl, test.jsonl into")
    p.add_argument("--train-rows", type=int, default=40)
    p.add_argument("--valid-rows", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_sample_data)

    p = subparsers.add_parser("rewards", help="list the reward functions GRPO runs can use")
    p.add_argument("--file", help="also list the functions of this reward file (read, not run)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_rewards)

    train = subparsers.choices.get("train")
    if train is None:
        return
    for action in train._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, method_parser in action.choices.items():
                try:
                    method = methods.get(name)
                except KeyError:
                    continue
                if method.family in ("grpo", "preference"):
                    method_options(method_parser, method.config_class)
