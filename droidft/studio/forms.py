"""Form fields derived from any method's config dataclass (type, default, help, choices,
group), and form values back to a validated config, so a new method gets a form without
new page code."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any

HELP = {
    "model": "The base model to fine-tune. 'demo' is the tiny built-in model that trains in seconds.",
    "data": "A dataset folder holding train.jsonl (and valid.jsonl), or 'demo'.",
    "name": "A name to find this run by later. Leave empty for an automatic one.",
    "fine_tune_type": "lora trains small adapter matrices (fast, small files); dora is LoRA with "
                      "a learned magnitude (a little better, a little slower); full trains every weight.",
    "num_layers": "How many of the last transformer layers get adapters. -1 means all of them.",
    "seed": "Random seed for data order and initialisation; the same seed repeats a run exactly.",
    "quantize_bits": "QLoRA: quantise the base model to this many bits first to save memory. "
                     "Empty = keep the model's own precision.",
    "quantize_group_size": "Quantisation group size (smaller = more accurate, slightly larger).",
    "resume_adapter_file": "Start from these adapter weights instead of fresh ones.",
    "start_step": "Step number the run starts counting from (set by resume).",
    "blas": "CPU math library for the worker on Linux: auto picks OpenBLAS when installed "
            "(7x faster than the reference BLAS on the demo model, ~20x on bigger ones).",
    "optimizer": "adam is the safe default; adamw adds weight decay; sgd/adafactor/muon for experiments.",
    "optimizer_config": "Extra optimizer settings as YAML, e.g. {adamw: {weight_decay: 0.01}}.",
    "batch_size": "Examples per step. Larger is smoother but needs more memory.",
    "iters": "Training steps. More steps learn more and take longer.",
    "epochs": "Passes over the training set; when set, it decides the number of steps instead of iters.",
    "learning_rate": "Step size of the optimizer. 1e-4 suits LoRA; full fine-tuning wants ~1e-5.",
    "lr_schedule": "A learning-rate schedule in mlx-lm's YAML form, e.g. "
                   "{name: cosine_decay, arguments: [1e-5, 1000], warmup: 100}.",
    "warmup_steps": "Steps over which the learning rate ramps up from 0 (then cosine decay). 0 = constant.",
    "val_batches": "Validation batches per evaluation. -1 uses the whole validation set.",
    "steps_per_report": "Report training loss and speed every this many steps (the chart's resolution).",
    "steps_per_eval": "Compute validation loss every this many steps.",
    "save_every": "Save a checkpoint every this many steps (what stop/resume restarts from).",
    "max_seq_length": "Longer examples are cut to this many tokens.",
    "grad_accumulation_steps": "Add up gradients over this many batches before each update "
                               "(a larger effective batch without more memory).",
    "grad_checkpoint": "Recompute activations in the backward pass: much less memory, ~30% slower.",
    "mask_prompt": "Train only on the answer (the assistant turn), not on the prompt.",
    "early_stop_patience": "End the run early (as completed) after this many validations in a row "
                           "without improvement (loss; reward for GRPO). Empty = train every step.",
    "early_stop_min_delta": "How much the validation metric must improve to count as improvement "
                            "for early stopping.",
    "lora_parameters.rank": "Adapter rank: capacity of the adapter. 8 is typical; 16-64 for bigger changes.",
    "lora_parameters.scale": "Adapter scale (alpha): how strongly the adapter changes the output.",
    "lora_parameters.dropout": "Dropout inside the adapter, against overfitting small datasets.",
    "lora_parameters.keys": "Which linear layers in each block get adapters. None = all of them.",
    # RL / preference (names used by mlx-lm-lora)
    "beta": "Strength of the KL penalty that keeps the policy near the reference model.",
    "epsilon": "Clipping range of the policy ratio.",
    "epsilon_high": "Upper clipping range (asymmetric clipping); empty = same as epsilon.",
    "group_size": "Completions sampled per prompt; rewards are compared within the group.",
    "max_completion_length": "Longest completion the policy generates during training, in tokens.",
    "temperature": "Sampling temperature for the completions generated during training.",
    "reward_functions": "Which reward functions score the completions.",
    "reward_weights": "Weight of each reward function in the total reward.",
    "reference_model": "Frozen model the KL penalty compares against; empty = the base model.",
    "importance_sampling_level": "token (GRPO) or sequence (GSPO) level importance ratios.",
    "grpo_loss_type": "grpo, bnpo or dr_grpo: how token losses are normalised.",
    "loss_type": "Preference loss variant (sigmoid, hinge, ipo, ...).",
    "delta": "Margin for the hinge / DPOP loss variants.",
    # KLPO, FTPO, DSLA, XPO (mlx-lm-lora's names)
    "route": "KLPO: regress per token or per whole answer (sequence).",
    "kl_estimator": "KLPO: how the KL to the sampling policy is estimated: mc (sampled tokens), topk "
                    "(the sampler's top tokens), binary, or full (the whole vocabulary).",
    "mc_samples": "KLPO: tokens drawn per position for the mc estimator.",
    "top_k": "KLPO: sampler head size for the topk estimator.",
    "tail_floor": "KLPO: smallest tail probability the topk estimator assumes.",
    "lambda_mse": "FTPO: weight of keeping every other next-token logit near the reference.",
    "lambda_mse_target": "FTPO: weight of keeping the chosen/rejected logits within tau of the reference.",
    "tau_mse_target": "FTPO: how far the chosen/rejected logits may move freely.",
    "clip_epsilon_logits": "FTPO: the logit margin (chosen over rejected) after which a row stops pushing.",
    "dsla_loss": "DSLA: the preference objective under the latent term (dpo needs the reference model).",
    "latent_weight": "DSLA: weight of the hidden-state alignment term.",
    "latent_margin": "DSLA: target margin of the prompt-answer similarity.",
    "latent_gamma": "DSLA: sharpness of the latent soft-margin losses.",
    "latent_variant": "DSLA: similarity (to the prompt), direction (along chosen minus rejected), or both.",
    "latent_pooling": "DSLA: how an answer's hidden states become one vector.",
    "latent_layer": "DSLA: which layer's hidden states: final, middle, late or an index.",
    "alpha": "XPO: exploration bonus weight; several values = one per equal part of the run.",
    "samples_per_report": "Sampled answers (online methods: judged pairs) stored in the samples table per report.",
    "hosts": "Machines to train on together, e.g. [127.0.0.1, 10.0.0.7] (the first is this one: it "
             "writes the run). Empty = this machine only. Needs passwordless ssh and the same paths.",
    "hostfile": "An mlx.launch hostfile (JSON) instead of a host list.",
    "ranks_per_host": "Training processes per machine (mlx.launch -n). 2 on one machine checks a "
                      "multi-machine setup; it is not faster on the same cores.",
    "distributed_backend": "ring (TCP, works everywhere) or mpi (needs MPI installed).",
}
GROUPS = {
    "Model": ("model", "data", "name"),
    "Adapter": ("fine_tune_type", "num_layers", "lora_parameters", "quantize_bits", "quantize_group_size"),
    "Training": ("iters", "epochs", "batch_size", "learning_rate", "optimizer", "warmup_steps",
                 "grad_accumulation_steps", "max_seq_length", "mask_prompt", "grad_checkpoint"),
    "Evaluation and saving": ("steps_per_report", "steps_per_eval", "val_batches", "save_every",
                              "early_stop_patience", "early_stop_min_delta"),
    "Machines": ("hosts", "hostfile", "ranks_per_host", "distributed_backend"),
}
# set by the app itself (pickers, resume), not typed into the generic form
MANAGED_FIELDS = ("model", "data", "name", "resume_adapter_file", "start_step")


def _choices_for(name: str, config_class, tp=str) -> list | None:
    from .. import config as cfg

    known = {"fine_tune_type": list(cfg.FINE_TUNE_TYPES), "optimizer": list(cfg.OPTIMIZERS),
             "blas": ["auto", "openblas", "reference"], "quantize_bits": [None, 2, 3, 4, 5, 6, 8],
             "quantize_group_size": [32, 64, 128], "distributed_backend": ["ring", "mpi"]}
    if name in known:
        return known[name]
    # a method module may declare its own: UPPER_NAME + "S" tuples (e.g. LOSS_TYPES) or
    # dataclass field metadata {"choices": [...]}
    if tp not in (str, int) and typing.get_origin(tp) is not list:
        return None
    module = __import__(config_class.__module__, fromlist=["_"])
    for attr in (name.upper() + "S", name.upper() + "_CHOICES", name.upper()):
        value = getattr(module, attr, None)
        if isinstance(value, (tuple, list)) and value and all(isinstance(v, (str, int)) for v in value):
            return list(value)
    return None


@dataclass
class FieldSpec:
    """One form field derived from a config dataclass field."""

    name: str  # dotted for nested (lora_parameters.rank)
    label: str
    kind: str  # bool | int | float | str | choice | multichoice | yaml
    default: Any
    optional: bool = False  # None is allowed (an empty input)
    help: str = ""
    choices: list | None = None
    group: str = "Advanced"


def _unwrap_optional(tp):
    args = typing.get_args(tp)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else tp), True
    return tp, False


def _group_of(name: str) -> str:
    top = name.split(".")[0]
    for group, names in GROUPS.items():
        if top in names:
            return group
    from ..config import BaseConfig, SFTConfig

    shared = {f.name for f in dataclasses.fields(SFTConfig)} | {f.name for f in dataclasses.fields(BaseConfig)}
    return "Advanced" if top in shared else "Method"


def field_specs(config_class, *, skip=MANAGED_FIELDS, prefix: str = "") -> list[FieldSpec]:
    """Form fields for every field of a config dataclass (nested dataclasses flattened with
    dotted names), with type, default, help text and choices. Works for any method's config
    class, so a new method gets a form without new page code."""
    hints = typing.get_type_hints(config_class)
    specs: list[FieldSpec] = []
    instance = config_class()
    for f in dataclasses.fields(config_class):
        if f.name in skip or not f.init:
            continue
        name = prefix + f.name
        tp, optional = _unwrap_optional(hints.get(f.name, str))
        default = getattr(instance, f.name)
        meta = dict(f.metadata or {})
        help_text = meta.get("help") or HELP.get(name) or HELP.get(f.name, "")
        label = meta.get("label") or f.name.replace("_", " ").capitalize()
        if dataclasses.is_dataclass(tp):
            specs += field_specs(tp, skip=(), prefix=name + ".")
            continue
        choices = meta.get("choices") or _choices_for(f.name, config_class, tp)
        origin = typing.get_origin(tp)
        if choices is not None:
            if origin is list:
                kind = "multichoice"
            else:
                kind = "choice"
                if optional and None not in choices:
                    choices = [None, *choices]
        elif tp is bool:
            kind = "bool"
        elif tp is int:
            kind = "int"
        elif tp is float:
            kind = "float"
        elif tp is str:
            kind = "str"
        else:
            kind = "yaml"  # dicts, lists, unions: typed as YAML
        specs.append(FieldSpec(name=name, label=label, kind=kind, default=default,
                               optional=optional, help=help_text, choices=choices,
                               group=meta.get("group") or _group_of(name)))
    return specs


def parse_field(spec: FieldSpec, raw) -> Any:
    """A form input back to a config value. Raises ValueError with a message naming the field."""
    if spec.kind in ("bool", "choice", "multichoice"):
        return raw
    if spec.kind in ("int", "float"):
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            if spec.optional:
                return None
            raise ValueError(f"{spec.label} needs a value")
        if isinstance(raw, str):
            try:
                raw = float(raw.strip())
            except ValueError:
                raise ValueError(f"{spec.label} must be a number (got {raw!r})") from None
        if spec.kind == "int":
            if not float(raw).is_integer():
                raise ValueError(f"{spec.label} must be a whole number (got {raw!r})")
            return int(raw)
        return float(raw)
    if spec.kind == "str":
        raw = "" if raw is None else str(raw)
        return None if (spec.optional and not raw.strip()) else raw
    # yaml
    import yaml

    text = "" if raw is None else str(raw)
    if not text.strip():
        return None if spec.optional else (type(spec.default)() if spec.default is not None else None)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{spec.label} is not valid YAML: {str(exc).splitlines()[0]}") from None


def field_display_value(spec: FieldSpec, value) -> Any:
    """A config value as the form shows it (YAML text for structures, '' for None numbers)."""
    if spec.kind == "yaml":
        if value is None or value == {} or value == []:
            return ""
        import yaml

        return yaml.safe_dump(value, default_flow_style=True).strip()
    if spec.kind in ("int", "float", "str") and value is None:
        return ""
    if spec.kind in ("int", "float") and spec.optional:
        return str(value)  # optional numbers are typed as text (empty = none)
    return value


def get_dotted(values: dict, name: str):
    for part in name.split("."):
        if not isinstance(values, dict):
            return None
        values = values.get(part)
    return values


def set_dotted(values: dict, name: str, value) -> None:
    parts = name.split(".")
    for part in parts[:-1]:
        values = values.setdefault(part, {})
    values[parts[-1]] = value


def build_config(config_class, values: dict) -> tuple[Any | None, list[str]]:
    """A config from form values (dotted names allowed): (config, problems). Never raises
    for bad input: every problem comes back as a sentence."""
    from ..config import ConfigError

    nested: dict = {}
    for key, value in values.items():
        set_dotted(nested, key, value)
    try:
        config = config_class.from_dict(nested)
    except ConfigError as exc:
        return None, list(exc.problems)
    except (TypeError, ValueError) as exc:
        return None, [str(exc)]
    return config, list(config.problems())
