"""Evaluation suites on the demo model: loss vs mlx-lm, accuracy scoring, stored results."""

import json
import math
import types

import mlx.core as mx
import pytest

from droidft.models.synthetic import random_lora_adapter
from droidft import evaluate, fusion, inference, paths, store
from droidft.evaluate import EvalError

CHAT_ROWS = [
    {"messages": [{"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": "2 + 3 = 5."}]},
    {"messages": [{"role": "user", "content": "Spell 'cat' backwards."}, {"role": "assistant", "content": "tac"}]},
    {"messages": [{"role": "user", "content": "What is 4 * 2?"}, {"role": "assistant", "content": "4 * 2 = 8."}]},
    {"messages": [{"role": "user", "content": "Write 'sun' in capitals."}, {"role": "assistant", "content": "SUN"}]},
]


def make_adapter(model_path, out, rank=2, seed=0):
    return random_lora_adapter(model_path, out, rank=rank, seed=seed)


@pytest.fixture
def qa_file(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in CHAT_ROWS))
    return path


def test_loss_suite_is_token_cross_entropy_and_reconciles_with_mlx_lm(demo_model):
    import mlx.nn as nn
    from mlx_lm.tuner.datasets import CacheDataset, create_dataset
    from mlx_lm.tuner.trainer import evaluate as mlx_evaluate

    loaded = inference.load(demo_model)
    ours = evaluate.loss_suite(loaded, CHAT_ROWS, batch_size=4)
    ds = create_dataset(CHAT_ROWS, loaded.tokenizer, types.SimpleNamespace(mask_prompt=False))
    total = count = 0.0
    for i in range(len(ds)):  # one row at a time, no padding: the plain definition
        toks = mx.array([ds.process(ds[i])[0]])
        ce = nn.losses.cross_entropy(loaded.model(toks[:, :-1]), toks[:, 1:])
        total += ce.sum().item()
        count += ce.size
    assert ours["loss"] == pytest.approx(total / count, rel=1e-5)
    assert ours["perplexity"] == pytest.approx(math.exp(total / count), rel=1e-5)
    assert ours["examples"] == 4 and ours["tokens"] == count
    # every row counts, also when the batch size does not divide the row count
    assert evaluate.loss_suite(loaded, CHAT_ROWS, batch_size=3)["loss"] == pytest.approx(ours["loss"], rel=1e-5)
    # mlx-lm's trainer also scores one padding target per row; that number is reported too
    stock = mlx_evaluate(loaded.model, CacheDataset(ds), batch_size=4, num_batches=-1)
    assert ours["loss_as_mlx_lm"] == pytest.approx(stock, rel=1e-5)
    masked = evaluate.loss_suite(loaded, CHAT_ROWS, batch_size=4, mask_prompt=True)
    assert masked["tokens"] < ours["tokens"]


def test_accuracy_scoring(monkeypatch, demo_model):
    answers = {"What is 2 + 3?": "2 + 3 = 5", "Spell 'cat' backwards.": "The answer is tac",
               "What is 4 * 2?": "4 * 2 = 9.", "Write 'sun' in capitals.": "sun"}
    monkeypatch.setattr(evaluate, "_answer", lambda loaded, messages, max_tokens: answers[messages[-1]["content"]])
    out = evaluate.accuracy_suite(None, CHAT_ROWS, pattern=r"\d")
    assert out["exact_match"] == 0.5        # "2 + 3 = 5" (final '.' ignored) and "sun" (case ignored)
    assert out["exact_match_strict"] == 0.0
    assert out["contains"] == 0.75          # and "tac" inside "The answer is tac"
    assert out["regex"] == 0.5 and out["regex_rows"] == 4
    assert 0.5 < out["similarity"] < 1.0
    assert out["n"] == 4 and out["examples"][0]["prediction"] == "2 + 3 = 5"
    with pytest.raises(EvalError, match="regex"):
        evaluate.accuracy_suite(None, CHAT_ROWS, pattern="(")
    with pytest.raises(EvalError, match="Q&A row needs"):
        evaluate.qa_pair({"text": "just text"})


