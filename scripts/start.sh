#!/usr/bin/env bash
# The README's first command: install everything, build the demo model, start the dashboard.
#   scripts/start.sh                 this machine only (http://127.0.0.1:8501)
#   scripts/start.sh --lan           share on the network over HTTPS, with passwords
#                                    (a self-signed certificate is made on the first start;
#                                    --cert FILE --key FILE for your own, --plain-http for none)
# See README, "Sharing on a LAN". Any `droidft serve` option works here (--port N, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. scripts/blas-env.sh
echo "droidft: starting the dashboard ..."
exec .venv/bin/droidft serve "$@"
