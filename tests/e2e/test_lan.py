"""The LAN journey: the dashboard started as `scripts/start.sh --lan` starts it (HTTPS with
a self-signed certificate), visited at this machine's network address by three browsers (an
owner, a viewer, a guesser). And the other way to start it, `streamlit run app/Home.py`,
which must not be reachable from the network at all."""

from __future__ import annotations

import json
import os
import re
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from test_journeys import shot, wait_app_idle

pytestmark = pytest.mark.e2e


def open_signed_in(browser, url: str, password: str | None):
    # the certificate is self-signed: a visitor compares its fingerprint, then accepts it
    context = browser.new_context(viewport={"width": 1440, "height": 1100}, ignore_https_errors=True)
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(url)
    page.get_by_text("This dashboard is shared on the network").wait_for()
    if password is not None:
        sign_in(page, password)
    return page


def sign_in(page, password: str) -> None:
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Sign in").click()
    wait_app_idle(page)


def failures(record) -> int:
    """Wrong passwords the server has counted so far (all addresses)."""
    try:
        return json.loads(record.read_text()).get("*", {}).get("failures", 0)
    except (OSError, ValueError):
        return 0


def wait_until(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_lan_owner_and_viewer_sign_in_see_each_other_and_guessers_wait(lan_server, browser, monkeypatch):
    try:
        journey(lan_server, browser, monkeypatch)
    except Exception:
        for i, context in enumerate(browser.contexts):
            for page in context.pages:
                shot(page, f"FAILED-lan-{i}")
        raise


def journey(lan_server, browser, monkeypatch):
    url = lan_server["url"]
    monkeypatch.setenv("DROIDFT_HOME", str(lan_server["home"]))
    from droidft import jobs

    # A visitor sees nothing but the sign-in form; a wrong password is refused.
    viewer = open_signed_in(browser, url, None)
    assert viewer.get_by_role("button", name="Fine-tune the demo model").count() == 0
    shot(viewer, "6-lan-sign-in")
    sign_in(viewer, "not the password")
    viewer.get_by_text("That password is not right.").wait_for()
    sign_in(viewer, lan_server["viewer"])
    viewer.get_by_text("Signed in as a viewer").wait_for()
    assert viewer.get_by_role("button", name="Fine-tune the demo model").is_disabled()

    # The owner signs in from another browser and starts the demo fine-tune.
    owner = open_signed_in(browser, url, lan_server["owner"])
    owner.get_by_role("button", name="Fine-tune the demo model").click()
    owner.wait_for_url(re.compile(r".*/monitor\?run="), timeout=120_000)
    run_id = re.search(r"run=([\w-]+)", owner.url).group(1)
    try:
        # The owner shares the Monitor link; the viewer opens it (a new tab is a new session,
        # so it signs in again) and lands on that run, which it cannot stop.
        viewer.goto(f"{url}/monitor?run={run_id}")
        sign_in(viewer, lan_server["viewer"])
        viewer.get_by_text("Train loss").first.wait_for(timeout=120_000)
        assert viewer.get_by_role("button", name="Stop").is_disabled()
        # The owner's Monitor says who else is watching, with their address.
        address = url.split("//")[1].split(":")[0]
        owner.get_by_text(re.compile(r"Also watching this run: viewer")).wait_for(timeout=60_000)
        if address != "127.0.0.1":  # Streamlit reports no address for localhost
            assert owner.get_by_text(f"viewer · {address}").count() >= 1
        shot(owner, "6-lan-owner-monitor-sees-viewer")
        shot(viewer, "6-lan-viewer-monitor")

        # Home lists who is connected (navigating inside the app keeps the session signed in).
        owner.locator("[data-testid='stSidebarNav']").get_by_role("link", name="Home").click()
        wait_app_idle(owner)
        owner.get_by_text(re.compile(r"Who is connected \(\d\)")).click()
        owner.get_by_text(re.compile(r"you · owner")).wait_for()
        owner.get_by_text(re.compile(r"^viewer · .* · Monitor · run")).wait_for()
        shot(owner, "6-lan-who-is-connected")

        # A third browser guessing passwords is made to wait, even when it then guesses right.
        guesser = open_signed_in(browser, url, None)
        record = lan_server["home"] / "signin_attempts.json"
        for attempt in range(5):
            before = failures(record)
            sign_in(guesser, f"guess {attempt}")
            wait_until(lambda: failures(record) > before)  # the server took this attempt
        guesser.get_by_text(re.compile(r"Too many wrong passwords. Try again in 30 s")).wait_for()
        sign_in(guesser, lan_server["owner"])
        guesser.get_by_text(re.compile(r"Too many wrong passwords")).wait_for()
        assert guesser.get_by_role("button", name="Fine-tune the demo model").count() == 0
        shot(guesser, "6-lan-guesser-waits")
        # The owner, on this machine, lifts the wait; the right password then opens the page.
        done = subprocess.run([sys.executable, "-m", "droidft.cli", "unlock"], capture_output=True, text=True,
                              env=dict(os.environ, DROIDFT_HOME=str(lan_server["home"])), timeout=120)
        assert done.returncode == 0 and "cleared" in done.stdout, done.stderr
        sign_in(guesser, lan_server["owner"])
        guesser.get_by_role("button", name="Fine-tune the demo model").wait_for()

        # Signing out: the tab is back at the sign-in form and can do nothing.
        viewer.get_by_role("button", name="Sign out").click()
        wait_app_idle(viewer)
        viewer.get_by_text("You signed out.").wait_for()
        assert viewer.get_by_role("button", name="Stop").count() == 0
        shot(viewer, "6-lan-signed-out")
    finally:  # the demo run may have finished by now (stop refuses a finished run)
        if jobs.get(run_id)["status"] in jobs.ACTIVE:
            jobs.stop(run_id)
        jobs.wait(run_id, timeout=300)

    # HTTPS: the certificate the server presents is the one whose fingerprint it printed, and
    # nothing answers in clear text on that port.
    from droidft import tls

    host, port = url.split("//")[1].split(":")
    presented = ssl.PEM_cert_to_DER_cert(ssl.get_server_certificate((host, int(port))))
    printed = re.search(r"SHA-256 fingerprint: ([0-9A-F:]+)", lan_server["log"].read_text()).group(1)
    assert tls.fingerprint_of_der(presented) == printed == tls.fingerprint(lan_server["cert"])
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        urllib.request.urlopen(f"http://{host}:{port}/_stcore/health", timeout=10).read()

    # Streamlit's XSRF protection stays on: an upload without the token is refused.
    verified = ssl.create_default_context(cafile=str(lan_server["cert"]))
    request = urllib.request.Request(f"{url}/_stcore/upload_file/session/file", data=b"x", method="PUT")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10, context=verified)
    assert refused.value.code == 403
    # No password reached the log or the store.
    log = next(lan_server["home"].glob("streamlit-*.log")).read_text()
    stored = b"".join(p.read_bytes() for p in lan_server["home"].rglob("*") if p.is_file())
    for secret in (lan_server["owner"], lan_server["viewer"]):
        assert secret not in log and secret.encode() not in stored
    assert "wrong password from" in log and os.path.exists(lan_server["home"] / "signin_attempts.json")


def test_streamlit_run_without_lan_is_not_reachable_from_the_network(restartable_server, network_address):
    """`streamlit run app/Home.py`, the other documented way to start, listens on 127.0.0.1
    (.streamlit/config.toml): this machine gets the dashboard, the LAN address gets nothing."""
    if network_address == "127.0.0.1":
        pytest.skip("this machine has no network address to try")
    url = restartable_server["url"]
    port = int(url.rsplit(":", 1)[1])
    assert urllib.request.urlopen(url + "/_stcore/health", timeout=10).read() == b"ok"
    with pytest.raises(OSError):
        socket.create_connection((network_address, port), timeout=5).close()
