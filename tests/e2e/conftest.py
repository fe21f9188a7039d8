"""Browser journeys: a real `streamlit run app/Home.py` server (with its own droidft home) driven
by Playwright in the system Chromium. Screenshots go to test-artifacts/e2e/."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("DROIDFT_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = REPO / "test-artifacts" / "e2e"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/e2e" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)
            if not Path(CHROMIUM).exists():
                item.add_marker(pytest.mark.skip(
                    reason=f"no Chromium at {CHROMIUM}: run scripts/install-system-deps.sh "
                           "(or set DROIDFT_CHROMIUM) to run the browser journeys"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def lan_address() -> str:
    """This machine's address on its network (what a colleague would type), else 127.0.0.1.
    A UDP connect sends nothing; it only asks the kernel which interface would route."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))
            return s.getsockname()[0]
        except OSError:
            return "127.0.0.1"


def launch_server(home: Path, port: int | None = None, lan: bool = False) -> tuple[subprocess.Popen, str]:
    """The dashboard as a user starts it, on `home`; returns (process, url) once the server
    answers its health check. Local: `streamlit run app/Home.py` (the address comes from
    .streamlit/config.toml). `lan=True`: `droidft serve --lan`, what `scripts/start.sh --lan`
    runs (all interfaces, DROIDFT_LAN=1, HTTPS with a self-signed certificate made in `home`),
    and the url is then https:// at the machine's LAN address."""
    port = port or free_port()
    env = dict(os.environ, DROIDFT_HOME=str(home), PYTHONUNBUFFERED="1", DROIDFT_STANDBY="1")
    env.pop("DROIDFT_LAN", None)
    if lan:
        cmd = [sys.executable, "-m", "droidft.cli", "serve", "--lan", "--port", str(port)]
    else:
        cmd = [sys.executable, "-m", "streamlit", "run", str(REPO / "app" / "Home.py"), "--server.headless", "true",
               "--server.port", str(port), "--browser.gatherUsageStats", "false"]
    log = open(home / f"streamlit-{port}.log", "w")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    url = f"https://{lan_address()}:{port}" if lan else f"http://127.0.0.1:{port}"
    cert = home / "tls" / "cert.pem"
    deadline = time.monotonic() + 120
    while True:
        try:
            # over HTTPS, verified against the server's own certificate (its names include the
            # LAN address), made by `droidft serve` before Streamlit starts
            context = ssl.create_default_context(cafile=str(cert)) if lan else None
            if urllib.request.urlopen(url + "/_stcore/health", timeout=2, context=context).read() == b"ok":
                return proc, url
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("streamlit did not start:\n" + (home / f"streamlit-{port}.log").read_text()[-3000:])
        time.sleep(0.5)


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def server(tmp_path_factory, demo_model):
    """A dashboard server on a free port with a fresh home, shared by the journeys."""
    home = tmp_path_factory.mktemp("e2e_home")
    proc, url = launch_server(home)
    yield {"url": url, "home": home, "proc": proc}
    stop_server(proc)
    # stop any worker the journeys left running in that home
    old = os.environ.get("DROIDFT_HOME")
    os.environ["DROIDFT_HOME"] = str(home)
    try:
        from droidft import jobs

        for run in jobs.list_runs(status=jobs.ACTIVE):
            try:
                jobs.stop(run["id"])
            except Exception:  # noqa: BLE001 - best effort at teardown
                pass
    finally:
        if old is None:
            os.environ.pop("DROIDFT_HOME", None)
        else:
            os.environ["DROIDFT_HOME"] = old
    if ARTIFACTS.exists():
        for log in home.glob("streamlit-*.log"):
            shutil.copy(log, ARTIFACTS / log.name)


@pytest.fixture
def restartable_server(tmp_path, demo_model):
    """A server of its own (fresh home) that a test may stop and start again on the same port."""
    home = tmp_path / "restart_home"
    home.mkdir()
    port = free_port()
    state = {"home": home, "port": port}
    state["proc"], state["url"] = launch_server(home, port)

    def restart():
        stop_server(state["proc"])
        state["proc"], state["url"] = launch_server(home, port)

    state["restart"] = restart
    yield state
    stop_server(state["proc"])


@pytest.fixture
def network_address() -> str:
    """This machine's address on its network (127.0.0.1 when it has none)."""
    return lan_address()


@pytest.fixture
def server_home(server, monkeypatch):
    """Engine calls from the test process see the server's home."""
    monkeypatch.setenv("DROIDFT_HOME", str(server["home"]))
    return server["home"]


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # Not with the test process's LD_PRELOAD (OpenBLAS for MLX): Chromium's renderers crash on it.
        env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, env=env)
        yield b
        b.close()


@pytest.fixture
def page(browser, request):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1440, "height": 1500})
    pg = context.new_page()
    pg.set_default_timeout(60_000)
    yield pg
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        pg.screenshot(path=str(ARTIFACTS / f"FAILED-{request.node.name}.png"), full_page=True)
    context.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)



@pytest.fixture
def lan_server(tmp_path, demo_model):
    """A server started the way `scripts/start.sh --lan` starts it (`droidft serve --lan`),
    with an owner and a viewer password set by `droidft set-password` beforehand."""
    home = tmp_path / "lan_home"
    home.mkdir()
    env = dict(os.environ, DROIDFT_HOME=str(home))
    for role, password in (("owner", "owner-pass-1"), ("viewer", "viewer-pass-1")):
        args = [sys.executable, "-m", "droidft.cli", "set-password", "--stdin"] + (["--viewer"] if role == "viewer" else [])
        done = subprocess.run(args, input=password + "\n", text=True, capture_output=True, env=env, timeout=120)
        assert done.returncode == 0, done.stderr
    proc, url = launch_server(home, lan=True)
    yield {"url": url, "home": home, "proc": proc, "owner": "owner-pass-1", "viewer": "viewer-pass-1",
           "cert": home / "tls" / "cert.pem", "log": next(home.glob("streamlit-*.log"))}
    stop_server(proc)
    shutil.copy(next(home.glob("streamlit-*.log")), ARTIFACTS / "streamlit-lan.log") if ARTIFACTS.exists() else None
