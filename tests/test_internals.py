"""The mlx-lm / mlx-lm-lora internals droidft wraps exist with the parameters it relies on, and
pyproject.toml pins both packages to the versions this suite passes with."""

import tomllib
from importlib.metadata import version

import pytest

from droidft import paths
from droidft.methods import internals


def test_every_wrapped_internal_exists_with_the_expected_signature():
    found = internals.problems()
    assert found == [], "\n".join(found)  # each line names the internal that changed


def test_a_changed_internal_is_named(monkeypatch):
    module = internals.T + "grpo_trainer"
    monkeypatch.setitem(internals.WRAPPED, module, {
        "_rollout_rewards": ("batch", "texts", "advantage_fn"), "_gone": (), "GRPOTrainingArgs": ("nope",)})
    found = internals.problems([module])
    assert any(f"{module}._rollout_rewards has no parameter(s) advantage_fn" in p for p in found)
    assert f"{module}._gone is missing" in found
    assert any(f"{module}.GRPOTrainingArgs has no parameter(s) nope" in p for p in found)
    monkeypatch.setitem(internals.FOR_METHOD, "grpo", (module,))
    with pytest.raises(RuntimeError, match="_rollout_rewards") as err:
        internals.require("grpo")
    assert "pyproject.toml" in str(err.value)
    internals.require("some_plugin_method")  # not droidft's business


def test_every_builtin_method_has_its_internals_listed():
    from droidft import methods

    for method in methods.available():
        assert method.name in internals.FOR_METHOD, method.name


def test_pyproject_pins_the_tested_versions():
    from packaging.requirements import Requirement

    deps = tomllib.loads((paths.REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {Requirement(d).name: Requirement(d).specifier for d in deps}
    for package in ("mlx-lm", "mlx-lm-lora"):
        spec = pins[package]
        assert spec.contains(version(package)), (package, str(spec), version(package))
        assert any(s.operator == "<" for s in spec), f"{package} has no upper bound: {spec}"
    assert not pins["mlx-lm-lora"].contains("5.11.0") and not pins["mlx-lm"].contains("0.33.0")



def test_a_method_asked_for_while_another_thread_loads_the_registry_is_found(monkeypatch):
    """The dashboard imports the methods in a background thread at start; a Start pressed
    meanwhile must wait for that load, not see a half-filled registry. (Imports made slow
    here; this process has loaded the real modules already.)"""
    import threading
    import time

    from droidft import methods

    loaded = dict(methods._REGISTRY) or {m.name: m for m in methods.available()}
    monkeypatch.setattr(methods, "_REGISTRY", {})
    monkeypatch.setattr(methods, "_loaded", False)

    class SlowImports:
        @staticmethod
        def import_module(name):
            time.sleep(0.05)
            if name == methods.BUILTIN_MODULES[-1]:  # the registry fills as the last one lands
                for method in loaded.values():
                    methods.register(method)

    monkeypatch.setattr(methods, "importlib", SlowImports)
    loader = threading.Thread(target=methods.available)
    loader.start()
    time.sleep(0.02)
    assert methods.get("sft").name == "sft"
    loader.join()
    assert len(methods.available()) == len(loaded)
