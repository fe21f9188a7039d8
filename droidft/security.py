"""LAN sharing rules: who may do what, and which files a visitor may reach.

Local mode (the dashboard bound to 127.0.0.1) is password-free and unrestricted.
LAN mode (`scripts/start.sh --lan`, which sets DROIDFT_LAN=1) requires a password
set by the owner; passwords are stored only as salted scrypt hashes (in
$DROIDFT_HOME/auth.json, mode 600) and compared in constant time. A second,
viewer password gives a read-only role: watch runs, compare, evaluate nothing
that writes. In LAN mode paths typed into the dashboard must lie under the
allowed roots (demo data, the droidft home, model caches), and user Python
(custom reward files) is refused unless the owner sets DROIDFT_ALLOW_CUSTOM_CODE=1.

Roles are checked where an action happens: the dashboard calls `require(role, action)`
(through `app/common.py: require_role`) right before every engine call that changes
something, so a forged press of a disabled button changes nothing. In local mode only
this machine (loopback) is the owner; a visitor from elsewhere has no role at all.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from . import paths

ROLES = ("owner", "viewer")
# What a viewer may not do; the owner may do everything. A new action that changes anything
# (writes a file, starts a process, reaches another machine) belongs here, and its handler
# calls `require` right before the engine call.
OWNER_ONLY = {"start", "stop", "resume", "delete", "upload", "fuse", "evaluate", "split", "sample-data",
              "check-machines", "export", "download", "import", "judge", "reorder-queue",
              "change-settings"}
SCRYPT = {"n": 2**14, "r": 8, "p": 1}
SESSION_HOURS = 12.0  # a sign-in lasts this long (DROIDFT_SESSION_HOURS), then the tab asks again

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
    """Is the dashboard shared on the network (DROIDFT_LAN set to anything but 0/false/no)?
    The one test of LAN mode: every rule here and in rewards.py asks this."""
    return os.environ.get("DROIDFT_LAN", "").strip().lower() not in ("", "0", "false", "no")


def is_loopback(address: str | None) -> bool:
    """Does a connection come from this machine? None is what Streamlit reports for
    127.0.0.1 and ::1 (and what a test without a connection gets)."""
    if address is None:
        return True
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or bool(mapped and mapped.is_loopback)


# -- passwords ---------------------------------------------------------------------------------


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


def _private(path: Path) -> None:
    """Make an existing secrets file readable by its owner only (files from an older droidft,
    or copied in by hand, may be 0644)."""
    with contextlib.suppress(OSError):
        if path.exists() and path.stat().st_mode & 0o077:
            path.chmod(0o600)


def _write_private(path: Path, text: str) -> None:
    """Write `text` to `path` atomically, mode 0600 whatever a leftover temp file had."""
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # O_CREAT's mode does not apply to a temp file left by a crash
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def _stored_hashes() -> dict[str, str]:
    path = _auth_file()
    _private(path)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def check_new_password(password: str) -> None:
    if len(password) < 8:
        raise ValueError("use a password of at least 8 characters")


# Hashes may also come from the environment (or Streamlit secrets, which the dashboard
# copies into these variables): no file needed on a machine set up by a script. A hash in
# the environment replaces auth.json's for its role, so rotating it there retires the old one.
HASH_ENV = {"owner": "DROIDFT_PASSWORD_HASH", "viewer": "DROIDFT_VIEWER_PASSWORD_HASH"}


def set_password(password: str, role: str = "owner") -> None:
    """Store a role's password hash (never the password). Open tabs signed in with the old
    password are signed out at their next action (see `session_problem`)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    check_new_password(password)
    hashes = _stored_hashes()
    hashes[role] = hash_password(password)
    _write_private(_auth_file(), json.dumps(hashes))


def _all_hashes() -> dict[str, str]:
    hashes = _stored_hashes()
    for role, var in HASH_ENV.items():
        if os.environ.get(var):
            hashes[role] = os.environ[var]
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


# -- signed-in tabs ------------------------------------------------------------------------------


