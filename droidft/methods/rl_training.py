"""What every mlx-lm-lora trainer run shares: the GRPO family (grpo.py, klpo.py), the
preference methods (preference.py, dsla.py, ftpo.py) and the online ones (online.py).

- `RLTrainingConfig`: the training-loop fields, their checks, and the equivalent stock
  `mlx_lm_lora.train` options/command;
- model setup: the policy (LoRA/DoRA or full), the frozen reference, the optimizer, the
  adapter_config.json stock mlx-lm reads, warm-start and resume weights;
- the run glue: `RLCallback` (reported numbers -> metric rows, best adapter), the stop-aware
  batch iterator, and `train_with_store`, which runs a trainer and records checkpoints, the
  final adapter and the best one.

Each method module keeps only its own config fields and the trainer call.
"""

from __future__ import annotations

import dataclasses
import json
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from .. import data as datasets
from .. import paths
from ..config import (
    OPTIMIZERS, BaseConfig, _finite, continued_schedule, lr_schedule_for, training_loop_problems)
from ..reporting import RunContext, StoreCallback, checkpoint_recorder

TRAINER_OPTIMIZERS = OPTIMIZERS


# -- the config ----------------------------------------------------------------------------


@dataclass
class RLTrainingConfig(BaseConfig):
    """Training-loop fields every mlx-lm-lora method shares (GRPO family and preference)."""

    method: ClassVar[str] = "rl"
    # Fields a method fixes (e.g. gspo = sequence-level importance sampling): name -> value.
    LOCKED: ClassVar[dict[str, Any]] = {}
    DEMO_FOLDER: ClassVar[str] = "preference"  # data/demo/<this> is the method's demo set
    # Why the method cannot train data-parallel under mlx.launch (None: it can; see
    # distributed.py): mlx-lm-lora's GRPO iterator gives each rank its own rows and the
    # trainer averages gradients; DPO/ORPO/CPO's iterators give every rank the same rows.
    DISTRIBUTED_REFUSAL: ClassVar[str | None] = (
        "mlx-lm-lora's batch iterator for it gives every rank the same rows (it has no rank "
        "offset), so N ranks would average N copies of one part of the batch")

    optimizer: str = "adam"
    optimizer_config: dict[str, dict] = field(default_factory=dict)
    # Defaults make the one-click demo (demo model + demo data) a ~1-2 minute run on a laptop
    # CPU whose reward visibly rises; real models want more iterations.
    batch_size: int = 4
    iters: int = 60
    epochs: float | None = None  # when set, iters = ceil(epochs * train rows / batch_size)
    learning_rate: float = 1e-4
    lr_schedule: dict | None = None
    warmup_steps: int = 0
    val_batches: int = 2
    steps_per_report: int = 5
    steps_per_eval: int = 20
    save_every: int = 20
    max_seq_length: int = 512
    grad_accumulation_steps: int = 1
    grad_checkpoint: bool = False
    beta: float = 0.1
    reference_model: str | None = None  # None: the base model itself (where one is needed)

    def problems(self) -> list[str]:
        out = super().problems()
        if out and self.type_problems():
            return out  # the checks below assume each field has its declared type
        out += training_loop_problems(self, TRAINER_OPTIMIZERS)
        _finite(out, "beta", self.beta, low=0)
        if self.reference_model is not None and (
                not isinstance(self.reference_model, str) or not self.reference_model.strip()):
            out.append("reference_model must be a model ('demo', a folder or a downloaded hub id) or unset")
        if self.DISTRIBUTED_REFUSAL and not self.distributed_problems() and self.world_size() > 1:
            out.append(f"{self.method} trains on one machine: {self.DISTRIBUTED_REFUSAL}. Unset "
                       "hosts, hostfile and ranks_per_host")
        for name, value in self.LOCKED.items():
            if getattr(self, name) != value:
                out.append(f"{self.method} means {name}={value!r} (got {getattr(self, name)!r}); "
                           f"use the grpo method to combine options freely")
        return out

    def schedule(self) -> dict | None:
        return lr_schedule_for(self)

    # -- the stock mlx-lm-lora equivalent -------------------------------------------------

    TRAIN_MODE: ClassVar[str] = "grpo"

    def mlx_lm_lora_args(self, model_path: str, data_path: str, adapter_path: str) -> tuple[dict, list[str]]:
        """The `mlx_lm_lora.train` options this config trains with, and notes on what the
        stock trainer cannot express."""
        lora = lora_dict(self)
        args = {
            "model": model_path, "train": True, "data": data_path, "adapter_path": adapter_path,
            "train_mode": self.TRAIN_MODE, "train_type": self.fine_tune_type, "fuse": False,
            "optimizer": self.optimizer, "optimizer_config": self.optimizer_config or {},
            "seed": self.seed, "num_layers": self.num_layers, "batch_size": self.batch_size,
            "iters": self.iters, "gradient_accumulation_steps": self.grad_accumulation_steps,
            "val_batches": self.val_batches, "learning_rate": self.learning_rate,
            "steps_per_report": self.steps_per_report, "steps_per_eval": self.steps_per_eval,
            "save_every": self.save_every, "max_seq_length": self.max_seq_length,
            "grad_checkpoint": self.grad_checkpoint, "beta": self.beta,
            "lora_parameters": {k: v for k, v in lora.items() if k != "keys"},
        }
        notes = []
        if self.schedule():
            args["lr_schedule"] = self.schedule()
        if self.resume_adapter_file:
            args["resume_adapter_file"] = self.resume_adapter_file
        if self.reference_model:
            from ..models import resolve_model

            args["reference_model_path"] = str(resolve_model(self.reference_model))
        if self.optimizer not in ("adam", "adamw", "muon"):
            notes.append(f"mlx-lm-lora has no {self.optimizer} optimizer (adam, adamw, muon only)")
        if lora.get("keys"):
            notes.append("mlx-lm-lora adapts every linear layer; lora keys cannot be chosen there")
        return args, notes

    def to_mlx_lm_yaml(self, model_path: str, data_path: str, adapter_path: str = "adapters") -> str:
        """A config file for stock `mlx_lm_lora.train -c FILE` (see to_mlx_lm_command)."""
        import yaml

        args, notes = self.mlx_lm_lora_args(model_path, data_path, adapter_path)
        head = "".join(f"# note: {n}\n" for n in notes)
        return head + yaml.safe_dump(args, sort_keys=False)

    def to_mlx_lm_command(self, model_path: str, data_path: str, adapter_path: str = "adapters",
                          config_file: str = "mlx_lm_lora_config.yaml") -> str:
        """The equivalent stock command. Options whose mlx-lm-lora flag has a non-empty default
        must be flags (its YAML loader only fills options left unset); the rest, and what has
        no flag (lora_parameters, schedule, fuse: false), go in the YAML file."""
        import shlex

        from mlx_lm_lora.train import build_parser

        args, _ = self.mlx_lm_lora_args(model_path, data_path, adapter_path)
        parser = build_parser()
        parts = ["mlx_lm_lora.train", "-c", config_file, "--train"]
        for action in parser._actions:
            key = action.dest
            if key not in args or key in ("train", "config") or action.default is None:
                continue
            value = args[key]
            flag = max(action.option_strings, key=len)
            if isinstance(value, bool):
                if value:
                    parts.append(flag)
            elif value is not None and not isinstance(value, (dict, list)):
                parts += [flag, str(value)]
        return shlex.join(parts)

    def is_demo_data(self) -> bool:
        """The bundled demo set of this method's family ("demo" or its folder)."""
        data = str(self.data).strip()
        if data == "demo":
            return True
        try:
            return Path(data).expanduser().resolve() == (paths.DATA_DIR / "demo" / self.DEMO_FOLDER).resolve()
        except (OSError, ValueError):
            return False



