"""Typed run configs, validated at the boundary.

A config maps 1:1 to the YAML that `mlx_lm lora -c` reads (same key names), so a
stock mlx-lm config file loads here and a droidft config prints back as the
equivalent stock command line. Every method's config subclasses `BaseConfig`.
"""

from __future__ import annotations

import dataclasses
import math
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

FINE_TUNE_TYPES = ("lora", "dora", "full")
OPTIMIZERS = ("adam", "adamw", "sgd", "adafactor", "muon")
LR_SCHEDULES = ("constant", "cosine_decay", "linear_schedule", "exponential_decay", "step_decay")

# mlx-lm YAML keys droidft accepts but manages itself (the run folder holds adapters,
# reporting goes to DuckDB), so they are read and ignored rather than refused.
MANAGED_KEYS = {
    "train", "test", "test_batches", "adapter_path", "config", "report_to",
    "project_name", "trust_remote_code", "clear_cache_threshold", "hf_dataset",
}


class ConfigError(ValueError):
    """A config that cannot run; `problems` lists every reason, each with its fix."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _positive_int(problems: list[str], name: str, value, allow_none=False, minimum=1):
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        problems.append(f"{name} must be a whole number >= {minimum} (got {value!r})")


def _finite(problems: list[str], name: str, value, low=None, high=None, low_open=False):
    if not _is_number(value) or not math.isfinite(value):
        problems.append(f"{name} must be a finite number (got {value!r})")
        return
    if low is not None and (value <= low if low_open else value < low):
        problems.append(f"{name} must be {'>' if low_open else '>='} {low} (got {value!r})")
    if high is not None and value > high:
        problems.append(f"{name} must be <= {high} (got {value!r})")


TYPE_WORDS = {"str": "text", "int": "a whole number", "float": "a number", "bool": "true or false",
              "None": "empty", "list": "a list", "dict": "a mapping", "LoraParameters": "a lora_parameters mapping"}


def _has_type(value, declared: str) -> bool:
    base = declared.split("[")[0]
    if base == "None":
        return value is None
    if base == "bool":
        return isinstance(value, bool)
    if base == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if base == "float":
        return _is_number(value)
    if base == "str":
        return isinstance(value, str)
    if base == "list":
        inner = declared[len("list["):-1] if "[" in declared else ""
        return isinstance(value, list) and (inner != "str" or all(isinstance(v, str) for v in value))
    if base == "dict":
        return isinstance(value, dict)
    if base == "LoraParameters":
        return isinstance(value, LoraParameters)
    return True


@dataclass
class LoraParameters:
    """Adapter shape: mlx-lm's `lora_parameters` block."""

    rank: int = 8
    scale: float = 20.0
    dropout: float = 0.0
    keys: list[str] | None = None  # which linear layers get adapters; None = all linear layers

    def problems(self) -> list[str]:
        out: list[str] = []
        if self.keys is not None and not isinstance(self.keys, list):
            return ["lora keys must be a list of layer names such as ['self_attn.q_proj']"]
        _positive_int(out, "lora rank", self.rank)
        _finite(out, "lora scale (alpha)", self.scale, low=0, low_open=True)
        _finite(out, "lora dropout", self.dropout, low=0, high=0.99)
        if self.keys is not None and (
            not isinstance(self.keys, list) or not all(isinstance(k, str) and k for k in self.keys)
        ):
            out.append("lora keys must be a list of layer names such as ['self_attn.q_proj']")
        return out


