#!/usr/bin/env bash
# Install droidft into ./.venv (and system packages where possible), then build the demo model.
# Usage: scripts/setup.sh [--test]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-system-deps.sh "${1:-}"
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
extras=""
[ "${1:-}" = "--test" ] && extras="[test]"
echo "droidft: installing Python packages into .venv ..."
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e ".${extras}"
echo "droidft: checking the demo model and this machine's BLAS ..."
.venv/bin/droidft demo-model --warm >/dev/null
.venv/bin/python -m droidft.blas --env >/dev/null || true
