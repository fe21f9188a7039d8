"""RL and preference methods (GRPO family, DPO, ORPO, CPO) on the real demo model, run the
way the app runs them: `jobs.start(config)` spawns the detached worker, `jobs.wait` ends it,
and the metrics, samples and artifacts are read back from the store."""

import json
import os
import textwrap
import time
from pathlib import Path

import pytest

from droidft import jobs, methods, paths, rewards, store
from droidft.config import ConfigError, LoraParameters
from droidft.data import DataError
from droidft.methods.grpo import (BNPOConfig, DAPOConfig, DrGRPOConfig, GRPOConfig, GSPOConfig)
from droidft.methods.preference import CPOConfig, DPOConfig, ORPOConfig

GRPO_DEMO = paths.DATA_DIR / "demo" / "grpo"
PREF_DEMO = paths.DATA_DIR / "demo" / "preference"

COMMON = {"learning_rate", "iterations_per_second", "tokens_per_second", "trained_tokens",
          "peak_memory_gb", "train_loss", "val_loss", "val_time"}
GRPO_METRICS = COMMON | {
    "train_total_rewards_mean", "train_total_rewards_std", "train_grouped_rewards_mean",
    "train_grouped_rewards_std", "train_kl", "train_kl_clip_ratio", "train_clip_ratio_low",
    "train_clip_ratio_high", "train_clip_ratio_total", "train_average_generated_tokens",
    "train_min_generated_tokens", "train_max_generated_tokens", "train_hit_max_tokens_ratio",
    "train_droidft_demo_reward_mean", "train_droidft_demo_reward_std",
    "train_droidft_demo_reward_coverage",
    # validation: the same reward/KL/length numbers, which mlx-lm-lora only prints
    "val_total_rewards_mean", "val_total_rewards_std", "val_kl", "val_average_generated_tokens",
    "val_droidft_demo_reward_mean",
}
PREFERENCE_METRICS = COMMON | {
    "train_chosen_reward", "train_rejected_reward", "train_accuracies", "train_margins",
    "train_policy_chosen_logps", "train_policy_rejected_logps", "train_chosen_logits_mean",
    "train_rejected_logits_mean", "val_chosen_reward", "val_rejected_reward", "val_accuracies",
    "val_margins",
}

TINY = dict(model="demo", iters=2, batch_size=2, steps_per_report=1, steps_per_eval=2,
            save_every=2, val_batches=1, lora_parameters=LoraParameters(rank=4, scale=10.0))
TINY_GRPO = dict(TINY, data="demo", group_size=2, max_completion_length=8)


def run_to_end(config, timeout=600) -> tuple[str, dict]:
    run_id = jobs.start(config)
    run = jobs.wait(run_id, timeout=timeout)
    assert run["status"] == "completed", (run.get("error"), jobs.log_tail(run_id))
    return run_id, run


def metric_names(run_id) -> set[str]:
    return {row["name"] for row in store.metrics(run_id)}


# -- registry and validation (no training) ------------------------------------------------


def test_every_method_is_registered_with_its_config_and_family():
    expected = {"grpo": GRPOConfig, "dr_grpo": DrGRPOConfig, "bnpo": BNPOConfig, "gspo": GSPOConfig,
                "dapo": DAPOConfig, "dpo": DPOConfig, "orpo": ORPOConfig, "cpo": CPOConfig}
    for name, cls in expected.items():
        method = methods.get(name)
        assert method.config_class is cls and cls.method == name
        assert method.family == ("preference" if name in ("dpo", "orpo", "cpo") else "grpo")
        # a stored config comes back as the same class
        assert type(methods.config_from_dict(cls().to_dict())) is cls


def test_method_variants_set_the_mlx_lm_lora_options_they_stand_for():
    assert DrGRPOConfig().grpo_loss_type == "dr_grpo"
    assert BNPOConfig().grpo_loss_type == "bnpo"
    assert GSPOConfig().importance_sampling_level == "sequence"
    dapo = DAPOConfig()
    assert (dapo.grpo_loss_type, dapo.beta, dapo.epsilon_high) == ("bnpo", 0.0, 0.28)
    assert dapo.epsilon_high > dapo.epsilon
    for cls in (GRPOConfig, DrGRPOConfig, BNPOConfig, GSPOConfig, DAPOConfig, DPOConfig, ORPOConfig, CPOConfig):
        assert cls().problems() == [], cls


