#!/usr/bin/env bash
# Create .venv at the repo root with Python 3.13 and install thunderhelm (with
# its compiled training kernel) plus the dev tools. Safe to run again.
#   bash scripts/setup.sh [--no-browser]
set -euo pipefail
cd "$(dirname "$0")/.."

find_python() {
  if [ -n "${THUNDERHELM_PYTHON:-}" ]; then echo "$THUNDERHELM_PYTHON"; return; fi
  if command -v pyenv >/dev/null 2>&1; then
    for v in $(pyenv versions --bare 2>/dev/null | grep -E '^3\.1[3-9](\.|$)' | sort -V -r); do
      echo "$(pyenv root)/versions/$v/bin/python"; return
    done
  fi
  for c in python3.14 python3.13; do
    if command -v "$c" >/dev/null 2>&1; then command -v "$c"; return; fi
  done
  echo "error: Python >= 3.13 not found (install it, or set THUNDERHELM_PYTHON)" >&2
  exit 1
}

if [ ! -x .venv/bin/python ]; then
  py=$(find_python)
  echo "creating .venv with $py"
  "$py" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# Build requirements first, then build in this environment: the kernel's
# run-time search path then points at this venv's OpenBLAS.
# Versions come from constraints.txt (THUNDERHELM_UNLOCKED=1: the newest allowed).
lock=(-c constraints.txt)
if [ -n "${THUNDERHELM_UNLOCKED:-}" ]; then lock=(); fi
.venv/bin/python -m pip install -q "${lock[@]}" "setuptools>=77" "cython>=3.1" "scipy-openblas32>=0.3.28"
# setuptools prints a ten-line notice on every editable install of a project
# whose checkout holds a folder named like its package (thunderhelm/ here);
# it changes nothing, so it is filtered by its message.
PYTHONWARNINGS="ignore:Editable installation" \
  .venv/bin/python -m pip install -q "${lock[@]}" --no-build-isolation -e ".[dev,bench]"
# The official AsyncAPI JSON Schemas (npm package @asyncapi/specs), which the
# tests validate docs/asyncapi.yaml against; kept inside .venv, not committed.
specs=.venv/share/asyncapi-specs
if [ ! -f "$specs/schemas/3.0.0.json" ] && command -v npm >/dev/null 2>&1; then
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent @asyncapi/specs@6.11.1 >/dev/null && tar xzf asyncapi-specs-6.11.1.tgz)
  mkdir -p "$specs" && cp -r "$tmp/package/schemas" "$specs/" && rm -rf "$tmp"
fi
# The dashboard's browser tests drive Debian's Chromium through its chromedriver
# (never a downloaded browser); install both where apt-get can, and say so where not.
# `--no-browser` (the demo) skips them: only the tests need a browser.
if [ "${1:-}" != "--no-browser" ] && { [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; }; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
    echo "installing chromium and chromium-driver for the browser tests"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null \
      || { apt-get update -q >/dev/null \
           && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null; }
  elif command -v apt-get >/dev/null 2>&1 && command -v sudo >/dev/null 2>&1; then
    echo "installing chromium and chromium-driver for the browser tests (sudo)"
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null
  else
    echo "note: no chromium/chromium-driver; the browser tests (-m browser) will skip" >&2
  fi
fi
echo "thunderhelm installed in .venv ($(.venv/bin/python --version))"
