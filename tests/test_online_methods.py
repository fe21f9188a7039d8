"""The methods added with issue 14 on the real demo model, run the way the app runs them
(`jobs.start` spawns the worker): online DPO, XPO, PPO, RLHF-REINFORCE (judged by reward
functions, a model, or a person through the store), KLPO, FTPO and DSLA."""

import json
import threading
import time
import types
from pathlib import Path

import pytest
import yaml

from droidft import jobs, judges, methods, store
from droidft.config import LoraParameters
from droidft.data import DataError, demo_chat_prompt, resolve_dataset, validate_dataset
from droidft.methods.dsla import DSLAConfig
from droidft.methods.ftpo import FTPOConfig
from droidft.methods.klpo import KLPOConfig
from droidft.methods.online import OnlineDPOConfig, PPOConfig, RLHFReinforceConfig, XPOConfig

NEW = {"online_dpo": OnlineDPOConfig, "xpo": XPOConfig, "ppo": PPOConfig, "rlhf_reinforce": RLHFReinforceConfig,
       "klpo": KLPOConfig, "ftpo": FTPOConfig, "dsla": DSLAConfig}
TINY = dict(model="demo", data="demo", iters=2, batch_size=2, steps_per_report=1, steps_per_eval=2,
            save_every=2, val_batches=1, lora_parameters=LoraParameters(rank=4, scale=10.0))
COMMON = {"learning_rate", "iterations_per_second", "peak_memory_gb", "train_loss", "val_loss", "val_time"}
PAIRWISE = COMMON | {"tokens_per_second", "trained_tokens", "train_chosen_reward", "train_rejected_reward",
                     "train_accuracies", "train_margins", "train_pairs_judged", "train_pairs_skipped",
                     "train_judge_fallbacks", "val_chosen_reward", "val_rejected_reward", "val_accuracies"}
EXPECTED = {
    "online_dpo": PAIRWISE | {"train_policy_chosen_logps", "train_judge_reward_mean", "val_judge_reward_mean"},
    "xpo": PAIRWISE | {"train_exploration_bonus", "train_chosen_kl", "train_rejected_kl", "val_exploration_bonus"},
    "ppo": PAIRWISE | {"train_policy_loss", "train_kl_penalty", "train_clip_fraction", "train_ratios_mean",
                       "val_clip_fraction", "train_judge_reward_mean"},
    "rlhf_reinforce": COMMON | {"train_rewards", "train_kl_penalty", "train_advantages", "train_policy_logps",
                                "train_pairs_judged", "val_rewards", "val_kl_penalty"},
    "klpo": COMMON | {"tokens_per_second", "train_reward_mean", "train_kl", "train_regression_loss",
                      "train_droidft_demo_reward_mean", "train_average_generated_tokens", "val_reward_mean",
                      "val_kl", "val_tokens"},
    "ftpo": COMMON | {"train_pref_loss", "train_mse_elem", "train_chosen_win", "train_margin_win",
                      "train_mean_delta", "val_chosen_win", "val_pref_loss"},
    "dsla": COMMON | {"tokens_per_second", "train_preference_loss", "train_latent_loss", "train_latent_sim_margin",
                      "train_latent_dir_margin", "train_accuracies", "train_chosen_reward", "val_latent_loss"},
}


def run_to_end(config, timeout=600) -> tuple[str, dict]:
    run_id = jobs.start(config)
    run = jobs.wait(run_id, timeout=timeout)
    assert run["status"] == "completed", (run.get("error"), jobs.log_tail(run_id))
    return run_id, run


def names(run_id) -> set[str]:
    return {r["name"] for r in store.metrics(run_id)}


def values(run_id, name) -> list[float]:
    return [r["value"] for r in store.metrics(run_id, names=[name])]


# -- registry, validation, data ------------------------------------------------------------------


def test_every_new_method_is_registered_valid_by_default_and_round_trips():
    for name, cls in NEW.items():
        method = methods.get(name)
        assert method.config_class is cls and cls().problems() == [], name
        assert type(methods.config_from_dict(cls().to_dict())) is cls
    assert {methods.get(n).family for n in ("online_dpo", "xpo", "ppo", "rlhf_reinforce")} == {"online"}