@dataclass
class BaseConfig:
    """What every training method shares: model, data, run bookkeeping and LoRA shape."""

    method: ClassVar[str] = "base"

    model: str = "demo"
    data: str = "demo"
    name: str | None = None
    fine_tune_type: str = "lora"
    num_layers: int = -1
    lora_parameters: LoraParameters = field(default_factory=LoraParameters)
    seed: int = 0
    quantize_bits: int | None = None  # QLoRA: quantise the base to this many bits first
    quantize_group_size: int = 64
    resume_adapter_file: str | None = None
    start_step: int = 0  # a resumed run continues its parent's step count
    blas: str = "auto"  # auto | openblas | reference (Linux only; macOS uses Metal)
    # Data-parallel training through `mlx.launch` (rank 0 must run on this machine: it
    # writes the store). batch_size stays the global batch, split evenly over ranks.
    hosts: list[str] | None = None  # e.g. ["127.0.0.1", "10.0.0.7"]; None = this machine only
    hostfile: str | None = None  # an mlx.launch hostfile (JSON), instead of hosts
    ranks_per_host: int = 1
    distributed_backend: str = "ring"  # ring (TCP) | mpi
    # Early stopping: end the run (as completed) after this many validations in a row that do
    # not improve the validation metric (loss; reward for GRPO and KLPO) by more than the min delta.
    early_stop_patience: int | None = None
    early_stop_min_delta: float = 0.0

    # -- construction -------------------------------------------------------------

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "BaseConfig":
        """Build from a (YAML) dict; unknown keys are an error naming the keys."""
        values = {k.replace("-", "_"): v for k, v in dict(values or {}).items()}
        values.pop("method", None)
        unknown = sorted(set(values) - cls.field_names() - MANAGED_KEYS)
        if unknown:
            raise ConfigError(
                [f"unknown option(s) for {cls.method}: {', '.join(unknown)}"
                 f" (known: {', '.join(sorted(cls.field_names()))})"]
            )
        kwargs = {k: v for k, v in values.items() if k in cls.field_names()}
        lora = kwargs.get("lora_parameters")
        if isinstance(lora, dict):
            extra = sorted(set(lora) - {f.name for f in dataclasses.fields(LoraParameters)})
            if extra:
                raise ConfigError([f"unknown lora_parameters key(s): {', '.join(extra)}"])
            kwargs["lora_parameters"] = LoraParameters(**lora)
        elif lora is not None and not isinstance(lora, LoraParameters):
            raise ConfigError(["lora_parameters must be a mapping with rank, scale, dropout"])
        return cls(**kwargs)

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides) -> "BaseConfig":
        """Load the same YAML `mlx_lm lora -c` takes; command-line overrides win."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError([f"config file not found: {path}"])
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError([f"{path} is not valid YAML: {exc}"]) from None
        if not isinstance(values, dict):
            raise ConfigError([f"{path} must hold a mapping of options, not {type(values).__name__}"])
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(values)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["method"] = self.method
        return out

    def replace(self, **changes) -> "BaseConfig":
        return dataclasses.replace(self, **changes)

    # -- validation ---------------------------------------------------------------

    def type_problems(self) -> list[str]:
        """Values of the wrong kind (a YAML typo, a form bug), named per field. Checked
        first: the value checks below assume each field has its declared type."""
        out = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            allowed = [t.strip() for t in str(f.type).split("|")]
            if not any(_has_type(value, t) for t in allowed):
                kinds = " or ".join(TYPE_WORDS.get(t.split("[")[0], t) for t in allowed)
                out.append(f"{f.name} must be {kinds} (got {value!r})")
        return out

    def problems(self) -> list[str]:
        """Every reason this config cannot run; empty when it can."""
        typed = self.type_problems()
        if typed:
            return typed
        out: list[str] = []
        for name in ("model", "data"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name).strip():
                out.append(f"{name} must be given (use 'demo' for the built-in one)")
        if self.fine_tune_type not in FINE_TUNE_TYPES:
            out.append(f"fine_tune_type must be one of {', '.join(FINE_TUNE_TYPES)} (got {self.fine_tune_type!r})")
        if not isinstance(self.num_layers, int) or isinstance(self.num_layers, bool) or (
            self.num_layers != -1 and self.num_layers < 1
        ):
            out.append(f"num_layers must be -1 (all layers) or a whole number >= 1 (got {self.num_layers!r})")
        if self.fine_tune_type != "full":
            out += self.lora_parameters.problems()
        _positive_int(out, "seed", self.seed, minimum=0)
        if self.quantize_bits is not None:
            if self.quantize_bits not in (2, 3, 4, 5, 6, 8):
                out.append(f"quantize_bits must be one of 2, 3, 4, 5, 6, 8 (got {self.quantize_bits!r})")
            if self.fine_tune_type == "full":
                out.append("full fine-tuning cannot train a quantised base: use lora or dora for QLoRA")
            if self.quantize_group_size not in (32, 64, 128):
                out.append(f"quantize_group_size must be 32, 64 or 128 (got {self.quantize_group_size!r})")
        if self.blas not in ("auto", "openblas", "reference"):
            out.append(f"blas must be auto, openblas or reference (got {self.blas!r})")
        _positive_int(out, "start_step", self.start_step, minimum=0)
        _positive_int(out, "early_stop_patience", self.early_stop_patience, allow_none=True)
        _finite(out, "early_stop_min_delta", self.early_stop_min_delta, low=0)
        out += self.distributed_problems()
        return out

    # -- distributed ------------------------------------------------------------------

    def world_size(self) -> int:
        """How many ranks train this run (1 = in-process, no mlx.launch)."""
        if self.hostfile:
            try:
                import json

                return max(1, len(json.loads(Path(self.hostfile).read_text()))) * self.ranks_per_host
            except (OSError, ValueError, TypeError):
                return 1
        return len(self.hosts or ["127.0.0.1"]) * self.ranks_per_host

    def distributed_problems(self) -> list[str]:
        out: list[str] = []
        _positive_int(out, "ranks_per_host", self.ranks_per_host)
        if self.distributed_backend not in ("ring", "mpi"):
            out.append(f"distributed_backend must be ring or mpi (got {self.distributed_backend!r})")
        if self.hosts is not None and (
            not isinstance(self.hosts, list) or not self.hosts
            or not all(isinstance(h, str) and h.strip() for h in self.hosts)
        ):
            out.append("hosts must be a list of host names or IP addresses, e.g. ['127.0.0.1', '10.0.0.7']")
        elif self.hosts:
            from .distributed import host_problem

            out += [f"hosts: {p}" for p in map(host_problem, self.hosts) if p]
        if self.hosts and self.hostfile:
            out.append("give hosts or a hostfile, not both")
        if self.hostfile and not Path(self.hostfile).is_file():
            out.append(f"hostfile not found: {self.hostfile}")
        elif self.hostfile:
            from .distributed import hostfile_problems

            out += hostfile_problems(self.hostfile)
        batch = getattr(self, "batch_size", None)
        ranks = self.world_size() if not out else 1
        if isinstance(batch, int) and ranks > 1 and batch % ranks:
            out.append(f"batch_size ({batch}) must be divisible by the number of ranks ({ranks}): "
                       f"each rank trains batch_size / ranks rows per step")
        return out

    def validate(self) -> "BaseConfig":
        problems = self.problems()
        if problems:
            raise ConfigError(problems)
        return self


def lr_schedule_for(cfg) -> dict | None:
    """The mlx-lm `lr_schedule` dict a config trains with: its own, or the `warmup_steps`
    shorthand expanded to a cosine decay with linear warmup over the whole run (for a
    resumed run: its parent's steps plus its own)."""
    if cfg.lr_schedule:
        return cfg.lr_schedule
    if cfg.warmup_steps:
        total = (getattr(cfg, "start_step", 0) or 0) + cfg.iters
        return {"name": "cosine_decay", "arguments": [cfg.learning_rate, total],
                "warmup": cfg.warmup_steps, "warmup_init": 0.0}
    return None


def continued_schedule(schedule: dict, start_step: int):
    """An mlx-lm schedule that picks up at `start_step`: a resumed run continues its
    parent's warmup and decay instead of starting them over (mlx-lm's checkpoints hold
    the adapter weights, not the optimizer's step)."""
    from mlx_lm.tuner.utils import build_schedule

    base = build_schedule(schedule)
    return base if not start_step else (lambda step: base(step + start_step))


def training_loop_problems(cfg, optimizers=OPTIMIZERS) -> list[str]:
    """Checks of the fields every trainer loop shares (optimizer, schedule, batch, cadence),
    for SFT and the mlx-lm-lora methods alike. Assumes the fields are of their declared types."""
    out: list[str] = []
    if cfg.optimizer not in optimizers:
        out.append(f"optimizer must be one of {', '.join(optimizers)} (got {cfg.optimizer!r})")
    if not isinstance(cfg.optimizer_config, dict):
        out.append("optimizer_config must be a mapping such as {adamw: {weight_decay: 0.01}}")
    _positive_int(out, "batch_size", cfg.batch_size)
    _positive_int(out, "iters", cfg.iters)
    if cfg.epochs is not None:
        _finite(out, "epochs", cfg.epochs, low=0, low_open=True)
    _finite(out, "learning_rate", cfg.learning_rate, low=0, low_open=True, high=10)
    _positive_int(out, "warmup_steps", cfg.warmup_steps, minimum=0)
    if isinstance(cfg.warmup_steps, int) and isinstance(cfg.iters, int) and cfg.epochs is None \
            and cfg.warmup_steps >= cfg.iters > 0:
        out.append(f"warmup_steps ({cfg.warmup_steps}) must be smaller than iters ({cfg.iters})")
    if cfg.lr_schedule is not None:
        if not isinstance(cfg.lr_schedule, dict) or "name" not in cfg.lr_schedule:
            out.append("lr_schedule must be a mapping with name and arguments, e.g. "
                       "{name: cosine_decay, arguments: [1e-5, 1000], warmup: 100}")
        elif cfg.lr_schedule["name"] not in LR_SCHEDULES:
            out.append(f"lr_schedule name must be one of {', '.join(LR_SCHEDULES)}")
    if not isinstance(cfg.val_batches, int) or isinstance(cfg.val_batches, bool) or (
        cfg.val_batches != -1 and cfg.val_batches < 1
    ):
        out.append(f"val_batches must be -1 (whole validation set) or >= 1 (got {cfg.val_batches!r})")
    for name in ("steps_per_report", "steps_per_eval", "save_every", "max_seq_length",
                 "grad_accumulation_steps"):
        _positive_int(out, name, getattr(cfg, name))
    return out


@dataclass
class SFTConfig(BaseConfig):
    """Supervised fine-tuning through mlx-lm's trainer (LoRA, DoRA, full, QLoRA)."""

    method: ClassVar[str] = "sft"

    optimizer: str = "adam"
    optimizer_config: dict[str, dict] = field(default_factory=dict)
    batch_size: int = 4
    iters: int = 200
    epochs: float | None = None  # when set, iters = ceil(epochs * train rows / batch_size)
    learning_rate: float = 1e-4
    lr_schedule: dict | None = None  # mlx-lm form: {name, arguments, warmup, warmup_init}
    warmup_steps: int = 0  # shorthand: builds a cosine/constant schedule with linear warmup
    val_batches: int = 25
    steps_per_report: int = 10
    steps_per_eval: int = 50
    save_every: int = 100
    max_seq_length: int = 2048
    grad_accumulation_steps: int = 1
    grad_checkpoint: bool = False
    mask_prompt: bool = False

    def problems(self) -> list[str]:
        out = super().problems()
        if out and self.type_problems():
            return out
        return out + training_loop_problems(self, OPTIMIZERS)

    def schedule(self) -> dict | None:
        return lr_schedule_for(self)

    # -- the stock mlx-lm equivalent ------------------------------------------------

    def mlx_lm_args(self, model_path: str, data_path: str, adapter_path: str) -> dict[str, Any]:
        """The namespace `mlx_lm.lora.train_model` expects, key for key."""
        from mlx_lm.lora import CONFIG_DEFAULTS

        args = dict(CONFIG_DEFAULTS)
        lora = dataclasses.asdict(self.lora_parameters)
        if lora.get("keys") is None:
            lora.pop("keys")
        args.update(
            model=model_path, data=data_path, adapter_path=adapter_path, train=True,
            fine_tune_type=self.fine_tune_type, optimizer=self.optimizer,
            optimizer_config={**CONFIG_DEFAULTS["optimizer_config"], **self.optimizer_config},
            seed=self.seed, num_layers=self.num_layers, batch_size=self.batch_size,
            iters=self.iters, val_batches=self.val_batches, learning_rate=self.learning_rate,
            steps_per_report=self.steps_per_report, steps_per_eval=self.steps_per_eval,
            save_every=self.save_every, max_seq_length=self.max_seq_length,
            grad_checkpoint=self.grad_checkpoint,
            grad_accumulation_steps=self.grad_accumulation_steps,
            lr_schedule=self.schedule(), lora_parameters=lora, mask_prompt=self.mask_prompt,
            resume_adapter_file=self.resume_adapter_file,
        )
        return args

    def to_mlx_lm_yaml(self, model_path: str, data_path: str, adapter_path: str = "adapters") -> str:
        """A config file stock `mlx_lm lora -c FILE` trains identically from."""
        args = self.mlx_lm_args(model_path, data_path, adapter_path)
        for key in ("config", "report_to", "project_name", "test", "test_batches",
                    "clear_cache_threshold", "trust_remote_code"):
            args.pop(key, None)
        if args.get("resume_adapter_file") is None:
            args.pop("resume_adapter_file", None)
        if args.get("lr_schedule") is None:
            args.pop("lr_schedule", None)
        return yaml.safe_dump(args, sort_keys=False)

    def to_mlx_lm_command(self, model_path: str, data_path: str, adapter_path: str = "adapters",
                          config_file: str = "mlx_lm_config.yaml") -> str:
        """The equivalent stock command. Flags where mlx-lm has them; the adapter shape and
        schedule only exist in YAML, so those go through `-c` when they differ from defaults."""
        from mlx_lm.lora import CONFIG_DEFAULTS

        parts = ["mlx_lm", "lora", "--model", model_path, "--train", "--data", data_path,
                 "--fine-tune-type", self.fine_tune_type, "--optimizer", self.optimizer,
                 "--num-layers", str(self.num_layers), "--batch-size", str(self.batch_size),
                 "--iters", str(self.iters), "--val-batches", str(self.val_batches),
                 "--learning-rate", repr(self.learning_rate),
                 "--steps-per-report", str(self.steps_per_report),
                 "--steps-per-eval", str(self.steps_per_eval),
                 "--save-every", str(self.save_every), "--max-seq-length", str(self.max_seq_length),
                 "--grad-accumulation-steps", str(self.grad_accumulation_steps),
                 "--adapter-path", adapter_path, "--seed", str(self.seed)]
        if self.mask_prompt:
            parts.append("--mask-prompt")
        if self.grad_checkpoint:
            parts.append("--grad-checkpoint")
        if self.resume_adapter_file:
            parts += ["--resume-adapter-file", self.resume_adapter_file]
        lora = dataclasses.asdict(self.lora_parameters)
        needs_yaml = self.schedule() is not None or self.optimizer_config or (
            self.fine_tune_type != "full"
            and {k: v for k, v in lora.items() if v is not None} != CONFIG_DEFAULTS["lora_parameters"]
        )
        if needs_yaml:
            parts[2:2] = ["-c", config_file]
        return shlex.join(parts)
