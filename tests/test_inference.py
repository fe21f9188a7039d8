"""Inference on the demo model: adapter resolution and checks, caching, seeded generation."""

import json
import shutil

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from droidft.models.synthetic import random_lora_adapter
from droidft import inference, paths
from droidft.adapters import AdapterError, architecture, check_adapter, resolve_adapter, stale_base_warning
from droidft.inference import GenerationError, Sampling


def make_adapter(model_path, out, rank=4, seed=0, scale=2.0):
    """A LoRA adapter in mlx-lm's layout with random (non-zero) B factors."""
    return random_lora_adapter(model_path, out, rank=rank, seed=seed, scale=scale)


@pytest.fixture(scope="session")
def adapters(demo_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("inference-adapters")
    return {"a": make_adapter(demo_model, root / "a", rank=4, seed=1),
            "b": make_adapter(demo_model, root / "b", rank=2, seed=2)}


@pytest.fixture
def other_base(demo_model, tmp_path):
    """A model with the demo's layout but a different width (an incompatible base)."""
    from mlx_lm.models import llama

    folder = tmp_path / "other-base"
    folder.mkdir()
    cfg = dict(json.loads((demo_model / "config.json").read_text()), hidden_size=64, intermediate_size=96)
    model = llama.Model(llama.ModelArgs.from_dict(cfg))
    mx.save_safetensors(str(folder / "model.safetensors"), dict(tree_flatten(model.parameters())))
    (folder / "config.json").write_text(json.dumps(cfg))
    for f in demo_model.glob("tokenizer*"):
        shutil.copy(f, folder)
    return folder


def test_resolve_adapter_from_folder_run_id_and_checkpoint(adapters):
    spec = resolve_adapter(adapters["a"])
    assert spec.rank == 4 and spec.fine_tune_type == "lora" and spec.run_id is None
    # a run's adapter folder, found by run id (paths.run_dir(id)/adapters)
    run_adapters = paths.run_dir("run-test-1") / "adapters"
    shutil.copytree(adapters["a"], run_adapters)
    shutil.copy(run_adapters / "adapters.safetensors", run_adapters / "0000010_adapters.safetensors")
    by_id = resolve_adapter("run-test-1")
    assert by_id.run_id == "run-test-1" and by_id.path == run_adapters
    assert resolve_adapter(paths.run_dir("run-test-1")).path == run_adapters
    ckpt = resolve_adapter(run_adapters / "0000010_adapters.safetensors")
    assert ckpt.weights_file.name == "0000010_adapters.safetensors" and ckpt.run_id == "run-test-1"
    with pytest.raises(AdapterError, match="'no-such-run' not found"):
        resolve_adapter("no-such-run")


def test_incompatible_adapters_are_refused_with_a_clear_message(adapters, demo_model, other_base, tmp_path):
    # trained on a different base: names the adapter, its base and what differs
    foreign = make_adapter(other_base, tmp_path / "foreign", rank=2)
    with pytest.raises(AdapterError) as err:
        check_adapter(demo_model, foreign)
    msg = str(err.value)
    arch = architecture(demo_model)
    hidden, n_layers = arch["hidden_size"], arch["num_hidden_layers"]
    assert str(foreign) in msg and str(other_base) in msg
    assert f"hidden_size 64 vs {hidden}" in msg
    # the base folder gone: the layer shapes still give it away
    shutil.rmtree(other_base)
    with pytest.raises(AdapterError, match=f"takes 64 inputs in the adapter but {hidden} in the model"):
        check_adapter(demo_model, foreign)
    # a config whose rank disagrees with the weights
    bad_rank = tmp_path / "bad-rank"
    shutil.copytree(adapters["a"], bad_rank)
    cfg = json.loads((bad_rank / "adapter_config.json").read_text())
    cfg["lora_parameters"]["rank"] = 16
    (bad_rank / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(AdapterError, match="says rank 16 but the weights have rank 4"):
        check_adapter(demo_model, bad_rank)
    # layers the model does not have
    deep = tmp_path / "deep"
    shutil.copytree(adapters["a"], deep)
    w = mx.load(str(deep / "adapters.safetensors"))
    w[f"model.layers.{n_layers + 5}.self_attn.q_proj.lora_a"] = w["model.layers.0.self_attn.q_proj.lora_a"]
    mx.save_safetensors(str(deep / "adapters.safetensors"), w)
    with pytest.raises(AdapterError, match=rf"model.layers.{n_layers + 5}.self_attn.q_proj does not exist "
                                           rf".*only {n_layers} layers"):
        check_adapter(demo_model, deep)
    # generate refuses before loading anything
    with pytest.raises(AdapterError):
        inference.generate(demo_model, "hi", deep, max_tokens=2)


def test_generation_matches_stock_mlx_lm(adapters, demo_model):
    from mlx_lm import load, stream_generate

    prompt = "What is 2 + 3?"
    ours = inference.generate(demo_model, prompt, adapters["a"], sampling=Sampling.greedy(), max_tokens=12)
    model, tok = load(str(demo_model), adapter_path=str(adapters["a"]))
    tokens = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True)
    stock = "".join(r.text for r in stream_generate(model, tok, tokens, max_tokens=12))
    assert ours.text == stock
    assert ours.generation_tokens > 0 and ours.tokens_per_second > 0 and ours.prompt_tokens == len(tokens)
    chunks = list(inference.stream(demo_model, prompt, adapters["a"], sampling=Sampling.greedy(), max_tokens=12))
    assert "".join(c.text for c in chunks) == stock and chunks[-1].finish_reason in ("stop", "length")


def test_cache_reuses_models_and_shares_base_weights(adapters, demo_model, tmp_path):
    cache = inference.ModelCache(max_bytes=10**9)
    base = cache.get(demo_model)
    view = cache.get(demo_model, [adapters["a"]])
    again = cache.get(demo_model, [adapters["a"]])
    assert again is view and cache.loads == 1
    q = view.model.layers[0].self_attn.q_proj
    assert q.linear.weight is base.model.layers[0].self_attn.q_proj.weight  # no copy of the base
    assert "lora_a" not in base.model.layers[0].self_attn.q_proj  # the base is untouched
    assert view.nbytes < base.nbytes / 4
    # bounded by memory: a second model evicts the least recently used one
    copy = tmp_path / "copy"
    shutil.copytree(demo_model, copy)
    small = inference.ModelCache(max_bytes=int(base.nbytes * 1.5))
    small.get(demo_model, [adapters["a"]])
    small.get(copy)
    labels = [(e["kind"], e["model"]) for e in small.info()]
    assert labels == [("base", str(copy))] and small.nbytes <= small.max_bytes


def test_stacked_adapters_add_their_updates(adapters, demo_model):
    from mlx_lm import load

    stacked = inference.load(demo_model, [adapters["a"], adapters["b"]], [1.0, 0.5]).model
    ma, _ = load(str(demo_model), adapter_path=str(adapters["a"]))
    mb, _ = load(str(demo_model), adapter_path=str(adapters["b"]))
    mbase, _ = load(str(demo_model))
    x = mx.array([[1, 5, 9, 17]])
    q = "self_attn.q_proj"
    h = mx.random.normal((1, 3, architecture(demo_model)["hidden_size"]))
    la, lb = ma.layers[1].self_attn.q_proj, mb.layers[1].self_attn.q_proj
    base_q = mbase.layers[1].self_attn.q_proj
    want = la(h) + 0.5 * (lb(h) - base_q(h))
    got = stacked.layers[1].self_attn.q_proj(h)
    np.testing.assert_allclose(np.array(got), np.array(want), atol=1e-5)
    assert np.isfinite(np.array(stacked(x))).all(), q


def test_seeded_sampling_and_compare(adapters, demo_model):
    s = Sampling(temperature=1.0, seed=123)
    one = inference.generate(demo_model, "Tell me a story.", sampling=s, max_tokens=16)
    two = inference.generate(demo_model, "Tell me a story.", sampling=s, max_tokens=16)
    assert one.text == two.text  # the same seed, the same sample
    results = inference.compare(demo_model, [adapters["a"], [adapters["a"], adapters["b"]]], "Tell me a story.",
                                sampling=s, max_tokens=16)
    assert [r.target for r in results] == ["base", str(adapters["a"]), f"{adapters['a']}+{adapters['b']}"]
    assert results[0].text == one.text
    assert all(r.tokens_per_second > 0 and r.seed == 123 for r in results)
    with pytest.raises(GenerationError, match="top_p must be"):
        inference.generate(demo_model, "hi", sampling=Sampling(top_p=2.0))
    with pytest.raises(GenerationError, match="prompt is empty"):
        inference.generate(demo_model, "  ")


def test_generate_and_compare_cli(adapters, demo_model, capsys):
    from droidft import cli

    code = cli.main(["generate", "--model", str(demo_model), "--adapter", str(adapters["a"]),
                     "--prompt", "What is 2 + 3?", "--max-tokens", "8", "--temp", "0"])
    out = capsys.readouterr()
    assert code == 0 and "tokens/s" in out.err
    code = cli.main(["compare", "--model", str(demo_model), "--adapter", str(adapters["a"]),
                     "--prompt", "hi", "--max-tokens", "6", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and [d["target"] for d in data] == ["base", str(adapters["a"])]
    code = cli.main(["generate", "--model", str(demo_model), "--adapter", "missing-run", "--prompt", "hi"])
    assert code == 2 and "not found" in capsys.readouterr().err


def test_adapter_older_than_its_rewritten_base_gets_a_warning(demo_model, tmp_path):
    import os
    import time

    base = tmp_path / "base"
    shutil.copytree(demo_model, base)
    adapter = make_adapter(base, tmp_path / "ad", rank=2)
    assert stale_base_warning(base, adapter) is None
    later = time.time() + 60
    for f in base.glob("*.safetensors"):
        os.utime(f, (later, later))  # the base was rebuilt after the adapter was saved
    warning = stale_base_warning(base, adapter)
    assert warning and "retrain" in warning and str(adapter) in warning
    result = inference.generate(base, "hi", adapter, max_tokens=2, cache=inference.ModelCache())
    assert result.warnings == [warning]