@pytest.mark.parametrize("cls, changes, fragment", [
    (OnlineDPOConfig, {"judge": "crowd"}, "judge must be one of reward, model, human"),
    (OnlineDPOConfig, {"judge": "human", "human_fallback": "coin"}, "human_fallback must be one of skip, model, reward"),
    (OnlineDPOConfig, {"human_timeout": 0}, "human_timeout must be >= 1"),
    (OnlineDPOConfig, {"judge_model": " "}, "judge_model must be a model"),
    (OnlineDPOConfig, {"judge_system_prompt": "rate {answer}"}, "judge_system_prompt may only use"),
    (OnlineDPOConfig, {"beta": 0}, "beta must be > 0 for online_dpo"),
    (OnlineDPOConfig, {"reward_functions": ["nope"]}, "unknown reward function(s) nope"),
    (XPOConfig, {"alpha": []}, "alpha must be a non-empty list"),
    (XPOConfig, {"alpha": [0.1, 0.2, 0.3], "iters": 2}, "alpha has 3 values but the run has 2 steps"),
    (PPOConfig, {"epsilon": 0}, "epsilon must be > 0"),
    (RLHFReinforceConfig, {"temperature": 0}, "temperature must be > 0"),
    (KLPOConfig, {"kl_estimator": "exact"}, "kl_estimator must be one of mc, topk, binary, full"),
    (KLPOConfig, {"route": "sequence", "mc_samples": 1}, "mc_samples must be a whole number >= 2"),
    (KLPOConfig, {"beta": 0}, "beta must be > 0"),
    (FTPOConfig, {"clip_epsilon_logits": 0}, "clip_epsilon_logits must be > 0"),
    (DSLAConfig, {"dsla_loss": "kto"}, "dsla_loss must be one of dpo, orpo, cpo"),
    (DSLAConfig, {"latent_layer": "top"}, "latent_layer must be final, middle, late or a layer index"),
    (DSLAConfig, {"dsla_loss": "orpo", "reference_model": "demo"}, "uses no reference model"),
])
def test_bad_settings_are_refused_with_a_reason(cls, changes, fragment):
    problems = cls(**changes).problems()
    assert any(fragment in p for p in problems), problems


@pytest.mark.parametrize("name, bad, key", [
    ("online_dpo", {"answer": "apple"}, "prompt"),
    ("ftpo", {"context_with_chat_template": "<|user|>\nHi", "rejected_decoded": "I"}, "multi_chosen_decoded"),
    ("klpo", {"prompt": "Name three fruits."}, "answer"),
    ("dsla", {"prompt": "Name three fruits.", "chosen": "apple, fig and kiwi."}, "rejected"),
])
def test_bad_data_is_refused_with_the_line_number(name, bad, key, tmp_path):
    good = json.loads((resolve_dataset("demo", method=name) / "train.jsonl").read_text().splitlines()[0])
    folder = tmp_path / name
    folder.mkdir()
    for split in ("train", "valid"):
        (folder / f"{split}.jsonl").write_text("\n".join(json.dumps(r) for r in [good, good, bad, good]) + "\n")
    with pytest.raises(DataError) as err:
        jobs.start(NEW[name](data=str(folder)))
    assert "train.jsonl line 3" in str(err.value) and key in str(err.value), str(err.value)
    (folder / "train.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(
        {**good, **({"multi_chosen_decoded": "My"} if name == "ftpo" else {"prompt": 7})}) + "\n")
    assert not validate_dataset(folder, method=name).ok
    assert store.list_runs() == []


def test_demo_sets_and_sample_data_are_valid_and_ftpo_uses_the_demo_template(demo_model, tmp_path):
    from mlx_lm.utils import load_tokenizer

    for name in NEW:
        assert validate_dataset("demo", method=name).ok, name
    rendered = load_tokenizer(demo_model).apply_chat_template(
        [{"role": "user", "content": "Hi?"}], add_generation_prompt=True, tokenize=False)
    assert demo_chat_prompt("Hi?") == rendered


