"""Every dashboard page under Streamlit's AppTest: renders on an empty home and on a home with
real runs, forms validate, buttons call the engine. Runs are real MLX training of the demo model."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from droidft import estimate, jobs, store
from droidft import studio as us
from droidft.config import SFTConfig
from droidft.data import datasets_dir, save_uploads
from helpers import demo_sft, stop_all
from helpers import wait_for as shared_wait_for

APP = Path(__file__).resolve().parent.parent / "app" / "Home.py"
VIEWS = ["views/home.py", "views/data.py", "views/sft_setup.py", "views/rl_setup.py", "views/monitor.py",
         "views/sessions.py", "views/compare.py", "views/fusion.py", "views/evaluate.py"]
TIMEOUT = 240  # a loaded 2-core machine loads models and tokenizers slowly


def open_page(view: str = "views/home.py", **query) -> AppTest:
    """Run the app, then switch to `view` with query parameters, as a browser would."""
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    for key, value in query.items():
        at.query_params[key] = value
    at.switch_page(view).run()
    assert_clean(at)
    return at


def assert_clean(at: AppTest) -> None:
    """No exception reached the page, and none was caught by the app's last-resort net."""
    assert not at.exception, [e.value for e in at.exception]
    bugs = [e.value for e in at.error if "bug in droidft" in str(e.value)]
    assert not bugs, bugs


def texts(at: AppTest, kind: str) -> list[str]:
    return [str(e.value) for e in getattr(at, kind)]


def charts(at: AppTest) -> list:
    return list(at.get("vega_lite_chart"))


def tiny(**overrides) -> SFTConfig:
    """A real, short SFT run of the demo model on the demo data."""
    return demo_sft(**dict(iters=10, steps_per_report=2, steps_per_eval=5, save_every=5, val_batches=2,
                           max_seq_length=128) | overrides)


def wait_for(predicate, timeout=300.0, poll=0.5):
    return shared_wait_for(predicate, timeout=timeout, poll=poll)


@pytest.fixture(scope="module")
def runs_home(tmp_path_factory, demo_model):
    """A home with two completed real runs (different learning rates), shared by read-only tests."""
    home = tmp_path_factory.mktemp("runs_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DROIDFT_HOME", str(home))
        ids = [jobs.start(tiny(name="first", learning_rate=1e-3)),
               jobs.start(tiny(name="second", learning_rate=2e-3, seed=1))]
        for rid in ids:
            run = jobs.wait(rid, timeout=900)
            assert run["status"] == "completed", run.get("error")
    return {"home": home, "ids": ids}


@pytest.fixture
def with_runs(runs_home, monkeypatch):
    monkeypatch.setenv("DROIDFT_HOME", str(runs_home["home"]))
    return runs_home["ids"]


def fake_run(status="stopped", name="fake", metrics=True, **config) -> str:
    """A run row as the worker leaves it (no training), for tests of buttons on finished runs."""
    rid = store.create_run(method="sft", config=tiny(**config).to_dict(), model="demo", data="demo", name=name)
    now = time.time()
    store.update_run(rid, status=status, started_at=now - 30, ended_at=now)
    if metrics:
        store.add_metrics([(rid, s, "train_loss", 3.0 - 0.1 * s, now - 30 + s) for s in range(1, 11)])
    return rid


# -- every page, empty and full -------------------------------------------------------------------


@pytest.mark.parametrize("view", VIEWS)
def test_every_page_renders_on_an_empty_home(view, demo_model):
    at = open_page(view)
    assert at.title, "every page has a title"


@pytest.mark.parametrize("view", VIEWS)
def test_every_page_renders_on_a_home_with_runs(view, with_runs):
    query = {}
    if view in ("views/monitor.py", "views/compare.py"):
        query = {"run": with_runs[0]}
    if view == "views/sessions.py":
        query = {"select": ",".join(with_runs)}
    open_page(view, **query)


def test_empty_states_say_what_to_do_next(demo_model):
    assert any("No runs yet" in t for t in texts(open_page("views/sessions.py"), "info"))
    assert any("No runs yet" in t for t in texts(open_page("views/monitor.py"), "info"))
    assert any("Fusion needs at least two adapters" in t for t in texts(open_page("views/fusion.py"), "info"))
    assert any("No fine-tuned adapters yet" in t for t in texts(open_page("views/compare.py"), "info"))


