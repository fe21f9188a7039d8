"""droidft.data: formats, line-numbered validation, preview, token stats, split, samples.

Real files in tmp_path, a real (tiny) byte-level BPE tokenizer, and the real mlx-lm /
mlx-lm-lora dataset classes as the reference for what "valid" and "token count" mean.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from droidft import data as D
from droidft import paths
from droidft.data import DataError, Problem

SFT_CHAT = {"messages": [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is two plus two?"},
    {"role": "assistant", "content": "Four."},
]}
SFT_COMPLETION = {"prompt": "What is two plus two?", "completion": "Four."}
SFT_TEXT = {"text": "The quick brown fox jumps over the lazy dog."}
GRPO_ROW = {"prompt": "What is 2 + 2?", "answer": "4"}
PREF_ROW = {"prompt": "What is 2 + 2?", "chosen": "4", "rejected": "5"}

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def tokenizer():
    """A tiny byte-level BPE with a chat template: enough for real apply_chat_template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(
        ["hello world, what is two plus two? four.", "the quick brown fox jumps over the lazy dog",
         "spell the word backwards; how many letters are in the word"] * 3,
        trainer,
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        chat_template=CHAT_TEMPLATE,
    )


def write_jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    return path


def make_ds(tmp_path: Path, train, valid=None, name="ds") -> Path:
    d = tmp_path / name
    write_jsonl(d / "train.jsonl", train)
    write_jsonl(d / "valid.jsonl", valid if valid is not None else train[:1])
    return d


def messages(report) -> list[str]:
    return [str(p) for p in report.problems]


def the_error(report) -> str:
    errs = [str(p) for p in report.errors]
    assert errs, f"expected an error, got {messages(report)}"
    return "\n".join(errs)


# --------------------------------------------------------------------------- basics


def test_problem_str_names_file_and_line():
    p = Problem("train.jsonl", 7, "missing key 'completion' (a prompt/completion row needs both)")
    assert str(p) == "train.jsonl line 7: missing key 'completion' (a prompt/completion row needs both)"
    assert str(Problem("valid.jsonl", None, "is missing")) == "valid.jsonl: is missing"
    assert p.level == "error"


def test_method_formats_cover_the_families():
    assert D.FORMATS == ("chat", "completions", "text", "grpo", "preference", "prompt", "ftpo")
    assert D.METHOD_FORMATS["sft"] == ("chat", "completions", "text")
    for m in ("grpo", "gspo", "dr_grpo", "bnpo", "dapo"):
        assert D.METHOD_FORMATS[m] == ("grpo",)
    for m in ("dpo", "orpo", "cpo", "dsla"):
        assert D.METHOD_FORMATS[m] == ("preference",)
    for m in ("online_dpo", "xpo", "ppo", "rlhf_reinforce"):
        assert D.METHOD_FORMATS[m] == ("prompt",)
    assert (D.METHOD_FORMATS["klpo"], D.METHOD_FORMATS["ftpo"]) == (("grpo",), ("ftpo",))
    assert D.normalize_method("DR-GRPO") == "dr_grpo"
    with pytest.raises(DataError, match="unknown training method 'ppo2'"):
        D.validate_dataset("demo", method="ppo2")


def test_detect_format_follows_loader_precedence():
    assert D.detect_format(SFT_CHAT) == "chat"
    assert D.detect_format(SFT_COMPLETION) == "completions"
    assert D.detect_format(SFT_TEXT) == "text"
    assert D.detect_format(GRPO_ROW) == "grpo"
    assert D.detect_format(PREF_ROW) == "preference"
    assert D.detect_format({"foo": 1}) is None
    assert D.detect_format([1, 2]) is None
    # mlx-lm checks prompt+completion before messages
    assert D.detect_format({**SFT_CHAT, **SFT_COMPLETION}) == "completions"
    # with a method only that method's formats count
    assert D.detect_format(GRPO_ROW, method="sft") is None
    assert D.detect_format({"question": "q", "answer_text": "a"},
                           features={"prompt_feature": "question", "completion_feature": "answer_text"}) == "completions"


# --------------------------------------------------------------------------- formats validate


@pytest.mark.parametrize("row", [SFT_CHAT, SFT_COMPLETION, SFT_TEXT], ids=["chat", "completions", "text"])
def test_each_sft_format_validates(tmp_path, row):
    r = D.validate_dataset(make_ds(tmp_path, [row] * 3), "sft")
    assert r.ok and r.problems == [], messages(r)
    assert r.format == D.detect_format(row)
    assert r.splits == {"train": 3, "valid": 1}


@pytest.mark.parametrize("method", ["grpo", "gspo", "dr_grpo", "bnpo", "dapo"])
def test_grpo_format_validates(tmp_path, method):
    rows = [GRPO_ROW, {"prompt": "Add 3 and 4.", "answer": 7, "system": "Answer in tags.", "type": "math"}]
    r = D.validate_dataset(make_ds(tmp_path, rows), method)
    assert r.ok and r.problems == [], messages(r)
    assert r.format == "grpo"