@pytest.mark.parametrize("cls, changes, fragment", [
    (GRPOConfig, {"group_size": 1}, "group_size must be >= 2"),
    (GRPOConfig, {"group_size": 0}, "group_size must be a whole number >= 2"),
    (GRPOConfig, {"beta": -0.1}, "beta must be >= 0"),
    (GRPOConfig, {"epsilon": 1.5}, "epsilon must be <= 0.99"),
    (GRPOConfig, {"epsilon": 0.2, "epsilon_high": 0.1}, "epsilon_high (0.1) must be >= epsilon (0.2)"),
    (GRPOConfig, {"temperature": 0}, "temperature must be > 0"),
    (GRPOConfig, {"top_p": 1.5}, "top_p must be <= 1"),
    (GRPOConfig, {"max_completion_length": 0}, "max_completion_length must be a whole number >= 1"),
    (GRPOConfig, {"grpo_loss_type": "ppo"}, "grpo_loss_type must be one of grpo, bnpo, dr_grpo"),
    (GRPOConfig, {"importance_sampling_level": "batch"}, "importance_sampling_level must be token or sequence"),
    (GRPOConfig, {"reward_functions": ["nope"]}, "unknown reward function(s) nope"),
    (GRPOConfig, {"reward_functions": []}, "reward_functions must be a non-empty list"),
    (GRPOConfig, {"reward_functions": ["exact_answer", "answer_similarity"], "reward_weights": [1.0]},
     "reward_weights has 1 value(s) but there are 2 reward function(s)"),
    (GRPOConfig, {"reward_weights": [1.0, 2.0]}, "but there are 1 reward function(s) (droidft_demo_reward)"),
    (GRPOConfig, {"data": "my_data", "reward_weights": [1.0]}, "but there are 5 reward function(s)"),
    (GRPOConfig, {"reward_functions": ["exact_answer"], "reward_weights": [0.0]}, "all zero"),
    (GRPOConfig, {"reward_file": "/nowhere/rewards.py"}, "reward file not found"),
    (GRPOConfig, {"warm_start": "/nowhere/adapters.safetensors"}, "warm_start adapter not found"),
    (GSPOConfig, {"importance_sampling_level": "token"}, "gspo means importance_sampling_level='sequence'"),
    (DrGRPOConfig, {"grpo_loss_type": "grpo"}, "dr_grpo means grpo_loss_type='dr_grpo'"),
    (DPOConfig, {"loss_type": "square"}, "loss_type must be one of sigmoid, hinge, ipo, dpop"),
    (DPOConfig, {"beta": 0}, "beta must be > 0 for dpo"),
    (DPOConfig, {"delta": -1}, "delta must be >= 0"),
    (CPOConfig, {"reference_model": "demo"}, "cpo uses no reference model"),
    (ORPOConfig, {"reference_model": "demo"}, "orpo uses no reference model"),
    (ORPOConfig, {"batch_size": 0, "learning_rate": 0}, "batch_size must be a whole number >= 1"),
    (DPOConfig, {"hosts": ["127.0.0.1", "10.0.0.7"]}, "dpo trains on one machine"),
])
def test_bad_options_are_refused_with_a_clear_message(cls, changes, fragment):
    problems = cls(**changes).problems()
    assert any(fragment in p for p in problems), problems
    with pytest.raises(ConfigError):
        jobs.start(cls(**changes))


def test_config_round_trips_through_yaml_and_rejects_unknown_keys(tmp_path):
    path = tmp_path / "grpo.yaml"
    path.write_text("group_size: 6\nbeta: 0.0\nreward_functions: [exact_answer, answer_similarity]\n"
                    "reward_weights: [2.0, 1.0]\nepsilon_high: 0.3\n")
    config = GRPOConfig.from_yaml(path)
    assert (config.group_size, config.beta, config.reward_weights) == (6, 0.0, [2.0, 1.0])
    assert config.problems() == []
    with pytest.raises(ConfigError, match="unknown option"):
        DPOConfig.from_dict({"group_size": 4})


# -- rewards --------------------------------------------------------------------------------


