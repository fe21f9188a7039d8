"""LAN sharing rules: who may do what, and which files a visitor may reach.

Local mode (the dashboard bound to 127.0.0.1) is password-free and unrestricted.
LAN mode (`scripts/start.sh --lan`, which sets DROIDFT_LAN=1) requires a password
set by the owner; passwords are stored only as salted scrypt hashes (in
$DROIDFT_HOME/auth.json, mode 600) and compared in constant time. A second,
viewer password gives a read-only role: watch runs, compare, evaluate nothing
that writes. In LAN mode paths typed into the dashboard must lie under the
allowed roots (demo data, the droidft home, model caches), and user Python
(custom reward files) is refused unless the owner sets DROIDFT_ALLOW_CUSTOM_CODE=1.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import hmac
import json
import logging
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from . import paths

ROLES = ("owner", "viewer")
# What a viewer may not do; the owner may do everything.
OWNER_ONLY = {"start", "stop", "resume", "delete", "upload", "fuse", "evaluate", "split", "sample-data", "export"}
SCRYPT = {"n": 2**14, "r": 8, "p": 1}

# Sign-in throttling: a client may get FREE_FAILURES passwords wrong within WINDOW seconds;
# after that each further failure doubles its wait (BASE_WAIT, 2x, 4x ... up to MAX_WAIT).
# All clients together may fail GLOBAL_FAILURES times per WINDOW before everyone waits,
# so rotating addresses does not buy more guesses.
FREE_FAILURES = 5
BASE_WAIT = 30.0
MAX_WAIT = 15 * 60.0
WINDOW = 15 * 60.0
GLOBAL_FAILURES = 50
GLOBAL_WAIT = 60.0

log = logging.getLogger("droidft.security")


class AccessDenied(ValueError):
    """An action or path not allowed in this mode; the message says why."""


def lan_mode() -> bool:
    return os.environ.get("DROIDFT_LAN", "") not in ("", "0", "false", "no")


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **SCRYPT)
    return "scrypt$" + base64.b64encode(salt).decode() + "$" + base64.b64encode(digest).decode()


def verify_password(password: str, stored: str) -> bool:
    """Constant-time check of a password against a stored hash."""
    try:
        scheme, salt_b64, digest_b64 = stored.split("$")
        if scheme != "scrypt":
            return False
        salt, expected = base64.b64decode(salt_b64), base64.b64decode(digest_b64)
    except (ValueError, AttributeError):
        return False
    actual = hashlib.scrypt(password.encode(), salt=salt, dklen=len(expected), **SCRYPT)
    return hmac.compare_digest(actual, expected)


def _auth_file() -> Path:
    return paths.home() / "auth.json"


def _stored_hashes() -> dict[str, str]:
    try:
        return json.loads(_auth_file().read_text())
    except (OSError, ValueError):
        return {}


def check_new_password(password: str) -> None:
    if len(password) < 8:
        raise ValueError("use a password of at least 8 characters")


# Hashes may also come from the environment (or Streamlit secrets, which the dashboard
# copies into these variables): no file needed on a machine set up by a script.
HASH_ENV = {"owner": "DROIDFT_PASSWORD_HASH", "viewer": "DROIDFT_VIEWER_PASSWORD_HASH"}


def set_password(password: str, role: str = "owner") -> None:
    """Store a role's password hash (never the password)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    check_new_password(password)
    hashes = _stored_hashes()
    hashes[role] = hash_password(password)
    path = _auth_file()
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(hashes, fh)
    os.replace(tmp, path)


def _all_hashes() -> dict[str, str]:
    hashes = _stored_hashes()
    for role, var in HASH_ENV.items():
        if os.environ.get(var):
            hashes.setdefault(role, os.environ[var])
    return hashes


def password_configured() -> bool:
    return bool(_all_hashes().get("owner"))


def login(password: str) -> str | None:
    """The role this password opens, or None. Checks every role so timing says nothing."""
    hashes = _all_hashes()
    found = None
    for role in ROLES:
        stored = hashes.get(role)
        if stored and verify_password(password, stored) and found is None:
            found = role
    return found