@pytest.mark.parametrize("method", ["dpo", "orpo", "cpo"])
def test_preference_format_validates(tmp_path, method):
    rows = [PREF_ROW, {**PREF_ROW, "system": "Be right."}]
    r = D.validate_dataset(make_ds(tmp_path, rows), method)
    assert r.ok and r.problems == [], messages(r)
    assert r.format == "preference"


def test_orpo_accepts_chat_style_chosen_but_dpo_does_not(tmp_path):
    row = {"prompt": "Hi", "chosen": [{"role": "assistant", "content": "Hello!"}],
           "rejected": {"messages": [{"role": "assistant", "content": "Go away."}]},
           "preference_score": 0.8}
    d = make_ds(tmp_path, [row])
    assert D.validate_dataset(d, "orpo").ok
    r = D.validate_dataset(d, "dpo")
    assert "train.jsonl line 1: 'chosen' must be a string, got a list" in the_error(r)


def test_chat_with_tools_and_tool_calls_validates(tmp_path):
    row = {"tools": [{"type": "function", "function": {"name": "add"}}], "messages": [
        {"role": "user", "content": "add 2 and 2"},
        {"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "add"}}]},
        {"role": "tool", "content": "4"},
        {"role": "assistant", "content": "It is 4."},
    ]}
    r = D.validate_dataset(make_ds(tmp_path, [row]), "sft")
    assert r.ok and r.problems == [], messages(r)


def test_custom_feature_names(tmp_path):
    d = make_ds(tmp_path, [{"question": "q?", "response": "a."}])
    r = D.validate_dataset(d, "sft")
    err = the_error(r)
    assert "train.jsonl line 1: has none of the keys sft reads" in err
    r = D.validate_dataset(d, "sft", features={"prompt_feature": "question", "completion_feature": "response"})
    assert r.ok, messages(r)


# --------------------------------------------------------------------------- errors, line-numbered


def test_missing_completion_message(tmp_path):
    d = make_ds(tmp_path, [SFT_COMPLETION] * 6 + [{"prompt": "only a prompt"}])
    r = D.validate_dataset(d, "sft")
    assert not r.ok
    assert messages(r) == ["train.jsonl line 7: missing key 'completion' (a prompt/completion row needs both)"]


def test_synonym_hint(tmp_path):
    r = D.validate_dataset(make_ds(tmp_path, [{"prompt": "p", "response": "r"}]), "sft")
    assert ("train.jsonl line 1: missing key 'completion' (a prompt/completion row needs both); "
            "found 'response': rename it to 'completion' or set completion_feature='response'") in the_error(r)


def test_invalid_json_is_line_numbered(tmp_path):
    d = make_ds(tmp_path, [SFT_TEXT, '{"text": "unterminated', SFT_TEXT])
    r = D.validate_dataset(d, "sft")
    err = the_error(r)
    assert "train.jsonl line 2: is not valid JSON (Unterminated string" in err
    assert r.splits["train"] == 3


def test_non_utf8_bytes_are_line_numbered(tmp_path):
    d = make_ds(tmp_path, [SFT_TEXT, SFT_TEXT])
    with open(d / "train.jsonl", "ab") as fh:
        fh.write(b'{"text": "caf\xe9"}\n')
    r = D.validate_dataset(d, "sft")
    assert messages(r) == [
        "train.jsonl line 3: is not valid UTF-8 (byte 0xe9 at byte 14 of the line); save the file as UTF-8"
    ]


@pytest.mark.parametrize("line,kind", [("[1, 2]", "a list"), ('"just a string"', "a string"),
                                        ("42", "a number"), ("null", "null"), ("true", "true/false")])
def test_non_object_lines(tmp_path, line, kind):
    r = D.validate_dataset(make_ds(tmp_path, [SFT_TEXT, line]), "sft")
    assert f"train.jsonl line 2: is {kind}, not a JSON object; each line must be one object" in the_error(r)


@pytest.mark.parametrize("row,expected", [
    ({"prompt": 3, "completion": "x"}, "'prompt' must be a string, got a number"),
    ({"prompt": "p", "completion": None}, "'completion' must be a string, got null"),
    ({"text": ["a"]}, "'text' must be a string, got a list"),
    ({"text": ""}, "'text' is empty (the trainer cannot use an empty text)"),
    ({"messages": "hi"}, "'messages' must be a list of {\"role\", \"content\"} objects, got a string"),
    ({"messages": []}, "'messages' is an empty list; add at least a user and an assistant message"),
    ({"messages": ["hi"]}, "message 1 in 'messages' is a string, not an object with 'role' and 'content'"),
    ({"messages": [{"role": "bot", "content": "x"}]}, "message 1 in 'messages' has role 'bot'; use one of system, user, assistant, tool"),
    ({"messages": [{"content": "x"}]}, "message 1 in 'messages' has no 'role'"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant"}]}, "message 2 (assistant) in 'messages' has no 'content'"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": {"t": 1}}]},
     "message 2 (assistant) in 'messages': 'content' must be a string, got an object"),
    ({"messages": [{"role": "user", "content": "x"}]}, "'messages' has no assistant message, so there is nothing to learn"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}], "tools": "add"},
     "'tools' must be a list of tool definitions, got a string"),
    ({"text": "\ud800 broken"}, "'text' contains an invalid character escape (a lone \\ud800-style surrogate)"),
])
def test_value_errors_are_line_numbered(tmp_path, row, expected):
    d = make_ds(tmp_path, [SFT_TEXT if "text" in row else SFT_CHAT if "messages" in row else SFT_COMPLETION, row],
                valid=[SFT_TEXT if "text" in row else SFT_CHAT if "messages" in row else SFT_COMPLETION])
    r = D.validate_dataset(d, "sft")
    assert f"train.jsonl line 2: {expected}" in the_error(r)


