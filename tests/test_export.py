"""Exports of a real trained run and of the architecture matrix: GGUF read back with the `gguf`
package (tensors, types, values, metadata), Ollama Modelfiles against the Jinja templates, MLX
and LM Studio folders through stock mlx_lm.load, PEFT adapters against mlx-lm's fuse, model
cards, export jobs, the CLI, and Hub uploads against the local Hub server."""

import hashlib
import json
import time
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

import hub_server
from droidft import store
from droidft.models.architectures import FAMILIES, build_matrix_model
from droidft.export import ExportError, export
from droidft.export import gguf as gg
from droidft.export import gguf_vocab, ollama
from droidft.export.card import read_front_matter
from helpers import trained_demo_run, wait_for

local_hub = hub_server.local_hub
use_hub = hub_server.use_hub
QUESTION = [{"role": "user", "content": "What is your favourite colour?"}]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, demo_model):
    """One real SFT run of the demo model (with an evaluation), in a home of its own."""
    from droidft import evaluate

    home, run_id = trained_demo_run(tmp_path_factory, "export-home", iters=16, steps_per_report=4,
                                    steps_per_eval=8, save_every=8, val_batches=2)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DROIDFT_HOME", str(home))
        evaluate.evaluate("demo", [run_id], suites=("loss",), limit=4, include_base=False)
    return {"home": home, "run_id": run_id}


@pytest.fixture
def home(trained, monkeypatch):
    monkeypatch.setenv("DROIDFT_HOME", str(trained["home"]))
    return trained["home"]


@pytest.fixture(scope="module")
def matrix(tmp_path_factory, demo_model):
    root = tmp_path_factory.mktemp("export-matrix")
    return lambda name: build_matrix_model(name, root / name) if not (root / name / "config.json").exists() \
        else root / name


# --------------------------------------------------------------------------- GGUF read back

