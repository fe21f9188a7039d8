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
import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path

from . import paths

ROLES = ("owner", "viewer")
# What a viewer may not do; the owner may do everything.
OWNER_ONLY = {"start", "stop", "resume", "delete", "upload", "fuse", "evaluate", "split", "sample-data"}
SCRYPT = {"n": 2**14, "r": 8, "p": 1}


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


def set_password(password: str, role: str = "owner") -> None:
    """Store a role's password hash (never the password)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if len(password) < 8:
        raise ValueError("use a password of at least 8 characters")
    hashes = _stored_hashes()
    hashes[role] = hash_password(password)
    path = _auth_file()
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(hashes, fh)
    os.replace(tmp, path)


def password_configured() -> bool:
    return bool(_stored_hashes().get("owner") or os.environ.get("DROIDFT_PASSWORD_HASH"))


def login(password: str) -> str | None:
    """The role this password opens, or None. Checks every role so timing says nothing."""
    hashes = _stored_hashes()
    if os.environ.get("DROIDFT_PASSWORD_HASH"):
        hashes.setdefault("owner", os.environ["DROIDFT_PASSWORD_HASH"])
    found = None
    for role in ROLES:
        stored = hashes.get(role)
        if stored and verify_password(password, stored) and found is None:
            found = role
    return found


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
             Path.home() / ".lmstudio" / "models", Path.home() / ".cache" / "lm-studio"]
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
