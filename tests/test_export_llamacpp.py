"""GGUF exports run by llama.cpp itself (llama-cpp-python): same prompt tokens, same greedy
answer as droidft's own generation from the same fused model (the same text for the trained
demo run; the same token ids for the random family models, whose answers include ids past
their tiny vocabularies that have no text).

Opt-in (`pytest -m llamacpp`): llama-cpp-python compiles llama.cpp from source when pip installs
it, which took 1 h 40 min on the shared, loaded 2-core machine (docs/BENCHMARKS.md), too slow
for every CI run. Install it with `CMAKE_ARGS="-DLLAVA_BUILD=OFF" pip install llama-cpp-python`;
without it these tests are skipped with that instruction."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from droidft import inference
from droidft.export import export

pytestmark = pytest.mark.llamacpp
llama_cpp = pytest.importorskip(
    "llama_cpp", reason="llama-cpp-python is not installed: CMAKE_ARGS=\"-DLLAVA_BUILD=OFF\" "
                        ".venv/bin/pip install llama-cpp-python (builds llama.cpp, ~1 h on 2 cores)")
QUESTION = [{"role": "user", "content": "What is your favourite colour?"}]
MAX_TOKENS = 24


def llama_cpp_greedy(gguf: Path, prompt_tokens: list[int], stop_ids: set[int]) -> tuple[str, list[int], object]:
    llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=512, n_threads=2, n_batch=64, verbose=False, seed=0)
    out = []
    for tok in llm.generate(prompt_tokens, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0):
        if tok in stop_ids or llm.token_eos() == tok:
            break
        out.append(tok)
        if len(out) >= MAX_TOKENS:
            break
    return llm.detokenize(out).decode("utf-8", errors="replace"), out, llm


def stop_ids(folder: Path) -> set[int]:
    ids = set()
    for name in ("generation_config.json", "config.json"):
        try:
            eos = json.loads((folder / name).read_text()).get("eos_token_id")
        except OSError:
            continue
        ids |= set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    return ids


def droidft_greedy_ids(loaded, prompt: list[int]) -> list[int]:
    """The token ids of droidft's greedy answer: mlx-lm's stream_generate with droidft's
    greedy sampler, as droidft.inference.stream drives it (the text alone hides ids that have
    no text, such as the padding rows past a tiny tokenizer's vocabulary)."""
    import mlx.core as mx
    from mlx_lm.generate import stream_generate

    sampler = inference.Sampling.greedy().validate().sampler()
    return [r.token for r in stream_generate(loaded.model, loaded.tokenizer, mx.array(prompt),
                                              max_tokens=MAX_TOKENS, sampler=sampler)
            if r.finish_reason != "stop"]


def check_same_answer(fused: Path, gguf: Path, *, text: bool) -> str:
    loaded = inference.load(str(fused))
    prompt = inference.prompt_tokens(loaded.tokenizer, QUESTION)
    got, tokens, llm = llama_cpp_greedy(gguf, list(prompt), stop_ids(fused))
    rendered = loaded.tokenizer.apply_chat_template(QUESTION, tokenize=False, add_generation_prompt=True)
    assert llm.tokenize(rendered.encode(), add_bos=False, special=True) == list(prompt)  # the same tokenizer
    assert tokens, "llama.cpp produced nothing"
    assert tokens == droidft_greedy_ids(loaded, list(prompt))
    if text:  # a trained model answers in words: the texts match too
        ours = inference.generate(str(fused), QUESTION, sampling=inference.Sampling.greedy(), max_tokens=MAX_TOKENS)
        assert got.strip() == ours.text.strip(), (got, ours.text)
    return got


@pytest.fixture(scope="module")
def trained(tmp_path_factory, demo_model):
    from helpers import trained_demo_run

    home, rid = trained_demo_run(tmp_path_factory, "llamacpp-home", iters=40, steps_per_report=10,
                                 steps_per_eval=20, save_every=20, val_batches=1)
    return {"home": home, "run_id": rid}


@pytest.mark.parametrize("outtype", ["f32", "f16"])
def test_trained_demo_run_answers_the_same_in_llama_cpp(trained, monkeypatch, tmp_path, outtype):
    monkeypatch.setenv("DROIDFT_HOME", str(trained["home"]))
    fused = Path(export(trained["run_id"], "mlx", out=tmp_path / "fused", record=False).out)
    from droidft.export.gguf import write_gguf

    gguf = write_gguf(fused, tmp_path / f"m-{outtype}.gguf", outtype=outtype).path
    print(outtype, repr(check_same_answer(fused, gguf, text=True)))


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3", "gemma3", "phi3"])
def test_fused_family_model_answers_the_same_in_llama_cpp(family, demo_model, tmp_path):
    from droidft.models.architectures import build_matrix_model
    from droidft.export.gguf import write_gguf
    from droidft.models.synthetic import random_lora_adapter

    base = build_matrix_model(family, tmp_path / family)
    adapter = random_lora_adapter(base, tmp_path / "adapter", rank=4, seed=3, scale=4.0, b_std=0.2)
    fused = Path(export(adapter, "mlx", out=tmp_path / "fused", record=False).out)
    gguf = write_gguf(fused, tmp_path / "m.gguf", outtype="f32").path
    print(family, repr(check_same_answer(fused, gguf, text=False)))
