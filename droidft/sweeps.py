"""Hyper-parameter sweeps: grid or random search over any config field, queued as one group.

A sweep is a base config plus a `SweepSpec`: a grid (`learning_rate=1e-4,3e-4`) whose
combinations are all tried, and/or `random` samples drawn from ranges (`learning_rate=1e-5:1e-3:log`),
crossed with the grid. Every trial's config is validated before any run is queued, so a bad
value never leaves half a sweep behind. The trials go into the run queue (droidft.queue) with
the sweep's id, and `summary` reads back each trial's settings and results with the best
trial marked: lowest validation loss, or highest validation reward for the GRPO family and KLPO.
No trial is stopped early by the sweep itself (no successive halving); each run's own
`early_stop_patience` applies.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
import types
import typing
from dataclasses import dataclass, field

from . import jobs, queue, store

MAX_TRIALS = 64
ALIASES = {"rank": "lora_parameters.rank", "scale": "lora_parameters.scale", "alpha": "lora_parameters.scale",
           "dropout": "lora_parameters.dropout", "lr": "learning_rate"}
# Where the result of a trial is read: (metric, higher is better), by method family; the same
# metric each family's runs keep their best adapter by (methods/*.py: RLCallback best_metric).
OBJECTIVES = {"grpo": ("val_total_rewards_mean", True), "klpo": ("val_reward_mean", True)}
DEFAULT_OBJECTIVE = ("val_loss", False)
RESULT_METRICS = ("val_loss", "train_loss", "val_total_rewards_mean", "val_reward_mean", "val_accuracies")
HIGHER_IS_BETTER = {"val_total_rewards_mean", "val_reward_mean", "val_accuracies"}


class SweepError(ValueError):
    """A sweep that cannot be run; the message says which setting and why."""


@dataclass
class SweepSpec:
    """What to vary: grid values per field, and ranges to sample `random` times."""

    grid: dict[str, list] = field(default_factory=dict)
    ranges: dict[str, tuple[float, float, bool]] = field(default_factory=dict)  # lo, hi, log
    random: int = 0
    seed: int = 0

    def keys(self) -> list[str]:
        return list(self.grid) + [k for k in self.ranges if k not in self.grid]

    def to_dict(self) -> dict:
        return {"grid": self.grid, "ranges": {k: list(v) for k, v in self.ranges.items()},
                "random": self.random, "seed": self.seed}


# --------------------------------------------------------------------------- fields and values


def canonical(key: str) -> str:
    key = key.strip().replace("-", "_")
    return ALIASES.get(key, key)


def field_type(config_class, key: str):
    """The declared type of a (dotted) config field, Optional unwrapped; SweepError if none."""
    if canonical(key) in ("model", "data", "name"):
        raise SweepError(f"'{key}' cannot be swept: a sweep compares settings on one model and dataset")
    cls, parts = config_class, canonical(key).split(".")
    tp = None
    for i, part in enumerate(parts):
        hints = typing.get_type_hints(cls) if dataclasses.is_dataclass(cls) else {}
        names = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
        if part not in names:
            known = ", ".join(sorted(names)) if names else "none"
            raise SweepError(f"'{key}' is not a setting of {config_class.method} "
                             f"(known{' in ' + '.'.join(parts[:i]) if i else ''}: {known})")
        tp = hints[part]
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1:
            tp = args[0]
        cls = tp
    return tp


def parse_value(text, tp, key: str):
    """A typed value for a field from text (numbers like 1e-4 too, which YAML reads as text)."""
    import yaml

    if not isinstance(text, str):
        return text
    raw = text.strip()
    if raw.lower() in ("none", "null", "~") or raw == "":
        return None
    try:
        if tp is int:
            return int(raw)
        if tp is float:
            return float(raw)
    except ValueError:
        kind = "a whole number" if tp is int else "a number"
        raise SweepError(f"{key}: {raw!r} is not {kind}") from None
    if tp is str:
        return raw
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        raise SweepError(f"{key}: cannot read {raw!r}") from None


def parse_grid(items: list[str], config_class) -> dict[str, list]:
    """["learning_rate=1e-4,3e-4", "rank=4,8"] -> {field: [typed values]}."""
    grid: dict[str, list] = {}
    for item in items or []:
        key, sep, values = item.partition("=")
        if not sep or not values.strip():
            raise SweepError(f"--grid {item!r}: write KEY=V1,V2 (e.g. learning_rate=1e-4,3e-4)")
        name = canonical(key)
        tp = field_type(config_class, name)
        parsed = [parse_value(v, tp, name) for v in values.split(",") if v.strip()]
        grid[name] = list(dict.fromkeys(parsed))  # repeats would only repeat trials
    return grid


def parse_ranges(items: list[str], config_class) -> dict[str, tuple[float, float, bool]]:
    """["learning_rate=1e-5:1e-3:log"] -> {field: (lo, hi, log)} for numeric fields."""
    ranges = {}
    for item in items or []:
        key, sep, rest = item.partition("=")
        parts = rest.split(":")
        if not sep or len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("log", "lin")):
            raise SweepError(f"--range {item!r}: write KEY=LO:HI or KEY=LO:HI:log")
        name = canonical(key)
        tp = field_type(config_class, name)
        if tp not in (int, float):
            raise SweepError(f"--range {name}: only numeric settings can be sampled from a range")
        lo, hi = (parse_value(p, float, name) for p in parts[:2])
        log = len(parts) == 3 and parts[2] == "log"
        if lo is None or hi is None or not lo < hi:
            raise SweepError(f"--range {name}: LO must be smaller than HI (got {parts[0]}:{parts[1]})")
        if log and lo <= 0:
            raise SweepError(f"--range {name}: a log range needs LO > 0")
        ranges[name] = (lo, hi, log)
    return ranges


def _sample(rng: random.Random, lo: float, hi: float, log: bool, tp):
    value = math.exp(rng.uniform(math.log(lo), math.log(hi))) if log else rng.uniform(lo, hi)
    if tp is int:
        return int(round(value))
    return float(f"{value:.3g}")  # readable in tables and run names


def trials(config_class, spec: SweepSpec) -> list[dict]:
    """The settings of every trial: each grid combination, crossed with `random` samples."""
    if spec.ranges and spec.random < 1:
        raise SweepError("ranges need a number of random trials (--random N)")
    if spec.random and not spec.ranges:
        raise SweepError("--random needs at least one --range KEY=LO:HI[:log] to sample")
    if not spec.grid and not spec.ranges:
        raise SweepError("nothing to sweep: give --grid KEY=V1,V2 and/or --random N --range KEY=LO:HI")
    keys = list(spec.grid)
    combos = [dict(zip(keys, values)) for values in itertools.product(*(spec.grid[k] for k in keys))]
    if spec.random:
        rng = random.Random(spec.seed)
        samples = [{k: _sample(rng, lo, hi, log, field_type(config_class, k))
                    for k, (lo, hi, log) in spec.ranges.items()} for _ in range(spec.random)]
        combos = [{**c, **s} for c in combos for s in samples]
    if len(combos) > MAX_TRIALS:
        raise SweepError(f"this sweep makes {len(combos)} trials; at most {MAX_TRIALS} are allowed "
                         "(fewer values, or random search)")
    return combos


def get_dotted(values: dict, key: str):
    for part in key.split("."):
        values = (values or {}).get(part) if isinstance(values, dict) else None
    return values


def apply(config, settings: dict):
    """A copy of `config` with dotted settings applied, validated (ConfigError names the field)."""
    values = config.to_dict()
    for key, value in settings.items():
        target = values
        *parents, last = key.split(".")
        for part in parents:
            if not isinstance(target.get(part), dict):
                target[part] = {}
            target = target[part]
        target[last] = value
    return type(config).from_dict(values).validate()


def trial_name(base_name: str, settings: dict) -> str:
    parts = [f"{k.split('.')[-1]}={_short(v)}" for k, v in settings.items()]
    return f"{base_name} · {' '.join(parts)}"


def _short(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


# --------------------------------------------------------------------------- running


def start(config, spec: SweepSpec, name: str | None = None) -> tuple[str, list[str]]:
    """Validate every trial, record the sweep and queue its runs. Returns (sweep id, run ids)."""
    config = config.validate()
    settings_list = trials(type(config), spec)
    configs = []
    for settings in settings_list:
        try:
            trial = apply(config, settings)
        except ValueError as exc:  # ConfigError: say which trial
            raise SweepError(f"trial {settings} is not a valid config: {exc}") from None
        configs.append((settings, trial))
    base_name = name or config.name or f"sweep {config.method}"
    sweep_id = store.create_sweep(method=config.method, name=base_name, spec={
        **spec.to_dict(), "base": config.to_dict(), "keys": spec.keys()})
    run_ids = []
    for settings, trial in configs:
        run_ids.append(jobs.start(trial.replace(name=trial_name(base_name, settings)), sweep_id=sweep_id))
    return sweep_id, run_ids


def objective(method: str) -> tuple[str, bool]:
    """(metric, higher is better) that ranks a method's trials."""
    from . import methods

    try:
        family = methods.get(method).family
    except KeyError:
        family = method
    return OBJECTIVES.get(family, DEFAULT_OBJECTIVE)