def test_demo_reward_gives_partial_credit():
    answer = "apple|fig|kiwi|plum"
    scores = rewards.droidft_demo_reward(
        None, ["apple, fig and kiwi.", "apple, car and kiwi.", "blorp, fim and zad.", "apple and fig.",
               "I like tea.", "apple, apple and apple."], [answer] * 6)
    assert scores == [1.0, 0.8, 0.4, 0.6, 0.0, 0.6]
    # a single expected answer: exact = 1, otherwise graded by similarity
    exact, close, far = rewards.droidft_demo_reward(None, ["The box is red.", "The box is blue.", "A kite."],
                                                   ["The box is red."] * 3)
    assert exact == 1.0 and 0 <= far < close < 0.8


def test_builtin_rewards_include_mlx_lm_lora_and_droidft_ones():
    names = {r["name"] for r in rewards.available()}
    assert set(rewards.MLX_LM_LORA_DEFAULTS) <= names
    assert {"droidft_demo_reward", "exact_answer", "answer_similarity"} <= names
    funcs = rewards.resolve(["r1_accuracy_reward_func", "exact_answer"])
    assert [f.__name__ for f in funcs] == ["r1_accuracy_reward_func", "exact_answer"]
    assert funcs[0](prompts=["q"], completions=["<answer>4</answer>"], answer=["4"]) == [2.0]


CUSTOM_REWARDS = textwrap.dedent('''
    import os

    def says_yes(prompts, completions, answer, types=None):
        return [1.0 if "yes" in c.lower() else 0.0 for c in completions]

    def length_bonus(prompts, completions, answer, types=None):
        return [min(len(c), 20) / 20 for c in completions]

    def _helper():
        pass
''')


def test_custom_reward_file_is_read_without_running_it_then_loaded(tmp_path, monkeypatch):
    path = tmp_path / "my_rewards.py"
    path.write_text(CUSTOM_REWARDS + "\nos.environ['DROIDFT_TEST_RAN'] = '1'\n")
    monkeypatch.delenv("DROIDFT_LAN", raising=False)
    monkeypatch.delenv("DROIDFT_TEST_RAN", raising=False)
    config = GRPOConfig(reward_file=str(path))
    assert config.problems() == []
    assert rewards.function_names_in_file(path) == ["says_yes", "length_bonus"]
    assert "DROIDFT_TEST_RAN" not in os.environ  # validation never executed the file
    funcs = rewards.resolve(None, str(path))
    assert [f.__name__ for f in funcs] == ["says_yes", "length_bonus"]
    assert funcs[0](prompts=["q"], completions=["Yes!"], answer=["a"]) == [1.0]
    bad = tmp_path / "broken.py"
    bad.write_text("def f(:\n")
    assert any("broken.py line 1: syntax error" in p for p in GRPOConfig(reward_file=str(bad)).problems())


def test_custom_reward_file_refused_on_a_lan_unless_the_owner_allows_it(tmp_path, monkeypatch):
    path = paths.home() / "my_rewards.py"  # inside the allowed roots: refused as code, not as a path
    path.write_text(CUSTOM_REWARDS)
    monkeypatch.setenv("DROIDFT_LAN", "1")
    monkeypatch.delenv("DROIDFT_ALLOW_CUSTOM_CODE", raising=False)
    config = GRPOConfig(reward_file=str(path), reward_functions=["says_yes"])
    assert any("refused while droidft is shared on a LAN" in p for p in config.problems())
    with pytest.raises(ConfigError, match="DROIDFT_ALLOW_CUSTOM_CODE=1"):
        jobs.start(config)
    with pytest.raises(rewards.RewardError, match="refused"):
        rewards.load_reward_file(path)  # the worker refuses too, whatever reached it
    assert store.list_runs() == []
    monkeypatch.setenv("DROIDFT_ALLOW_CUSTOM_CODE", "1")
    assert config.problems() == []
    assert [f.__name__ for f in rewards.resolve(["says_yes"], str(path))] == ["says_yes"]


# -- bad data: line-numbered errors per method --------------------------------------------------


def _write_split(folder: Path, rows: list, valid_rows: list | None = None):
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in (("train", rows), ("valid", valid_rows or rows)):
        with open(folder / f"{name}.jsonl", "w") as fh:
            for row in content:
                fh.write((row if isinstance(row, str) else json.dumps(row)) + "\n")


