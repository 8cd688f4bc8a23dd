#!/usr/bin/env bash
# Set up, start the real Kafka and Jaeger, lint, type-check and run every test
# on CPython 3.13.0 (the floor), then the whole suite again on the newest 3.13
# patch release this machine can build (scripts/newer-python.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/thunderhelm services start
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/python -m pytest -q "$@"

# The second Python gets its own copy of the tree: an editable install builds
# the kernel in place, and both builds would write the same cpython-313 file.
newer=""
if newer=$(bash scripts/newer-python.sh); then
  version=$("$newer" -c 'import platform; print(platform.python_version())')
  tree="var/python-$version/tree"
  echo "test.sh: the suite again on CPython $version ($newer), in $tree"
  rm -rf "$tree"
  mkdir -p "$tree"
  git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf - | tar -xf - -C "$tree"
  # Its own index, so tests that ask git which files the tree holds see the copy.
  (cd "$tree" && git init -q && git add -A)
  (cd "$tree" && THUNDERHELM_PYTHON="$newer" bash scripts/setup.sh \
     && .venv/bin/python -m pytest -q "$@")
else
  status=$?
  # 3: the source is not served or did not build; newer-python.sh said so in one line.
  [ "$status" -eq 3 ] || exit "$status"
fi
