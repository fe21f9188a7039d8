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
    from droidft.data import save_uploads

    folder = save_uploads([("../../../../etc/train.jsonl", b'{"text": "hi"}\n'),
                           ("..\\..\\valid.jsonl", b'{"text": "hi"}\n')], "../../escape")
    assert paths.home() in folder.resolve().parents
    assert sorted(p.name for p in folder.iterdir()) == ["train.jsonl", "valid.jsonl"]
    with pytest.raises(DataError, match="limit"):
        save_uploads([("big.jsonl", b"x" * 2048)], "big", max_bytes=1024)
    with pytest.raises(DataError, match="not a .jsonl"):
        save_uploads([("run.py", b"import os")], "code")


class FakeClock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self):
        return self.now


def test_wrong_passwords_are_throttled_per_address_and_overall(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(security.time, "time", clock)
    security.set_password("correct horse", "owner")
    for _ in range(security.FREE_FAILURES - 1):
        assert security.sign_in("guess", "10.0.0.9") == security.SignIn(None, 0.0)
    fifth = security.sign_in("guess", "10.0.0.9")
    assert fifth.role is None and fifth.wait_seconds == security.BASE_WAIT
    assert "Try again in 30 s" in fifth.message
    # While waiting, even the right password is not checked.
    assert security.sign_in("correct horse", "10.0.0.9").wait_seconds == pytest.approx(30)
    assert security.sign_in("correct horse", "10.0.0.10").role == "owner"  # another address is not blocked
    clock.now += 31
    sixth = security.sign_in("guess", "10.0.0.9")
    assert sixth.wait_seconds == 2 * security.BASE_WAIT  # each further failure doubles the wait
    clock.now += 61
    assert security.sign_in("correct horse", "10.0.0.9").role == "owner"
    assert security.sign_in("guess", "10.0.0.9").wait_seconds == 0  # success reset the count
    # Rotating addresses does not buy unlimited guesses.
    clock.now += security.WINDOW + security.MAX_WAIT  # old failures are forgotten
    monkeypatch.setattr(security, "GLOBAL_FAILURES", 8)
    waits = [security.sign_in("guess", f"10.1.0.{i}").wait_seconds for i in range(8)]
    assert waits[-1] == security.GLOBAL_WAIT and not any(waits[:-1])
    assert security.sign_in("correct horse", "10.2.0.1").wait_seconds > 0
    record = (paths.home() / "signin_attempts.json").read_text()
    assert "guess" not in record and "correct horse" not in record


def test_presence_lists_open_sessions_and_forgets_closed_ones():
    from droidft.presence import Presence

    table = Presence(timeout=30)
    table.report("a", role="owner", address=None, page="monitor", run_id="r1", now=100)
    table.report("b", role="viewer", address="192.168.1.7", page="monitor", run_id="r1", now=105)
    table.report("c", role="viewer", address="192.168.1.8", page="compare", now=106)
    assert [v.session for v in table.watching("r1", now=110)] == ["a", "b"]
    table.report("a", role="owner", address=None, now=120)  # a beacon without a page keeps the page
    assert table.watching("r1", now=121)[0].page == "monitor"
    rows = table.table(show_addresses=False, me="a", now=125)
    assert [r["who"] for r in rows] == ["you · owner", "viewer", "viewer"]
    assert "192.168" not in str(rows)  # viewers do not see addresses
    assert "192.168.1.7" in str(table.table(show_addresses=True, now=125))
    assert [v.session for v in table.active(now=140)] == ["a"]  # b and c stopped reporting
    table.leave("a")
    assert table.active(now=141) == []


def test_hashes_from_the_environment_and_printed_by_the_cli(monkeypatch, cli):
    out = cli("set-password", "--stdin", "--print-hash", "--viewer", input="viewer from env\n")
    assert out.returncode == 0, out.stderr
    printed = out.stdout.strip().splitlines()[-1]
    assert printed.startswith("scrypt$") and not (paths.home() / "auth.json").exists()
    monkeypatch.setenv("DROIDFT_VIEWER_PASSWORD_HASH", printed)
    assert not security.password_configured(), "a viewer alone does not open a shared dashboard"
    monkeypatch.setenv("DROIDFT_PASSWORD_HASH", security.hash_password("owner from env"))
    assert security.login("viewer from env") == "viewer"
    assert security.login("owner from env") == "owner"
    out = cli("set-password", "--stdin", "--print-hash", input="short\n")
    assert out.returncode == 2 and "at least 8" in out.stderr
