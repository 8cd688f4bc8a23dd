#!/usr/bin/env bash
# The main job end to end: set up, start Kafka and Jaeger, start a worker,
# submit a real NAS run, follow it to its result and print where its trace is.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/thunderhelm services start
mkdir -p var
.venv/bin/thunderhelm worker >var/worker.log 2>&1 &
worker=$!
trap 'kill $worker 2>/dev/null; wait $worker 2>/dev/null || true' EXIT
echo "worker started (pid $worker, log var/worker.log)"
.venv/bin/thunderhelm submit --dataset digits --population 6 --generations 3 --epochs 4 \
  --wait --timeout 900 "$@"