# -- Home ------------------------------------------------------------------------------------------------


def test_home_demo_button_starts_a_real_run_and_opens_its_monitor(demo_model):
    at = open_page("views/home.py")
    at.button(key="demo_start").click().run()
    assert_clean(at)
    try:
        runs = store.list_runs()
        assert len(runs) == 1 and runs[0]["name"] == "Demo fine-tune"
        assert runs[0]["config"]["iters"] == us.demo_config().iters
        assert at.query_params["run"] == [runs[0]["id"]] or at.query_params["run"] == runs[0]["id"]
        assert "Monitor" in texts(at, "title")
    finally:
        stop_all()


def test_home_names_the_blas_kernels_training_gets(demo_model):
    from droidft.blas import find_openblas, worker_env

    at = open_page("views/home.py")
    line = next(m.value for m in at.markdown if "Training math (BLAS)" in m.value)
    expected = us.short_blas(worker_env("auto")[1])
    assert f"**Training math (BLAS):** {expected}" in line
    if find_openblas():
        assert len(expected.split()) == 2, "openblas and the kernels it runs (e.g. SkylakeX)"


# -- Monitor ------------------------------------------------------------------------------------------------


def test_monitor_shows_progress_metrics_charts_and_log_of_a_finished_run(with_runs):
    at = open_page("views/monitor.py", run=with_runs[0])
    assert at.get("progress")[0].proto.value == 100
    assert "step 10 / 10" in at.get("progress")[0].proto.text
    assert len(charts(at)) >= 4  # loss, learning rate, tokens/s, memory
    metrics = {m.label: m.value for m in at.metric}
    assert float(metrics["Train loss"]) > 0
    assert any("worker" in c.value for c in at.code), "the log tail is shown"
    assert [b.label for b in at.button if b.label == "Compare with base"]


def test_monitor_follows_a_live_run_incrementally_and_stop_button_stops_it(demo_model):
    rid = jobs.start(tiny(iters=100000, steps_per_eval=100000, save_every=50, name="live"))
    try:
        wait_for(lambda: store.metrics(rid, names=["train_loss"]), timeout=600)
        at = open_page("views/monitor.py", run=rid)
        first = at.session_state["monitor_cache"][rid]["frame"]
        n_first = len(first)
        assert n_first > 0 and store.get_run(rid)["status"] == "running"
        wait_for(lambda: len(store.metrics(rid)) > n_first + 6, timeout=300)
        at.run()
        assert_clean(at)
        frame = at.session_state["monitor_cache"][rid]["frame"]
        assert len(frame) > n_first, "new rows were merged in"
        assert not frame.duplicated(subset=["name", "step"]).any(), "overlapping polls leave no duplicates"
        stored = store.metrics(rid)
        seen = {(r["name"], r["step"]) for r in frame.to_dict("records")}
        assert seen <= {(r["name"], r["step"]) for r in stored}
        assert "about" in at.get("progress")[0].proto.text  # an ETA while running
        at.button(key="stop").click().run()
        assert_clean(at)
        run = jobs.wait(rid, timeout=300)
        assert run["status"] == "stopped"
    finally:
        stop_all()


def test_monitor_with_an_unknown_run_explains_instead_of_raising(demo_model):
    at = open_page("views/monitor.py", run="no-such-run")
    assert any("No run 'no-such-run'" in e for e in texts(at, "error"))


def test_monitor_resume_button_continues_a_stopped_run(demo_model):
    rid = jobs.start(tiny(iters=100000, steps_per_eval=100000, save_every=4, name="to resume"))
    try:
        wait_for(lambda: [a for a in store.artifacts(rid, kind="checkpoint")], timeout=600)
        jobs.stop(rid)
        assert jobs.wait(rid, timeout=300)["status"] == "stopped"
        at = open_page("views/monitor.py", run=rid)
        at.button(key="resume").click().run()
        assert_clean(at)
        children = [r for r in store.list_runs() if r.get("parent_id") == rid]
        assert len(children) == 1
        assert at.query_params["run"] in (children[0]["id"], [children[0]["id"]])
    finally:
        stop_all()


# -- Sessions ----------------------------------------------------------------------------------------------------


