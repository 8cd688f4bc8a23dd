#!/usr/bin/env bash
# The whole suite the way a busy CI machine runs it: every core kept busy by
# a CPU-bound loop at normal priority, and pytest started as a background job
# of this non-interactive shell, so it runs with SIGINT ignored (as under
# `nohup … &` or a CI runner). Runs it RUNS times in a row (default 3) and
# stops at the first failure; each run's output is in var/under-load/run-N.log.
#
#   bash scripts/test-under-load.sh [RUNS] [PYTEST ARGS...]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
shift || true
bash scripts/setup.sh >/dev/null
.venv/bin/thunderhelm services start
mkdir -p var/under-load

loads=()
stop_loads() { kill "${loads[@]}" 2>/dev/null || true; }
trap stop_loads EXIT
for _ in $(seq "$(nproc)"); do
  (while :; do :; done) &
  loads+=($!)
done
echo "under-load: $(nproc) busy loops (pids ${loads[*]}) at normal priority"

passed=0
for n in $(seq "$runs"); do
  log="var/under-load/run-$n.log"
  start=$(date +%s)
  # No job control here: bash starts this background job with SIGINT ignored.
  .venv/bin/python -m pytest -q -p no:cacheprovider "$@" >"$log" 2>&1 &
  pid=$!
  ignored=$(awk '/^SigIgn/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo "?")
  status=0
  wait "$pid" || status=$?
  took=$(($(date +%s) - start))
  echo "under-load: run $n: exit $status in ${took}s (SigIgn $ignored): $(tail -n 1 "$log")"
  [ "$status" -eq 0 ] || { echo "under-load: $passed of $runs passed before run $n failed; see $log"; exit 1; }
  passed=$((passed + 1))
done
echo "under-load: $passed of $runs runs passed"
