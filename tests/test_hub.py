"""Hub search against the local Hub with the real client: what a hit shows (size, parameters,
quantisation, licence, gated), sorting, the MLX filter, the cache, and the Hub being
unreachable (offline switch, refused, silent) costing one line and at most ~2 s.
Also 'fits this machine?' advice."""

import socket
import time

import pytest

import hub_server
from droidft.models import hub
from droidft.estimate import fit_report, fit_summary
from hub_server import closed_port_url

local_hub, use_hub, fresh_hub_cache = hub_server.local_hub, hub_server.use_hub, hub_server.fresh_hub_cache
pytestmark = pytest.mark.usefixtures("fresh_hub_cache")


@pytest.fixture
def searchable(local_hub, use_hub, demo_model, tmp_path):
    from droidft.models.architectures import build_family

    import mlx.core as mx

    q4 = build_family("qwen3", tmp_path / "q4", quantize_bits=4, like=demo_model)
    floats = build_family("qwen3", tmp_path / "f32", like=demo_model)
    local_hub.float_params = sum(v.size for v in mx.load(str(floats / "model.safetensors")).values())
    local_hub.add_model("mlx-community/Tiny-Qwen3-4bit", q4, library_name="mlx", downloads=500,
                        license="apache-2.0", last_modified="2025-01-01T00:00:00.000Z")
    local_hub.add_model("acme/tiny-llama", demo_model, downloads=900, license="mit",
                        last_modified="2024-01-01T00:00:00.000Z")
    local_hub.add_model("acme/tiny-gated", demo_model, gated="manual", downloads=5,
                        last_modified="2025-06-01T00:00:00.000Z")
    use_hub(local_hub)
    return local_hub


def test_search_shows_what_a_choice_needs(searchable):
    found = hub.search_models("tiny")
    assert [m.repo_id for m in found.models] == ["acme/tiny-llama", "mlx-community/Tiny-Qwen3-4bit",
                                                  "acme/tiny-gated"]
    llama, q4, gated = found.models
    assert llama.model_type == "llama" and llama.quant_bits is None and llama.license == "mit"
    assert 780_000 < llama.params < 800_000  # the demo model's 787,584 float32 weights
    assert llama.size_bytes > 3_000_000 and not llama.mlx_ready
    assert q4.quant_bits == 4 and q4.mlx_ready and q4.license == "apache-2.0"
    # Packed 4-bit words count as the 8 weights each holds (plus the scales): within a few % of
    # the float model's count, not an eighth of it.
    assert 1.0 <= q4.params / searchable.float_params < 1.06
    assert gated.gated == "manual"


def test_sort_and_mlx_filter(searchable):
    assert [m.repo_id for m in hub.search_models("", sort="recent").models][0] == "acme/tiny-gated"
    assert [m.repo_id for m in hub.search_models("", mlx_only=True).models] == ["mlx-community/Tiny-Qwen3-4bit"]
    with pytest.raises(hub.HubError, match="Sort by one of"):
        hub.search_models("", sort="size")


def test_results_are_cached(searchable):
    first = hub.search_models("tiny")
    asked = len(searchable.requests)
    again = hub.search_models("tiny")
    assert again.cached and not first.cached and len(searchable.requests) == asked
    assert [m.repo_id for m in again.models] == [m.repo_id for m in first.models]


def test_offline_switch_answers_at_once_without_a_request(searchable, use_hub):
    use_hub(searchable, offline=True)
    with pytest.raises(hub.HubUnavailable, match="^Offline: HF_HUB_OFFLINE is set"):
        hub.search_models("tiny")
    assert not searchable.requests


def test_refused_connection_is_one_line_and_remembered(searchable, use_hub):
    use_hub(closed_port_url())
    tic = time.monotonic()
    with pytest.raises(hub.HubUnavailable) as err:
        hub.search_models("tiny")
    assert time.monotonic() - tic < 2.5
    assert str(err.value).startswith("Offline:") and "\n" not in str(err.value)
    tic = time.monotonic()
    with pytest.raises(hub.HubUnavailable):
        hub.search_models("other words")
    assert time.monotonic() - tic < 0.1  # remembered: no second wait