def _source_tensor(folder: Path, name: str) -> np.ndarray:
    from droidft.export.gguf import _Weights

    cfg = json.loads((folder / "config.json").read_text())
    return _Weights(folder, cfg).load(name, np.float32)


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3", "gemma3", "phi3", "qwen3-4bit"])
@pytest.mark.parametrize("outtype", ["f16", "q8_0"])
def test_gguf_holds_every_tensor_with_its_shape_type_value_and_the_metadata(family, outtype, matrix, tmp_path):
    import gguf
    from gguf.quants import dequantize

    folder = matrix(family)
    cfg = json.loads((folder / "config.json").read_text())
    res = gg.write_gguf(folder, tmp_path / "m.gguf", outtype=outtype)
    back = gg.read_gguf(res.path)
    meta, tensors = back["metadata"], back["tensors"]
    arch = meta["general.architecture"]
    assert arch == {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "gemma3": "gemma3", "phi3": "phi3",
                    "qwen3-4bit": "qwen3"}[family]
    # every source tensor, under its GGUF name, with its shape and the planned type
    n_layers = cfg["num_hidden_layers"]
    names = gguf.get_tensor_name_map(getattr(gguf.MODEL_ARCH, gg.ARCHS[cfg["model_type"]].arch), n_layers)
    src = [k for k in mx.load(str(folder / "model.safetensors")) if not k.endswith((".scales", ".biases"))]
    assert len(src) >= 9 * n_layers // 2
    for key in src:
        gname = names.get_name(key, try_suffixes=(".weight", ".bias"))
        assert gname in tensors, key
        shape, qtype = tensors[gname]
        want_shape = _source_tensor(folder, key).shape
        assert shape == want_shape, (key, shape, want_shape)
        assert qtype == ("F32" if len(want_shape) == 1 else outtype.upper()), (key, qtype)
    if family == "phi3":
        assert "output.weight" in tensors and "blk.0.attn_qkv.weight" in tensors and "blk.0.ffn_up.weight" in tensors
    assert len(tensors) == len(src) + (1 if family == "phi3" and "lm_head.weight" not in src else 0)
    # the values, through gguf's own dequantize, with llama's q/k permutation and gemma's 1 + w
    reader = gguf.GGUFReader(str(res.path))
    by_name = {t.name: t for t in reader.tensors}
    tol = 1e-3 if outtype == "f16" else 2e-2
    for key in ("model.layers.0.self_attn.q_proj.weight", "model.layers.1.self_attn.k_proj.weight",
                "model.layers.0.mlp.down_proj.weight", "model.norm.weight", "model.embed_tokens.weight"):
        if key not in src:
            continue
        t = by_name[names.get_name(key, try_suffixes=(".weight",))]
        got = dequantize(t.data, t.tensor_type).reshape(_source_tensor(folder, key).shape)
        want = _source_tensor(folder, key)
        if family == "llama" and "q_proj" in key:
            want = gg._permute(want, cfg["num_attention_heads"])
        if family == "llama" and "k_proj" in key:
            want = gg._permute(want, cfg["num_key_value_heads"])
        if family == "gemma3" and key.endswith("norm.weight"):
            want = want + 1.0
        np.testing.assert_allclose(got, want, atol=tol * max(1.0, float(np.abs(want).max())), err_msg=key)
    # metadata: architecture, sizes, vocabulary, tokenizer, chat template
    tok = json.loads((folder / "tokenizer.json").read_text())
    tcfg = json.loads((folder / "tokenizer_config.json").read_text())
    assert meta[f"{arch}.context_length"] == cfg["max_position_embeddings"]
    assert meta[f"{arch}.embedding_length"] == cfg["hidden_size"]
    assert meta[f"{arch}.block_count"] == n_layers
    assert meta[f"{arch}.attention.head_count"] == cfg["num_attention_heads"]
    assert meta[f"{arch}.attention.head_count_kv"] == cfg["num_key_value_heads"]
    assert meta[f"{arch}.feed_forward_length"] == cfg["intermediate_size"]
    assert meta[f"{arch}.vocab_size"] == meta["tokenizer.ggml.tokens"] == cfg["vocab_size"]
    assert meta["tokenizer.ggml.token_type"] == cfg["vocab_size"]
    assert meta["tokenizer.ggml.merges"] == len(tok["model"]["merges"])
    assert meta["tokenizer.ggml.model"] == "gpt2" and meta["tokenizer.ggml.pre"] == res.tokenizer_pre
    assert meta["tokenizer.chat_template"] == ollama.chat_template(folder) == FAMILIES[family.split("-")[0]].template
    assert meta["tokenizer.ggml.eos_token_id"] == next(a["id"] for a in tok["added_tokens"]
                                                         if a["content"] == tcfg["eos_token"])
    if FAMILIES[family.split("-")[0]].bos:
        assert meta["tokenizer.ggml.bos_token_id"] == next(a["id"] for a in tok["added_tokens"]
                                                             if a["content"] == tcfg["bos_token"])
    if family == "gemma3":
        assert meta["gemma3.attention.sliding_window"] == cfg["sliding_window"]
        assert meta["gemma3.attention.key_length"] == cfg["head_dim"]


def test_tokens_and_types_match_the_tokenizer(matrix, tmp_path):
    import gguf

    folder = matrix("qwen3")
    res = gg.write_gguf(folder, tmp_path / "q.gguf")
    reader = gguf.GGUFReader(str(res.path))
    tokens = reader.fields["tokenizer.ggml.tokens"]
    types = reader.fields["tokenizer.ggml.token_type"]
    tok = json.loads((folder / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    added = {a["id"]: a["content"] for a in tok["added_tokens"]}
    for i in (0, 5, 100, len(vocab) - 1, *added):
        text = tokens.contents(i)
        assert text == (added.get(i) or next(t for t, j in vocab.items() if j == i))
        assert types.contents(i) == (gguf.TokenType.CONTROL if i in added else gguf.TokenType.NORMAL)
    last = len(tokens.data) - 1
    if last not in added and last >= len(vocab):
        assert tokens.contents(last) == f"[PAD{last}]" and types.contents(last) == gguf.TokenType.UNUSED


def test_pre_tokenizer_is_named_from_the_split_regex_and_unknown_ones_are_refused(demo_model):
    tok = json.loads((demo_model / "tokenizer.json").read_text())
    assert gg.tokenizer_pre(tok) == "gpt-2"
    llama3 = next(k for k, v in gguf_vocab._SPLIT_PRE.items() if v == "llama-bpe")
    qwen2 = next(k for k, v in gguf_vocab._SPLIT_PRE.items() if v == "qwen2")
    seq = lambda rx: {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": rx}, "behavior": "Isolated"},
        {"type": "ByteLevel", "add_prefix_space": False, "use_regex": False}]}}
    assert gg.tokenizer_pre(seq(llama3)) == "llama-bpe"
    assert gg.tokenizer_pre(seq(qwen2)) == "qwen2"
    assert gg.tokenizer_pre(seq(r"\w+|\s+")) is None


