"""Adapter fusion on the demo model: numerics in update space, stock mlx-lm loading, validation."""

import json

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from droidft import fusion, inference, store
from droidft.adapters import architecture, resolve_adapter
from droidft.fusion import FusionError

PROMPT = [{"role": "user", "content": "What is 2 + 3?"}]


def make_adapter(model_path, out, rank=4, seed=0, dora=False, keys=None, scale=2.0):
    """A LoRA/DoRA adapter in mlx-lm's layout with random (non-zero) B factors."""
    from droidft.models.synthetic import random_lora_adapter

    return random_lora_adapter(model_path, out, rank=rank, seed=seed, dora=dora, keys=keys, scale=scale)


@pytest.fixture(scope="session")
def adapters(demo_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("fusion-adapters")
    return {
        "a": make_adapter(demo_model, root / "a", rank=4, seed=1),
        "b": make_adapter(demo_model, root / "b", rank=2, seed=2, scale=5.0),
        "c": make_adapter(demo_model, root / "c", rank=3, seed=3),
        "dora": make_adapter(demo_model, root / "dora", rank=2, seed=4, dora=True),
        "qv": make_adapter(demo_model, root / "qv", rank=2, seed=5, keys=["self_attn.q_proj", "self_attn.v_proj"]),
    }


def modules_of(adapter):
    return sorted(fusion.load_factors(resolve_adapter(adapter)))


_STOCK: dict[str, dict[str, np.ndarray]] = {}


def stock_update(adapter, module: str) -> np.ndarray:
    """One layer's update as stock mlx-lm applies the adapter, computed without droidft.fusion:
    load the demo model with the adapter (mlx_lm.load), fuse each LoRA/DoRA layer into a plain
    Linear with mlx-lm's own `fuse()`, and subtract the base weight."""
    key = str(adapter)
    if key not in _STOCK:
        from mlx_lm import load

        from droidft.models.demo import demo_model_path

        model, _ = load(str(demo_model_path()), adapter_path=key)
        _STOCK[key] = {name: np.array(layer.fuse().weight) - np.array(layer.linear.weight)
                       for name, layer in model.named_modules() if hasattr(layer, "lora_a")}
    return _STOCK[key][module]


def logits(model, tokens=(1, 5, 9, 17, 33, 65)):
    return model(mx.array([list(tokens)]))


def test_linear_fused_update_is_weighted_sum_of_updates(adapters, demo_model, tmp_path):
    result = fusion.fuse([adapters["a"], adapters["b"]], [0.7, 0.3], out=tmp_path / "f")
    assert result.provenance["rank"] == 6  # 4 + 2: lossless by default
    assert result.retained_energy["min"] > 1 - 1e-6
    for module in modules_of(adapters["a"]):
        want = 0.7 * stock_update(adapters["a"], module) + 0.3 * stock_update(adapters["b"], module)
        got = stock_update(tmp_path / "f", module)
        assert np.abs(want).max() > 1e-3  # a real update, not zeros agreeing with zeros
        np.testing.assert_allclose(got, want, atol=1e-6 * max(1.0, np.abs(want).max()))
        # droidft's own reading of an update (the dashboard's preview) agrees with stock mlx-lm
        np.testing.assert_allclose(fusion.update_of(tmp_path / "f", module), got, atol=1e-6)
        # and it is not what averaging A and B separately would give
        fa, fb = (fusion.load_factors(resolve_adapter(adapters[k]))[module] for k in "ab")
        assert fa["a"].shape != fb["a"].shape  # ranks differ: A/B averaging is not even defined


def test_fused_adapter_and_model_load_with_stock_mlx_lm_and_agree(adapters, demo_model, tmp_path):
    from mlx_lm import generate, load

    fusion.fuse([adapters["a"], adapters["b"]], [0.6, 0.4], out=tmp_path / "fa")
    fusion.fuse([adapters["a"], adapters["b"]], [0.6, 0.4], out=tmp_path / "fm", to="model")
    assert {"config.json", "model.safetensors", "tokenizer.json", "fusion.json"} <= {
        p.name for p in (tmp_path / "fm").iterdir()}
    m_adapter, tok = load(str(demo_model), adapter_path=str(tmp_path / "fa"))
    m_model, tok2 = load(str(tmp_path / "fm"))
    stacked = inference.load(demo_model, [adapters["a"], adapters["b"]], [0.6, 0.4])
    ref = logits(stacked.model)
    np.testing.assert_allclose(np.array(logits(m_adapter)), np.array(ref), atol=2e-4)
    np.testing.assert_allclose(np.array(logits(m_model)), np.array(ref), atol=2e-4)
    prompt = tok.apply_chat_template(PROMPT, add_generation_prompt=True)
    assert isinstance(generate(m_adapter, tok, prompt, max_tokens=5), str)
    assert isinstance(generate(m_model, tok2, prompt, max_tokens=5), str)


def test_truncated_rank_reports_retained_energy(adapters, tmp_path):
    result = fusion.fuse([adapters["a"], adapters["c"]], [0.5, 0.5], out=tmp_path / "r2", rank=2)
    module = modules_of(adapters["a"])[0]
    dense = 0.5 * stock_update(adapters["a"], module) + 0.5 * stock_update(adapters["c"], module)
    s = np.linalg.svd(dense, compute_uv=False)
    want = float((s[:2] ** 2).sum() / (s ** 2).sum())
    got = next(r["retained_energy"] for r in result.layers if r["module"] == module)
    assert got == pytest.approx(want, rel=1e-4)
    assert 0 < result.retained_energy["total"] < 1
    fused = stock_update(tmp_path / "r2", module)
    assert np.linalg.matrix_rank(fused, tol=1e-6) == 2
    u, sv, vt = np.linalg.svd(dense)  # the best rank-2 approximation (Eckart-Young)
    np.testing.assert_allclose(fused, (u[:, :2] * sv[:2]) @ vt[:2], atol=1e-5 * np.abs(dense).max())
    cfg = json.loads((tmp_path / "r2" / "adapter_config.json").read_text())
    assert cfg["lora_parameters"]["rank"] == 2 and cfg["fine_tune_type"] == "lora"


def test_layered_linear_schedule(adapters, demo_model, tmp_path):
    spec = {"linear": {"start": [1.0, 0.0], "end": [0.0, 1.0]}}
    fusion.fuse([adapters["a"], adapters["b"]], layer_weights=spec, out=tmp_path / "lay")
    n = architecture(demo_model)["num_hidden_layers"]
    for module in modules_of(adapters["a"]):
        t = fusion.layer_index(module) / (n - 1)
        want = (1 - t) * stock_update(adapters["a"], module) + t * stock_update(adapters["b"], module)
        np.testing.assert_allclose(stock_update(tmp_path / "lay", module), want, atol=1e-6)


def test_layer_weight_specs_are_validated():
    table = fusion.layer_weight_table({"ranges": [{"layers": "0-1", "weights": [0.9, 0.1]},
                                                  {"layers": [2, 3], "weights": [0.2, 0.8]}]}, 2, 4)
    assert table == [[0.9, 0.1], [0.9, 0.1], [0.2, 0.8], [0.2, 0.8]]
    assert fusion.layer_weight_table({"ranges": [{"layers": 3, "weights": [1, 0]}]}, 2, 4,
                                     weights=[0.5, 0.5])[:2] == [[0.5, 0.5]] * 2
    cases = [
        ({"table": [[0.5, 0.5]] * 3}, "3 rows but the model has 4 layers"),
        ({"table": [[0.5, 0.5, 0.0]] * 4}, "2 weights expected"),
        ({"table": [[0.5, 0.6]] * 4}, "sum to 1.1"),
        ({"ranges": [{"layers": "0-2", "weights": [1, 0]}, {"layers": "2-3", "weights": [0, 1]}]}, "overlap"),
        ({"ranges": [{"layers": "0-1", "weights": [1, 0]}]}, "Layers 2-3 are in no range"),
        ({"ranges": [{"layers": "0-9", "weights": [1, 0]}]}, "outside layers 0-3"),
        ({"linear": {"start": [1, 0]}}, "linear schedule"),
        ({"table": [[1, 0]] * 4, "linear": {}}, "exactly one of"),
        ({"table": [[float("nan"), 1]] * 4}, "not a finite number"),
    ]
    for spec, message in cases:
        with pytest.raises(FusionError, match=message):
            fusion.layer_weight_table(spec, 2, 4)


def test_bad_fusion_requests_are_refused(adapters, demo_model, tmp_path):
    a, b = adapters["a"], adapters["b"]
    cases = [
        (dict(adapters=[a, b], weights=[0.5]), "2 adapters .* but 1 weights"),
        (dict(adapters=[a, b], weights=[0.7, 0.7]), "sum to 1.4"),
        (dict(adapters=[a, b], method="linear", density=0.3), "density applies"),
        (dict(adapters=[a, b], method="ties", density=1.5), r"density must be in \(0, 1\]"),
        (dict(adapters=[a, b], to="model", rank=4), "rank applies to a fused adapter"),
        (dict(adapters=[a, b], method="mean"), "Unknown fusion method"),
        (dict(adapters=[a, a]), "listed twice"),
        (dict(adapters=[a, adapters["qv"]]), "same layer keys"),
        (dict(adapters=[a, tmp_path / "nope"]), "not found"),
    ]
    for kwargs, message in cases:
        with pytest.raises(FusionError, match=message):
            fusion.fuse(out=tmp_path / "bad", **kwargs)
    assert not (tmp_path / "bad").exists()
    # a non-empty output folder is not overwritten unless asked
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    with pytest.raises(FusionError, match="not empty"):
        fusion.fuse([a, b], out=tmp_path / "full")
    # weights that do not sum to 1 are fine when asked for (task arithmetic)
    r = fusion.fuse([a, b], [1.0, -0.5], allow_any_sum=True, out=tmp_path / "arith")
    module = modules_of(a)[0]
    np.testing.assert_allclose(stock_update(r.out, module),
                               stock_update(a, module) - 0.5 * stock_update(b, module), atol=1e-6)


def test_adapters_of_different_bases_are_refused(adapters, demo_model, tmp_path):
    from mlx_lm.models import llama

    other = tmp_path / "other-base"
    other.mkdir()
    cfg = dict(json.loads((demo_model / "config.json").read_text()), hidden_size=64, intermediate_size=96)
    model = llama.Model(llama.ModelArgs.from_dict(cfg))
    mx.save_safetensors(str(other / "model.safetensors"), dict(tree_flatten(model.parameters())))
    (other / "config.json").write_text(json.dumps(cfg))
    foreign = make_adapter(other, tmp_path / "foreign", rank=2)
    with pytest.raises(FusionError, match="different base models"):
        fusion.fuse([adapters["a"], foreign], out=tmp_path / "x")


def test_ties_and_dare_merges():
    d1 = np.array([[1.0, -2.0, 0.1, 3.0]], dtype=np.float32)
    d2 = np.array([[0.5, 2.0, -0.2, -1.0]], dtype=np.float32)
    # density 1: no trim; a sign per element from the weighted sum (a tie elects none),
    # then the weighted mean of the entries that agree with it
    merged = fusion.ties_merge([d1, d2], [0.5, 0.5], density=1.0)
    np.testing.assert_allclose(merged, [[0.75, 0.0, -0.2, 3.0]])
    merged = fusion.ties_merge([d1, d2], [0.5, 0.5], density=1.0, normalize=False)
    np.testing.assert_allclose(merged, [[0.75, 0.0, -0.1, 1.5]])
    # density 0.5 keeps the top half of each by magnitude: d1 -> [0,-2,0,3], d2 -> [0,2,0,-1]
    merged = fusion.ties_merge([d1, d2], [0.5, 0.5], density=0.5)
    np.testing.assert_allclose(merged, [[0.0, 0.0, 0.0, 3.0]])
    big = np.ones((200, 200), np.float32)
    dropped = fusion.dare_drop(big, 0.25, np.random.default_rng(0))
    assert set(np.unique(dropped)) <= {0.0, 4.0}
    assert abs((dropped != 0).mean() - 0.25) < 0.02
    assert abs(dropped.mean() - 1.0) < 0.1  # rescaled: the expectation is kept


def test_ties_and_dare_outputs_load_and_record_provenance(adapters, demo_model, tmp_path):
    from mlx_lm import load

    for method, extra in (("ties", {"density": 0.6}), ("dare", {"density": 0.7, "seed": 3, "ties_sign": True})):
        r = fusion.fuse([adapters["a"], adapters["b"], adapters["c"]], [0.5, 0.3, 0.2], method=method,
                        rank=4, out=tmp_path / method, **extra)
        assert 0 < r.retained_energy["total"] <= 1
        model, _ = load(str(demo_model), adapter_path=str(r.out))
        assert np.isfinite(np.array(logits(model))).all()
        arts = {a["id"]: a for a in store.artifacts(kind="fused_adapter")}
        meta = arts[r.artifact_id]["meta"]
        assert meta["method"] == method and meta["weights"] == [0.5, 0.3, 0.2]
        assert [i["path"] for i in meta["inputs"]] == [str(adapters[k]) for k in "abc"]
        assert meta["params"]["density"] == extra["density"]
        assert json.loads((r.out / "fusion.json").read_text())["method"] == method
    # DARE is reproducible from its seed
    r1 = fusion.fuse([adapters["a"], adapters["b"]], method="dare", seed=7, out=tmp_path / "d1", record=False)
    r2 = fusion.fuse([adapters["a"], adapters["b"]], method="dare", seed=7, out=tmp_path / "d2", record=False)
    m = modules_of(adapters["a"])[0]
    np.testing.assert_array_equal(fusion.update_of(r1.out, m), fusion.update_of(r2.out, m))


def test_dora_updates_fuse_like_stock_mlx_lm_fuse(adapters, demo_model, tmp_path):
    from mlx_lm import load

    # One DoRA adapter at weight 1 fused into the model = stock `mlx_lm fuse` of it.
    fusion.fuse([adapters["dora"]], [1.0], to="model", out=tmp_path / "dm")
    stock, _ = load(str(demo_model), adapter_path=str(adapters["dora"]))
    ours, _ = load(str(tmp_path / "dm"))
    np.testing.assert_allclose(np.array(logits(ours)), np.array(logits(stock)), atol=2e-4)
    # DoRA + LoRA fused on their updates, then re-factorised at full rank
    full = architecture(demo_model)["hidden_size"]  # >= min(out, in) of every layer
    r = fusion.fuse([adapters["dora"], adapters["a"]], [0.5, 0.5], rank=full, out=tmp_path / "mix")
    m = modules_of(adapters["a"])[0]
    want = 0.5 * stock_update(adapters["dora"], m) + 0.5 * stock_update(adapters["a"], m)
    np.testing.assert_allclose(stock_update(r.out, m), want, atol=1e-5)


def test_quantized_base_is_dequantized_into_a_full_model(demo_model, tmp_path):
    from mlx_lm import load

    from droidft.models import quantized_copy

    qbase = quantized_copy(demo_model, bits=8, group_size=64)
    adapter = make_adapter(qbase, tmp_path / "qa", rank=2, seed=9)
    r = fusion.fuse([adapter], [1.0], to="model", out=tmp_path / "qm")
    cfg = json.loads((r.out / "config.json").read_text())
    assert "quantization" not in cfg and "quantization_config" not in cfg
    stock, _ = load(str(qbase), adapter_path=str(adapter))
    ours, _ = load(str(r.out))
    np.testing.assert_allclose(np.array(logits(ours)), np.array(logits(stock)), atol=2e-3)


def test_fuse_cli(adapters, tmp_path, capsys):
    from droidft import cli

    lw = tmp_path / "lw.json"
    lw.write_text(json.dumps({"ranges": [{"layers": "0-1", "weights": [0.8, 0.2]}]}))
    code = cli.main(["fuse", "--adapters", f"{adapters['a']},{adapters['b']}", "--weights", "0.5,0.5",
                     "--layer-weights", str(lw), "--rank", "3", "--out", str(tmp_path / "cli"), "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["provenance"]["layer_table"][0] == [0.8, 0.2]
    assert out["provenance"]["layer_table"][3] == [0.5, 0.5]
    assert out["artifact_id"]
    code = cli.main(["fuse", "--adapters", f"{adapters['a']},{adapters['b']}", "--weights", "0.5,x",
                     "--out", str(tmp_path / "cli2")])
    assert code == 2
    assert "not a number" in capsys.readouterr().err


def test_randomized_svd_matches_exact_on_large_low_rank_updates():
    rng = np.random.default_rng(0)
    d = (rng.standard_normal((700, 8)) @ rng.standard_normal((8, 600))).astype(np.float32)
    d += 0.01 * rng.standard_normal(d.shape).astype(np.float32)
    with fusion.blas_threads():
        u, s, vt, total = fusion.truncated_svd(d, 8)  # 600 > 512 and 8 * 4 < 600: randomised
    exact = np.linalg.svd(d, compute_uv=False)
    np.testing.assert_allclose(s, exact[:8], rtol=1e-4)
    assert total == pytest.approx(float((exact ** 2).sum()), rel=1e-4)
    np.testing.assert_allclose((u * s) @ vt, d, atol=0.1)
