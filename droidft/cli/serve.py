"""`droidft serve`: start the dashboard, on this machine only or (--lan) shared on the network
over HTTPS with passwords. `scripts/start.sh` runs it."""

from __future__ import annotations

import os
import sys


def serve_command(args) -> tuple[list[str], dict, list[str]]:
    """(the `streamlit run` command line, its environment, lines to print) for `droidft serve`."""
    from .. import paths, security, tls

    env = dict(os.environ)
    cmd = [sys.executable, "-m", "streamlit", "run", str(paths.REPO_ROOT / "app" / "Home.py"),
           "--server.port", str(args.port), "--server.headless", "true"]
    if not args.lan:
        if args.plain_http or args.cert or args.key:
            raise ValueError("--plain-http, --cert and --key are for sharing: add --lan")
        env["DROIDFT_LAN"] = "0"
        return cmd + ["--server.address", "127.0.0.1"], env, [f"droidft: http://127.0.0.1:{args.port} (this machine only)"]
    env["DROIDFT_LAN"] = "1"
    cmd += ["--server.address", "0.0.0.0"]
    lines = []
    if not security.password_configured():
        lines.append("droidft: no password set yet: run `droidft set-password` (visitors see only a notice until then)")
    if args.plain_http:
        scheme = "http"
        lines.append("droidft: WARNING: plain HTTP: passwords and everything else cross the network in clear text")
    else:
        scheme = "https"
        cert, key, made = tls.ensure_certificate(args.cert or env.get("DROIDFT_TLS_CERT"),
                                                 args.key or env.get("DROIDFT_TLS_KEY"))
        cmd += ["--server.sslCertFile", str(cert), "--server.sslKeyFile", str(key)]
        lines.append(f"droidft: {'made a self-signed certificate' if made else 'certificate'}: {cert}")
        lines.append(f"droidft: SHA-256 fingerprint: {tls.fingerprint(cert)}")
        lines.append("droidft: visitors compare it with the one their browser shows (README, Sharing on a LAN)")
    for address in tls.lan_addresses() or ["<this machine's address>"]:
        lines.append(f"droidft: {scheme}://{address}:{args.port}")
    return cmd, env, lines


def cmd_serve(args) -> int:
    """Start the dashboard: this machine only, or with --lan the network, over HTTPS, with
    passwords."""
    cmd, env, lines = serve_command(args)
    print("\n".join(lines), flush=True)
    os.execvpe(cmd[0], cmd, env)
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("serve", help="start the dashboard (--lan: share it on the network over HTTPS)")
    p.add_argument("--lan", action="store_true", help="listen on every interface; visitors sign in")
    p.add_argument("--plain-http", action="store_true",
                   help="with --lan: no HTTPS (passwords cross the network in clear text)")
    p.add_argument("--cert", help="with --lan: your own certificate (PEM) instead of the self-signed one")
    p.add_argument("--key", help="with --cert: its private key (PEM)")
    # Streamlit's own setting (env or .streamlit/config.toml) when no --port is given
    p.add_argument("--port", type=int, default=int(os.environ.get("STREAMLIT_SERVER_PORT") or 8501),
                   help="default: $STREAMLIT_SERVER_PORT, else 8501")
    p.set_defaults(func=cmd_serve)