def test_uncovered_architecture_gets_a_clear_message(demo_model, tmp_path):
    import shutil

    folder = tmp_path / "neox"
    shutil.copytree(demo_model, folder)
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "model_type": "gpt_neox"}))
    with pytest.raises(gg.GGUFExportError, match="GGUF export covers .*gpt_neox"):
        gg.write_gguf(folder, tmp_path / "x.gguf")
    with pytest.raises(ExportError, match="convert_hf_to_gguf"):
        export(folder, "gguf", out=tmp_path / "out", record=False)
    assert not (tmp_path / "out").exists() and not (tmp_path / "x.gguf").exists()


# --------------------------------------------------------------------------- Ollama

@pytest.mark.parametrize("family", ["demo", "llama", "qwen2", "qwen3", "gemma3", "phi3"])
def test_modelfile_template_renders_like_the_jinja_template(family, matrix, demo_model):
    from transformers import PreTrainedTokenizerFast

    folder = demo_model if family == "demo" else matrix(family)
    turns = ollama.turns_for(folder)
    assert turns is not None
    tok = PreTrainedTokenizerFast.from_pretrained(str(folder))
    for messages in (QUESTION, [{"role": "system", "content": "Answer briefly."}, *QUESTION],
                     [*QUESTION, {"role": "assistant", "content": "Chrome."}, {"role": "user", "content": "Why?"}]):
        want = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert ollama.render(turns, messages) == want, (family, messages)
    text, note = ollama.modelfile("m-f16.gguf", folder)
    assert note is None and text.startswith("FROM ./m-f16.gguf\n")
    assert 'TEMPLATE """' in text and "{{ .Content }}" in text or "{{ $m.Content }}" in text
    stops = [line.split(" ", 2)[2] for line in text.splitlines() if line.startswith("PARAMETER stop")]
    family_stops = FAMILIES[family].stop if family != "demo" else ("<|end|>",)
    assert set(json.dumps(s) for s in family_stops) <= set(stops)


# --------------------------------------------------------------------------- a trained run

def test_run_to_ollama_writes_gguf_modelfile_card_and_records_an_artifact(home, trained):
    from droidft import studio as us

    run_id = trained["run_id"]
    res = export(run_id, "ollama", name="droid")
    folder = Path(res.out)
    names = sorted(f["name"] for f in res.files)
    assert names == ["Modelfile", "README.md", "droid-f16.gguf"]
    assert (folder / "Modelfile").read_text().startswith("FROM ./droid-f16.gguf")
    assert gg.read_gguf(folder / "droid-f16.gguf")["metadata"]["general.name"] == "droid"
    art = next(a for a in store.artifacts(run_id=run_id) if a["id"] == res.artifact_id)
    assert art["kind"] == "export_ollama" and art["path"] == str(folder)
    assert {f["name"] for f in art["meta"]["files"]} == set(names)
    # the card: front matter in the Hub's format, and what the run really did
    card = (folder / "README.md").read_text()
    fm = read_front_matter(card)
    assert fm["library_name"] == "gguf" and "droidft" in fm["tags"] and "sft" in fm["tags"]
    assert fm["datasets"] == [] and "base_model" not in fm  # the demo model and data are not on the Hub
    latest = store.latest_metrics(run_id)
    assert "| Steps trained | 16 |" in card
    assert f"| Tokens trained | {int(latest['trained_tokens'])} |" in card
    assert f"| Final train loss | {latest['train_loss']:.4g} |" in card
    assert f"| Final validation loss | {latest['val_loss']:.4g} |" in card
    assert "## Evaluation" in card and "| loss |" in card
    assert "droidft's bundled demo dataset" in card and "- Rows: train" in card
    assert "Fine-tuned from **droidft-demo (droidft's built-in demo model" in card
    assert "by droidft 0.1.0" in card
    dot = us.lineage_dot(store.run_summaries().to_dict("records"), store.artifacts(), store.evaluations())
    assert f'"export:{res.artifact_id}"' in dot and "export · ollama" in dot
    # a second export of the same name never overwrites the first
    with pytest.raises(ExportError, match="already exists"):
        export(run_id, "ollama", out=folder)


