"""Config validation at the boundary, mlx-lm YAML compatibility, the stock command."""

import math

import pytest
import yaml

from droidft.config import ConfigError, SFTConfig


def problems_of(**kwargs):
    return SFTConfig.from_dict(kwargs).problems()


def test_defaults_are_valid():
    assert SFTConfig().problems() == []


@pytest.mark.parametrize("field,value,fragment", [
    ("iters", -5, "iters must be a whole number >= 1"),
    ("iters", 0, "iters must be a whole number >= 1"),
    ("learning_rate", math.nan, "learning_rate must be a finite number"),
    ("learning_rate", 0, "learning_rate must be > 0"),
    ("batch_size", 2.5, "batch_size must be a whole number"),
    ("fine_tune_type", "qlora", "fine_tune_type must be one of lora, dora, full"),
    ("optimizer", "rmsprop", "optimizer must be one of"),
    ("num_layers", 0, "num_layers must be -1"),
    ("val_batches", 0, "val_batches must be -1"),
    ("grad_accumulation_steps", 0, "grad_accumulation_steps must be"),
    ("quantize_bits", 7, "quantize_bits must be one of"),
    ("epochs", -1.0, "epochs must be > 0"),
])
def test_bad_values_are_named(field, value, fragment):
    found = problems_of(**{field: value})
    assert any(fragment in p for p in found), found


def test_lora_parameters_checked():
    found = problems_of(lora_parameters={"rank": 0, "scale": math.inf, "dropout": 1.5})
    assert any("lora rank" in p for p in found)
    assert any("lora scale" in p for p in found)
    assert any("lora dropout" in p for p in found)


def test_warmup_must_be_shorter_than_training():
    assert any("warmup_steps" in p for p in problems_of(iters=10, warmup_steps=10))


def test_full_finetune_cannot_train_quantised_base():
    assert any("QLoRA" in p for p in problems_of(fine_tune_type="full", quantize_bits=4))


def test_unknown_keys_are_refused_with_their_names():
    with pytest.raises(ConfigError, match="unknown option.*learnin_rate"):
        SFTConfig.from_dict({"learnin_rate": 1e-4})


def test_validate_raises_with_every_problem():
    with pytest.raises(ConfigError) as err:
        SFTConfig(iters=0, batch_size=0).validate()
    assert len(err.value.problems) == 2


def test_loads_the_yaml_stock_mlx_lm_takes(tmp_path):
    stock = {
        "model": "mlx-community/Some-Model", "train": True, "data": "/tmp/data",
        "fine_tune_type": "dora", "optimizer": "adamw", "seed": 3, "num_layers": 8,
        "batch_size": 2, "iters": 600, "val_batches": 25, "learning_rate": 1e-5,
        "steps_per_report": 10, "steps_per_eval": 200, "resume_adapter_file": None,
        "adapter_path": "adapters", "save_every": 100, "test": False, "test_batches": 100,
        "max_seq_length": 2048, "grad_checkpoint": True, "mask_prompt": True,
        "lora_parameters": {"keys": ["self_attn.q_proj", "self_attn.v_proj"], "rank": 16,
                            "scale": 10.0, "dropout": 0.05},
        "lr_schedule": {"name": "cosine_decay", "warmup": 10, "warmup_init": 1e-7,
                        "arguments": [1e-5, 1000, 1e-7]},
    }
    path = tmp_path / "lora_config.yaml"
    path.write_text(yaml.safe_dump(stock))
    config = SFTConfig.from_yaml(path, iters=50)
    assert config.iters == 50  # command-line override wins
    assert config.fine_tune_type == "dora" and config.lora_parameters.rank == 16
    assert config.lora_parameters.keys == ["self_attn.q_proj", "self_attn.v_proj"]
    assert config.schedule()["name"] == "cosine_decay"
    assert config.problems() == []


def test_yaml_errors_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        SFTConfig.from_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("iters: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        SFTConfig.from_yaml(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        SFTConfig.from_yaml(listy)


def test_stock_command_round_trips_through_mlx_lm_parser(tmp_path):
    """The printed command parses with mlx-lm's own argparse into the same values."""
    import shlex

    from mlx_lm.lora import build_parser

    config = SFTConfig(iters=123, batch_size=2, learning_rate=3e-4, mask_prompt=True, num_layers=4)
    command = config.to_mlx_lm_command("/models/m", "/data/d", "/runs/x/adapters")
    argv = shlex.split(command)
    assert argv[:2] == ["mlx_lm", "lora"]
    args = build_parser().parse_args(argv[2:])
    assert (args.iters, args.batch_size, args.learning_rate) == (123, 2, 3e-4)
    assert args.mask_prompt and args.num_layers == 4 and args.model == "/models/m"
    # Non-default adapter shape needs the YAML, and the YAML carries it.
    config = config.replace(lora_parameters=config.lora_parameters.__class__(rank=4, scale=8.0))
    assert " -c " in config.to_mlx_lm_command("/m", "/d")
    written = yaml.safe_load(config.to_mlx_lm_yaml("/m", "/d"))
    assert written["lora_parameters"]["rank"] == 4 and written["train"] is True


def test_warmup_shorthand_builds_an_mlx_schedule():
    from mlx_lm.tuner.utils import build_schedule

    schedule = SFTConfig(iters=100, warmup_steps=10, learning_rate=1e-3).schedule()
    fn = build_schedule(schedule)
    assert float(fn(0)) == pytest.approx(0.0)
    assert float(fn(10)) == pytest.approx(1e-3, rel=1e-3)
    assert float(fn(100)) < 1e-4
