"""LAN mode: hashed passwords, roles, and the folders a visitor may reach."""

import json
import os
import stat
from pathlib import Path

import pytest

from droidft import paths, security


def test_local_mode_needs_nothing_on_this_machine(monkeypatch):
    monkeypatch.delenv("DROIDFT_LAN", raising=False)
    security.require("owner", "delete")  # the dashboard makes this machine the owner
    assert security.check_path("/etc/passwd").name == "passwd"
    with pytest.raises(security.AccessDenied, match="not shared on the network"):
        security.require(None, "delete")  # anyone else (another machine) may do nothing


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


# -- issue 17: hosts, one sign-in at a time, this machine, unlock, paths, files ---------------------------


BAD_HOSTS = ["-oProxyCommand=touch /tmp/droidft-pwned", "-p 2222", "a b", "user@host", "host;id", "$(id)", "",
             "-", "10.0.0.7 -v", "bad_name"]


def test_hosts_must_be_host_names_or_ip_addresses(tmp_path):
    from droidft.config import SFTConfig
    from droidft.distributed import host_problem

    for good in ("127.0.0.1", "10.0.0.7", "::1", "fe80::1", "localhost", "gpu-box.local", "mac-studio"):
        assert host_problem(good) is None, good
    for bad in BAD_HOSTS:
        assert host_problem(bad), bad
        problems = SFTConfig(hosts=["127.0.0.1", bad]).problems() if bad else []
        assert not bad or any("not a host name or IP address" in p for p in problems), (bad, problems)
    hostfile = tmp_path / "hosts.json"
    hostfile.write_text(json.dumps([{"ssh": "10.0.0.7", "ips": ["10.0.0.7"]},
                                    {"ssh": "-oProxyCommand=id", "ips": ["10.0.0.8; id"]}]))
    problems = SFTConfig(hostfile=str(hostfile)).problems()
    assert any("-oProxyCommand=id" in p for p in problems) and any("10.0.0.8; id" in p for p in problems)


def test_check_machines_never_hands_ssh_an_option(monkeypatch):
    import subprocess

    from droidft import distributed

    calls = []

    def fake_run(argv, **kwargs):
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 255, "", "ssh: connect to host refused")

    monkeypatch.setattr(distributed.subprocess, "run", fake_run)
    rows = distributed.check_hosts(BAD_HOSTS[:4] + ["10.9.9.9"], ["/x"])
    assert calls and len(calls) == 1, calls  # only the real host got an ssh
    argv = calls[0]
    assert argv[argv.index("--") + 1] == "10.9.9.9" and argv.index("--") < len(argv) - 2
    assert all("not a host name or IP address" in r["message"] for r in rows[:4])
    assert "set up passwordless ssh" in rows[-1]["message"]


def test_parallel_sign_ins_get_no_extra_guesses(monkeypatch):
    """Twelve wrong passwords at once from one address: only FREE_FAILURES are even checked
    (the wait, the check and the record of a miss are one step)."""
    import threading

    security.set_password("correct horse", "owner")
    checked, real_login = [], security.login
    monkeypatch.setattr(security, "login", lambda pw: checked.append(pw) or real_login(pw))
    start = threading.Barrier(12)
    outcomes = []

    def guess(i):
        start.wait()
        outcomes.append(security.sign_in(f"guess {i}", "10.0.0.66"))

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(checked) == security.FREE_FAILURES, len(checked)
    assert sum(o.wait_seconds > 0 for o in outcomes) == 12 - security.FREE_FAILURES + 1


