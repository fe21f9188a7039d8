"""Shared fixtures: every test gets its own droidft home; the demo model is built once."""

import os
import sys

import pytest

# A standby worker (droidft/standby.py) is a dashboard's way to start runs sooner; tests start
# fresh workers unless they test the standby itself (they set DROIDFT_STANDBY=1).
os.environ["DROIDFT_STANDBY"] = "0"


@pytest.fixture(autouse=True)
def droidft_home(tmp_path, monkeypatch):
    """A fresh state folder per test (DuckDB file, runs), so tests never see each other's runs."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("DROIDFT_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def demo_model():
    """The real demo model folder (built on first use, then reused)."""
    from droidft.models.demo import demo_model_path

    return demo_model_path()


@pytest.fixture
def cli():
    """Run the droidft CLI as a user would, in a subprocess."""
    import subprocess

    def run(*args, timeout=600, input=None):
        return subprocess.run([sys.executable, "-m", "droidft.cli", *args], capture_output=True,
                              text=True, env=dict(os.environ), timeout=timeout, input=input)

    return run


def pytest_collection_modifyitems(config, items):
    """llama.cpp checks are opt-in (`-m llamacpp`): building llama-cpp-python takes an hour here."""
    if "llamacpp" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="opt-in: run with -m llamacpp (needs llama-cpp-python)")
    for item in items:
        if "llamacpp" in item.keywords:
            item.add_marker(skip)