@dataclass
class SignIn:
    """The outcome of one sign-in attempt: the role it opened, or how long to wait."""

    role: str | None = None
    wait_seconds: float = 0.0

    @property
    def message(self) -> str:
        if self.role:
            return f"Signed in as {self.role}."
        if self.wait_seconds > 0:
            return (f"Too many wrong passwords. Try again in {_fmt_wait(self.wait_seconds)}; "
                    "the owner can give you the password meanwhile.")
        return "That password is not right."


def _fmt_wait(seconds: float) -> str:
    seconds = max(1, int(round(seconds)))
    return f"{seconds} s" if seconds < 90 else f"{round(seconds / 60)} min"


def _attempts_file() -> Path:
    return paths.home() / "signin_attempts.json"


def _wait_for(failures: int) -> float:
    over = failures - FREE_FAILURES
    return 0.0 if over < 0 else min(MAX_WAIT, BASE_WAIT * 2 ** over)


def _with_attempts(update, write: bool = True):
    """Read (and, with `write`, modify and save) the failure record under a lock: every
    dashboard process and session shares it, so new tabs or sessions do not reset it."""
    path = _attempts_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            record = {}
        now = time.time()
        record = {k: v for k, v in record.items() if now - v.get("last", 0) < WINDOW + MAX_WAIT}
        result = update(record, now)
        if write:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(record))
            os.replace(tmp, path)
        return result


def sign_in(password: str, client: str | None) -> SignIn:
    """login() with throttling per client address (None = this machine) and overall.

    While a client must wait, the password is not even checked, so waiting cannot be
    skipped by guessing right. Failures are logged with the address, never the password."""
    client = client or "local"

    def check_wait(record, now):
        waits = [record.get(key, {}).get("until", 0) - now for key in (client, "*")]
        return max(0.0, *waits)

    wait = _with_attempts(check_wait, write=False)
    if wait > 0:
        return SignIn(None, wait)
    role = login(password)

    def record_outcome(record, now):
        if role:
            record.pop(client, None)
            return 0.0
        waits = []
        for key, free, wait_fn in ((client, FREE_FAILURES, _wait_for),
                                   ("*", GLOBAL_FAILURES, lambda n: GLOBAL_WAIT)):
            entry = record.get(key, {})
            failures = entry.get("failures", 0) if now - entry.get("first", now) < WINDOW else 0
            failures += 1
            entry = {"failures": failures, "first": entry.get("first", now) if failures > 1 else now,
                     "last": now, "until": now + wait_fn(failures) if failures >= free else 0}
            record[key] = entry
            waits.append(entry["until"] - now if entry["until"] else 0.0)
        return max(waits)

    wait = _with_attempts(record_outcome)
    if role:
        log.info("sign-in: %s signed in as %s", client, role)
        return SignIn(role)
    log.warning("sign-in: wrong password from %s", client)
    return SignIn(None, wait)


def require(role: str | None, action: str) -> None:
    """Raise AccessDenied unless `role` may do `action` (local mode allows everything)."""
    if not lan_mode():
        return
    if role is None:
        raise AccessDenied("Sign in first: this dashboard is shared on the network.")
    if role != "owner" and action in OWNER_ONLY:
        raise AccessDenied(f"Viewers cannot {action}; ask the owner of this machine.")


def allowed_roots() -> list[Path]:
    roots = [paths.DATA_DIR, paths.home(), Path.home() / ".cache" / "huggingface",
             Path.home() / ".lmstudio" / "models", Path.home() / ".cache" / "lm-studio",
             paths.lmstudio_models_dir()]
    extra = os.environ.get("DROIDFT_ALLOWED_ROOTS", "")
    roots += [Path(p) for p in extra.split(os.pathsep) if p]
    return [r.resolve() for r in roots]


def check_path(path: str | os.PathLike) -> Path:
    """A path a dashboard visitor typed, refused in LAN mode when outside the allowed roots
    (symlinks and `..` are resolved first, so they cannot climb out)."""
    resolved = Path(path).expanduser().resolve()
    if lan_mode() and not any(resolved == root or root in resolved.parents for root in allowed_roots()):
        raise AccessDenied(
            f"{path} is outside the folders this shared dashboard may read "
            f"(demo data, the droidft home, model caches). The owner can add folders with "
            f"DROIDFT_ALLOWED_ROOTS.")
    return resolved


def custom_code_allowed() -> bool:
    return not lan_mode() or os.environ.get("DROIDFT_ALLOW_CUSTOM_CODE") == "1"
