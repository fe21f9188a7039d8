"""The demo model and demo datasets, with the real model (no mocks).

The build is shared with every other test through conftest's session `demo_model`
fixture (one build per checkout, see paths.demo_model_dir), so these tests cost seconds
once it exists.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from droidft import paths
from droidft.models.demo import (
    BUILD_FILE,
    DEMO_SFT_DEFAULTS,
    EOS,
    SHIPPED_DIR,
    build_demo_model,
    build_hash,
    chat_answer,
    exact_match,
    is_built,
)

DEMO = paths.DATA_DIR / "demo"


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="session")
def loaded(demo_model):
    from mlx_lm import load

    return load(str(demo_model))


def test_folder_has_the_standard_layout(demo_model):
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json", "generation_config.json", BUILD_FILE):
        assert (demo_model / name).is_file(), name
    config = json.loads((demo_model / "config.json").read_text())
    assert config["model_type"] == "llama"
    tok_config = json.loads((demo_model / "tokenizer_config.json").read_text())
    assert "add_generation_prompt" in tok_config["chat_template"]
    assert tok_config["eos_token"] == EOS
    record = json.loads((demo_model / BUILD_FILE).read_text())
    assert record["build_hash"] == build_hash()
    assert is_built(demo_model)


def test_stock_load_chat_template_and_generation(loaded):
    model, tokenizer = loaded
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello!"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == "<|bos|><|system|>\nBe brief.<|end|>\n<|user|>\nHello!<|end|>\n<|assistant|>\n"
    assert tokenizer.eos_token_id in tokenizer.eos_token_ids
    answer = chat_answer(model, tokenizer, messages[1:], max_tokens=16)
    assert answer and EOS not in answer
    # Byte-level BPE: any text survives a round trip, nothing is unknown.
    sample = "Grüße, 東京! tabs\tand\nnewlines 🤖"
    assert tokenizer.decode(tokenizer.encode(sample, add_special_tokens=False)) == sample


def test_exact_match_reads_chat_and_completion_rows(loaded):
    model, tokenizer = loaded
    chat_rows = rows(DEMO / "chat" / "test.jsonl")[:4]
    completion_rows = rows(DEMO / "completions" / "test.jsonl")[:4]
    # The base model has never seen the droid persona: the demo starts from zero.
    assert exact_match(model, tokenizer, chat_rows) == 0.0
    assert exact_match(model, tokenizer, completion_rows) == 0.0
    assert exact_match(model, tokenizer, []) == 0.0
    answer = chat_answer(model, tokenizer, chat_rows[0]["messages"][:-1], max_tokens=32)
    exact_row = {"prompt": chat_rows[0]["messages"][0]["content"], "completion": answer}
    assert exact_match(model, tokenizer, [exact_row]) == 1.0


def test_the_shipped_model_is_current_so_nothing_is_built(demo_model, monkeypatch):
    """A fresh clone has the demo model: data/droidft-demo matches the recipe and corpus (after
    changing them, run scripts/make_demo_model.py and commit its output)."""
    import droidft.models.demo as dm

    assert demo_model == SHIPPED_DIR
    assert is_built(SHIPPED_DIR), "data/droidft-demo is stale: run scripts/make_demo_model.py"
    weights = demo_model / "model.safetensors"
    before = weights.stat().st_mtime_ns
    monkeypatch.setattr(dm, "_build_into", lambda *a, **k: pytest.fail("an up-to-date model was rebuilt"))
    assert build_demo_model(demo_model) == demo_model  # up to date: returns without building
    assert weights.stat().st_mtime_ns == before


def test_make_demo_model_reproduces_the_shipped_model_with_openblas(tmp_path):
    """The script rebuilds the committed weights: bitwise on the same BLAS kernels, within a
    tolerance on others (SkylakeX vs Haswell kernels differed by 3e-4 of a tensor's largest
    weight after the 300 steps). Started without OpenBLAS, it builds in a child that has it."""
    import mlx.core as mx
    import numpy as np

    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "DROIDFT_REEXEC")}
    out = subprocess.run([sys.executable, str(paths.REPO_ROOT / "scripts" / "make_demo_model.py"),
                          "--out", str(tmp_path / "rebuilt")], capture_output=True, text=True, env=env,
                         timeout=3600)
    assert out.returncode == 0, out.stderr[-2000:]
    rebuilt = tmp_path / "rebuilt"
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                 "generation_config.json"):
        assert (rebuilt / name).read_bytes() == (SHIPPED_DIR / name).read_bytes(), name
    record = json.loads((rebuilt / BUILD_FILE).read_text())
    assert record["build_hash"] == json.loads((SHIPPED_DIR / BUILD_FILE).read_text())["build_hash"]
    from droidft.blas import find_openblas

    if find_openblas() and sys.platform == "linux":
        assert record["blas"].startswith("openblas"), record["blas"]
    new, shipped = mx.load(str(rebuilt / "model.safetensors")), mx.load(str(SHIPPED_DIR / "model.safetensors"))
    assert new.keys() == shipped.keys()
    for key in shipped:
        a, b = np.array(new[key]), np.array(shipped[key])
        assert a.shape == b.shape, key
        assert np.abs(a - b).max() <= 5e-3 * np.abs(b).max(), key


def test_incomplete_or_stale_folders_are_not_taken_as_built(demo_model, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(demo_model, copy)
    assert is_built(copy)
    record = json.loads((copy / BUILD_FILE).read_text())
    (copy / BUILD_FILE).write_text(json.dumps(dict(record, build_hash="old")))
    assert not is_built(copy)
    (copy / BUILD_FILE).unlink()
    assert not is_built(copy)
    assert not is_built(tmp_path / "missing")


def test_stock_mlx_lm_generate_command(demo_model):
    out = subprocess.run(
        [sys.executable, "-m", "mlx_lm", "generate", "--model", str(demo_model),
         "--prompt", "hi", "--max-tokens", "5"],
        capture_output=True, text=True, env=dict(os.environ), timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Generation:" in out.stdout


def test_demo_datasets_cover_every_format_with_held_out_test_words():
    for fmt, key in (("chat", "messages"), ("completions", "prompt"), ("text", "text")):
        sizes = {}
        for split in ("train", "valid", "test"):
            data = rows(DEMO / fmt / f"{split}.jsonl")
            assert data and all(key in r for r in data), (fmt, split)
            sizes[split] = len(data)
        assert sizes["train"] > 8 * DEMO_SFT_DEFAULTS["batch_size"]
    # The word a user likes in a test question never occurs in any train question.
    train_text = " ".join(r["messages"][0]["content"] for r in rows(DEMO / "chat" / "train.jsonl"))
    train_words = {w.strip(".?,") for w in train_text.split()}
    test_rows = rows(DEMO / "chat" / "test.jsonl")
    for r in test_rows:
        question = r["messages"][0]["content"]
        assert r["messages"][-1]["content"].startswith("Beep boop!")
        assert any(w.strip(".?,") not in train_words for w in question.split()), question
    train_questions = {r["messages"][0]["content"] for r in rows(DEMO / "chat" / "train.jsonl")}
    assert not train_questions & {r["messages"][0]["content"] for r in test_rows}


def test_demo_data_script_reproduces_the_committed_files(tmp_path):
    """make_demo_data.py is seeded: the JSONL in the repo is exactly what it writes."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "make_demo_data", paths.REPO_ROOT / "scripts" / "make_demo_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.CORPUS, module.DEMO = tmp_path / "corpus", tmp_path / "demo"
    module.main()
    for path in (tmp_path / "demo").rglob("*.jsonl"):
        assert path.read_bytes() == (DEMO / path.relative_to(tmp_path / "demo")).read_bytes(), path
    for path in (tmp_path / "corpus").glob("*.txt"):
        assert path.read_bytes() == (paths.DATA_DIR / "corpus" / path.name).read_bytes(), path