def credential_stamp(role: str) -> str:
    """A short fingerprint of the hash a role signs in with: a tab keeps the one it signed in
    with, and a changed password (a new stamp) signs it out."""
    stored = _all_hashes().get(role) or ""
    return hashlib.sha256(stored.encode()).hexdigest()[:16] if stored else ""


def session_seconds() -> float:
    try:
        hours = float(os.environ.get("DROIDFT_SESSION_HOURS", SESSION_HOURS))
    except ValueError:
        hours = SESSION_HOURS
    return max(60.0, hours * 3600)


def session_problem(role: str, signed_in_at: float, stamp: str, now: float | None = None) -> str | None:
    """Why a tab signed in as `role` at `signed_in_at` must sign in again, or None."""
    now = time.time() if now is None else now
    if role not in ROLES:
        return "Sign in again."
    if now - signed_in_at > session_seconds():
        return f"Your sign-in expired after {_fmt_wait(session_seconds())}; sign in again."
    if credential_stamp(role) != stamp:
        return "The password was changed on this machine; sign in with the new one."
    return None


# -- sign-in throttling ----------------------------------------------------------------------------


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
    if seconds < 90:
        return f"{seconds} s"
    return f"{round(seconds / 60)} min" if seconds < 90 * 60 else f"{round(seconds / 3600)} h"


def _attempts_file() -> Path:
    return paths.home() / "signin_attempts.json"


def _wait_for(failures: int) -> float:
    over = failures - FREE_FAILURES
    return 0.0 if over < 0 else min(MAX_WAIT, BASE_WAIT * 2 ** over)