@pytest.mark.parametrize("method,row,expected", [
    ("grpo", {"prompt": "p", "answer": None}, "'answer' must be a string (or a number), got null"),
    ("grpo", {"prompt": ["p"], "answer": "1"}, "'prompt' must be a string, got a list"),
    ("grpo", {"prompt": "p"}, "missing key 'answer' (a GRPO row needs the prompt and the answer the rewards check against)"),
    ("dpo", {"prompt": "p", "chosen": "a"}, "missing key 'rejected' (a preference row needs prompt, chosen and rejected)"),
    ("dpo", {"chosen": "a", "rejected": "b"}, "missing key 'prompt' (a preference row needs prompt, chosen and rejected)"),
    ("cpo", {"prompt": "p", "chosen": 1, "rejected": "b"}, "'chosen' must be a string, got a number"),
    ("orpo", {"prompt": "p", "chosen": "a", "rejected": "b", "preference_score": "high"},
     "'preference_score' must be a number, got a string"),
])
def test_rl_value_errors(tmp_path, method, row, expected):
    good = GRPO_ROW if method == "grpo" else PREF_ROW
    r = D.validate_dataset(make_ds(tmp_path, [good, row], valid=[good]), method)
    assert f"train.jsonl line 2: {expected}" in the_error(r)


def test_rl_warnings_do_not_block(tmp_path):
    r = D.validate_dataset(make_ds(tmp_path, [GRPO_ROW, {"prompt": "p", "answer": 2.5}], valid=[GRPO_ROW]), "grpo")
    assert r.ok
    assert [str(p) for p in r.warnings] == [
        "train.jsonl line 2: 'answer' is the number 2.5, which the trainer turns into the text '2.5'; "
        "rewards compare text exactly, so write it as a string"
    ]
    r = D.validate_dataset(make_ds(tmp_path, [PREF_ROW, {"prompt": "p", "chosen": "same", "rejected": "same"}],
                                   name="p"), "dpo")
    assert r.ok
    assert [str(p) for p in r.warnings] == [
        "train.jsonl line 2: 'chosen' and 'rejected' are identical, so this pair teaches nothing"
    ]


def test_mixed_formats_in_one_file(tmp_path):
    r = D.validate_dataset(make_ds(tmp_path, [SFT_CHAT, SFT_CHAT, SFT_TEXT], valid=[SFT_CHAT]), "sft")
    assert messages(r) == [
        "train.jsonl line 3: this is a text row, but line 1 made this file chat (messages); every line "
        "of a file must use one format (the trainer picks it from the first line)"
    ]


def test_valid_split_of_another_format_is_a_warning(tmp_path):
    r = D.validate_dataset(make_ds(tmp_path, [SFT_CHAT], valid=[SFT_TEXT]), "sft")
    assert r.ok
    assert [str(p) for p in r.warnings] == [
        "valid.jsonl: uses text rows while train.jsonl uses chat (messages) rows; the numbers will not be comparable"
    ]


def test_empty_and_blank_files(tmp_path):
    d = tmp_path / "ds"
    d.mkdir()
    (d / "train.jsonl").write_bytes(b"")
    (d / "valid.jsonl").write_bytes(b"\n  \n\r\n")
    r = D.validate_dataset(d, "sft")
    err = the_error(r)
    assert "train.jsonl: is empty; add one JSON object per line" in err
    assert "valid.jsonl: has only blank lines; add one JSON object per line" in err
    assert r.splits == {"train": 0, "valid": 0}


def test_blank_lines_inside_a_file(tmp_path):
    d = make_ds(tmp_path, [SFT_TEXT, "", SFT_TEXT, "   "])
    r = D.validate_dataset(d, "sft")
    assert messages(r) == [
        "train.jsonl line 2: is blank (2 blank lines: 2, 4); the trainers parse every line as JSON and stop "
        "at a blank one, so delete them"
    ]
    assert r.splits["train"] == 2


def test_bom_and_bare_carriage_return(tmp_path):
    d = make_ds(tmp_path, [SFT_TEXT])
    (d / "train.jsonl").write_bytes(b'\xef\xbb\xbf{"text": "a"}\n{"text":\r"b"}\n')
    err = the_error(D.validate_dataset(d, "sft"))
    assert "train.jsonl line 1: the file starts with a UTF-8 byte-order mark (BOM)" in err
    assert "train.jsonl line 2: contains a bare carriage return (\\r) inside the line" in err


def test_crlf_line_endings_are_fine(tmp_path):
    d = make_ds(tmp_path, [SFT_TEXT])
    (d / "train.jsonl").write_bytes(b'{"text": "a"}\r\n{"text": "b"}\r\n')
    r = D.validate_dataset(d, "sft")
    assert r.ok and r.splits["train"] == 2, messages(r)


