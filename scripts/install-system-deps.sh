#!/usr/bin/env bash
# System packages droidft uses on Linux: OpenBLAS (makes MLX's CPU training ~20x faster,
# see DESIGN.md) and, with --test, Chromium for the browser tests. macOS needs none
# (MLX uses Metal there). Safe to run repeatedly: installs only what is missing.
set -euo pipefail
want_test=0
[ "${1:-}" = "--test" ] && want_test=1

if [ "$(uname -s)" != "Linux" ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "droidft: not a Debian/Ubuntu system; install OpenBLAS (and Chromium for tests) with your package manager." >&2
  exit 0
fi
pkgs=(libopenblas0-pthread)
[ $want_test = 1 ] && pkgs+=(chromium)
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
[ ${#missing[@]} = 0 ] && exit 0

if [ "$(id -u)" = 0 ]; then sudo=""; elif sudo -n true 2>/dev/null; then sudo="sudo -n"; else
  echo "droidft: please install: ${missing[*]} (sudo apt-get install ${missing[*]}); continuing without them." >&2
  exit 0
fi
echo "droidft: installing system packages: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq >/dev/null
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
