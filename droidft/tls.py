"""HTTPS for the LAN dashboard, so passwords never cross the network in clear text.

On the first `droidft serve --lan` (what `scripts/start.sh --lan` runs) droidft makes a
self-signed certificate for this machine's names and addresses with the `openssl` command
(fixed arguments, no shell; the names are validated first) and keeps it in
$DROIDFT_HOME/tls/. Visitors compare the SHA-256 fingerprint the server prints with the one
their browser shows. The owner may give their own certificate instead (`--cert/--key`).
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
from pathlib import Path

from . import paths

DAYS = 825  # the longest validity Apple's browsers accept for a server certificate


class TLSError(ValueError):
    """No usable certificate; the message says what to do."""


def tls_dir() -> Path:
    return paths.home() / "tls"


def lan_addresses() -> list[str]:
    """This machine's addresses a colleague could type: the one that routes outward (a UDP
    connect sends nothing) and those its host name resolves to; loopback excluded."""
    found = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))
            found.append(s.getsockname()[0])
        except OSError:
            pass
    try:
        found += [info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None)]
    except OSError:
        pass
    out = []
    for address in found:
        try:
            ip = ipaddress.ip_address(address.split("%")[0])
        except ValueError:
            continue
        if not ip.is_loopback and not ip.is_link_local and str(ip) not in out:
            out.append(str(ip))
    return out


def certificate_names() -> tuple[list[str], list[str]]:
    """(DNS names, IP addresses) the certificate is made for, each validated."""
    from .distributed import host_problem

    host = socket.gethostname()
    names = ["localhost"] + [n for n in (host, f"{host.split('.')[0]}.local") if not host_problem(n)]
    return list(dict.fromkeys(names)), ["127.0.0.1", "::1"] + lan_addresses()


def _openssl_config(names: list[str], ips: list[str]) -> str:
    from .distributed import host_problem

    for name in names:
        if host_problem(name):  # nothing unchecked reaches the openssl config file
            raise TLSError(f"cannot make a certificate for {name!r}: {host_problem(name)}")
    san = [f"DNS:{n}" for n in names] + [f"IP:{ipaddress.ip_address(i)}" for i in ips]
    return "\n".join([
        "[req]", "distinguished_name = dn", "x509_extensions = ext", "prompt = no",
        "[dn]", f"CN = droidft on {names[-1]}",
        "[ext]", "subjectAltName = " + ",".join(san), "basicConstraints = critical,CA:FALSE",
        "keyUsage = critical,digitalSignature,keyEncipherment", "extendedKeyUsage = serverAuth", ""])


def make_self_signed(folder: Path | None = None) -> tuple[Path, Path]:
    """Write cert.pem and key.pem (0600) for this machine into `folder` (default
    $DROIDFT_HOME/tls) with `openssl req -x509`; returns (cert, key)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise TLSError("HTTPS needs the `openssl` command to make a certificate (install openssl), or "
                       "give your own with --cert and --key, or share over plain HTTP with --plain-http.")
    folder = Path(folder or tls_dir())
    folder.mkdir(parents=True, exist_ok=True)
    names, ips = certificate_names()
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        tmp = Path(tmp)
        config = tmp / "openssl.cnf"
        config.write_text(_openssl_config(names, ips))
        cert, key = tmp / "cert.pem", tmp / "key.pem"
        done = subprocess.run(
            [openssl, "req", "-x509", "-newkey", "rsa:2048", "-sha256", "-nodes", "-days", str(DAYS),
             "-config", str(config), "-keyout", str(key), "-out", str(cert)],
            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        if done.returncode != 0 or not cert.is_file() or not key.is_file():
            raise TLSError("openssl could not make a certificate: " + (done.stderr.strip().splitlines() or ["?"])[-1])
        key.chmod(0o600)
        os.replace(key, folder / "key.pem")  # the key first: a cert alone is never taken as made
        os.replace(cert, folder / "cert.pem")
    return folder / "cert.pem", folder / "key.pem"


def ensure_certificate(cert: str | os.PathLike | None = None,
                       key: str | os.PathLike | None = None) -> tuple[Path, Path, bool]:
    """The certificate to serve: the owner's (`cert` and `key`, both needed), else the
    self-signed one in $DROIDFT_HOME/tls, made on first use. Returns (cert, key, made_now)."""
    if cert or key:
        if not (cert and key):
            raise TLSError("give both --cert and --key (a certificate and its private key, PEM files)")
        cert, key = Path(cert).expanduser(), Path(key).expanduser()
        for path, what in ((cert, "certificate"), (key, "private key")):
            if not path.is_file():
                raise TLSError(f"{what} file not found: {path}")
        fingerprint(cert)  # a readable PEM certificate, or a clear error now rather than in Streamlit
        return cert, key, False
    folder = tls_dir()
    if (folder / "cert.pem").is_file() and (folder / "key.pem").is_file():
        return folder / "cert.pem", folder / "key.pem", False
    return (*make_self_signed(folder), True)


def fingerprint(cert: str | os.PathLike) -> str:
    """The certificate's SHA-256 fingerprint as browsers show it (AB:CD:...)."""
    try:
        der = ssl.PEM_cert_to_DER_cert(Path(cert).read_text())
    except (OSError, ValueError) as exc:
        raise TLSError(f"{cert} is not a PEM certificate ({exc})") from None
    return fingerprint_of_der(der)


def fingerprint_of_der(der: bytes) -> str:
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))