@pytest.mark.parametrize("method", ["grpo", "gspo", "dr_grpo", "bnpo", "dapo", "dpo", "orpo", "cpo"])
def test_bad_data_is_refused_with_the_line_number(method, tmp_path):
    cls = methods.get(method).config_class
    if methods.get(method).family == "grpo":
        good = {"prompt": "Name three fruits.", "answer": "apple|fig"}
        bad = {"prompt": "Name three fruits."}  # no answer
    else:
        good = {"prompt": "Name three fruits.", "chosen": "apple, fig and kiwi.", "rejected": "no."}
        bad = {"prompt": "Name three fruits.", "chosen": "apple, fig and kiwi."}  # no rejected
    folder = tmp_path / method
    _write_split(folder, [good, good, bad, good])
    with pytest.raises(DataError) as err:
        jobs.start(cls(data=str(folder)))
    message = str(err.value)
    assert "train.jsonl line 3" in message, message
    assert ("answer" if methods.get(method).family == "grpo" else "rejected") in message
    _write_split(folder, [good, good, good, "{not json"])
    with pytest.raises(DataError, match="line 4"):
        jobs.start(cls(data=str(folder)))
    assert store.list_runs() == []


def test_sft_data_for_a_grpo_run_says_what_format_is_expected(tmp_path):
    folder = tmp_path / "chat"
    _write_split(folder, [{"messages": [{"role": "user", "content": "hi"},
                                        {"role": "assistant", "content": "hello"}]}] * 4)
    with pytest.raises(DataError, match="line 1") as err:
        jobs.start(GRPOConfig(data=str(folder), reward_functions=["exact_answer"]))
    assert "prompt" in str(err.value) and "answer" in str(err.value)


# -- every method trains on the demo model in the worker ---------------------------------------


@pytest.mark.parametrize("cls, fine_tune_type", [
    (GRPOConfig, "lora"), (DrGRPOConfig, "dora"), (BNPOConfig, "lora"), (GSPOConfig, "full"),
    (DAPOConfig, "lora"),
])
def test_grpo_family_trains_and_stores_every_metric_and_samples(cls, fine_tune_type, demo_model):
    config = cls(**TINY_GRPO, fine_tune_type=fine_tune_type, samples_per_report=3)
    run_id, run = run_to_end(config)
    names = metric_names(run_id)
    missing = GRPO_METRICS - names
    assert not missing, sorted(missing)
    steps = sorted({r["step"] for r in store.metrics(run_id, names=["train_total_rewards_mean"])})
    assert steps == [1, 2]

    samples = store.samples(run_id)
    assert len(samples) == 2 * 3  # samples_per_report at each of the two reports
    assert {s["step"] for s in samples} == {1, 2}
    first = samples[0]
    assert first["prompt"] and isinstance(first["completion"], str)
    assert 0.0 <= first["reward"] <= 1.0
    assert set(first["meta"]["rewards"]) == {"droidft_demo_reward"}
    assert "|" in first["meta"]["answer"]

    kinds = {a["kind"] for a in store.artifacts(run_id)}
    assert {"checkpoint", "final_adapter"} <= kinds
    adapter = Path(run["adapter_path"])
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    assert cfg["fine_tune_type"] == fine_tune_type and cfg["droidft_method"] == cls.method
    assert not (adapter / "model.safetensors").exists()  # adapter only, never fused
    if fine_tune_type != "full":
        from mlx_lm import generate, load

        model, tokenizer = load(str(demo_model), adapter_path=str(adapter))
        assert isinstance(generate(model, tokenizer, "Name three fruits.", max_tokens=4), str)


@pytest.mark.parametrize("cls, options", [
    (DPOConfig, {"loss_type": "sigmoid"}), (DPOConfig, {"loss_type": "hinge", "fine_tune_type": "dora"}),
    (DPOConfig, {"loss_type": "ipo"}), (DPOConfig, {"loss_type": "dpop"}),
    (ORPOConfig, {}), (CPOConfig, {"fine_tune_type": "full"}), (CPOConfig, {"loss_type": "ipo"}),
])
def test_preference_methods_train_and_store_every_metric(cls, options, demo_model):
    run_id, run = run_to_end(cls(**TINY, data="demo", **options))
    names = metric_names(run_id)
    missing = PREFERENCE_METRICS - names
    assert not missing, sorted(missing)
    assert run["adapter_path"] and (Path(run["adapter_path"]) / "adapters.safetensors").exists()
    if cls is CPOConfig:  # computed by droidft where mlx-lm-lora left it at zero
        values = [r["value"] for r in store.metrics(run_id, names=["train_rejected_logits_mean"])]
        assert values and all(v != 0 for v in values)