def test_distributed_runs_are_refused_where_gradients_would_not_average_correctly():
    for cls in (OnlineDPOConfig, RLHFReinforceConfig, FTPOConfig):
        problems = cls(ranks_per_host=2).problems()
        assert any("trains on one machine" in p and "same" in p for p in problems), (cls, problems)
    dpo = methods.get("dpo").config_class(ranks_per_host=2).problems()
    assert any("no rank offset" in p for p in dpo), dpo
    for name in ("dsla", "klpo", "grpo", "gspo"):
        assert methods.get(name).distributed and methods.get(name).config_class(ranks_per_host=2).problems() == []


# -- every method trains on the demo model ------------------------------------------------------------


@pytest.mark.parametrize("name, options", [
    ("online_dpo", {"judge": "reward"}),
    ("xpo", {"judge": "model", "alpha": [0.01], "loss_type": "hinge"}),
    ("ppo", {"judge": "reward"}),
    ("rlhf_reinforce", {"judge": "reward"}),
    ("klpo", {"kl_estimator": "mc", "mc_samples": 8}),
    ("ftpo", {}),
    ("dsla", {"dsla_loss": "dpo"}),
])
def test_method_trains_stores_every_metric_and_the_adapter_loads_in_mlx_lm(name, options, demo_model):
    from mlx_lm import generate, load

    extra = {"max_completion_length": 8} if "max_completion_length" in NEW[name].field_names() else {}
    run_id, run = run_to_end(NEW[name](**TINY, **extra, **options))
    missing = EXPECTED[name] - names(run_id)
    assert not missing, sorted(missing)
    assert sorted({r["step"] for r in store.metrics(run_id, names=["train_loss"])}) == [1, 2]
    if name in ("online_dpo", "ppo"):  # the reward judge's mean score: demo reward is in [0, 1]
        assert all(0 <= v <= 1 for v in values(run_id, "train_judge_reward_mean"))
    if name in ("xpo", "ppo", "online_dpo"):  # rewards back on their scale (mlx-lm-lora divides by tokens)
        assert all(abs(v) < 50 for v in values(run_id, "val_chosen_reward"))
    if methods.get(name).family == "online":
        samples = store.samples(run_id)
        assert samples and {s["meta"]["verdict"] for s in samples} <= {"chosen", "rejected", "skipped"}
        assert {s["meta"]["side"] for s in samples} == {"A", "B"}
        assert all(s["meta"]["judge"] == options["judge"] for s in samples)
    if name == "klpo":
        assert store.samples(run_id) and "droidft_demo_reward" in store.samples(run_id)[0]["meta"]["rewards"]
    kinds = {(a["kind"], a["step"]) for a in store.artifacts(run_id)}
    assert {("checkpoint", 2), ("final_adapter", 2)} <= kinds  # FTPO too (mlx-lm-lora writes none)
    best = jobs.best_adapter(run_id)  # the validation before step 2 ranks the model after step 1
    assert best and best["step"] == 1 and ("best_adapter", 1) in kinds, best
    assert best["metric"] == ("val_reward_mean" if name == "klpo" else "val_loss")
    assert Path(best["path"], "adapters.safetensors").exists() and Path(best["path"], "adapter_config.json").exists()
    adapter = Path(run["adapter_path"])
    assert json.loads((adapter / "adapter_config.json").read_text())["droidft_method"] == name
    model, tokenizer = load(str(demo_model), adapter_path=str(adapter))
    assert isinstance(generate(model, tokenizer, "Name three fruits.", max_tokens=3), str)