def test_this_machine_is_not_locked_out_by_guessers_elsewhere_and_unlock_clears_waits(monkeypatch, cli):
    security.set_password("correct horse", "owner")
    monkeypatch.setattr(security, "GLOBAL_FAILURES", 3)
    for i in range(3):
        security.sign_in("guess", f"10.1.0.{i}")
    assert security.sign_in("correct horse", "10.2.0.1").wait_seconds > 0, "the overall limit holds"
    for here in (None, "127.0.0.1", "::1", "::ffff:127.0.0.1", "127.0.0.2"):
        assert security.sign_in("correct horse", here).role == "owner", here
    for _ in range(security.FREE_FAILURES - 1):  # misses here count for this machine, not everyone
        security.sign_in("guess", None)
    record = json.loads((paths.home() / "signin_attempts.json").read_text())
    assert record["*"]["failures"] == 3 and record["local"]["failures"] == security.FREE_FAILURES - 1

    out = cli("unlock", "--address", "10.1.0.0")
    assert out.returncode == 0 and "10.1.0.0" in out.stdout, out.stderr
    assert "10.1.0.0" not in json.loads((paths.home() / "signin_attempts.json").read_text())
    out = cli("unlock")
    assert out.returncode == 0 and "overall" in out.stdout, out.stdout
    assert security.sign_in("correct horse", "10.2.0.1").role == "owner"


def test_every_run_path_goes_through_the_allowed_roots_check_in_lan_mode(monkeypatch, tmp_path, demo_model):
    import shutil

    from droidft import jobs, store
    from droidft.methods.grpo import GRPOConfig
    from helpers import demo_sft

    outside = tmp_path / "outside-model"
    shutil.copytree(demo_model, outside)
    (paths.models_dir() / "decoy").mkdir()
    sneaky = "decoy/../../../outside-model"  # not a folder typed as such: resolves under the models folder
    assert (paths.models_dir() / sneaky).resolve() == outside.resolve()
    secret = tmp_path / "secret.safetensors"
    secret.write_bytes(b"x")
    hostfile = tmp_path / "hosts.json"
    hostfile.write_text('[{"ssh": "127.0.0.1"}]')
    monkeypatch.setenv("DROIDFT_LAN", "1")
    monkeypatch.setenv("DROIDFT_ALLOW_CUSTOM_CODE", "1")
    configs = [demo_sft(model=sneaky), demo_sft(data=str(tmp_path)), demo_sft(model=str(outside)),
               demo_sft(resume_adapter_file=str(secret)), demo_sft(hostfile=str(hostfile)),
               GRPOConfig(reward_file=str(tmp_path / "rewards.py")), GRPOConfig(warm_start=str(secret)),
               GRPOConfig(reference_model=str(outside))]
    for config in configs:
        with pytest.raises(security.AccessDenied, match="outside the folders"):
            jobs.start(config)
    assert store.list_runs() == []
    monkeypatch.setenv("DROIDFT_LAN", "0")  # the same configs are fine on this machine alone
    security.check_run_paths(configs[0])


def test_the_split_in_place_check_compares_whole_path_parts(demo_model):
    """A dataset in `datasets-x` is not inside `datasets`: splitting it makes a new dataset."""
    from streamlit.testing.v1 import AppTest

    from droidft import data as datasets

    lookalike = paths.home() / (datasets.datasets_dir().name + "-x") / "mine"
    lookalike.mkdir(parents=True)
    (lookalike / "train.jsonl").write_text("".join('{"text": "row %d"}\n' % i for i in range(20)))
    app = str(paths.REPO_ROOT / "app" / "Home.py")
    at = AppTest.from_file(app, default_timeout=240).run()
    at.switch_page("views/data.py").run()
    at.selectbox(key="data.pick").select("__other__").run()
    at.text_input(key="data.path").input(str(lookalike)).run()
    assert any("saved as a new dataset" in c.value for c in at.caption), [c.value for c in at.caption]
    at.button(key="data.split").click().run()
    assert not (lookalike / "valid.jsonl").exists(), "the original was split in place"
    assert [p.name for p in datasets.datasets_dir().iterdir()] == ["mine-split"]


def test_the_environment_hash_replaces_the_files(monkeypatch):
    security.set_password("old file password", "owner")
    monkeypatch.setenv("DROIDFT_PASSWORD_HASH", security.hash_password("rotated in the env"))
    assert security.login("rotated in the env") == "owner"
    assert security.login("old file password") is None, "a rotated password must not keep working"


