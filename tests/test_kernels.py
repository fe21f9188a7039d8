"""The kernel warm-up: two real demo steps compile MLX's CPU kernels before the first press."""

import tempfile

import pytest

from droidft import kernels, store


@pytest.fixture
def empty_kernel_cache(tmp_path, monkeypatch):
    """A temp folder of our own, so MLX's kernel cache starts empty (the worker inherits it)."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr(tempfile, "tempdir", None)  # gettempdir() reads TMPDIR again
    return folder


def test_warm_compiles_the_demo_kernels_once_and_again_when_they_are_gone(empty_kernel_cache, cli):
    assert kernels.kernel_dir().is_relative_to(empty_kernel_cache)
    assert kernels.needed()
    messages = []
    assert kernels.warm(log=messages.append) is True
    libraries = sorted(kernels.kernel_dir().glob("*.so"))
    assert libraries, "the two demo steps compiled no kernel"
    assert "compiled in" in messages[-1]
    assert not kernels.needed() and kernels.warm() is False
    assert store.list_runs() == []  # the throwaway home kept the user's history clean

    libraries[0].unlink()  # /tmp cleaned (a reboot): the marker's list no longer holds
    assert kernels.needed()
    done = cli("demo-model", "--warm")
    assert done.returncode == 0, done.stderr
    assert "compiled in" in done.stderr and libraries[0].exists()
    assert not kernels.needed()


def test_a_failing_warm_up_says_why(empty_kernel_cache, monkeypatch):
    monkeypatch.setattr(kernels.sys, "executable", "/bin/false")
    with pytest.raises(RuntimeError, match="warm-up run failed"):
        kernels.warm()
    assert kernels.needed()