def test_grpo_with_a_custom_reward_file_and_weights(tmp_path, demo_model):
    path = tmp_path / "my_rewards.py"
    path.write_text(CUSTOM_REWARDS)
    config = GRPOConfig(**TINY_GRPO, reward_file=str(path),
                        reward_functions=["says_yes", "length_bonus", "droidft_demo_reward"],
                        reward_weights=[0.5, 1.0, 2.0])
    run_id, _ = run_to_end(config)
    names = metric_names(run_id)
    for name in ("says_yes", "length_bonus", "droidft_demo_reward"):
        assert f"train_{name}_mean" in names and f"train_{name}_std" in names
    sample = store.samples(run_id)[-1]
    parts = sample["meta"]["rewards"]
    weighted = 0.5 * parts["says_yes"] + 1.0 * parts["length_bonus"] + 2.0 * parts["droidft_demo_reward"]
    assert sample["reward"] == pytest.approx(weighted, abs=1e-6)


def test_warm_start_adapter_starts_training_and_is_the_kl_reference(tmp_path, demo_model):
    """The warm-start weights are in the KL reference: compared with the adapter file itself,
    and seen by the trainer (at the first step the policy is the reference, so the KL is 0;
    against the bare base model, as `reference_model` asks, it is not)."""
    import numpy as np
    from mlx.utils import tree_flatten
    from safetensors.numpy import load_file

    from droidft.methods.rl_training import initial_weights, load_reference
    from droidft.models.synthetic import random_lora_adapter

    warm = random_lora_adapter(demo_model, tmp_path / "warm", rank=4, scale=10.0, seed=3)
    config = GRPOConfig(**TINY_GRPO, warm_start=str(warm))
    start_from, reference_weights = initial_weights(config, None, demo_model)
    assert start_from == reference_weights == str(warm / "adapters.safetensors")
    expected = load_file(reference_weights)
    reference = dict(tree_flatten(load_reference(config, demo_model, reference_weights).parameters()))
    assert {k for k in reference if ".lora_" in k} == set(expected)
    for key, value in expected.items():
        assert np.abs(value).max() > 0 and np.array_equal(np.array(reference[key]), value), key

    run_id, _ = run_to_end(config)
    events = " ".join(e["message"] for e in store.events(run_id))
    assert f"starting from adapter weights {warm / 'adapters.safetensors'}" in events
    bare_id, _ = run_to_end(GRPOConfig(**TINY_GRPO, warm_start=str(warm), reference_model="demo"))
    kl = {rid: next(r["value"] for r in store.metrics(rid, names=["train_kl"]) if r["step"] == 1)
          for rid in (run_id, bare_id)}
    assert kl[run_id] == pytest.approx(0.0, abs=1e-6), kl
    assert kl[bare_id] > 1e-4, kl


def test_stop_ends_a_grpo_run_cleanly_and_resume_continues_it(demo_model):
    config = GRPOConfig(**{**TINY_GRPO, "iters": 30, "steps_per_eval": 1000, "save_every": 1000})
    run_id = jobs.start(config)
    deadline = time.monotonic() + 300
    while not store.metrics(run_id, names=["train_loss"]):
        assert time.monotonic() < deadline and store.get_run(run_id)["status"] in jobs.ACTIVE, \
            jobs.log_tail(run_id)
        time.sleep(0.2)
    jobs.stop(run_id)
    run = jobs.wait(run_id, timeout=120)
    assert run["status"] == "stopped", run.get("error")
    assert (Path(run["adapter_path"]) / "adapters.safetensors").exists()
    done = store.artifacts(run_id, kind="final_adapter")[0]["step"]
    assert 1 <= done < 30

    resumed = jobs.resume(run_id)
    child = jobs.wait(resumed, timeout=300)
    assert child["status"] == "completed", child.get("error")
    assert child["config"]["iters"] == 30 - done and child["config"]["start_step"] == done
    steps = sorted(r["step"] for r in store.metrics(resumed, names=["train_loss"]))
    assert steps[0] == done + 1 and steps[-1] == 30  # the step count goes on from the parent
    events = " ".join(e["message"] for e in store.events(resumed))
    assert "starting from adapter weights" in events


