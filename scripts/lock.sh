#!/usr/bin/env bash
# Rewrite constraints.txt from the packages installed in .venv (see its header).
set -euo pipefail
cd "$(dirname "$0")/.."
{
  sed -n '1,/^# THUNDERHELM_UNLOCKED/p' constraints.txt
  .venv/bin/python -m pip freeze --exclude-editable | grep -iv '^thunderhelm'
} > constraints.txt.new
mv constraints.txt.new constraints.txt
echo "constraints.txt: $(grep -vc '^#' constraints.txt) pinned packages"