def test_sessions_lists_runs_overlays_two_and_diffs_their_settings(with_runs):
    at = open_page("views/sessions.py", select=",".join(with_runs))
    table = at.dataframe[0].value
    assert set(with_runs) <= set(table["id"]) and {"first", "second"} <= set(table["name"])
    assert {"Curves", "Settings that differ"} <= set(texts(at, "subheader"))
    assert charts(at), "the overlay chart is drawn"
    diff = at.dataframe[1].value
    assert {"learning_rate", "seed"} <= set(diff["setting"])


def test_sessions_filters(demo_model):
    fake_run(status="completed", name="alpha")
    fake_run(status="failed", name="beta")
    at = open_page("views/sessions.py")
    at.multiselect(key="f_status").select("failed").run()
    assert list(at.dataframe[0].value["name"]) == ["beta"]
    at.multiselect(key="f_status").unselect("failed").run()
    at.text_input(key="f_text").input("alp").run()
    assert list(at.dataframe[0].value["name"]) == ["alpha"]


def test_sessions_delete_asks_then_removes_rows_and_files(demo_model):
    from droidft import paths

    rid = fake_run(name="doomed")
    paths.run_dir(rid).mkdir(parents=True, exist_ok=True)
    (paths.run_dir(rid) / "worker.log").write_text("x")
    at = open_page("views/sessions.py", select=rid)
    at.button(key="delete").click().run()
    assert store.get_run(rid) is not None, "nothing is deleted before the confirmation"
    at.button(key="confirm_delete").click().run()
    assert_clean(at)
    assert store.get_run(rid) is None and not paths.run_dir(rid).exists()
    assert store.metrics(rid) == []


def test_sessions_single_run_offers_exports_and_commands(with_runs):
    at = open_page("views/sessions.py", select=with_runs[0])
    codes = " ".join(c.value for c in at.code)
    assert "droidft train sft" in codes and "mlx_lm lora" in codes
    labels = {b.label for b in at.get("download_button")}
    assert {"Config (YAML)", "Adapter (zip)"} <= labels
    assert at.get("graphviz_chart"), "the lineage graph is drawn"


# -- SFT and RL setup --------------------------------------------------------------------------------------------


def test_sft_form_refuses_bad_values_with_a_message_and_disabled_start(demo_model):
    at = open_page("views/sft_setup.py")
    at.number_input(key="sft.iters").set_value(0).run()
    errors = " ".join(texts(at, "error"))
    assert "iters must be a whole number >= 1" in errors
    assert at.button(key="sft.start").disabled
    at.text_input(key="sft.optimizer_config").input("{not: [valid").run()
    assert "Optimizer config is not valid YAML" in " ".join(texts(at, "error"))
    assert not store.list_runs()


def test_sft_presets_fill_the_form(demo_model):
    at = open_page("views/sft_setup.py")
    assert at.number_input(key="sft.iters").value == us.demo_config().iters
    at.segmented_control(key="sft.preset").set_value("balanced").run()
    assert at.number_input(key="sft.iters").value == 600
    assert at.toggle(key="sft.mask_prompt").value is True
    assert any("mlx_lm lora" in c.value for c in at.code), "the stock command is shown"
    assert {m.label for m in at.metric} >= {"Memory", "Time"}, "an estimate is shown"


def test_sft_start_button_starts_the_configured_run(demo_model):
    at = open_page("views/sft_setup.py")
    at.number_input(key="sft.iters").set_value(6).run()
    at.text_input(key="sft.name").input("from the form").run()
    at.button(key="sft.start").click().run()
    assert_clean(at)
    try:
        runs = store.list_runs()
        assert len(runs) == 1 and runs[0]["name"] == "from the form" and runs[0]["config"]["iters"] == 6
        assert "Monitor" in texts(at, "title")
    finally:
        stop_all()


def test_rl_form_exists_for_every_registered_rl_method(demo_model):
    from droidft import methods

    names = [m.name for m in methods.available() if m.family != "sft"]
    if not names:
        pytest.skip("no RL methods registered")
    at = open_page("views/rl_setup.py")
    for name in names:
        at.segmented_control(key="rl.method").set_value(name).run()
        assert_clean(at)
        assert at.button(key=f"rl.{name}.start"), name
        if {"reward_functions", "reward_weights"} <= methods.get(name).config_class.field_names():
            assert at.multiselect(key=f"rl.{name}.rewards")