def test_mlx_and_lmstudio_folders_open_with_stock_mlx_lm_and_answer_like_the_adapter(home, trained, tmp_path,
                                                                                     monkeypatch):
    from mlx_lm import generate, load

    from droidft import inference

    monkeypatch.setenv("DROIDFT_LMSTUDIO_MODELS", str(tmp_path / "lmstudio"))
    run_id = trained["run_id"]
    lm = export(run_id, "lmstudio", name="droid")
    assert Path(lm.out) == tmp_path / "lmstudio" / "droidft" / "droid"
    assert "droidft/droid" in lm.where and str(tmp_path / "lmstudio") in lm.where
    model, tok = load(lm.out)
    prompt = tok.apply_chat_template(QUESTION, add_generation_prompt=True)
    fused_answer = generate(model, tok, prompt=prompt, max_tokens=16)
    adapter_answer = inference.generate("demo", QUESTION, [run_id], sampling=inference.Sampling.greedy(),
                                        max_tokens=16).text
    assert fused_answer.strip() and fused_answer.strip() == adapter_answer.strip()
    assert read_front_matter((Path(lm.out) / "README.md").read_text())["library_name"] == "mlx"
    q8 = export(run_id, "mlx", name="droid-q8", quantize=8)
    cfg = json.loads((Path(q8.out) / "config.json").read_text())
    assert cfg["quantization"]["bits"] == 8
    model, tok = load(q8.out)
    assert generate(model, tok, prompt=prompt, max_tokens=8).strip()
    kinds = {a["kind"] for a in store.artifacts(run_id=run_id)}
    assert {"export_lmstudio", "export_mlx"} <= kinds


def test_peft_adapter_applied_in_numpy_equals_mlx_lm_fuse(home, trained, demo_model):
    from safetensors.numpy import load_file

    run_id = trained["run_id"]
    peft = Path(export(run_id, "peft", name="droid-peft").out)
    fused = Path(export(run_id, "mlx", name="droid-fused").out)  # mlx-lm's fuse (load + fuse())
    cfg = json.loads((peft / "adapter_config.json").read_text())
    tensors = load_file(str(peft / "adapter_model.safetensors"))
    base = {k: np.array(v) for k, v in mx.load(str(demo_model / "model.safetensors")).items()}
    after = {k: np.array(v) for k, v in mx.load(str(fused / "model.safetensors")).items()}
    assert cfg["peft_type"] == "LORA" and cfg["r"] == 4 and cfg["lora_alpha"] == 40.0
    assert cfg["base_model_name_or_path"] in ("demo", str(demo_model))
    assert cfg["target_modules"] == sorted({k.split(".")[-3] for k in tensors})
    a_keys = [k for k in tensors if k.endswith(".lora_A.weight")]
    assert a_keys and all(k.startswith("base_model.model.model.layers.") for k in a_keys)
    changed = 0
    for a_key in a_keys:
        module = a_key[len("base_model.model."):-len(".lora_A.weight")]
        A, B = tensors[a_key], tensors[a_key.replace("lora_A", "lora_B")]
        assert A.shape[0] == cfg["r"] and B.shape[1] == cfg["r"]
        w = base[module + ".weight"] + (cfg["lora_alpha"] / cfg["r"]) * (B @ A)
        np.testing.assert_allclose(w, after[module + ".weight"], atol=1e-5, err_msg=module)
        changed += not np.allclose(base[module + ".weight"], after[module + ".weight"])
    assert changed == len(a_keys)
    layers = sorted({int(k.split(".")[4]) for k in a_keys})
    assert cfg.get("layers_to_transform", list(range(4))) == layers