def test_evaluate_base_adapters_and_fused_model_and_store_results(demo_model, qa_file, tmp_path):
    # an adapter that belongs to a run, one given as a folder, and a fused model
    run_id = store.create_run(method="sft", config={}, model=str(demo_model), data=str(qa_file))
    make_adapter(demo_model, paths.run_dir(run_id) / "adapters", seed=1)
    loose = make_adapter(demo_model, tmp_path / "loose", seed=2)
    fused = fusion.fuse([run_id, loose], [0.5, 0.5], to="model", out=tmp_path / "fused-model")
    report = evaluate.evaluate(demo_model, [run_id, loose, fused.out], qa_file, "loss,accuracy",
                               max_tokens=8)
    labels = [r["label"] for r in report.results]
    assert labels == ["base", run_id, "loose", "fused-model"]
    assert [r["kind"] for r in report.results] == ["base", "adapter", "adapter", "model"]
    for r in report.results:
        assert set(r["suites"]) == {"loss", "accuracy"}
        assert math.isfinite(r["suites"]["loss"]["loss"])
        assert 0 <= r["suites"]["accuracy"]["exact_match"] <= 1
    # adapters change the loss; the fused model is the average of the two adapters
    losses = [r["suites"]["loss"]["loss"] for r in report.results]
    assert len({round(x, 6) for x in losses}) == 4
    stored = store.evaluations()
    assert len(stored) == len(report.evaluation_ids) == 8
    assert {e["suite"] for e in stored} == {"loss", "accuracy"}
    assert all(e["dataset"] == str(qa_file) for e in stored)
    by_run = store.evaluations(run_id=run_id)
    assert len(by_run) == 2 and all(e["target"] == run_id for e in by_run)
    fused_rows = [e for e in stored if e["target"] == str(fused.out)]
    assert len(fused_rows) == 2 and all(e["artifact_id"] == fused.artifact_id for e in fused_rows)
    assert fused_rows[0]["results"]["kind"] == "model"
    assert report.table()[0]["target"] == "base" and "perplexity" in report.table()[0]


def test_reward_suite_on_grpo_rows(demo_model, tmp_path):
    rows = [{"prompt": "What is 2 + 3?", "answer": "5"}, {"prompt": "What is 1 + 1?", "answer": "2"}]
    path = tmp_path / "grpo.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = evaluate.evaluate(demo_model, [], path, "reward", max_tokens=6,
                               reward_functions=["exact_answer", "answer_similarity"], record=False)
    res = report.results[0]["suites"]["reward"]
    assert set(res["rewards"]) == {"exact_answer", "answer_similarity"}
    assert 0 <= res["total"] <= 2 and res["n"] == 2
    assert store.evaluations() == []  # record=False


def test_judge_suite(monkeypatch, demo_model, qa_file):
    verdicts = iter(["Yes.", "no", "maybe", "YES"])

    def fake_answer(loaded, messages, max_tokens):
        return next(verdicts) if "grading an answer" in messages[-1]["content"] else "an answer"

    monkeypatch.setattr(evaluate, "_answer", fake_answer)
    report = evaluate.evaluate(demo_model, [], qa_file, "judge", judge_model=demo_model)
    res = report.results[0]["suites"]["judge"]
    assert res["judge_score"] == 0.5 and res["unclear"] == 0.25 and res["n"] == 4
    assert report.table()[0]["judge"] == 0.5
    with pytest.raises(EvalError, match="judge model"):
        evaluate.evaluate(demo_model, [], qa_file, "judge")


def test_bad_evaluations_are_refused(demo_model, qa_file, tmp_path):
    with pytest.raises(EvalError, match="Unknown suite"):
        evaluate.evaluate(demo_model, [], qa_file, "loss,vibes")
    with pytest.raises(EvalError, match="Nothing to evaluate"):
        evaluate.evaluate(demo_model, [], qa_file, "loss", include_base=False)
    with pytest.raises(ValueError, match="not found"):
        evaluate.evaluate(demo_model, ["nope-run"], qa_file, "loss")
    with pytest.raises(ValueError, match="dataset not found"):
        evaluate.evaluate(demo_model, [], tmp_path / "missing.jsonl", "loss")


def test_eval_cli(demo_model, qa_file, capsys):
    from droidft import cli

    code = cli.main(["eval", "--model", str(demo_model), "--data", str(qa_file), "--suite", "loss",
                     "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["results"][0]["label"] == "base" and len(store.evaluations()) == 1
    code = cli.main(["eval", "--model", str(demo_model), "--data", str(qa_file), "--suite", "loss,accuracy",
                     "--limit", "2", "--max-tokens", "4", "--no-record"])
    text = capsys.readouterr().out
    assert code == 0 and "perplexity" in text and "exact_match" in text
    code = cli.main(["eval", "--model", str(demo_model), "--data", str(qa_file), "--suite", "bogus"])
    assert code == 2 and "Unknown suite" in capsys.readouterr().err