def test_secret_files_are_made_private_again(monkeypatch):
    home = paths.home()
    for name in ("auth.json", "auth.tmp", "signin_attempts.json", "signin_attempts.tmp", "signin_attempts.lock"):
        (home / name).write_text("{}")
        os.chmod(home / name, 0o644)
    security.set_password("correct horse", "owner")
    security.sign_in("guess", "10.0.0.1")
    for name in ("auth.json", "signin_attempts.json", "signin_attempts.lock"):
        assert stat.S_IMODE(os.stat(home / name).st_mode) == 0o600, name
    (home / "auth.json").chmod(0o644)  # copied in by hand: reading it tightens it
    assert security.login("correct horse") == "owner"
    assert stat.S_IMODE(os.stat(home / "auth.json").st_mode) == 0o600


def test_lan_mode_has_one_meaning(monkeypatch):
    from droidft import rewards

    monkeypatch.delenv("DROIDFT_ALLOW_CUSTOM_CODE", raising=False)
    for value, lan in (("0", False), ("false", False), ("no", False), ("", False), ("1", True), ("yes", True)):
        monkeypatch.setenv("DROIDFT_LAN", value)
        assert security.lan_mode() is lan, value
        assert rewards.custom_code_allowed() is (not lan), value
        assert security.custom_code_allowed() is (not lan), value


def test_serve_lan_makes_a_certificate_once_and_uses_https(tmp_path):
    import argparse
    import subprocess

    from droidft import tls
    from droidft.cli import serve as cli

    def args(**kw):
        return argparse.Namespace(**{"lan": False, "plain_http": False, "cert": None, "key": None,
                                     "port": 8600, **kw})

    cmd, env, lines = cli.serve_command(args())
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1" and env["DROIDFT_LAN"] == "0"
    assert "--server.sslCertFile" not in cmd

    cmd, env, lines = cli.serve_command(args(lan=True))
    cert, key = (Path(cmd[cmd.index(flag) + 1]) for flag in ("--server.sslCertFile", "--server.sslKeyFile"))
    assert cert == paths.home() / "tls" / "cert.pem" and env["DROIDFT_LAN"] == "1"
    assert cmd[cmd.index("--server.address") + 1] == "0.0.0.0"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    text = "\n".join(lines)
    assert "made a self-signed certificate" in text and tls.fingerprint(cert) in text
    assert any(line.startswith("droidft: https://") for line in lines)
    shown = subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-fingerprint", "-sha256",
                            "-ext", "subjectAltName"], capture_output=True, text=True, check=True).stdout
    assert tls.fingerprint(cert) in shown  # the fingerprint visitors compare is openssl's own
    for address in ["127.0.0.1"] + tls.lan_addresses():
        assert f"IP Address:{address}" in shown
    before = tls.fingerprint(cert)
    _, _, lines = cli.serve_command(args(lan=True))
    assert "made a" not in "\n".join(lines) and tls.fingerprint(cert) == before, "made once, then kept"

    own_cert, own_key = tls.make_self_signed(tmp_path / "mine")
    cmd, _, lines = cli.serve_command(args(lan=True, cert=str(own_cert), key=str(own_key)))
    assert cmd[cmd.index("--server.sslCertFile") + 1] == str(own_cert)
    assert tls.fingerprint(own_cert) in "\n".join(lines)
    with pytest.raises(ValueError, match="both --cert and --key"):
        cli.serve_command(args(lan=True, cert=str(own_cert)))
    with pytest.raises(ValueError, match="add --lan"):
        cli.serve_command(args(plain_http=True))
    cmd, _, lines = cli.serve_command(args(lan=True, plain_http=True))
    assert "--server.sslCertFile" not in cmd and "clear text" in "\n".join(lines)


def test_serve_keeps_the_port_streamlit_was_given(monkeypatch):
    """`droidft serve` passes --server.port, which beats Streamlit's own STREAMLIT_SERVER_PORT:
    without --port it must use that setting (bench_first_minute waited 30 min on its port)."""
    import argparse

    from droidft.cli import serve as cli

    monkeypatch.setenv("STREAMLIT_SERVER_PORT", "8765")
    sub = argparse.ArgumentParser().add_subparsers()
    cli.add_commands(sub)
    args = sub.choices["serve"].parse_args([])
    cmd, _, lines = cli.serve_command(args)
    assert cmd[cmd.index("--server.port") + 1] == "8765" and "8765" in lines[0]
    assert sub.choices["serve"].parse_args(["--port", "9000"]).port == 9000
