"""The CLI as a user drives it: real runs, JSON output, one clear line on bad input."""

import json

import pytest


def test_train_wait_runs_json_show_metrics_logs(cli, demo_model):
    out = cli("train", "sft", "--model", "demo", "--data", "demo", "--iters", "6",
              "--steps-per-report", "3", "--steps-per-eval", "6", "--save-every", "3",
              "--rank", "4", "--learning-rate", "1e-3", "--name", "cli run", "--wait")
    assert out.returncode == 0, out.stderr
    run_id = out.stdout.strip().splitlines()[-1]

    runs = json.loads(cli("runs", "--json").stdout)
    row = next(r for r in runs if r["id"] == run_id)
    assert row["name"] == "cli run" and row["method"] == "sft" and row["status"] == "completed"
    assert row["adapter_path"].endswith("adapters")

    shown = json.loads(cli("show", run_id, "--json").stdout)
    assert shown["config"]["lora_parameters"]["rank"] == 4
    metrics = json.loads(cli("metrics", run_id, "--json").stdout)
    assert {"step", "name", "value"} <= set(metrics[0])
    assert {m["name"] for m in metrics} >= {"train_loss", "val_loss", "tokens_per_second"}
    assert "worker" in cli("logs", run_id).stdout
    stock = cli("command", run_id).stdout
    assert stock.startswith("mlx_lm lora ") and "--iters 6" in stock


def test_config_file_and_print_command(cli, tmp_path, demo_model):
    cfg = tmp_path / "lora.yaml"
    cfg.write_text("fine_tune_type: dora\niters: 3\nlora_parameters: {rank: 2, scale: 5.0, dropout: 0.0}\n")
    out = cli("train", "sft", "--model", "demo", "--data", "demo", "-c", str(cfg), "--print-command")
    assert out.returncode == 0, out.stderr
    assert "--fine-tune-type dora" in out.stdout and " -c " in out.stdout


@pytest.mark.parametrize("args,fragment", [
    (["--data", "/nonexistent/data"], "not found"),
    (["--model", "/nonexistent/model"], "not found"),
    (["--model", "someorg/not-downloaded"], "not downloaded"),
    (["--iters", "-3"], "iters must be a whole number >= 1"),
    (["--learning-rate", "nan"], "learning_rate must be a finite number"),
    (["-c", "/nonexistent.yaml"], "cannot read config file"),
])
def test_bad_input_is_one_clear_line(cli, args, fragment, demo_model):
    base = {"--model": "demo", "--data": "demo"}
    argv = ["train", "sft"]
    for key, value in base.items():
        if key not in args:
            argv += [key, value]
    out = cli(*argv, *args)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert fragment in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_malformed_jsonl_names_its_line(cli, tmp_path, demo_model):
    data = tmp_path / "data"
    data.mkdir()
    good = json.dumps({"prompt": "hi", "completion": "there"})
    (data / "train.jsonl").write_text("\n".join([good, good, "{not json", good]) + "\n")
    (data / "valid.jsonl").write_text(good + "\n")
    out = cli("train", "sft", "--model", "demo", "--data", str(data))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "train.jsonl line 3" in out.stderr, out.stderr


def test_unknown_run_is_clear(cli):
    for command in ("show", "metrics", "logs", "stop", "resume"):
        out = cli(command, "no-such-run")
        assert out.returncode == 2 and "No run 'no-such-run'" in out.stderr, out.stderr
