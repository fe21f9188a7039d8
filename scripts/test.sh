#!/usr/bin/env bash
# The README's second command: install everything (with test tools) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
. scripts/blas-env.sh
exec .venv/bin/python -m pytest -q "$@"