def _with_attempts(update, write: bool = True):
    """Read (and, with `write`, modify and save) the failure record under an exclusive lock:
    every dashboard process and session shares it, so new tabs or sessions do not reset it.
    `update` runs inside the lock, so whatever it checks and records is one step."""
    path = _attempts_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_fd = os.open(path.with_suffix(".lock"), os.O_WRONLY | os.O_CREAT, 0o600)
    os.fchmod(lock_fd, 0o600)
    with os.fdopen(lock_fd, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _private(path)
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            record = {}
        now = time.time()
        record = {k: v for k, v in record.items() if now - v.get("last", 0) < WINDOW + MAX_WAIT}
        result = update(record, now)
        if write:
            _write_private(path, json.dumps(record))
        return result


def sign_in(password: str, client: str | None) -> SignIn:
    """login() with throttling per client address and overall, one attempt at a time.

    The wait check, the password check and the record of a miss happen under one lock, so
    parallel submissions cannot each slip a guess in before the first miss is recorded (and
    only one scrypt runs at a time). While a client must wait, the password is not even
    checked, so waiting cannot be skipped by guessing right. This machine (loopback) is not
    held by the overall limit, so guessers elsewhere cannot lock the owner out here.
    Failures are logged with the address, never the password."""
    local = is_loopback(client)
    key = "local" if local else client
    keys = (key,) if local else (key, "*")
    checked = []

    def attempt(record, now) -> SignIn:
        wait = max([0.0] + [record.get(k, {}).get("until", 0) - now for k in keys])
        if wait > 0:
            return SignIn(None, wait)
        role = login(password)
        checked.append(True)
        if role:
            record.pop(key, None)
            return SignIn(role)
        waits = []
        for k in keys:
            free, wait_fn = (GLOBAL_FAILURES, lambda n: GLOBAL_WAIT) if k == "*" else (FREE_FAILURES, _wait_for)
            entry = record.get(k, {})
            failures = entry.get("failures", 0) if now - entry.get("first", now) < WINDOW else 0
            failures += 1
            entry = {"failures": failures, "first": entry.get("first", now) if failures > 1 else now,
                     "last": now, "until": now + wait_fn(failures) if failures >= free else 0}
            record[k] = entry
            waits.append(entry["until"] - now if entry["until"] else 0.0)
        return SignIn(None, max(waits))

    outcome = _with_attempts(attempt)
    if outcome.role:
        log.info("sign-in: %s signed in as %s", key, outcome.role)
    elif checked:
        log.warning("sign-in: wrong password from %s", key)
    return outcome


def unlock(address: str | None = None) -> list[str]:
    """Forget wrong-password waits (`droidft unlock`): every address's and the overall one,
    or only `address`'s. Returns the addresses whose record was cleared ('*' = overall)."""
    wanted = "local" if address is not None and is_loopback(address) else address

    def clear(record, now):
        keys = [k for k in record if wanted is None or k == wanted]
        for k in keys:
            record.pop(k)
        return keys

    return _with_attempts(clear)


# -- what a role may do, and where --------------------------------------------------------------


def require(role: str | None, action: str) -> None:
    """Raise AccessDenied unless `role` may do `action`. The dashboard gives this machine
    the owner role in local mode, and no role to anyone else."""
    if role is None:
        if lan_mode():
            raise AccessDenied("Sign in first: this dashboard is shared on the network.")
        raise AccessDenied("This dashboard is not shared on the network: only this machine can use it "
                           "(its owner can share it with `scripts/start.sh --lan`).")
    if role not in ROLES:
        raise AccessDenied("Sign in first.")
    if role != "owner" and action in OWNER_ONLY:
        raise AccessDenied(f"Viewers cannot {action.replace('-', ' ')}; ask the owner of this machine.")


def allowed_roots() -> list[Path]:
    roots = [paths.DATA_DIR, paths.home(), Path.home() / ".cache" / "huggingface",
             Path.home() / ".lmstudio" / "models", Path.home() / ".cache" / "lm-studio",
             paths.lmstudio_models_dir()]
    # where huggingface_hub really keeps models, when moved (pulled models live there)
    roots += [Path(os.environ[k]).expanduser() for k in ("HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE")
              if os.environ.get(k)]
    extra = os.environ.get("DROIDFT_ALLOWED_ROOTS", "")
    roots += [Path(p) for p in extra.split(os.pathsep) if p]
    return [r.resolve() for r in roots]


def check_path(path: str | os.PathLike) -> Path:
    """A path a dashboard visitor typed, refused in LAN mode when outside the allowed roots
    (symlinks and `..` are resolved first, so they cannot climb out; whole path parts are
    compared, so `datasets-x` is not inside `datasets`)."""
    resolved = Path(path).expanduser().resolve()
    if lan_mode() and not any(resolved.is_relative_to(root) for root in allowed_roots()):
        raise AccessDenied(
            f"{path} is outside the folders this shared dashboard may read "
            f"(demo data, the droidft home, model caches). The owner can add folders with "
            f"DROIDFT_ALLOWED_ROOTS.")
    return resolved


# Config fields that name a file or folder to read, besides `model` and `data`.
PATH_FIELDS = ("resume_adapter_file", "hostfile", "reward_file", "warm_start")
MODEL_FIELDS = ("model", "reference_model")


def check_field_path(name: str, value, method: str | None = None) -> None:
    """In LAN mode, refuse (AccessDenied) a config field's path outside the allowed roots: a
    path field as typed, a model or dataset both as typed and as it resolves (a model name
    like `x/../..` resolves under the models folder to anywhere). Other fields pass."""
    if not lan_mode() or not isinstance(value, str) or not value.strip() or value.strip() == "demo":
        return
    value = value.strip()
    if name in PATH_FIELDS:
        check_path(value)
        return
    if name not in MODEL_FIELDS + ("data",):
        return
    if Path(value).expanduser().exists():
        check_path(value)  # as typed first: resolving reads the folder, and its errors list it
    if name == "data":
        from .data import resolve_dataset

        check_path(resolve_dataset(value, method=method))
    else:
        from .models import resolve_model

        check_path(resolve_model(value))


def check_run_paths(config) -> None:
    """In LAN mode, every path a run will read must lie under the allowed roots (see
    `check_field_path`). `jobs.start` calls this before anything reads them."""
    for name in PATH_FIELDS + MODEL_FIELDS + ("data",):
        check_field_path(name, getattr(config, name, None), method=config.method)


def custom_code_allowed() -> bool:
    return not lan_mode() or os.environ.get("DROIDFT_ALLOW_CUSTOM_CODE") == "1"