def test_rl_form_validates(demo_model):
    from droidft import methods

    if "grpo" not in [m.name for m in methods.available()]:
        pytest.skip("GRPO not registered")
    at = open_page("views/rl_setup.py", method="grpo")
    at.number_input(key="rl.grpo.group_size").set_value(1).run()
    assert "group_size must be >= 2" in " ".join(texts(at, "error"))
    assert at.button(key="rl.grpo.start").disabled


# -- Data ------------------------------------------------------------------------------------------------------


def test_data_page_validates_the_demo_and_previews_it(demo_model):
    at = open_page("views/data.py")
    at.selectbox(key="data.pick").select("demo").run()
    assert_clean(at)
    assert any("Ready for SFT" in s for s in texts(at, "success"))
    assert any("<|assistant|>" in c.value or "assistant" in c.value for c in at.code), "rows as the model sees them"
    assert charts(at), "token-length histogram"


def test_data_page_lists_line_numbered_problems(demo_model):
    folder = datasets_dir() / "broken"
    folder.mkdir()
    good = json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]})
    (folder / "train.jsonl").write_text(good + "\n{not json\n" + good + "\n")
    (folder / "valid.jsonl").write_text(good + "\n")
    at = open_page("views/data.py")
    at.selectbox(key="data.pick").select(str(folder)).run()
    assert_clean(at)
    assert any("Not ready" in e for e in texts(at, "error"))
    problems = at.dataframe[0].value
    assert 2 in set(problems["line"]) and "train.jsonl" in set(problems["file"])


def test_data_page_generates_sample_data_and_splits_an_upload(demo_model):
    at = open_page("views/data.py")
    at.selectbox(key="data.method").select("dpo").run()
    at.button(key="data.generate").click().run()
    assert_clean(at)
    assert Path(at.session_state["data.selected"]).name.startswith("sample-dpo")
    assert any("Ready for DPO" in s for s in texts(at, "success"))

    rows = "".join(json.dumps({"prompt": f"q{i}", "completion": f"a{i}"}) + "\n" for i in range(20))
    at = open_page("views/data.py")
    at.file_uploader(key="data.upload").set_value(("../../my data.jsonl", rows.encode(), "application/jsonl")).run()
    at.text_input(key="data.upload_name").input("my upload").run()
    at.button(key="data.save_upload").click().run()
    assert_clean(at)
    folder = Path(at.session_state["data.selected"])
    assert folder.parent == datasets_dir() and folder.name == "my_upload" and (folder / "train.jsonl").is_file()
    assert any("Not ready" in e for e in texts(at, "error")), "no validation split yet"
    at.button(key="data.split").click().run()
    assert_clean(at)
    assert (folder / "valid.jsonl").is_file()
    assert any("Ready for SFT" in s for s in texts(at, "success"))


# -- Compare and Fusion ------------------------------------------------------------------------------------------


def test_compare_base_and_adapter_answer_side_by_side(with_runs):
    at = open_page("views/compare.py", run=with_runs[0])
    assert at.multiselect(key="cmp.targets").value == [f"run:{with_runs[0]}"]
    at.button(key="cmp.go").click().run()
    assert_clean(at)
    speeds = [c for c in texts(at, "caption") if "tokens/s" in c]
    assert len(speeds) == 2, "one answer (with its speed) for the base and one for the adapter"
    results = at.session_state["cmp.results"]
    assert set(results) == {"base", f"run:{with_runs[0]}"}


def test_compare_bad_sampling_is_a_message(with_runs):
    at = open_page("views/compare.py", run=with_runs[0])
    at.number_input(key="cmp.rep").set_value(0.0).run()
    at.button(key="cmp.go").click().run()
    assert_clean(at)
    assert any("repetition_penalty" in e for e in texts(at, "error"))


def test_fusion_fuses_two_adapters_and_offers_the_result_to_compare(with_runs):
    at = open_page("views/fusion.py")
    assert len(at.multiselect(key="fus.adapters").value) == 2
    at.button(key="fus.go").click().run()
    assert_clean(at)
    result = at.session_state["fus.result"]
    assert Path(result["out"]).is_dir() and result["retained_energy"]["total"] > 0.99
    at.button(key="fus.compare").click().run()
    assert_clean(at)
    assert "Compare" in texts(at, "title")
    assert any(k.startswith("fused:") for k in at.multiselect(key="cmp.targets").value)