# -- CLI -----------------------------------------------------------------------------------------


def test_cli_trains_grpo_with_method_options_and_prints_the_run_id(cli, demo_model):
    result = cli("train", "grpo", "--model", "demo", "--data", "demo", "--iters", "1", "--batch-size", "2",
                 "--group-size", "2", "--max-completion-length", "6", "--beta", "0",
                 "--reward-functions", "droidft_demo_reward,exact_answer", "--reward-weights", "1,0.5",
                 "--steps-per-report", "1", "--val-batches", "1", "--wait")
    assert result.returncode == 0, result.stderr
    run_id = result.stdout.strip().splitlines()[-1]
    run = store.get_run(run_id)
    assert run["method"] == "grpo"
    assert run["config"]["reward_weights"] == [1.0, 0.5] and run["config"]["beta"] == 0
    assert "train_exact_answer_mean" in metric_names(run_id)


def test_cli_refuses_bad_method_options_in_one_line(cli):
    result = cli("train", "dpo", "--loss-type", "square")
    assert result.returncode == 2
    assert "loss_type must be one of sigmoid, hinge, ipo, dpop" in result.stderr
    result = cli("train", "gspo", "--group-size", "1")
    assert result.returncode == 2 and "group_size must be >= 2" in result.stderr


@pytest.mark.parametrize("method", ["grpo", "dpo", "orpo", "sft"])
def test_cli_sample_data_writes_a_valid_set(method, cli, tmp_path):
    out = tmp_path / method
    result = cli("sample-data", method, "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == str(out)
    assert (out / "train.jsonl").is_file() and (out / "valid.jsonl").is_file()
    from droidft.data import validate_dataset

    assert validate_dataset(out, method=method).ok


def test_cli_lists_reward_functions(cli):
    result = cli("rewards")
    assert result.returncode == 0
    assert "droidft_demo_reward" in result.stdout and "r1_accuracy_reward_func" in result.stdout


# -- the demo: a real learning signal ----------------------------------------------------------


def _series(run_id, name):
    return [r["value"] for r in sorted(store.metrics(run_id, names=[name]), key=lambda r: r["step"])]


@pytest.mark.slow
def test_naive_task_gives_the_untrained_demo_model_zero_reward_and_zero_variance(tmp_path, demo_model):
    """Why the demo needs a partial-credit task: exact-answer rewards never fire."""
    from droidft.data import sample_data

    naive = sample_data("grpo", tmp_path / "naive")  # arithmetic and word puzzles, exact answers
    config = GRPOConfig(model="demo", data=str(naive), iters=6, steps_per_report=2, steps_per_eval=6,
                        val_batches=1, max_completion_length=24,
                        reward_functions=["exact_answer", "r1_accuracy_reward_func", "r1_soft_format_reward_func"])
    run_id, _ = run_to_end(config)
    means = _series(run_id, "train_total_rewards_mean")
    stds = _series(run_id, "train_grouped_rewards_std")
    assert means and all(m == 0 for m in means) and all(s == 0 for s in stds)


@pytest.mark.slow
def test_default_grpo_demo_run_visibly_raises_the_mean_reward(demo_model):
    """The one-click demo: demo model, demo data, every other option at its default."""
    run_id, _ = run_to_end(GRPOConfig(model="demo", data="demo"), timeout=1200)
    train = _series(run_id, "train_total_rewards_mean")
    val = _series(run_id, "val_total_rewards_mean")
    print(f"GRPO demo {run_id}: train reward per report {[round(v, 3) for v in train]}, "
          f"validation {[round(v, 3) for v in val]}")
    assert len(train) == GRPOConfig().iters // GRPOConfig().steps_per_report
    assert sum(train[-3:]) / 3 > train[0] + 0.1
    assert val[-1] > val[0] + 0.1