# -- models, optimizer, adapter files ----------------------------------------------------


class StopTraining(Exception):
    """Raised from the batch iterator when a stop was requested; carries the steps done."""

    def __init__(self, done: int):
        super().__init__(f"stopped after step {done}")
        self.done = done


def resolve_data(config) -> Path:
    """The dataset folder for a config ("demo" = the method family's demo set); jobs.start
    has validated it for the method already."""
    return Path(datasets.resolve_dataset(config.data, method=config.method))


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def lora_dict(config) -> dict:
    lora = dataclasses.asdict(config.lora_parameters)
    if lora.get("keys") is None:
        lora.pop("keys")
    return lora


def make_trainable(model, config) -> None:
    """Freeze the base and add LoRA/DoRA layers, or unfreeze the top layers for full training
    (exactly what `mlx_lm.lora.train_model` does, so stock mlx-lm loads the result)."""
    from mlx_lm.tuner.utils import linear_to_lora_layers

    model.freeze()
    if config.num_layers > len(model.layers):
        raise ValueError(f"num_layers is {config.num_layers} but the model has only "
                         f"{len(model.layers)} layers: use -1 for all of them")
    if config.fine_tune_type == "full":
        for layer in model.layers[-max(config.num_layers, 0):]:
            layer.unfreeze()
    else:
        linear_to_lora_layers(model, config.num_layers, lora_dict(config),
                              use_dora=config.fine_tune_type == "dora")