@pytest.fixture(scope="session")
def silent_port():
    """A port that accepts connections (the kernel does) and never answers, open until the
    session ends: the request left waiting on it stays harmlessly stuck instead of failing later
    (huggingface_hub's retry of a failed connect closes the client other tests are using)."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        yield silent.getsockname()[1]


def test_a_hub_that_never_answers_costs_the_deadline_only(use_hub, silent_port):
    use_hub(f"http://127.0.0.1:{silent_port}")
    tic = time.monotonic()
    with pytest.raises(hub.HubUnavailable, match="no answer in time"):
        hub.search_models("tiny", deadline=1.0)
    assert time.monotonic() - tic < 1.5


def test_a_slow_answer_is_kept_for_the_next_search(searchable):
    searchable.delay = 1.5
    with pytest.raises(hub.HubUnavailable, match="no answer in time"):
        hub.search_models("tiny", deadline=0.5)
    searchable.delay = 0
    time.sleep(2.0)  # the first answer arrives meanwhile and is cached
    again = hub.search_models("tiny")
    assert again.cached and len(again.models) == 3
    assert hub.check_repo("acme/tiny-llama").problem is None  # slow is not down


def test_repo_check_lists_the_files_a_pull_fetches(searchable):
    check = hub.check_repo("acme/tiny-llama")
    assert check.commit == searchable.commit("acme/tiny-llama") and check.problem is None
    assert {f.path for f in check.files} >= {"config.json", "model.safetensors", "tokenizer.json"}
    assert check.download_bytes == sum((searchable.root / "models/acme/tiny-llama" / f.path).stat().st_size
                                       for f in check.files)
    with pytest.raises(hub.HubError, match="No model 'acme/nothing'"):
        hub.check_repo("acme/nothing")


@pytest.mark.parametrize("text, expected", [
    ("org/name", ("org/name", None)), ("org/name@v1.0", ("org/name", "v1.0")),
    ("https://huggingface.co/org/name", ("org/name", None)), (" org/name ", ("org/name", None))])
def test_parse_repo(text, expected):
    assert hub.parse_repo(text) == expected


def test_quant_bits_from_config_tags_and_names():
    assert hub.quant_bits_of("a/b", {"quantization": {"bits": 4}}, []) == 4
    assert hub.quant_bits_of("a/b", {"quantization_config": {"bits": 8}}, []) == 8
    assert hub.quant_bits_of("mlx-community/Qwen3-0.6B-8bit", {}, []) == 8
    assert hub.quant_bits_of("TheBloke/x-GGUF-Q4_K_M", {}, []) == 4
    assert hub.quant_bits_of("a/b", {}, ["4-bit"]) == 4
    assert hub.quant_bits_of("Qwen/Qwen3-0.6B", {}, ["text-generation"]) is None


LLAMA_8B = {"hidden_size": 4096, "num_hidden_layers": 32, "intermediate_size": 14336,
            "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
            "torch_dtype": "bfloat16"}


def test_fit_the_demo_fits_everywhere(demo_model):
    from droidft.models import read_model_config

    report = fit_report(read_model_config(demo_model), total_gb=8)
    assert all(o.fits and not o.changes for o in report.options)
    assert [o.method for o in report.options] == ["LoRA", "QLoRA (4-bit base)", "Full fine-tune"]


def test_fit_an_8b_model_on_16_gb_needs_qlora_and_says_how():
    report = fit_report(LLAMA_8B, total_gb=16)
    lora, qlora, full = report.options
    assert 7_000 < report.params_m < 8_100
    assert not lora.fits and "4-bit base (QLoRA)" in lora.advice
    assert qlora.fits and qlora.changes and qlora.memory_gb > report.budget_gb
    assert not full.fits
    assert fit_summary(report).startswith("QLoRA (4-bit base): fits with gradient checkpointing")
    assert fit_report(LLAMA_8B, total_gb=128).best.method == "LoRA"


def test_fit_a_quantised_model_has_only_lora():
    report = fit_report(dict(LLAMA_8B, quantization={"bits": 4, "group_size": 64}), total_gb=16)
    assert [o.method for o in report.options] == ["LoRA (on this quantised base)"]


def test_fit_advice_for_the_training_form():
    from droidft.config import SFTConfig
    from droidft.estimate import estimate_run, fit_advice

    assert fit_advice(SFTConfig(), LLAMA_8B, total_gb=128) is None
    advice = fit_advice(SFTConfig(), LLAMA_8B, total_gb=16)
    need = estimate_run(SFTConfig(), LLAMA_8B).memory_gb  # float32 weights off macOS: ~2x a Mac's
    assert need > 30
    assert advice.startswith(f"This may not fit: about {need:.1f} GB against a budget of 12.0 GB")
    assert "4-bit base (QLoRA: quantize_bits 4)" in advice
    assert "smaller model" in fit_advice(SFTConfig(fine_tune_type="full"), LLAMA_8B, total_gb=16)
