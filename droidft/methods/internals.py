"""The mlx-lm and mlx-lm-lora internals droidft wraps, replaces or calls by keyword, with the
parameters it relies on. Many are private (`_rollout_rewards`, `_preference_microbatches`)
and may change in any release, so pyproject.toml pins both packages to the versions the
suite passes with, `problems()` names each internal that is missing or has changed, a test
runs it in CI, and the worker runs it for the method it trains before loading a model
(a clear message instead of a TypeError deep in a run).

Tested with mlx-lm 0.32.2 and mlx-lm-lora 5.10.2.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect

T = "mlx_lm_lora.trainer."
_BATCHES = ("dataset", "batch_size", "max_seq_length", "train")  # iterate_*_batches(..., train=)
_ONLINE = {  # what droidft swaps in an online trainer module, and what it calls
    "LLMPairwiseJudge": ("model", "tokenizer", "system_prompt"),
    "HumanPairwiseJudge": (),
    "_preference_microbatches": ("loss_value_and_grad", "model", "chosen", "rejected",
                                 "micro_batch_size", "loss_kwargs", "with_grad"),
    "iterate_online_dpo_batches": _BATCHES,
}
_ONLINE_TRAIN = ("model", "ref_model", "tokenizer", "optimizer", "train_dataset", "val_dataset",
                 "judge_config", "args", "judge_model", "judge_tokenizer", "training_callback")
_ARGS = ("batch_size", "iters", "val_batches", "steps_per_report", "steps_per_eval", "steps_per_save",
         "adapter_file", "max_seq_length", "grad_checkpoint", "gradient_accumulation_steps")

# module -> {name: parameters (functions, classes' __init__) or fields (dataclasses)}
WRAPPED: dict[str, dict[str, tuple[str, ...]]] = {
    "mlx_lm.lora": {"train_model": ("args", "model", "train_set", "valid_set", "training_callback"),
                    "train": ("model", "optimizer", "train_dataset", "val_dataset", "args",
                              "iterate_batches", "training_callback"),
                    "build_schedule": ("schedule_config",)},
    "mlx_lm.tuner.trainer": {"iterate_batches": ("dataset", "batch_size", "max_seq_length", "loop")},
    "mlx_lm_lora.train": {"build_parser": ()},
    "mlx_lm_lora.chat_template": {"ensure_chat_template": ("tokenizer",)},
    T + "datasets": {"create_dataset": ("data", "tokenizer", "config"), "CacheDataset": ("data",),
                     "FTPODataset": ("data", "tokenizer", "max_seq_length")},
    T + "judge": {"DEFAULT_PAIRWISE_SYSTEM_PROMPT": ()},
    T + "grpo_trainer": {
        "_rollout_rewards": ("batch", "texts", "indices", "reward_funcs", "reward_weights"),
        "evaluate_grpo": (), "iterate_grpo_batches": _BATCHES,
        "train_grpo": ("model", "ref_model", "tokenizer", "optimizer", "train_dataset", "val_dataset",
                       "reward_funcs", "args", "iterate_batches", "training_callback", "end_answer_token"),
        "GRPOTrainingArgs": _ARGS + ("group_size", "beta", "epsilon", "epsilon_high", "max_completion_length",
                                     "reference_model_path", "temperature", "top_p", "top_k", "min_p",
                                     "grpo_loss_type", "reward_weights", "importance_sampling_level")},
    T + "dpo_trainer": {
        "iterate_dpo_batches": _BATCHES,
        "train_dpo": ("model", "ref_model", "optimizer", "train_dataset", "val_dataset", "args",
                      "training_callback", "loss_type"),
        "DPOTrainingArgs": _ARGS + ("beta", "loss_type", "delta", "reference_model_path")},
    T + "cpo_trainer": {
        "iterate_cpo_batches": _BATCHES,
        "cpo_loss": ("policy_chosen_score", "policy_rejected_score", "chosen_masks", "rejected_masks",
                     "beta", "delta", "loss_type"),
        "train_cpo": ("model", "optimizer", "train_dataset", "val_dataset", "args", "loss_fn",
                      "training_callback"),
        "CPOTrainingArgs": _ARGS + ("beta", "loss_type", "delta")},
    T + "orpo_trainer": {
        "iterate_orpo_batches": _BATCHES,
        "train_orpo": ("model", "optimizer", "train_dataset", "val_dataset", "args", "training_callback"),
        "ORPOTrainingArgs": _ARGS + ("beta",)},
    T + "online_dpo_trainer": {
        **_ONLINE, "evaluate_online_dpo": (), "train_online_dpo": _ONLINE_TRAIN,
        "OnlineDPOTrainingArgs": _ARGS + ("beta", "loss_type", "delta", "temperature", "judge",
                                          "max_completion_length", "reference_model_path")},
    T + "xpo_trainer": {**_ONLINE, "evaluate_xpo": (), "train_xpo": _ONLINE_TRAIN,
                        "XPOTrainingArgs": ("alpha",)},
    T + "ppo_trainer": {**_ONLINE, "evaluate_ppo": (), "train_ppo": _ONLINE_TRAIN + ("loss_fn",),
                        "ppo_loss": ("policy_chosen_score", "policy_rejected_score", "reference_chosen_score",
                                     "reference_rejected_score", "chosen_masks", "rejected_masks", "beta",
                                     "epsilon"),
                        "PPOTrainingArgs": ("epsilon",)},
    T + "rlhf_reinforce_trainer": {
        "LLMPPOJudge": ("model", "tokenizer", "system_prompt"),
        "_rlhf_value_and_grad": ("loss_value_and_grad", "model", "sequences", "rewards", "micro_batch_size"),
        "_rlhf_reinforce_logp_loss": ("policy_log_probs", "ref_log_probs", "rewards", "masks", "beta"),
        "iterate_online_dpo_batches": _BATCHES, "evaluate_rlhf_reinforce": (),
        "train_rlhf_reinforce": _ONLINE_TRAIN,
        "RLHFReinforceTrainingArgs": _ARGS + ("beta", "judge", "max_completion_length", "reference_model_path")},
    T + "klpo_trainer": {
        "_rollout_rewards": ("batch", "texts", "indices", "reward_funcs", "reward_weights"),
        "evaluate_klpo": (), "iterate_grpo_batches": _BATCHES,
        "train_klpo": ("model", "tokenizer", "optimizer", "train_dataset", "val_dataset", "reward_funcs",
                       "args", "training_callback", "end_answer_token"),
        "KLPOTrainingArgs": _ARGS + ("beta", "route", "kl_estimator", "mc_samples", "top_k", "tail_floor",
                                     "max_completion_length", "temperature", "reward_weights")},
    T + "ftpo_trainer": {
        "iterate_ftpo_batches": _BATCHES,
        "evaluate_ftpo": ("model", "ref_model", "dataset", "batch_size", "num_batches", "max_seq_length", "args"),
        "train_ftpo": ("model", "ref_model", "optimizer", "train_dataset", "val_dataset", "args",
                       "training_callback"),
        "FTPOTrainingArgs": _ARGS + ("lambda_mse_target", "tau_mse_target", "lambda_mse", "clip_epsilon_logits")},
    T + "dsla_trainer": {
        "iterate_dsla_batches": _BATCHES,
        "train_dsla": ("model", "optimizer", "train_dataset", "val_dataset", "args", "ref_model",
                       "training_callback"),
        "DSLATrainingArgs": _ARGS + ("loss_type", "dpo_cpo_loss_type", "beta", "delta", "latent_weight",
                                     "latent_margin", "latent_gamma", "latent_variant", "latent_pooling",
                                     "latent_layer")},
}

# the modules each method family's runner touches (besides mlx_lm and datasets)
FOR_METHOD = {"sft": ("mlx_lm.lora", "mlx_lm.tuner.trainer"), "grpo": (T + "grpo_trainer",),
              "dpo": (T + "dpo_trainer",), "cpo": (T + "cpo_trainer",), "orpo": (T + "orpo_trainer",),
              "online_dpo": (T + "online_dpo_trainer", T + "judge"), "xpo": (T + "xpo_trainer", T + "judge"),
              "ppo": (T + "ppo_trainer", T + "judge"),
              "rlhf_reinforce": (T + "rlhf_reinforce_trainer", T + "judge"), "klpo": (T + "klpo_trainer",),
              "ftpo": (T + "ftpo_trainer",), "dsla": (T + "dsla_trainer",)}
FOR_METHOD.update({m: FOR_METHOD["grpo"] for m in ("dr_grpo", "bnpo", "gspo", "dapo")})


def _names(obj) -> list[str]:
    if dataclasses.is_dataclass(obj):
        return [f.name for f in dataclasses.fields(obj)]
    return list(inspect.signature(obj).parameters)


def problems(modules=None) -> list[str]:
    """One sentence per internal that is missing or lacks a parameter droidft passes."""
    out = []
    for module_name in modules or WRAPPED:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            out.append(f"{module_name} cannot be imported ({exc})")
            continue
        for name, params in WRAPPED[module_name].items():
            obj = getattr(module, name, None)
            if obj is None:
                out.append(f"{module_name}.{name} is missing")
                continue
            if not params:
                continue
            try:
                have = _names(obj)
            except (TypeError, ValueError):
                out.append(f"{module_name}.{name} has no readable signature")
                continue
            missing = [p for p in params if p not in have]
            if missing:
                out.append(f"{module_name}.{name} has no parameter(s) {', '.join(missing)} "
                           f"(it takes {', '.join(have)})")
    return out


def require(method: str) -> None:
    """Raise RuntimeError naming every changed internal the method's runner uses."""
    modules = FOR_METHOD.get(method)
    if not modules:
        return  # a plugin method: its own business
    if method != "sft":
        modules += (T + "datasets", "mlx_lm_lora.chat_template")
    found = problems(modules)
    if found:
        from importlib.metadata import version

        raise RuntimeError(
            f"this mlx-lm-lora ({version('mlx-lm-lora')}) / mlx-lm ({version('mlx-lm')}) differs "
            f"from the versions droidft was tested with: " + "; ".join(found)
            + ". Install the versions pyproject.toml pins (pip install -e .)")