def write_adapter_config(config, adapter_dir: Path, model_path: Path) -> Path:
    """The adapter_config.json stock `mlx_lm.load(..., adapter_path=)` reads."""
    adapter_dir.mkdir(parents=True, exist_ok=True)
    cfg = {"model": str(model_path), "fine_tune_type": config.fine_tune_type,
           "num_layers": config.num_layers,
           "lora_parameters": None if config.fine_tune_type == "full" else lora_dict(config),
           "train_mode": config.TRAIN_MODE, "droidft_method": config.method}
    path = adapter_dir / "adapter_config.json"
    path.write_text(json.dumps(cfg, indent=2))
    return path


def load_policy(config, model_path: Path):
    """Base model + tokenizer (with a chat template), made trainable per the config."""
    from mlx_lm.utils import load
    from mlx_lm_lora.chat_template import ensure_chat_template

    model, tokenizer = load(str(model_path))
    ensure_chat_template(tokenizer)
    make_trainable(model, config)
    return model, tokenizer


def load_reference(config, model_path: Path, init_weights: str | None = None):
    """A frozen reference: `reference_model` if set, else the base model, carrying the
    initial (warm-start) weights so a KL term pulls toward where training started."""
    from mlx_lm.utils import load

    from ..models import resolve_model

    path = resolve_model(config.reference_model) if config.reference_model else model_path
    ref, _ = load(str(path))
    if init_weights and not config.reference_model:
        make_trainable(ref, config)
        ref.load_weights(init_weights, strict=False)
    ref.freeze()
    ref.eval()
    return ref


def build_optimizer(config):
    import mlx.optimizers as optim

    lr = (continued_schedule(config.schedule(), config.start_step) if config.schedule()
          else config.learning_rate)
    classes = {"adam": optim.Adam, "adamw": optim.AdamW, "sgd": optim.SGD,
               "adafactor": optim.Adafactor, "muon": optim.Muon}
    return classes[config.optimizer](learning_rate=lr, **config.optimizer_config.get(config.optimizer, {}))


@contextmanager
def patched(obj, name: str, value):
    original = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield original
    finally:
        setattr(obj, name, original)


@contextmanager
def cpu_safe_device_info():
    """mlx-lm-lora's preference trainers call `mx.set_wired_limit(mx.device_info()
    ["max_recommended_working_set_size"])`, a key only Metal devices have."""
    import mlx.core as mx

    info = mx.device_info()
    if "max_recommended_working_set_size" in info:
        yield
        return
    original = mx.device_info

    def device_info():
        return {**original(), "max_recommended_working_set_size": 0}

    with patched(mx, "device_info", device_info):
        yield


def stop_aware(iterate_batches, ctx: RunContext, on_step):
    """Wrap a trainer's batch iterator: training batches (`train=True`) are counted, `on_step`
    runs before each, and a stop request raises `StopTraining` between two steps. Works both
    for trainers that loop one generator (GRPO) and those that make one per step (DPO...)."""
    counter = {"it": 0}

    def wrapped(*args, **kwargs):
        if not kwargs.get("train", False):
            yield from iterate_batches(*args, **kwargs)
            return
        for batch in iterate_batches(*args, **kwargs):
            counter["it"] += 1
            on_step(counter["it"])
            if ctx.stop_now():
                raise StopTraining(counter["it"] - 1)
            yield batch

    return wrapped


class RLCallback(StoreCallback):
    """Every number the trainer reports -> metric rows; the best adapter by a chosen
    validation metric; optional hooks after each train/val report."""

    def __init__(self, ctx: RunContext, model, adapter_config: Path, best_metric: str = "val_loss",
                 higher_is_better: bool = False, drop: tuple = ()):
        super().__init__(ctx, model=model, adapter_config=adapter_config, best_metric=best_metric,
                         higher_is_better=higher_is_better)
        self.drop = set(drop)
        self.after_train_report = None
        self.extra_val: dict = {}

    def on_train_loss_report(self, info: dict):
        super().on_train_loss_report({k: v for k, v in info.items() if k not in self.drop})
        if self.after_train_report is not None:
            self.after_train_report(int(info.get("iteration", 0)))

    def on_val_loss_report(self, info: dict):
        # The trainer validates before step `it`, i.e. the model after it - 1 steps.
        step = max(0, int(info.get("iteration", 0)) - 1)
        values = {**info, **{f"val_{k}": v for k, v in self.extra_val.items()}}
        self.extra_val = {}
        for key, value in values.items():
            if key != "iteration" and key not in self.drop:
                self.ctx.metric(step, key, value)
        self.track_best(step, values.get(self.best_metric))  # best adapter, early stopping


