"""LAN mode: hashed passwords, roles, and the folders a visitor may reach."""

import json
import os
import stat

import pytest

from droidft import paths, security


def test_local_mode_needs_nothing(monkeypatch):
    monkeypatch.delenv("DROIDFT_LAN", raising=False)
    security.require(None, "delete")
    assert security.check_path("/etc/passwd").name == "passwd"


def test_passwords_are_stored_hashed_and_checked(monkeypatch):
    security.set_password("correct horse", "owner")
    security.set_password("viewer pass 1", "viewer")
    auth = paths.home() / "auth.json"
    text = auth.read_text()
    assert "correct horse" not in text and "viewer pass" not in text
    assert stat.S_IMODE(os.stat(auth).st_mode) == 0o600
    assert json.loads(text)["owner"].startswith("scrypt$")
    assert security.login("correct horse") == "owner"
    assert security.login("viewer pass 1") == "viewer"
    assert security.login("wrong") is None
    assert security.login("") is None
    with pytest.raises(ValueError, match="at least 8"):
        security.set_password("short")


def test_env_hash_works_without_a_file(monkeypatch):
    monkeypatch.setenv("DROIDFT_PASSWORD_HASH", security.hash_password("from the env"))
    assert security.password_configured()
    assert security.login("from the env") == "owner"


def test_viewers_cannot_change_anything(monkeypatch):
    monkeypatch.setenv("DROIDFT_LAN", "1")
    security.require("owner", "delete")
    security.require("viewer", "compare")
    for action in ("start", "stop", "delete", "upload", "fuse"):
        with pytest.raises(security.AccessDenied, match="Viewers cannot"):
            security.require("viewer", action)
    with pytest.raises(security.AccessDenied, match="Sign in"):
        security.require(None, "compare")


def test_paths_outside_roots_are_refused_on_a_lan(monkeypatch, tmp_path):
    monkeypatch.setenv("DROIDFT_LAN", "1")
    inside = paths.home() / "runs"
    assert security.check_path(inside) == inside.resolve()
    assert security.check_path(paths.DATA_DIR / "demo" / "chat")
    for bad in ("/etc/passwd", str(paths.home() / ".." / ".." / "etc"), str(tmp_path / "elsewhere")):
        with pytest.raises(security.AccessDenied, match="outside the folders"):
            security.check_path(bad)
    link = paths.home() / "sneaky"
    link.symlink_to("/etc")
    with pytest.raises(security.AccessDenied):
        security.check_path(link / "passwd")
    monkeypatch.setenv("DROIDFT_ALLOWED_ROOTS", str(tmp_path))
    assert security.check_path(tmp_path / "elsewhere")


def test_custom_code_needs_the_owners_consent(monkeypatch):
    monkeypatch.delenv("DROIDFT_ALLOW_CUSTOM_CODE", raising=False)
    monkeypatch.setenv("DROIDFT_LAN", "1")
    assert not security.custom_code_allowed()
    monkeypatch.setenv("DROIDFT_ALLOW_CUSTOM_CODE", "1")
    assert security.custom_code_allowed()


def test_cli_sets_passwords_from_stdin():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "droidft.cli", "set-password", "--stdin"],
                         input="a long password\n", capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert security.login("a long password") == "owner"
    out = subprocess.run([sys.executable, "-m", "droidft.cli", "set-password", "--stdin", "--viewer"],
                         input="short\n", capture_output=True, text=True)
    assert out.returncode == 2 and "at least 8" in out.stderr


def test_uploads_cannot_escape_or_exceed_the_limit(tmp_path):
    from droidft.data import DataError
    from droidft.ui_support import save_uploads

    folder = save_uploads([("../../../../etc/train.jsonl", b'{"text": "hi"}\n'),
                           ("..\\..\\valid.jsonl", b'{"text": "hi"}\n')], "../../escape")
    assert paths.home() in folder.resolve().parents
    assert sorted(p.name for p in folder.iterdir()) == ["train.jsonl", "valid.jsonl"]
    with pytest.raises(DataError, match="limit"):
        save_uploads([("big.jsonl", b"x" * 2048)], "big", max_bytes=1024)
    with pytest.raises(DataError, match="not a .jsonl"):
        save_uploads([("run.py", b"import os")], "code")