def test_fusion_layer_ranges_that_miss_layers_are_explained(with_runs):
    at = open_page("views/fusion.py")
    at.segmented_control(key="fus.mode").set_value("gradient").run()
    assert_clean(at)
    assert charts(at), "the schedule preview"
    at.toggle(key="fus.any_sum").set_value(False).run()
    at.number_input(key="fus.s.0").set_value(3.0).run()
    assert any("sum to" in e for e in texts(at, "error"))
    assert at.button(key="fus.go").disabled


# -- droidft.studio (no Streamlit) ------------------------------------------------------------------------


def test_formatting():
    assert us.fmt_duration(5) == "5.0 s" and us.fmt_duration(125) == "2 min 05 s"
    assert us.fmt_duration(None) == "-" and us.fmt_duration(float("nan")) == "-"
    assert us.fmt_count(2_500_000) == "2.5M" and us.fmt_count(12) == "12"
    assert us.short_blas("openblas (/usr/lib/x/libopenblas.so.0)") == "openblas"
    # the kernels, as worker_env announces them and as a worker records them
    assert us.short_blas("openblas (/x/libopenblas.so.0; SkylakeX kernels (chosen by droidft: "
                         "OpenBLAS picked Prescott))") == "openblas SkylakeX"
    assert us.short_blas("openblas SkylakeX (/x/libopenblas.so.0; chosen by droidft)") == "openblas SkylakeX"
    assert us.fmt_device("Device(gpu, 0)") == "GPU (Metal)"


def test_progress_and_eta_from_metrics():
    now = 1000.0
    rows = [{"step": s, "time": 900 + s, "name": "train_loss", "value": 1.0} for s in (10, 20, 30)]
    run = {"status": "running", "config": {"iters": 100, "start_step": 0}, "started_at": 890}
    p = us.run_progress(run, rows, now=now)
    assert p.step == 30 and p.total == 100 and math.isclose(p.fraction, 0.3)
    assert math.isclose(p.steps_per_s, 1.0) and math.isclose(p.eta_s, 70.0)
    resumed = {"status": "running", "config": {"iters": 50, "start_step": 20}, "started_at": 890}
    assert us.run_progress(resumed, rows, now=now).step == 10


def test_merge_metrics_drops_overlap():
    a = [{"step": 1, "time": 1.0, "name": "x", "value": 1.0}, {"step": 2, "time": 2.0, "name": "x", "value": 2.0}]
    b = [{"step": 2, "time": 2.0, "name": "x", "value": 2.0}, {"step": 3, "time": 3.0, "name": "x", "value": 3.0}]
    merged = us.merge_metrics(us.merge_metrics(None, a), b)
    assert list(merged["step"]) == [1, 2, 3]


def test_chart_groups_include_rl_metrics():
    groups = {t: ns for t, ns, _ in us.chart_groups(
        {"train_loss", "val_loss", "learning_rate", "train_total_rewards_mean", "train_total_rewards_std",
         "val_total_rewards_mean", "train_r1_accuracy_reward_func_mean", "train_exact_answer_mean",
         "train_exact_answer_coverage", "train_kl", "val_kl", "train_average_generated_tokens",
         "train_max_generated_tokens", "train_clip_ratio_total", "tokens_per_second", "train_chosen_reward",
         "train_rejected_reward", "train_policy_chosen_logps", "train_accuracies"})}
    assert groups["Loss"] == ["train_loss", "val_loss"]
    assert groups["Reward"] == ["train_total_rewards_mean", "val_total_rewards_mean"]
    assert groups["Reward per function"] == ["train_exact_answer_mean", "train_r1_accuracy_reward_func_mean"]
    assert groups["KL divergence"] == ["train_kl", "val_kl"]
    assert groups["Completion length"] == ["train_average_generated_tokens", "train_max_generated_tokens"]
    assert groups["Preference rewards"] == ["train_chosen_reward", "train_rejected_reward"]
    assert "train_policy_chosen_logps" not in {n for ns in groups.values() for n in ns}
    assert list(groups)[:2] == ["Loss", "Reward"]