def train_with_store(config, ctx: RunContext, model, model_path: Path, train, patches=()) -> None:
    """Run `train(iterate_wrapper)` with stop handling, then record checkpoints, the final
    adapter and the best one. `train` gets a function that wraps a batch iterator."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    save_every = config.save_every

    on_step = checkpoint_recorder(ctx, save_every)

    last = config.iters
    with ExitStack() as stack:
        stack.enter_context(cpu_safe_device_info())
        for obj, name, value in patches:
            stack.enter_context(patched(obj, name, value))
        try:
            train(lambda iterate: stop_aware(iterate, ctx, on_step))
        except StopTraining as stop:
            last = stop.done
            ctx.state["stopped_at"] = last
            ctx.log(f"{ctx.early_stop or 'stop requested'}: ending training after step {last}")
            if ctx.rank == 0:
                weights = dict(tree_flatten(model.trainable_parameters()))
                mx.save_safetensors(str(ctx.adapter_dir / "adapters.safetensors"), weights)

    ckpt = ctx.adapter_dir / f"{last:07d}_adapters.safetensors"
    if last and last % save_every == 0 and ckpt.exists():
        ctx.artifact(kind="checkpoint", path=str(ckpt), step=last + ctx.step_offset)
    ctx.artifact(kind="final_adapter", path=str(ctx.adapter_dir), step=last + ctx.step_offset,
                 meta={"fine_tune_type": config.fine_tune_type, "base_model": str(model_path),
                       "method": config.method})
    if "best" in ctx.state:
        step, value = ctx.state["best"]
        ctx.artifact(kind="best_adapter", path=str(ctx.adapter_dir / "best"), step=step,
                     meta={ctx.state.get("best_metric", "val_loss"): value})
    ctx.state["iters"] = last


def output_dir(ctx: RunContext) -> Path:
    """Where this rank's trainer writes adapters: the run's adapter folder on rank 0; a
    scratch folder on other ranks (mlx-lm-lora's trainers save on every rank, and two
    processes writing one file can leave it torn; distributed.run_rank deletes it)."""
    return ctx.adapter_dir if ctx.rank == 0 else ctx.run_dir / f"rank{ctx.rank}-adapters"


def steps_per_save(config, ctx: RunContext) -> int:
    """Checkpoint cadence for this rank: only rank 0's checkpoints are kept, so other ranks
    save once, at the end, instead of filling the disk with copies."""
    return config.save_every if ctx.rank == 0 else config.iters + 1


def seed_everything(seed: int) -> None:
    import mlx.core as mx
    import numpy as np

    mx.random.seed(seed)
    np.random.seed(seed)


def loop_args(config, ctx: RunContext) -> dict:
    """The training-loop fields every mlx-lm-lora TrainingArgs shares, from a droidft config:
    checkpoints go to this rank's folder at this rank's cadence."""
    return dict(batch_size=config.batch_size, iters=config.iters, val_batches=config.val_batches,
                steps_per_report=config.steps_per_report, steps_per_eval=config.steps_per_eval,
                steps_per_save=steps_per_save(config, ctx),
                adapter_file=str(output_dir(ctx) / "adapters.safetensors"),
                max_seq_length=config.max_seq_length, grad_checkpoint=config.grad_checkpoint,
                gradient_accumulation_steps=config.grad_accumulation_steps)


def load_starting_policy(config, ctx: RunContext, model_path: Path):
    """The trainable policy with the adapter a resumed or warm-started run begins from;
    returns (model, tokenizer, the weights a KL reference carries)."""
    model, tokenizer = load_policy(config, model_path)
    start_from, reference_weights = initial_weights(config, ctx, model_path)
    if start_from:
        ctx.log(f"starting from adapter weights {start_from}")
        model.load_weights(start_from, strict=False)
    return model, tokenizer, reference_weights


def initial_weights(config, ctx: RunContext, model_path: Path) -> tuple[str | None, str | None]:
    """(weights to start training from, weights the KL reference carries)."""
    warm = warm_start_file(config)
    if config.resume_adapter_file:
        return config.resume_adapter_file, warm
    return warm, warm


def warm_start_file(config) -> str | None:
    """The adapter file a GRPO-family `warm_start` names (a folder means its
    adapters.safetensors); None for configs without one."""
    if not getattr(config, "warm_start", None):
        return None
    path = Path(config.warm_start).expanduser()
    return str(path / "adapters.safetensors" if path.is_dir() else path)
