"""Sharing the dashboard on a LAN: `droidft set-password` (the owner's or a viewer's password)
and `droidft unlock` (lift the sign-in's wrong-password waits)."""

from __future__ import annotations

import sys


def cmd_set_password(args) -> int:
    """Set the LAN password (owner or viewer); only its scrypt hash is stored."""
    import getpass

    from ..security import set_password

    if args.stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("new password: ")
        if getpass.getpass("again: ") != password:
            raise ValueError("the two passwords differ")
    role = "viewer" if args.viewer else "owner"
    if args.print_hash:  # for DROIDFT_PASSWORD_HASH / Streamlit secrets instead of auth.json
        from ..security import check_new_password, hash_password

        check_new_password(password)
        print(hash_password(password))
        return 0
    set_password(password, role)
    print(f"{role} password set")
    return 0


def cmd_unlock(args) -> int:
    """Forget the LAN sign-in's wrong-password waits (every address and the overall limit, or
    one address), e.g. after a guesser made everyone wait."""
    from ..security import unlock

    cleared = unlock(args.address)
    names = {"*": "the overall limit", "local": "this machine"}
    print("cleared: " + ", ".join(names.get(k, k) for k in cleared) if cleared else
          "nothing to clear: " + (f"{args.address} is not waiting" if args.address else "no one is waiting"))
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("set-password", help="password for sharing the dashboard on a LAN")
    p.add_argument("--viewer", action="store_true", help="the read-only viewer password")
    p.add_argument("--stdin", action="store_true", help="read the password from standard input")
    p.add_argument("--print-hash", action="store_true",
                   help="print the hash instead of storing it (for DROIDFT_PASSWORD_HASH, "
                        "DROIDFT_VIEWER_PASSWORD_HASH or .streamlit/secrets.toml)")
    p.set_defaults(func=cmd_set_password)

    p = sub.add_parser("unlock", help="forget wrong-password waits of the LAN sign-in")
    p.add_argument("--address", help="only this address's (default: everyone's and the overall limit)")
    p.set_defaults(func=cmd_unlock)