def test_peft_of_a_subset_of_layers_names_them(demo_model, tmp_path):
    from droidft.models.synthetic import random_lora_adapter

    folder = random_lora_adapter(demo_model, tmp_path / "a", rank=2, keys=["self_attn.q_proj"])
    cfg = json.loads((folder / "adapter_config.json").read_text())
    weights = mx.load(str(folder / "adapters.safetensors"))
    keep = {k: v for k, v in weights.items() if ".layers.2." in k or ".layers.3." in k}  # the last 2 of 4
    mx.save_safetensors(str(folder / "adapters.safetensors"), keep)
    (folder / "adapter_config.json").write_text(json.dumps({**cfg, "num_layers": 2}))
    out = Path(export(folder, "peft", out=tmp_path / "peft", record=False).out)
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["target_modules"] == ["q_proj"] and cfg["layers_to_transform"] == [2, 3]
    assert cfg["layers_pattern"] == "layers" and cfg["base_model_name_or_path"] == str(demo_model)


def test_peft_refuses_models_and_dora_with_a_message(demo_model, tmp_path):
    from droidft.models.synthetic import random_lora_adapter

    with pytest.raises(ExportError, match="model, not an adapter"):
        export(demo_model, "peft", out=tmp_path / "p", record=False)
    dora = random_lora_adapter(demo_model, tmp_path / "d", rank=2, dora=True)
    with pytest.raises(ExportError, match="DoRA"):
        export(dora, "peft", out=tmp_path / "p", record=False)
    assert not (tmp_path / "p").exists()


# --------------------------------------------------------------------------- jobs, CLI

def test_export_job_reports_progress_and_ends_with_the_artifact(home, trained):
    from droidft.export import jobs

    job = jobs.start(trained["run_id"], "gguf", name="droid-job", quantize=8)
    done = jobs.wait(job, timeout=600)
    assert done["status"] == "completed", done.get("error")
    assert done["done"] == done["total"] == 1.0 and done["artifact_id"]
    files = sorted(p.name for p in Path(done["out"]).iterdir())
    assert files == ["README.md", "droid-job-q8_0.gguf"]
    assert gg.read_gguf(Path(done["out"]) / "droid-job-q8_0.gguf")["tensors"]["blk.0.attn_q.weight"][1] == "Q8_0"
    bad = jobs.wait(jobs.start("no-such-run", "gguf"), timeout=120)
    assert bad["status"] == "failed" and "not found" in bad["error"]
    assert [j["id"] for j in jobs.for_source(trained["run_id"])][0] == job


def test_export_job_waits_for_a_run_queue_slot(home, trained):
    """Fusing and converting compute like a training run: with every slot held (a lease here,
    as a run would), a GGUF export job waits and says so, then runs once the slot frees."""
    from droidft import queue, settings
    from droidft.export import jobs

    settings.set("max_concurrent_runs", 1)
    lease = queue.acquire("test", "a run holds the only slot", wait=False)
    try:
        job = jobs.start(trained["run_id"], "gguf", name="droid-waits", quantize=8)
        wait_for(lambda: "waiting for a free run slot" in (jobs.get(job).get("phase") or ""), timeout=120)
        time.sleep(1.5)
        assert jobs.get(job)["status"] == "running" and not jobs.get(job).get("out")
    finally:
        queue.release(lease)
    done = jobs.wait(job, timeout=600)
    assert done["status"] == "completed", done.get("error")
    assert queue.leases() == [], "the export gave its slot back"
    settings.set("max_concurrent_runs", "auto")