@pytest.mark.parametrize("name, options", [
    ("online_dpo", {"judge": "reward"}),
    ("klpo", {}),  # ranked by validation reward (higher is better)
    ("ftpo", {}),
    ("dsla", {"dsla_loss": "dpo"}),
])
def test_early_stopping_ends_the_new_methods_between_two_steps(name, options, demo_model):
    """Early stopping (issue 15) through each family's callback: no validation can improve by
    the huge min_delta, so the second validation after step 0 (before step 4) ends the run,
    as completed, long before its 8 steps, with a best adapter kept."""
    extra = {"max_completion_length": 8} if "max_completion_length" in NEW[name].field_names() else {}
    config = NEW[name](**{**TINY, "iters": 8, "save_every": 4}, **extra, **options,
                       early_stop_patience=1, early_stop_min_delta=1e9)
    run_id, run = run_to_end(config)
    reason = jobs.end_reason(run)
    assert reason and reason.startswith("early stopping: "), (reason, jobs.log_tail(run_id))
    # 3 where the trainer validates before it takes the step's batch (ftpo, dsla), else 4
    last = store.artifacts(run_id, kind="final_adapter")[0]["step"]
    assert last in (3, 4), last
    assert max(r["step"] for r in store.metrics(run_id, names=["train_loss"])) <= last
    best = jobs.best_adapter(run_id)  # any improvement is kept; min_delta only gates the count
    assert best and best["step"] in (1, 3) and Path(best["path"], "adapters.safetensors").exists(), best
    assert any("early stopping" in e["message"] for e in store.events(run_id))


# -- a person judges ---------------------------------------------------------------------------------


def _judge_pairs_as_they_come(run_id, stop: threading.Event, choice=0):
    def act():
        while not stop.is_set():
            for row in judges.open_pairs(run_id):
                judges.submit(row["id"], choice, "owner", {}, who="test")
            time.sleep(0.1)

    thread = threading.Thread(target=act, daemon=True)
    thread.start()
    return thread


def test_human_judge_run_trains_on_the_persons_choices(demo_model):
    config = OnlineDPOConfig(**TINY, max_completion_length=6, judge="human", human_timeout=300,
                             human_fallback="reward")
    run_id = jobs.start(config)
    done = threading.Event()
    person = _judge_pairs_as_they_come(run_id, done, choice=1)
    try:
        run = jobs.wait(run_id, timeout=600)
    finally:
        done.set()
        person.join()
    assert run["status"] == "completed", run.get("error")
    rows = store.judgments(run_id=run_id)
    assert len(rows) == 4 and {r["status"] for r in rows} == {"decided"} and {r["choice"] for r in rows} == {1}
    assert sorted({r["step"] for r in rows}) == [1, 2]
    assert values(run_id, "train_human_judged") == [2.0, 2.0]
    samples = [s for s in store.samples(run_id) if s["meta"]["judge"] == "human"]
    assert len(samples) == 8
    assert {(s["meta"]["side"], s["meta"]["verdict"]) for s in samples} == {("A", "rejected"), ("B", "chosen")}
    assert "val_loss" in names(run_id)  # validation pairs went to the fallback (reward) judge


def test_human_judge_timeout_skips_and_the_weights_stay_put(demo_model):
    import mlx.core as mx

    config = OnlineDPOConfig(**TINY, max_completion_length=6, judge="human", human_timeout=1,
                             human_fallback="skip")
    run_id, run = run_to_end(config)
    assert {r["status"] for r in store.judgments(run_id=run_id)} == {"expired"}
    assert values(run_id, "train_pairs_skipped") == [2.0, 2.0] and "train_loss" not in names(run_id)
    assert "val_loss" not in names(run_id)  # no one to judge validation pairs: no validation
    weights = mx.load(str(Path(run["adapter_path"]) / "adapters.safetensors"))
    assert all(not mx.any(v).item() for k, v in weights.items() if k.endswith("lora_b"))  # never updated