def test_field_specs_cover_every_method_and_defaults_are_valid():
    from droidft import methods

    for method in methods.available():
        specs = us.field_specs(method.config_class)
        assert specs, method.name
        values = {s.name: s.default for s in specs}
        config, problems = us.build_config(method.config_class, values)
        assert config is not None and problems == [], (method.name, problems)
        for spec in specs:  # every value survives the form round trip
            shown = us.field_display_value(spec, spec.default)
            if spec.kind not in ("choice", "multichoice", "bool"):
                assert us.parse_field(spec, shown) == spec.default or (
                    spec.default in ({}, []) and us.parse_field(spec, shown) in (None, {}, [])), spec.name


def test_estimate_grows_with_batch_and_drops_with_checkpointing():
    cfg = {"hidden_size": 512, "num_hidden_layers": 8, "intermediate_size": 1408, "num_attention_heads": 8,
           "vocab_size": 32000}
    small = estimate.estimate_run(SFTConfig(batch_size=1), cfg)
    big = estimate.estimate_run(SFTConfig(batch_size=8), cfg)
    ckpt = estimate.estimate_run(SFTConfig(batch_size=8, grad_checkpoint=True), cfg)
    assert small.memory_gb < big.memory_gb and ckpt.memory_gb < big.memory_gb
    assert estimate.estimate_run(SFTConfig(), cfg, measured_tokens_per_s=1000).basis.startswith("measured")


def test_config_diff_and_lineage():
    rows = us.config_diff({"a": 1, "lora": {"rank": 8}}, {"a": 1, "lora": {"rank": 16}})
    assert rows == [{"setting": "lora.rank", "a": "8", "b": "16"}]
    runs = [{"id": "r1", "name": "one", "status": "completed", "data": "/d/chat", "adapter_path": "/runs/r1/adapters"},
            {"id": "r2", "name": "two", "status": "completed", "data": "/d/chat", "adapter_path": "/runs/r2/adapters",
             "parent_id": "r1"}]
    fused = [{"kind": "fused_adapter", "path": "/home/fused/f", "meta": {"inputs": [
        {"path": "/runs/r1/adapters", "run_id": "r1"}, {"path": "/runs/r2/adapters", "run_id": "r2"}]}}]
    evals = [{"id": "e1", "suite": "loss", "target": "/home/fused/f"}]
    dot = us.lineage_dot(runs, fused, evals)
    assert '"adapter:/runs/r1/adapters" -> "fused:/home/fused/f"' in dot
    assert '"run:r1" -> "run:r2" [style=dashed]' in dot
    assert '"fused:/home/fused/f" -> "eval:e1"' in dot


def test_uploads_are_confined_and_named_safely(demo_model):
    from droidft.data import DataError

    folder = save_uploads([("../../../etc/train.jsonl", b'{"text": "a"}\n')], "../../x")
    assert folder.parent == datasets_dir() and (folder / "train.jsonl").read_bytes() == b'{"text": "a"}\n'
    with pytest.raises(DataError):
        save_uploads([("evil.py", b"print(1)")], "x")
    with pytest.raises(DataError):
        save_uploads([("train.jsonl", b"x" * 100)], "x", max_bytes=10)


# -- Evaluate ------------------------------------------------------------------------------------------------


def test_evaluate_runs_suites_on_base_and_adapter_and_keeps_history(with_runs):
    at = open_page("views/evaluate.py", run=with_runs[0])
    assert at.multiselect(key="ev.targets").value == [f"run:{with_runs[0]}"]
    at.multiselect(key="ev.suites").set_value(["loss"]).run()
    at.number_input(key="ev.limit").set_value(4).run()
    at.button(key="ev.go").click().run()
    assert_clean(at)
    table = at.session_state["ev.report"]["table"]
    assert [r["target"] for r in table] == ["base", f"{with_runs[0]}@best"]  # a run's best adapter by default
    assert list(at.dataframe[0].value["target"]) == ["base", "first (best)"]  # shown by run name
    assert all(r["loss"] > 0 for r in table)
    assert charts(at)
    history = at.dataframe[-1].value
    assert len(history) >= 2 and set(history["suite"]) == {"loss"}


# -- LAN sharing (the engine's rules, the pages' gate) ---------------------------------------------------------