def test_overlong_line_is_reported_not_parsed(tmp_path):
    d = make_ds(tmp_path, [SFT_TEXT])
    with open(d / "train.jsonl", "a") as fh:
        fh.write(json.dumps({"text": "x" * 5000}) + "\n")
        fh.write(json.dumps(SFT_TEXT) + "\n")
    r = D.validate_dataset(d, "sft", max_line_bytes=1000)
    assert messages(r) == [
        "train.jsonl line 2: is 4.9 KB long, over the 1000 bytes limit for one row; split or shorten it"
    ]
    assert r.splits["train"] == 3


def test_a_50mb_line_is_reported_at_the_default_limit(tmp_path):
    d = make_ds(tmp_path, [SFT_TEXT])
    with open(d / "train.jsonl", "a") as fh:
        fh.write('{"text": "')
        chunk = "y" * (1 << 20)
        for _ in range(50):
            fh.write(chunk)
        fh.write('"}\n')
        fh.write(json.dumps(SFT_TEXT))  # last line without a newline
    r = D.validate_dataset(d, "sft")
    assert messages(r) == [
        "train.jsonl line 2: is 50.0 MB long, over the 16.0 MB limit for one row; split or shorten it"
    ]
    assert r.splits["train"] == 3


def test_deeply_nested_json_is_an_error_not_a_crash(tmp_path):
    r = D.validate_dataset(make_ds(tmp_path, [SFT_TEXT, "[" * 100000 + "]" * 100000]), "sft")
    assert "train.jsonl line 2: is not usable JSON (nested too deeply)" in the_error(r)


def test_extra_keys_are_warnings(tmp_path):
    rows = [{**SFT_COMPLETION, "id": i} for i in range(4)] + [{**SFT_COMPLETION, "messages": []}]
    r = D.validate_dataset(make_ds(tmp_path, rows, valid=[SFT_COMPLETION]), "sft")
    assert r.ok
    assert [str(p) for p in r.warnings] == [
        "train.jsonl line 1: extra key 'id' is not read by the trainer and will be ignored (on 4 of 5 lines)",
        "train.jsonl line 5: extra key 'messages' is not read by the trainer and will be ignored (on 1 of 5 lines)",
    ]
    assert all(p.level == "warning" for p in r.problems)


def test_mask_prompt_rules(tmp_path):
    r = D.validate_dataset(make_ds(tmp_path, [SFT_TEXT]), "sft", mask_prompt=True)
    assert "train.jsonl line 1: prompt masking is not supported for text rows" in the_error(r)
    row = {"messages": [{"role": "assistant", "content": "hi"}, {"role": "user", "content": "bye"}]}
    r = D.validate_dataset(make_ds(tmp_path, [row], name="m"), "sft", mask_prompt=True)
    assert "with prompt masking the last message in 'messages' must be the assistant's reply (it is 'user')" in the_error(r)


def test_batch_size_needs_enough_rows(tmp_path):
    r = D.validate_dataset(make_ds(tmp_path, [SFT_TEXT] * 4, valid=[SFT_TEXT] * 2), "sft", batch_size=4)
    assert messages(r) == [
        "valid.jsonl: has 2 rows but the batch size is 4; the trainer needs at least one full batch: "
        "add rows or lower the batch size"
    ]


def test_max_problems_caps_the_list_but_not_the_verdict(tmp_path):
    r = D.validate_dataset(make_ds(tmp_path, ["{bad"] * 100, valid=[SFT_TEXT]), "sft", max_problems=5)
    assert len(r.problems) == 5 and r.omitted == 95 and not r.ok
    assert "and 95 more problems" in r.summary()
    r = D.validate_dataset(make_ds(tmp_path, ["{bad"], valid=[SFT_TEXT], name="b"), "sft", max_problems=0)
    assert r.problems == [] and r.omitted_errors == 1 and not r.ok


def test_raise_if_failed(tmp_path):
    r = D.validate_dataset(make_ds(tmp_path, [SFT_TEXT, "{bad"]), "sft")
    with pytest.raises(DataError) as ei:
        r.raise_if_failed()
    assert "is not ready for sft: 1 problem:" in str(ei.value)
    assert "train.jsonl line 2: is not valid JSON" in str(ei.value)
    assert ei.value.problems and ei.value.problems[0].line == 2
    good = D.validate_dataset(make_ds(tmp_path, [SFT_TEXT], name="g"), "sft")
    assert good.raise_if_failed() is good
    assert good.to_dict()["ok"] is True


# --------------------------------------------------------------------------- structure / paths


def test_missing_valid_split(tmp_path):
    d = tmp_path / "ds"
    write_jsonl(d / "train.jsonl", [SFT_TEXT])
    r = D.validate_dataset(d, "sft")
    assert not r.ok
    assert "valid.jsonl: is missing from" in the_error(r)
    assert "run split_dataset on train.jsonl" in the_error(r)
    r = D.validate_dataset(d, "sft", require_valid=False)
    assert r.ok and r.warnings


