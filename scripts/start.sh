#!/usr/bin/env bash
# The README's first command: install everything, build the demo model, start the dashboard.
# `scripts/start.sh --lan` shares it on the local network (see README, "Sharing on a LAN").
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. scripts/blas-env.sh
address=127.0.0.1
if [ "${1:-}" = "--lan" ]; then
  address=0.0.0.0
  export DROIDFT_LAN=1
fi
echo "droidft: starting the dashboard ..."
exec .venv/bin/streamlit run app/Home.py --server.address "$address"