def test_stop_while_waiting_for_a_person_ends_the_run(demo_model):
    config = OnlineDPOConfig(**{**TINY, "iters": 50}, max_completion_length=6, judge="human", human_timeout=600)
    run_id = jobs.start(config)
    deadline = time.monotonic() + 300
    while not judges.open_pairs(run_id):
        assert time.monotonic() < deadline and store.get_run(run_id)["status"] in jobs.ACTIVE, jobs.log_tail(run_id)
        time.sleep(0.2)
    jobs.stop(run_id)
    run = jobs.wait(run_id, timeout=120)
    assert run["status"] == "stopped", run.get("error")
    assert {r["status"] for r in store.judgments(run_id=run_id)} == {"cancelled"}
    assert (Path(run["adapter_path"]) / "adapters.safetensors").exists()


# -- CLI and the stock command -------------------------------------------------------------------------


def test_cli_trains_an_online_method_and_prints_its_stock_command(cli, demo_model, tmp_path):
    result = cli("train", "online_dpo", "--model", "demo", "--data", "demo", "--iters", "1", "--batch-size", "2",
                 "--max-completion-length", "6", "--judge", "reward", "--reward-functions", "droidft_demo_reward",
                 "--steps-per-report", "1", "--val-batches", "1", "--wait")
    assert result.returncode == 0, result.stderr
    run_id = result.stdout.strip().splitlines()[-1]
    assert store.get_run(run_id)["config"]["judge"] == "reward"
    command = cli("command", run_id)
    assert command.returncode == 0 and command.stdout.startswith("mlx_lm_lora.train -c ")
    assert "train_mode: online_dpo" in cli("command", run_id, "--yaml").stdout
    out = tmp_path / "ftpo"
    assert cli("sample-data", "ftpo", "--out", str(out)).returncode == 0
    assert validate_dataset(out, method="ftpo").ok


@pytest.mark.parametrize("name", list(NEW))
def test_stock_command_parses_back_to_the_same_mode_and_options(name, tmp_path):
    """What `mlx_lm_lora.train -c FILE FLAGS` would train with, parsed as its main() does."""
    import shlex

    from mlx_lm_lora.train import CONFIG_DEFAULTS, build_parser

    config = NEW[name](judge_model="demo") if "judge" in NEW[name].field_names() else NEW[name]()
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text(config.to_mlx_lm_yaml("/m", "/d", "/a"))
    argv = shlex.split(config.to_mlx_lm_command("/m", "/d", "/a", config_file=str(yaml_file)))[1:]
    args = build_parser().parse_args(argv)
    for key, value in yaml.safe_load(yaml_file.read_text()).items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    for key, value in CONFIG_DEFAULTS.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    args = types.SimpleNamespace(**vars(args))
    assert (args.train_mode, args.model, args.data, args.iters) == (name, "/m", "/d", config.iters)
    assert args.batch_size == config.batch_size and args.learning_rate == config.learning_rate
    checks = {"online_dpo": {"judge": str(Path("demo")), "max_completion_length": 24},
              "klpo": {"klpo_kl_estimator": config.__dict__.get("kl_estimator"),
                       "klpo_mc_samples": config.__dict__.get("mc_samples")},
              "ftpo": {"lambda_mse": 0.4, "clip_epsilon_logits": 2.0},
              "dsla": {"dsla_loss": "dpo", "latent_variant": "both"},
              "ppo": {"epsilon": 0.2}}
    for key, value in checks.get(name, {}).items():
        if key == "judge":
            assert args.judge.endswith("droidft-demo")
        else:
            assert getattr(args, key) == value, key


def test_rl_demo_sets_are_what_the_seeded_script_writes(tmp_path):
    import importlib.util
    import shutil

    from droidft import paths

    spec = importlib.util.spec_from_file_location("make_rl_demo_data", paths.REPO_ROOT / "scripts" / "make_rl_demo_data.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    shutil.copytree(paths.DATA_DIR / "demo" / "chat", tmp_path / "chat")  # FTPO takes its questions from there
    script.OUT = tmp_path
    assert script.main() == 0
    for folder in ("grpo", "preference", "online", "ftpo"):
        for split in ("train", "valid", "test"):
            written = (tmp_path / folder / f"{split}.jsonl").read_bytes()
            assert written == (paths.DATA_DIR / "demo" / folder / f"{split}.jsonl").read_bytes(), (folder, split)