def test_single_file_is_train_and_asks_for_a_split(tmp_path):
    f = write_jsonl(tmp_path / "mine.jsonl", [SFT_TEXT] * 3)
    assert D.resolve_dataset(str(f)) == f
    r = D.validate_dataset(f, "sft")
    assert not r.ok and r.splits == {"train": 3}
    err = the_error(r)
    assert "mine.jsonl: is a single file, so it is used as the training split" in err
    assert "split_dataset(" in err


def test_resolve_dataset_errors(tmp_path):
    with pytest.raises(DataError, match=r"dataset not found: .*nope\. Give a folder holding train.jsonl"):
        D.resolve_dataset(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"has no train.jsonl\. The folder is empty"):
        D.resolve_dataset(tmp_path / "empty")
    write_jsonl(tmp_path / "other" / "data.jsonl", [SFT_TEXT])
    with pytest.raises(DataError, match=r"has no train.jsonl\. It holds data.jsonl: rename .* or run split_dataset on data.jsonl"):
        D.resolve_dataset(tmp_path / "other")
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(DataError, match=r"x.csv is not a .jsonl file"):
        D.resolve_dataset(tmp_path / "x.csv")
    (tmp_path / "x.json").write_text("[]")
    with pytest.raises(DataError, match=r"one object per line \(JSON Lines\)"):
        D.validate_dataset(tmp_path / "x.json")
    with pytest.raises(DataError, match="no dataset given"):
        D.resolve_dataset("  ")
    with pytest.raises(DataError, match="not a usable path"):
        D.resolve_dataset("bad\x00path")


def test_demo_resolves_and_is_built_on_first_use(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "DATA_DIR", tmp_path / "data")  # keep the repo untouched
    p = D.resolve_dataset("demo")
    assert p == tmp_path / "data" / "demo" / "chat"
    assert D.validate_dataset("demo", "sft").ok
    assert D.resolve_dataset("demo", method="gspo") == tmp_path / "data" / "demo" / "grpo"
    assert D.validate_dataset("demo", "gspo").ok
    assert D.validate_dataset("demo", "cpo").ok
    assert (tmp_path / "data" / "demo" / "preference" / "valid.jsonl").is_file()


def test_load_rows(tmp_path):
    f = write_jsonl(tmp_path / "a.jsonl", [SFT_TEXT, "", {"text": "b"}, {"text": "c"}])
    assert load_texts(D.load_rows(f)) == ["The quick brown fox jumps over the lazy dog.", "b", "c"]
    assert len(D.load_rows(f, limit=2)) == 2
    write_jsonl(tmp_path / "b.jsonl", [SFT_TEXT, "nope", SFT_TEXT, "[1]"])
    with pytest.raises(DataError) as ei:
        D.load_rows(tmp_path / "b.jsonl")
    assert "b.jsonl line 2: is not valid JSON" in str(ei.value)
    assert "b.jsonl line 4: is a list, not a JSON object" in str(ei.value)
    assert [p.line for p in ei.value.problems] == [2, 4]
    with pytest.raises(DataError, match="file not found"):
        D.load_rows(tmp_path / "missing.jsonl")


def load_texts(rows):
    return [r["text"] for r in rows]


# --------------------------------------------------------------------------- sample data


@pytest.mark.parametrize("method", list(D.METHOD_FORMATS))
def test_sample_data_is_valid_for_its_method(tmp_path, method):
    out = D.sample_data(method, tmp_path / method, n_train=30, n_valid=6, seed=3)
    r = D.validate_dataset(out, method)
    assert r.ok and r.problems == [], messages(r)
    assert r.splits == {"train": 30, "valid": 6, "test": 6}
    assert r.format == D.METHOD_FORMATS[method][0]
    # no question leaks from train into valid/test
    def keyset(split):
        return {json.dumps(row.get("prompt") or row.get("context_with_chat_template") or row["messages"][1])
                for row in D.load_rows(out / f"{split}.jsonl")}
    assert not keyset("train") & (keyset("valid") | keyset("test"))


@pytest.mark.parametrize("method,other", [("sft", "grpo"), ("sft", "dpo"), ("grpo", "sft"), ("grpo", "orpo"),
                                          ("dpo", "sft"), ("cpo", "dapo")])
def test_sample_data_is_rejected_by_another_family(tmp_path, method, other):
    out = D.sample_data(method, tmp_path / method)
    r = D.validate_dataset(out, other)
    assert not r.ok
    fmt = D.FORMAT_LABELS[D.METHOD_FORMATS[method][0]]
    first = str(r.errors[0])
    assert first.startswith(f"train.jsonl line 1: this is a {fmt} row, but {other} trains on ")
    assert f"Use this data with {method}" in first or f"Use this data with {D.methods_for_format(D.METHOD_FORMATS[method][0])[0]}" in first
    # one message per file, not one per line
    assert len([p for p in r.errors if p.file == "train.jsonl"]) == 1


def test_written_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        out = D.sample_data("sft", tmp_path / "s")
    finally:
        os.umask(old)
    assert (out / "train.jsonl").stat().st_mode & 0o777 == 0o644
    assert not list(out.glob(".*.tmp"))