def summary(sweep_id: str) -> dict:
    """A sweep with its trials: settings, status, final and best validation loss, best reward
    and final preference accuracy where reported, and the best trial's id."""
    found = store.sweeps(sweep_id)
    if not found:
        raise SweepError(f"No sweep '{sweep_id}'. `droidft sweep list` lists them.")
    sweep = found[0]
    spec = sweep.get("spec") or {}
    keys = spec.get("keys") or list((spec.get("grid") or {})) + list((spec.get("ranges") or {}))
    runs = sorted((r for r in jobs.list_runs() if r.get("sweep_id") == sweep_id),
                  key=lambda r: (r.get("created_at") or 0, r["id"]))
    positions = queue.positions()
    frame = store.metrics_frame([r["id"] for r in runs], names=list(RESULT_METRICS)) if runs else None
    metric, higher = objective(sweep.get("method") or "")
    out = []
    for run in runs:
        rows = frame[frame["run_id"] == run["id"]] if frame is not None else None
        trial = {"run_id": run["id"], "name": run.get("name"), "status": run.get("status"),
                 "queue_position": positions.get(run["id"]),
                 "settings": {k: get_dotted(run.get("config") or {}, k) for k in keys}}
        for name in RESULT_METRICS:
            series = rows[rows["name"] == name].sort_values("step") if rows is not None else None
            if series is not None and len(series):
                trial[f"final_{name}"] = float(series["value"].iloc[-1])
                trial[f"best_{name}"] = float(series["value"].max() if name in HIGHER_IS_BETTER
                                              else series["value"].min())
        trial["objective"] = trial.get(f"best_{metric}")
        out.append(trial)
    scored = [t for t in out if t["objective"] is not None and math.isfinite(t["objective"])
              and t["status"] == "completed"]
    best = (max if higher else min)(scored, key=lambda t: t["objective"]) if scored else None
    for t in out:
        t["best"] = best is not None and t["run_id"] == best["run_id"]
    return {"id": sweep_id, "name": sweep.get("name"), "method": sweep.get("method"),
            "created_at": sweep.get("created_at"), "keys": keys, "spec": spec,
            "objective": {"metric": metric, "higher_is_better": higher},
            "trials": out, "best": best["run_id"] if best else None,
            "done": sum(t["status"] in jobs.TERMINAL for t in out), "total": len(out)}


def list_sweeps() -> list[dict]:
    """Every sweep (newest first) with its trial count and how many have ended."""
    runs = jobs.list_runs()
    out = []
    for sweep in store.sweeps():
        mine = [r for r in runs if r.get("sweep_id") == sweep["id"]]
        out.append({"id": sweep["id"], "name": sweep.get("name"), "method": sweep.get("method"),
                    "created_at": sweep.get("created_at"), "trials": len(mine),
                    "done": sum(r["status"] in jobs.TERMINAL for r in mine)})
    return out