def test_cli_export(cli, home, trained, tmp_path):
    out = cli("export", trained["run_id"], "--to", "gguf", "--quantize", "8", "--out", str(tmp_path / "g"))
    assert out.returncode == 0, out.stderr
    assert "-q8_0.gguf" in out.stdout and "README.md" in out.stdout and "recorded as art" in out.stdout
    as_json = cli("export", trained["run_id"], "--to", "peft", "--out", str(tmp_path / "p"), "--json")
    assert json.loads(as_json.stdout)["files"][0]["name"] == "README.md"
    again = cli("export", trained["run_id"], "--to", "gguf", "--out", str(tmp_path / "g"))
    assert again.returncode == 2 and "already exists" in again.stderr and "Traceback" not in again.stderr
    bad = cli("export", str(tmp_path / "g"), "--to", "peft")
    assert bad.returncode == 2 and "droidft:" in bad.stderr and "Traceback" not in bad.stderr


# --------------------------------------------------------------------------- the Hub

def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_hub_upload_arrives_whole_renders_its_card_and_refuses_a_clash(home, trained, local_hub, use_hub,
                                                                      monkeypatch, tmp_path):
    from huggingface_hub import HfApi, ModelCard

    use_hub(local_hub)
    monkeypatch.setenv("HF_TOKEN", local_hub.token)
    run_id = trained["run_id"]
    first = export(run_id, "gguf", name="droid-hub")
    res = export(first.artifact_id, "hub", repo_id="tester/droid-gguf")
    repo = local_hub.root / "models" / "tester" / "droid-gguf"
    for f in Path(first.out).iterdir():
        assert _sha(repo / f.name) == _sha(f), f.name  # whole, byte for byte
    assert local_hub.uploads[0] == ("create", "tester/droid-gguf", True)  # private by default
    info = HfApi().model_info("tester/droid-gguf")
    assert info.private
    card = ModelCard.load("tester/droid-gguf")
    assert card.data.library_name == "gguf" and "droidft" in card.data.tags
    assert "Steps trained" in card.text
    art = next(a for a in store.artifacts(kind="export_hub"))
    assert art["id"] == res.artifact_id and art["meta"]["repo_id"] == "tester/droid-gguf"
    assert art["meta"]["source_artifact"] == first.artifact_id
    commits = len(local_hub.uploads)
    with pytest.raises(ExportError, match="already exists on the Hub"):
        export(run_id, "hub", repo_id="tester/droid-gguf", upload="peft")
    assert len(local_hub.uploads) == commits  # nothing sent
    again = export(run_id, "hub", repo_id="tester/droid-gguf", upload="peft", update=True)
    assert "Updated" in again.where and (repo / "adapter_model.safetensors").is_file()
    # a run uploads straight away too: the PEFT adapter, made and sent in one go
    peft = export(run_id, "hub", repo_id="tester/droid-peft", upload="peft")
    assert {f["name"] for f in peft.files} == {"README.md", "adapter_config.json", "adapter_model.safetensors"}
    assert json.loads((local_hub.root / "models/tester/droid-peft/adapter_config.json").read_text())["r"] == 4


def test_hub_upload_says_what_is_wrong_without_token_with_a_bad_one_or_no_network(home, trained, local_hub,
                                                                                 use_hub, monkeypatch):
    use_hub(local_hub)
    run_id = trained["run_id"]
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(ExportError, match="No Hugging Face token"):
        export(run_id, "hub", repo_id="tester/x", upload="peft")
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    with pytest.raises(ExportError, match="refused the token"):
        export(run_id, "hub", repo_id="tester/x", upload="peft")
    use_hub(hub_server.closed_port_url())
    monkeypatch.setenv("HF_TOKEN", local_hub.token)
    with pytest.raises(ExportError, match="Cannot reach the Hugging Face Hub"):
        export(run_id, "hub", repo_id="tester/x", upload="peft")
    with pytest.raises(ExportError, match="not a Hub name"):
        export(run_id, "hub", repo_id="no slash", upload="peft")
    assert not (local_hub.root / "models" / "tester" / "x").exists()
    assert "hf_wrong" not in json.dumps(store.artifacts(), default=str)