def test_sample_data_is_deterministic(tmp_path):
    a = D.sample_data("grpo", tmp_path / "a", seed=1)
    b = D.sample_data("grpo", tmp_path / "b", seed=1)
    c = D.sample_data("grpo", tmp_path / "c", seed=2)
    for s in ("train", "valid", "test"):
        assert (a / f"{s}.jsonl").read_bytes() == (b / f"{s}.jsonl").read_bytes()
    assert (a / "train.jsonl").read_bytes() != (c / "train.jsonl").read_bytes()
    with pytest.raises(DataError):
        D.sample_data("nope", tmp_path / "d")


# --------------------------------------------------------------------------- split


def test_split_dataset(tmp_path):
    rows = [{"prompt": f"q{i}", "completion": f"a{i}"} for i in range(50)]
    src = write_jsonl(tmp_path / "all.jsonl", rows[:25] + [""] + rows[25:])
    r = D.split_dataset(src, tmp_path / "out", valid_fraction=0.2, test_fraction=0.1, seed=7)
    assert r.ok, messages(r)
    assert r.splits == {"train": 35, "valid": 10, "test": 5}
    assert r.format == "completions" and r.method == "sft"
    got = {s: D.load_rows(tmp_path / "out" / f"{s}.jsonl") for s in ("train", "valid", "test")}
    keys = [row["prompt"] for s in got.values() for row in s]
    assert sorted(keys) == sorted(r_["prompt"] for r_ in rows)  # a partition, no duplicates
    # deterministic for a seed, different for another
    r2 = D.split_dataset(src, tmp_path / "out2", valid_fraction=0.2, test_fraction=0.1, seed=7)
    assert (tmp_path / "out" / "valid.jsonl").read_bytes() == (tmp_path / "out2" / "valid.jsonl").read_bytes()
    assert r2.ok
    D.split_dataset(src, tmp_path / "out3", valid_fraction=0.2, test_fraction=0.1, seed=8)
    assert (tmp_path / "out" / "valid.jsonl").read_bytes() != (tmp_path / "out3" / "valid.jsonl").read_bytes()


def test_split_dataset_guards(tmp_path):
    src = write_jsonl(tmp_path / "one.jsonl", [SFT_TEXT])
    with pytest.raises(DataError, match="one.jsonl has 1 row: too few to split into train and valid"):
        D.split_dataset(src, tmp_path / "o")
    with pytest.raises(DataError, match="sum < 1"):
        D.split_dataset(src, tmp_path / "o", valid_fraction=0.5, test_fraction=0.5)
    bad = write_jsonl(tmp_path / "bad.jsonl", [SFT_TEXT, "{oops", SFT_TEXT])
    with pytest.raises(DataError, match="bad.jsonl line 2: is not valid JSON"):
        D.split_dataset(bad, tmp_path / "o")
    src = write_jsonl(tmp_path / "ten.jsonl", [SFT_TEXT] * 10)
    D.split_dataset(src, tmp_path / "o")
    with pytest.raises(DataError, match="already holds train.jsonl, valid.jsonl; pick an empty folder or pass overwrite=True"):
        D.split_dataset(src, tmp_path / "o")
    assert D.split_dataset(src, tmp_path / "o", overwrite=True).ok


def test_split_in_place_for_a_folder_with_only_train(tmp_path):
    d = tmp_path / "ds"
    write_jsonl(d / "train.jsonl", [GRPO_ROW] * 20)
    write_jsonl(d / "test.jsonl", [GRPO_ROW])  # stale, from an earlier split
    assert not D.validate_dataset(d, "grpo").ok
    r = D.split_dataset(d, d, valid_fraction=0.25, overwrite=True)
    assert r.ok and r.method == "grpo" and r.splits == {"train": 15, "valid": 5}
    assert not (d / "test.jsonl").exists()


# --------------------------------------------------------------------------- preview / token stats


def test_preview_chat_uses_the_chat_template(tmp_path, tokenizer):
    d = make_ds(tmp_path, [SFT_CHAT, SFT_COMPLETION, {"nope": 1}])
    items = D.preview(d, tokenizer, n=5)
    assert [i["line"] for i in items] == [1, 2, 3]
    first = items[0]
    assert first["format"] == "chat"
    assert first["text"] == "<|system|>Be brief.</s><|user|>What is two plus two?</s><|assistant|>Four.</s>"
    assert first["tokens"] == len(tokenizer.encode(first["text"], add_special_tokens=False))
    assert 0 < first["prompt_tokens"] < first["tokens"]
    # the prompt/completion row is shown as the user/assistant chat mlx-lm builds
    assert items[1]["text"] == "<|user|>What is two plus two?</s><|assistant|>Four.</s>"
    assert "has none of the keys sft reads" in items[2]["error"]
    # without a tokenizer: a plain rendering, no counts
    plain = D.preview(d, None, n=1)[0]
    assert plain["text"] == "system: Be brief.\nuser: What is two plus two?\nassistant: Four."
    assert plain["tokens"] is None


