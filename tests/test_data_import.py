"""Dataset import from local files: each schema's mapping, each bad file's message, the saved
folder (validated by droidft's own validator), its provenance, the lineage, and the CLI.

Files are real .jsonl/.json/.csv/.parquet files in tmp_path, read by DuckDB; the saved datasets
are checked with validate_dataset and loaded by mlx-lm's own dataset loader."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import hub_server
from droidft import data as D
from droidft import studio as us
from droidft.data import imports as I
from droidft.data import mapping as M
from droidft.data import DataError

use_hub = hub_server.use_hub

ALPACA = [{"instruction": f"Add {i} and {i}.", "input": "" if i % 2 else "Show the sum only.",
           "output": str(2 * i)} for i in range(20)]
SHAREGPT = [{"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": f"Hi {i}"},
                               {"from": "gpt", "value": f"Hello {i}!"}]} for i in range(12)]
MESSAGES = [{"messages": [{"role": "user", "content": f"Q{i}"}, {"role": "assistant", "content": f"A{i}"}]}
            for i in range(12)]
QA = [{"question": f"What is {i} + 1?", "answer": i + 1} for i in range(12)]
PREFERENCE = [{"prompt": f"Say {i}", "chosen": f"{i}", "rejected": f"{i + 1}"} for i in range(12)]
GRPO = [{"prompt": f"What is {i} * 2?", "answer": str(2 * i), "type": "math"} for i in range(12)]


def write(path: Path, rows, kind: str | None = None) -> Path:
    kind = kind or path.suffix.lstrip(".")
    if kind == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif kind == "json":
        path.write_text(json.dumps(rows), encoding="utf-8")
    elif kind == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    elif kind == "csv":
        import csv

        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return path


# --------------------------------------------------------------------------- schema mappings


@pytest.mark.parametrize("rows,schema,fmt,first", [
    (ALPACA, "alpaca", "completions", {"prompt": "Add 0 and 0.\n\nShow the sum only.", "completion": "0"}),
    (SHAREGPT, "sharegpt", "chat", {"messages": [{"role": "system", "content": "Be brief."},
                                                 {"role": "user", "content": "Hi 0"},
                                                 {"role": "assistant", "content": "Hello 0!"}]}),
    (MESSAGES, "messages", "chat", MESSAGES[0]),
    (QA, "qa", "completions", {"prompt": "What is 0 + 1?", "completion": "1"}),
    (PREFERENCE, "preference", "preference", PREFERENCE[0]),
    (GRPO, "grpo", "grpo", GRPO[0]),
    ([{"text": "plain text"}], "text", "text", {"text": "plain text"}),
    ([{"instruction": "Name a colour.", "context": "", "response": "Teal."}], "dolly", "completions",
     {"prompt": "Name a colour.", "completion": "Teal."}),
    ([{"prompt": "Hi", "response": "Hello"}], "prompt_response", "completions", {"prompt": "Hi", "completion": "Hello"}),
    # Alpaca's own files also carry a pre-rendered "text": the specific schema wins
    ([dict(ALPACA[1], text="### Instruction: ...")], "alpaca", "completions",
     {"prompt": "Add 1 and 1.", "completion": "2"}),
])
def test_each_schema_is_recognised_and_mapped(rows, schema, fmt, first):
    columns = list(rows[0])
    cmap = M.auto_map(columns)
    assert (cmap.schema, cmap.format) == (schema, fmt)
    assert M.map_row(rows[0], cmap) == first


def test_the_method_picks_the_format_a_schema_becomes():
    assert M.auto_map(["question", "answer"], method="grpo").fields == {"prompt": ("question",), "answer": ("answer",)}
    alpaca_grpo = M.auto_map(["instruction", "input", "output"], method="grpo")
    assert M.map_row(ALPACA[1], alpaca_grpo) == {"prompt": "Add 1 and 1.", "answer": "2"}
    chat = M.auto_map(["question", "answer"], fmt="chat")
    assert M.map_row({"question": "Q", "answer": "A"}, chat) == {
        "messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]}
    # a preference set trains SFT on its chosen replies
    sft = M.auto_map(["prompt", "chosen", "rejected"], method="sft")
    assert M.map_row(PREFERENCE[0], sft) == {"prompt": "Say 0", "completion": "0"}
    # column names in another case are found too
    assert M.auto_map(["Question", "Answer"]).fields == {"prompt": ("Question",), "completion": ("Answer",)}


def test_ambiguous_or_unknown_columns_ask_for_a_mapping():
    with pytest.raises(DataError, match="fit several formats"):
        M.auto_map(["messages", "prompt", "chosen", "rejected"])
    assert M.auto_map(["messages", "prompt", "chosen", "rejected"], method="dpo").format == "preference"
    with pytest.raises(DataError, match=r"no known schema.*'q', 'a'.*--map q=prompt"):
        M.auto_map(["q", "a"])
    with pytest.raises(DataError, match="no known schema for prompt/chosen/rejected"):
        M.auto_map(["question", "answer"], method="dpo")


def test_hand_mapping_joins_columns_and_implies_the_format():
    cmap = M.parse_map(["q=prompt", "ctx=prompt", "a=answer"], ["q", "ctx", "a"])
    assert cmap.format == "grpo" and cmap.fields == {"prompt": ("q", "ctx"), "answer": ("a",)}
    assert M.map_row({"q": "Q", "ctx": "C", "a": 3}, cmap) == {"prompt": "Q\n\nC", "answer": "3"}
    assert M.parse_map(["q=prompt", "a=output"], ["q", "a"]).format == "completions"  # output = completion
    with pytest.raises(DataError, match="no column 'nope'.*its columns are 'q', 'a'"):
        M.parse_map(["nope=prompt", "a=completion"], ["q", "a"])
    with pytest.raises(DataError, match="unknown field 'reply'"):
        M.parse_map(["a=reply"], ["q", "a"])
    with pytest.raises(DataError, match="need 'completion'"):
        M.parse_map(["q=prompt"], ["q", "a"])
    with pytest.raises(DataError, match="COLUMN=FIELD"):
        M.parse_map(["q"], ["q"])


def test_conversations_in_chosen_and_rejected_give_their_last_reply():
    row = {"prompt": [{"role": "user", "content": "Hi"}],
           "chosen": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
           "rejected": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Go away."}]}
    cmap = M.auto_map(list(row))
    assert M.map_row(row, cmap) == {"prompt": "Hi", "chosen": "Hello!", "rejected": "Go away."}


def test_rows_that_cannot_map_are_numbered():
    cmap = M.auto_map(["conversations"])
    rows = [SHAREGPT[0], {"conversations": [{"from": "narrator", "value": "x"}]}, {"conversations": None},
            {"conversations": "not a list"}]
    mapped, problems = M.map_rows(rows, cmap, "chat.jsonl")
    assert [n for n, _ in mapped] == [1]
    assert [str(p) for p in problems] == [
        "chat.jsonl row 2: message 1 in 'conversations' has from 'narrator'; known: " + ", ".join(sorted(M.ROLE_ALIASES)),
        "chat.jsonl row 3: column 'conversations' is empty; a chat row needs a conversation",
        "chat.jsonl row 4: column 'conversations' must be a list of messages (role/content or from/value)",
    ]
    qa = M.auto_map(["question", "answer"])
    _, problems = M.map_rows([{"question": "q", "answer": None}, {"question": "q", "answer": b"\x00"}], qa, "qa.csv")
    assert [str(p) for p in problems] == ["qa.csv row 1: 'answer' is empty (null), so the row has no completion",
                                          "qa.csv row 2: column 'answer' holds binary data, not text"]


# --------------------------------------------------------------------------- reading files


@pytest.mark.parametrize("kind", ["jsonl", "json", "csv", "parquet"])
def test_every_file_kind_imports_into_a_valid_dataset(tmp_path, kind):
    src = I.read_file(write(tmp_path / f"alpaca.{kind}", ALPACA))
    assert src.columns == ["instruction", "input", "output"] and len(src.rows) == 20
    cmap = M.auto_map(src.columns)
    result = I.import_dataset(src, cmap, f"alpaca {kind}", valid_fraction=0.2, test_fraction=0.1, seed=3)
    assert result.path.parent == D.datasets_dir() and result.path.name == f"alpaca_{kind}"
    report = D.validate_dataset(result.path, "sft")
    assert report.ok and report.format == "completions"
    assert report.splits == {"train": 14, "valid": 4, "test": 2}
    rows = [json.loads(x) for s in ("train", "valid", "test") for x in (result.path / f"{s}.jsonl").read_text().splitlines()]
    assert sorted(r["completion"] for r in rows) == sorted(a["output"] for a in ALPACA)  # nothing lost or changed
    prov = json.loads((result.path / "provenance.json").read_text())
    assert prov["source"]["kind"] == "file" and prov["source"]["file_format"] == kind
    assert prov["source"]["sha256"] == __import__("hashlib").sha256((tmp_path / f"alpaca.{kind}").read_bytes()).hexdigest()
    assert prov["mapping"] == {"prompt": ["instruction", "input"], "completion": ["output"]}
    assert prov["rows"] == {"source": 20, "imported": 20, "dropped": 0, "train": 14, "valid": 4, "test": 2}
    assert (prov["schema"], prov["format"], prov["method"]) == ("alpaca", "completions", "sft")


def test_imported_sets_load_in_the_trainers_own_loaders(tmp_path, demo_model):
    from types import SimpleNamespace

    from mlx_lm.tuner.datasets import load_dataset as mlx_load
    from mlx_lm.utils import load_tokenizer

    tok = load_tokenizer(Path(demo_model))
    src = I.read_file(write(tmp_path / "chat.jsonl", SHAREGPT))
    folder = I.import_dataset(src, M.auto_map(src.columns), "sg").path
    args = SimpleNamespace(data=str(folder), train=True, test=False, hf_dataset=None, mask_prompt=False,
                           prompt_feature="prompt", completion_feature="completion", text_feature="text",
                           chat_feature="messages")
    train, valid, _ = mlx_load(args, tok)
    assert len(train) + len(valid) == 12 and len(valid) >= 1


def test_csv_values_stay_text_and_quoted_fields_survive(tmp_path):
    path = tmp_path / "qa.csv"
    path.write_text('question,answer\n"Spell ""007"", please",007\n"two\nlines",x\nc,3\nd,4\n', encoding="utf-8")
    src = I.read_file(path)
    assert src.rows[0] == {"question": 'Spell "007", please', "answer": "007"}
    assert src.rows[1]["question"] == "two\nlines"
    semi = tmp_path / "semi.csv"
    semi.write_text("question;answer\na;1\nb;2\n", encoding="utf-8")
    assert I.read_file(semi).rows == [{"question": "a", "answer": "1"}, {"question": "b", "answer": "2"}]


# --------------------------------------------------------------------------- bad files


def read_error(path: Path) -> str:
    with pytest.raises(DataError) as info:
        I.read_file(path)
    return str(info.value)


def test_bad_jsonl_lines_get_the_validators_messages(tmp_path):
    good = json.dumps(ALPACA[0])
    p = tmp_path / "bad.jsonl"
    p.write_text("\n".join([good, good, '{"instruction": "x", ', good]) + "\n")
    assert read_error(p) == "bad.jsonl line 3: is not valid JSON (Expecting property name enclosed in double quotes at column 22)"
    p.write_bytes((good + "\n").encode() + b'{"instruction": "caf\xe9"}\n')
    assert read_error(p) == ("bad.jsonl line 2: is not valid UTF-8 (byte 0xe9 at byte 21 of the line); "
                             "save the file as UTF-8")
    p.write_text(good + "\n[1, 2]\n")
    assert read_error(p) == ('bad.jsonl row 2: is a list, not a JSON object; each row must be one object like '
                             '{"prompt": "...", "completion": "..."}')


def test_bad_json_and_parquet_files_are_explained(tmp_path):
    p = tmp_path / "bad.json"
    p.write_bytes(b'[\n{"a": "x"},\n{"a": "\xff"}\n]\n')
    assert read_error(p) == "bad.json line 3: is not valid UTF-8 (byte 0xff at byte 8 of the line); save the file as UTF-8"
    p.write_text('[\n{"a": "x"},\n{"a" "y"}\n]\n')
    assert read_error(p).startswith("bad.json line 3: is not valid JSON (Expecting ':' delimiter")
    p.write_text(json.dumps({"data": ALPACA}))
    assert "holds one object whose 'data' is a list of 20 records" in read_error(p)
    pq_bad = tmp_path / "bad.parquet"
    pq_bad.write_bytes(b"PAR1 this is not a parquet file")
    assert read_error(pq_bad).startswith("bad.parquet: cannot be read as PARQUET (")


def test_bad_csv_rows_are_numbered_by_line(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("question,answer\na,1\nb,2,3\nc\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        I.read_file(p)
    assert [str(x) for x in info.value.problems] == ["bad.csv line 3: has 3 values but the header names 2 columns",
                                                      "bad.csv line 4: has 1 values but the header names 2 columns"]
    assert str(info.value) == "bad.csv line 3: has 3 values but the header names 2 columns (and 1 more problem)"
    p.write_bytes(b"question,answer\na,1\nb\xff,2\n")
    assert read_error(p) == "bad.csv line 3: is not valid UTF-8; save the file as UTF-8"
    p.write_text('question,answer\na,1\n"b,2\n')
    assert read_error(p) == "bad.csv line 3: has a quote that is never closed"
    p.write_text("question,question\na,1\n")
    assert read_error(p) == "bad.csv line 1: the header names column 'question' twice"


def test_empty_files_and_huge_rows(tmp_path):
    for name, content in (("empty.jsonl", ""), ("empty.csv", ""), ("blank.jsonl", "\n\n")):
        (tmp_path / name).write_text(content)
    assert read_error(tmp_path / "empty.jsonl").startswith("empty.jsonl is empty")
    assert read_error(tmp_path / "blank.jsonl") == "blank.jsonl has no rows"
    (tmp_path / "header.csv").write_text("question,answer\n")
    assert read_error(tmp_path / "header.csv") == "header.csv has no rows (only a header)"
    assert read_error(tmp_path / "notes.txt") == "file not found: " + str(tmp_path / "notes.txt")
    (tmp_path / "notes.txt").write_text("hello")
    assert "cannot import .txt" in read_error(tmp_path / "notes.txt")
    huge = tmp_path / "huge.jsonl"
    huge.write_text(json.dumps(ALPACA[0]) + "\n" + json.dumps({"instruction": "x" * (D.MAX_LINE_BYTES + 10),
                                                               "output": "y"}) + "\n")
    assert read_error(huge) == "huge.jsonl row 2: is 16.0 MB long, over the 16.0 MB limit for one row; split or shorten it"
    long_csv = tmp_path / "huge.csv"
    long_csv.write_text("question,answer\na,1\n" + "b," + "x" * (D.MAX_LINE_BYTES + 10) + "\n")
    assert read_error(long_csv) == "huge.csv line 3: is over the 16.0 MB limit for one row; split or shorten it"
    # a Parquet cell has no line: the mapped row is measured, by droidft's validator, numbered by row
    big = write(tmp_path / "huge.parquet", [ALPACA[0], {"instruction": "x" * (D.MAX_LINE_BYTES + 10), "input": "",
                                                        "output": "y"}, ALPACA[2]])
    src = I.read_file(big)
    with pytest.raises(DataError, match=r"^huge.parquet row 2: is 16.0 MB long, over the 16.0 MB limit for one row"):
        I.import_dataset(src, M.auto_map(src.columns), "huge")


def test_rows_the_validator_refuses_stop_the_import_with_row_numbers(tmp_path):
    rows = [dict(r) for r in QA]
    rows[4]["answer"] = None
    rows[7]["question"] = ["not", "text"]
    src = I.read_file(write(tmp_path / "qa.jsonl", rows))
    cmap = M.auto_map(src.columns, method="grpo")
    with pytest.raises(DataError) as info:
        I.import_dataset(src, cmap, "qa", method="grpo")
    assert str(info.value) == "qa.jsonl row 5: 'answer' is empty (null), so the row has no answer (and 1 more problem)"
    assert not any(p.name.startswith("qa") for p in D.datasets_dir().iterdir()), "nothing is saved"
    # ... or leaves them out when asked, and says so in the provenance
    result = I.import_dataset(src, cmap, "qa", method="grpo", drop_bad=True)
    assert result.provenance["rows"]["dropped"] == 2 and result.provenance["dropped_rows"] == [5, 8]
    assert D.validate_dataset(result.path, "grpo").ok and sum(result.report.splits.values()) == 10


def test_droidft_validator_checks_mapped_rows_numbered_by_source_row(tmp_path):
    rows = [dict(r) for r in SHAREGPT]
    rows[3] = {"conversations": [{"from": "human", "value": "Hello?"}]}  # nothing to learn: no reply
    src = I.read_file(write(tmp_path / "chat.jsonl", rows))
    cmap = M.auto_map(src.columns)
    with pytest.raises(DataError) as info:
        I.import_dataset(src, cmap, "chat")
    assert str(info.value) == ("chat.jsonl row 4: 'messages' has no assistant message, so there is nothing to "
                               "learn; add the reply the model should give")
    assert not [p for p in D.datasets_dir().iterdir() if p.name == "chat"]
    kept = I.import_dataset(src, cmap, "chat", drop_bad=True)  # the validator's refusal, left out
    assert kept.provenance["dropped_rows"] == [4] and kept.provenance["rows"]["imported"] == 11
    assert D.validate_dataset(kept.path, "sft").ok and kept.report.path == str(kept.path)
    # warnings from the validator come back as notes, numbered the same way
    rows[3] = {"conversations": [{"from": "human", "value": "Hello?"}, {"from": "gpt", "value": "Hi"}]}
    grpo = [dict(r) for r in GRPO]
    grpo[2]["answer"] = ""
    src = I.read_file(write(tmp_path / "grpo.jsonl", grpo))
    result = I.import_dataset(src, M.auto_map(src.columns), "grpo")
    assert [str(n) for n in result.notes] == ["grpo.jsonl row 3: 'answer' is empty (the reward functions compare "
                                              "generations against it)"]


def test_too_few_rows_to_split_is_clear_and_leaves_nothing(tmp_path):
    src = I.read_file(write(tmp_path / "two.jsonl", QA[:2]))
    with pytest.raises(DataError, match="too few to split into train, valid and test"):
        I.import_dataset(src, M.auto_map(src.columns), "two", valid_fraction=0.4, test_fraction=0.4)
    assert list(D.datasets_dir().iterdir()) == []


def test_split_option_parsing():
    assert I.parse_split("90/10") == (0.1, 0.0)
    assert I.parse_split("80/10/10") == (0.1, 0.1)
    for bad in ("90", "50/60", "100/0", "a/b"):
        with pytest.raises(DataError, match="--split"):
            I.parse_split(bad)


def test_lineage_draws_the_import_source(tmp_path):
    src = I.read_file(write(tmp_path / "alpaca.csv", ALPACA))
    folder = I.import_dataset(src, M.auto_map(src.columns), "alp").path
    runs = [{"id": "r1", "name": "one", "status": "completed", "data": str(folder), "adapter_path": "/a"}]
    sources = us.dataset_sources([str(folder), "demo"])
    assert list(sources) == [str(folder)]
    dot = us.lineage_dot(runs, sources=sources)
    assert f'"src:{folder}" -> "data:{folder}"' in dot
    assert "file\\nalpaca.csv" in dot and "import: Alpaca (instruction/input/output) → prompt/completion\\n20 rows" in dot
    assert "src:" not in us.lineage_dot(runs)  # nothing is drawn without provenance


# --------------------------------------------------------------------------- the CLI


def test_cli_imports_previews_and_prints_the_folder_last(cli, tmp_path):
    path = write(tmp_path / "alpaca.parquet", ALPACA)
    out = cli("data", "import", str(path), "--name", "alp", "--preview", "2")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ['row 1: {"prompt": "Add 0 and 0.\\n\\nShow the sum only.", "completion": "0"}',
                                       'row 2: {"prompt": "Add 1 and 1.", "completion": "2"}']
    assert "Alpaca (instruction/input/output) -> prompt/completion" in out.stderr
    assert not (D.datasets_dir() / "alp").exists()
    out = cli("data", "import", str(path), "--name", "alp", "--split", "80/10/10", "--method", "grpo")
    assert out.returncode == 0, out.stderr
    folder = Path(out.stdout.strip().splitlines()[-1])
    assert folder == D.datasets_dir() / "alp"
    assert D.validate_dataset(folder, "grpo").splits == {"train": 16, "valid": 2, "test": 2}


def test_cli_hand_mapping(tmp_path, capsys):
    from droidft.cli import main

    path = write(tmp_path / "odd.csv", [{"q": f"q{i}", "ctx": "c", "a": f"a{i}"} for i in range(10)])
    assert main(["data", "import", str(path), "--name", "odd", "--map", "q=prompt", "--map", "ctx=prompt",
                 "--map", "a=completion", "--format", "chat"]) == 0
    out = capsys.readouterr()
    assert "your mapping -> chat (messages): q + ctx -> prompt, a -> completion" in out.err
    rows = [json.loads(x) for x in (Path(out.out.strip()) / "train.jsonl").read_text().splitlines()]
    assert rows[0]["messages"][0] == {"role": "user", "content": rows[0]["messages"][0]["content"]}
    assert rows[0]["messages"][0]["content"].endswith("\n\nc")


@pytest.mark.parametrize("args,fragment", [
    (["missing.csv"], "file not found"),
    (["bad.csv"], "bad.csv line 3: has 3 values but the header names 2 columns"),
    (["good.csv", "--map", "x=prompt"], "no column 'x'"),
    (["good.csv", "--split", "70/70"], "--split"),
    (["good.csv", "--method", "dpo"], "no known schema for prompt/chosen/rejected"),
    (["acme/data", "--config", "x"], "cannot be reached"),
])
def test_cli_failures_are_one_line(tmp_path, monkeypatch, capsys, use_hub, args, fragment):
    """In-process (the subprocess path is covered above): progress lines, then one failure line."""
    from droidft.cli import main

    monkeypatch.chdir(tmp_path)
    use_hub(hub_server.closed_port_url())  # nothing listens there: never the internet
    write(tmp_path / "good.csv", QA)
    (tmp_path / "bad.csv").write_text("question,answer\na,1\nb,2,3\n")
    assert main(["data", "import", *args, "--name", "x"]) == 2
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    failures = [x for x in lines if x.startswith("droidft: ")]
    assert failures == [lines[-1]] and fragment in lines[-1], out.err
    assert out.out == "" and "Traceback" not in out.err
    assert list(D.datasets_dir().iterdir()) == []


# --------------------------------------------------------------------------- the Data page


def open_data_page():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app" / "Home.py"), default_timeout=240)
    at.run()
    at.switch_page("views/data.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def errors(at) -> list[str]:
    return [str(e.value) for e in at.error]


def test_data_page_maps_previews_splits_and_saves_a_local_file(tmp_path, demo_model):
    rows = [{"q": f"What is {i} + 1?", "ctx": "Answer with a number.", "a": str(i + 1)} for i in range(20)]
    rows[6]["a"] = None
    path = write(tmp_path / "odd.csv", rows)
    at = open_data_page()
    at.radio(key="imp.kind").set_value("file").run()
    at.text_input(key="imp.path").input(str(path)).run()
    at.button(key="imp.load").click().run()
    assert not errors(at), errors(at)
    assert any("20 rows from odd.csv" in str(s.value) for s in at.success)
    assert any("no known schema" in str(i.value) for i in at.info), "unknown columns ask for a mapping"
    assert not [b for b in at.button if b.key == "imp.save"], "nothing to save before the columns are mapped"
    at.selectbox(key="imp.format.sft").select("completions").run()
    at.multiselect(key="imp.field.1.completions.prompt").set_value(["q", "ctx"]).run()
    at.multiselect(key="imp.field.1.completions.completion").set_value(["a"]).run()
    preview = [c.value for c in at.code]
    assert json.dumps({"prompt": "What is 0 + 1?\n\nAnswer with a number.", "completion": "1"}, indent=1) in preview
    at.slider(key="imp.valid").set_value(20)
    at.slider(key="imp.test").set_value(10)
    at.text_input(key="imp.name").input("odd sums").run()
    at.button(key="imp.save").click().run()
    assert any("odd.csv row 7: 'a' is empty (null), so the row has no completion" in e for e in errors(at)), errors(at)
    assert list(at.dataframe[-1].value["row"]) == [7], "the problems are listed by row"
    assert not (D.datasets_dir() / "odd_sums").exists()
    at.checkbox(key="imp.drop").check().run()
    at.button(key="imp.save").click().run()
    assert not at.exception and not errors(at), errors(at)
    folder = Path(at.session_state["data.selected"])
    assert folder == D.datasets_dir() / "odd_sums"
    assert [m.value for m in at.metric] == ["13", "4", "2"]  # 19 rows: train, valid, test
    assert any("Imported from file: odd.csv" in str(c.value) and "19 rows (1 left out); q + ctx -> prompt, a -> "
               "completion" in str(c.value) for c in at.caption)
    assert any("Ready for SFT" in str(s.value) for s in at.success)
    prov = I.read_provenance(folder)
    assert prov["mapping"] == {"prompt": ["q", "ctx"], "completion": ["a"]} and prov["dropped_rows"] == [7]


def test_data_page_imports_an_uploaded_parquet_file(demo_model, tmp_path):
    path = write(tmp_path / "alpaca.parquet", ALPACA)
    at = open_data_page()
    at.selectbox(key="data.method").select("grpo").run()
    at.radio(key="imp.kind").set_value("upload").run()
    at.file_uploader(key="imp.upload").set_value(("../../alpaca data.parquet", path.read_bytes(),
                                                  "application/octet-stream")).run()
    at.button(key="imp.load").click().run()
    assert not errors(at), errors(at)
    assert any("Alpaca" in str(c.value) for c in at.caption)
    assert at.multiselect(key="imp.field.1.grpo.prompt").value == ["instruction", "input"]
    at.button(key="imp.save").click().run()
    assert not errors(at), errors(at)
    folder = Path(at.session_state["data.selected"])
    assert folder.name == "alpaca_data" and D.validate_dataset(folder, "grpo").ok
    assert Path(I.read_provenance(folder)["source"]["path"]).parent == D.datasets_dir().parent / "imports"


def test_data_page_refuses_a_typed_path_outside_the_allowed_folders_in_lan_mode(tmp_path, monkeypatch):
    from droidft import security

    monkeypatch.setenv("DROIDFT_LAN", "1")
    security.set_password("owner-secret-2", "owner")
    path = write(tmp_path / "elsewhere.csv", QA)
    at = signed_in("owner-secret-2")
    at.radio(key="imp.kind").set_value("file").run()
    at.text_input(key="imp.path").input(str(path)).run()
    at.button(key="imp.load").click().run()
    assert any("outside the folders this shared dashboard may read" in e for e in errors(at)), errors(at)
    assert "imp.source" not in at.session_state


def signed_in(password: str):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app" / "Home.py"), default_timeout=240).run()
    at.text_input[0].input(password)
    at.button[0].click().run()
    at.switch_page("views/data.py").run()
    return at