def test_lan_mode_asks_for_a_password_and_viewers_cannot_start_runs(demo_model, monkeypatch):
    from droidft import security

    monkeypatch.setenv("DROIDFT_LAN", "1")
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    assert any("no password is set" in e for e in texts(at, "error"))
    assert not at.button, "nothing usable before a password exists"

    security.set_password("owner-secret", "owner")
    security.set_password("viewer-secret", "viewer")
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    at.text_input[0].input("wrong password")  # typed and submitted together, as a form does
    at.button[0].click().run()
    assert any("not right" in e for e in texts(at, "error"))
    at.text_input[0].input("viewer-secret")
    at.button[0].click().run()
    assert_clean(at)
    assert at.session_state["role"] == "viewer"
    assert at.button(key="demo_start").disabled
    at.switch_page("views/sft_setup.py").run()
    assert at.button(key="sft.start").disabled
    assert not store.list_runs()


def test_lan_password_hash_from_streamlit_secrets(demo_model, monkeypatch):
    import os

    from droidft import security

    monkeypatch.setenv("DROIDFT_LAN", "1")
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.secrets["password_hash"] = security.hash_password("from secrets")
    try:
        at.run()
        at.text_input[0].input("from secrets")
        at.button[0].click().run()
        assert_clean(at)
        assert at.session_state["role"] == "owner"
    finally:
        os.environ.pop("DROIDFT_PASSWORD_HASH", None)  # the page copied the secret there


def test_lan_sign_in_is_throttled_and_home_lists_who_is_connected(demo_model, monkeypatch):
    from droidft import security

    monkeypatch.setenv("DROIDFT_LAN", "1")
    security.set_password("owner-secret", "owner")
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    for _ in range(security.FREE_FAILURES):
        at.text_input[0].input("guess")
        at.button[0].click().run()
    assert any("Too many wrong passwords" in e and "30 s" in e for e in texts(at, "error")), texts(at, "error")
    at.text_input[0].input("owner-secret")
    at.button[0].click().run()
    assert "role" not in at.session_state, "the right password waits too"
    assert any("Too many wrong passwords" in e for e in texts(at, "error"))

    (security.paths.home() / "signin_attempts.json").unlink()  # the wait is over
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    at.text_input[0].input("owner-secret")
    at.button[0].click().run()
    assert_clean(at)
    assert at.session_state["role"] == "owner"
    assert any(e.label.startswith("Who is connected (") for e in at.expander)
    assert "**you · owner · this machine** · Home" in " ".join(m.value for m in at.markdown)


# -- machines (issue 7) ------------------------------------------------------------------------------------------


def test_sft_machines_section_checks_hosts_and_monitor_shows_ranks(demo_model):
    at = open_page("views/sft_setup.py")
    at.number_input(key="sft.ranks_per_host").set_value(2).run()
    assert_clean(at)
    at.button(key="sft.check_hosts").click().run()
    assert_clean(at)
    assert any("127.0.0.1" in t and "ready" in t for t in texts(at, "success")), texts(at, "success")

    from droidft import paths

    run_id = store.create_run(method="sft", config={**SFTConfig(ranks_per_host=2).to_dict()},
                              model=str(demo_model), data="demo", name="two ranks")
    store.update_run(run_id, status="failed", ended_at=time.time())
    run_dir = paths.run_dir(run_id)
    run_dir.mkdir(parents=True)
    (run_dir / "rank0.log").write_text("10:00:00 INFO  rank 0/2 on vm\n")
    (run_dir / "rank1.log").write_text("10:00:05 ERROR rank 1 failed: connection lost\n")
    at = open_page("views/monitor.py", run=run_id)
    captions = " ".join(c.value for c in at.caption)
    assert "rank 0" in captions and "rank 1 failed: connection lost" in captions


def test_compare_chat_mode_keeps_each_conversation(with_runs):
    at = open_page("views/compare.py", run=with_runs[0])
    at.toggle(key="cmp.chat").set_value(True).run()
    assert_clean(at)
    at.chat_input(key="cmp.chat_input").set_value("I like teal. What is your favourite colour?").run()
    assert_clean(at)
    at.chat_input(key="cmp.chat_input").set_value("And your favourite fruit?").run()
    assert_clean(at)
    history = at.session_state["cmp.history"]
    assert set(history) == {"base", f"run:{with_runs[0]}"}
    for messages in history.values():  # two turns each: user, assistant, user, assistant
        assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
        assert messages[2]["content"] == "And your favourite fruit?"
    at.button(key="cmp.clear").click().run()
    assert_clean(at)
    assert not at.session_state["cmp.history"]