def test_preview_rl_formats(tmp_path, tokenizer):
    g = D.preview(make_ds(tmp_path, [GRPO_ROW], name="g"), tokenizer, method="grpo")[0]
    assert g["text"].startswith("<|system|>" + D.GRPO_DEFAULT_SYSTEM) and g["text"].endswith("<|assistant|>")
    assert g["answer"] == "4"
    p = D.preview(make_ds(tmp_path, [PREF_ROW], name="p"), tokenizer, method="dpo")[0]
    assert p["chosen_text"].endswith("<|assistant|>4</s>") and p["rejected_text"].endswith("<|assistant|>5</s>")
    assert p["tokens"] == max(p["chosen_tokens"], p["rejected_tokens"])
    # wrong family: an error entry rather than an exception
    assert "trains on prompt/answer (GRPO) rows" in D.preview(make_ds(tmp_path, [PREF_ROW], name="q"), tokenizer, method="grpo")[0]["error"]


def test_preview_raises_for_unreadable_lines(tmp_path, tokenizer):
    with pytest.raises(DataError, match="train.jsonl line 1: is not valid JSON"):
        D.preview(make_ds(tmp_path, ["{x"], valid=[SFT_TEXT]), tokenizer)


def test_preview_without_chat_template_says_so(tmp_path, tokenizer):
    from transformers import PreTrainedTokenizerFast

    bare = PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend_tokenizer, eos_token="</s>")
    with pytest.raises(DataError, match="chat template"):
        D.preview(make_ds(tmp_path, [SFT_CHAT]), bare)
    # text rows need no template
    assert D.preview(make_ds(tmp_path, [SFT_TEXT], name="t"), bare)[0]["tokens"] > 0


def test_token_stats(tmp_path, tokenizer):
    rows = [{"text": "two " * k} for k in range(1, 21)]
    d = make_ds(tmp_path, rows)
    s = D.token_stats(d, tokenizer, max_seq_length=10)
    expected = []
    for row in rows:
        ids = tokenizer.encode(row["text"])
        expected.append(len(ids) + (ids[-1] != tokenizer.eos_token_id))
    assert s["lengths"] == expected
    assert s["count"] == 20 and s["min"] == min(expected) and s["max"] == max(expected)
    assert s["mean"] == pytest.approx(sum(expected) / 20)
    assert s["p50"] == pytest.approx(sorted(expected)[9] / 2 + sorted(expected)[10] / 2)
    assert min(expected) <= s["p95"] <= max(expected)
    assert s["over_max"] == sum(x > 10 for x in expected)
    assert s["sampled"] is False
    s5 = D.token_stats(d, tokenizer, limit=5)
    assert s5["count"] == 5 and s5["sampled"] is True and s5["over_max"] == 0
    assert D.token_stats(d, tokenizer, split="valid")["count"] == 1
    with pytest.raises(DataError, match="need a tokenizer"):
        D.token_stats(d, None)
    with pytest.raises(DataError, match="has no test.jsonl"):
        D.token_stats(d, tokenizer, split="test")


# --------------------------------------------------------------------------- the real loaders agree


@pytest.mark.parametrize("method", ["sft", "grpo", "dpo", "orpo", "cpo"])
def test_valid_data_loads_in_the_real_loaders_with_the_same_token_counts(tmp_path, tokenizer, method):
    """What validate_dataset passes, the trainers' own dataset classes load; our counts match theirs."""
    from types import SimpleNamespace

    from mlx_lm.tokenizer_utils import TokenizerWrapper

    wrapped = TokenizerWrapper(tokenizer)
    out = D.sample_data(method, tmp_path / method, n_train=12, n_valid=3)
    assert D.validate_dataset(out, method).ok
    ours = D.token_stats(out, wrapped, method=method)["lengths"]
    if method == "sft":
        from mlx_lm.tuner.datasets import load_local_dataset

        train, valid, test = load_local_dataset(out, wrapped, SimpleNamespace(mask_prompt=False))
        theirs = [len(train.process(train[i])[0]) for i in range(len(train))]
    else:
        from mlx_lm_lora.trainer.datasets import load_local_dataset

        train, valid, test = load_local_dataset(out, wrapped, SimpleNamespace(train_mode=method))
        if method == "grpo":
            theirs = [len(train[i][0]) for i in range(len(train))]
        else:
            theirs = [max(len(train[i]["chosen"]), len(train[i]["rejected"])) for i in range(len(train))]
    assert (len(train), len(valid), len(test)) == (12, 3, 3)
    assert ours == theirs


def test_completions_and_text_counts_match_mlx_lm(tmp_path, tokenizer):
    from types import SimpleNamespace

    from mlx_lm.tokenizer_utils import TokenizerWrapper
    from mlx_lm.tuner.datasets import load_local_dataset

    wrapped = TokenizerWrapper(tokenizer)
    for rows, name in (([SFT_COMPLETION, {"prompt": "hello", "completion": "world"}], "c"),
                       ([SFT_TEXT, {"text": "hello world"}], "t")):
        d = make_ds(tmp_path, rows, name=name)
        train, _, _ = load_local_dataset(d, wrapped, SimpleNamespace(mask_prompt=False))
        theirs = [len(train.process(train[i])[0]) for i in range(len(train))]
        assert D.token_stats(d, wrapped)["lengths"] == theirs
        if name == "c":  # the masked prompt offset agrees too
            _, _, _ = load_local_dataset(d, wrapped, SimpleNamespace(mask_prompt=True))
            masked, _, _ = load_local_dataset(d, wrapped, SimpleNamespace(mask_prompt=True))
            offsets = [masked.process(masked[i])[1] for i in range(len(masked))]
            assert [i["prompt_tokens"] for i in D.preview(d, wrapped)] == offsets


# --------------------------------------------------------------------------- safe_filename


@pytest.mark.parametrize("name,expected", [
    ("../../etc/passwd", "passwd"),
    ("..\\..\\windows\\win.ini", "win.ini"),
    ("my data (1).jsonl", "my_data_1.jsonl"),
    ("données.JSONL", "donnees.jsonl"),
    ("..", "upload"),
    ("", "upload"),
    (None, "upload"),
    ("/", "upload"),
    ("CON.jsonl", "_CON.jsonl"),
    ("a\x00b.jsonl", "ab.jsonl"),
    ("数据.jsonl", "upload.jsonl"),
    ("train.jsonl", "train.jsonl"),
])
def test_safe_filename(name, expected):
    assert D.safe_filename(name) == expected


@given(st.text(max_size=300))
@settings(max_examples=300, deadline=None, database=None)
def test_safe_filename_property(name):
    s = D.safe_filename(name)
    assert s and len(s) <= 128
    assert "/" not in s and "\\" not in s and "\x00" not in s
    assert not s.startswith(".") and s not in (".", "..")
    assert all(c.isascii() and (c.isalnum() or c in "._-") for c in s)


# --------------------------------------------------------------------------- fuzzing


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
known_keys = st.sampled_from(["messages", "prompt", "completion", "text", "answer", "chosen", "rejected",
                              "system", "tools", "type", "question", "preference_score", "role", "content"])
message = st.fixed_dictionaries({}, optional={"role": st.sampled_from(["user", "assistant", "system", "tool", "bot"]) | json_values,
                                              "content": st.text(max_size=20) | json_values,
                                              "tool_calls": json_values})
plausible_rows = st.dictionaries(known_keys, json_values | st.text(max_size=30) | st.lists(message, max_size=4),
                                 max_size=5)
line_strategy = st.one_of(
    st.binary(max_size=60).filter(lambda b: b"\n" not in b),
    json_values.map(lambda v: json.dumps(v).encode()),
    plausible_rows.map(lambda v: json.dumps(v).encode()),
    st.just(b""),
    st.just(b"\xef\xbb\xbf{}"),
)
file_strategy = st.lists(line_strategy, max_size=6).map(lambda ls: b"\n".join(ls)) | st.binary(max_size=200)


@given(train=file_strategy, valid=st.none() | file_strategy, method=st.sampled_from(list(D.METHOD_FORMATS)),
       mask=st.booleans())
@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
def test_fuzz_validate_never_crashes(train, valid, method, mask):
    with tempfile.TemporaryDirectory() as td:
        d = Path(td)
        (d / "train.jsonl").write_bytes(train)
        if valid is not None:
            (d / "valid.jsonl").write_bytes(valid)
        r = D.validate_dataset(d, method, mask_prompt=mask, max_line_bytes=80)
        assert isinstance(r, D.DatasetReport)
        assert all(isinstance(p, Problem) and p.level in ("error", "warning") for p in r.problems)
        assert all(str(p) for p in r.problems)
        assert r.ok == (not r.errors and not r.omitted_errors)
        r.summary()
        json.dumps(r.to_dict())
        if valid is None:
            assert not r.ok
        # a single-file dataset goes the same way
        r1 = D.validate_dataset(d / "train.jsonl", method)
        assert not r1.ok  # there is never a valid split


@given(rows=st.lists(plausible_rows, min_size=1, max_size=5), method=st.sampled_from(list(D.METHOD_FORMATS)))
@settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
def test_fuzz_preview_and_stats_on_plausible_rows(tokenizer, rows, method):
    """Rows that pass validation always render; others give error entries, never crashes."""
    with tempfile.TemporaryDirectory() as td:
        d = Path(td)
        write_jsonl(d / "train.jsonl", rows)
        write_jsonl(d / "valid.jsonl", rows)
        r = D.validate_dataset(d, method)
        try:
            items = D.preview(d, tokenizer, n=10, method=method)
            stats = D.token_stats(d, tokenizer, method=method)
        except DataError as e:  # only the chat template may refuse (e.g. odd message lists)
            assert "chat template" in str(e)
            return
        assert len(items) == len(rows)
        assert stats["count"] + stats["skipped"] == len(rows)
        if r.ok:
            assert all("error" not in i and i["tokens"] for i in items)


@given(data=st.binary(max_size=100))
@settings(max_examples=100, deadline=None, database=None)
def test_fuzz_load_rows_raises_only_data_error(data):
    with tempfile.TemporaryDirectory() as td:
        f = Path(td) / "x.jsonl"
        f.write_bytes(data)
        try:
            rows = D.load_rows(f)
        except DataError as e:
            assert e.problems and all(p.line for p in e.problems)
        else:
            assert all(isinstance(r, dict) for r in rows)
