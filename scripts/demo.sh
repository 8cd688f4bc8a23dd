#!/usr/bin/env bash
# The main job end to end: set up, start Kafka and Jaeger, start a worker,
# submit a real NAS run, follow it to its result and show its trace; then
# where to see it in the dashboard and how to use the model it found.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --no-browser
.venv/bin/thunderhelm services start
mkdir -p var
.venv/bin/thunderhelm worker >var/worker.log 2>&1 &
worker=$!
trap 'kill $worker 2>/dev/null; wait $worker 2>/dev/null || true' EXIT
echo "worker started (pid $worker, log var/worker.log); waiting for it to be ready"
# The worker creates the topics and joins its group before /readyz answers 200;
# submitting earlier would find no run-requests topic.
.venv/bin/python - <<'PY'
import sys, time, urllib.request
deadline = time.monotonic() + 180
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen("http://127.0.0.1:6066/readyz", timeout=2) as reply:
            if reply.status == 200:
                sys.exit(0)
    except OSError:
        pass
    time.sleep(1)
sys.exit("the worker was not ready after 180 s; see var/worker.log")
PY
run_id=$(.venv/bin/thunderhelm submit --dataset digits --population 8 --generations 4 --epochs 6 "$@")
echo "submitted run $run_id"
.venv/bin/thunderhelm watch "$run_id" --follow-timeout 900
echo
echo "the run's trace, from Jaeger's API (thunderhelm trace $run_id):"
.venv/bin/thunderhelm trace "$run_id" --wait 20
echo
echo "see the run, its generations, candidates, trace and dead letters in the dashboard:"
echo "  .venv/bin/thunderhelm dashboard   # then open http://127.0.0.1:6070/#/runs/$run_id"
echo "use the found model (its artifact is in the result above):"
echo "  .venv/bin/thunderhelm predict ARTIFACT --input rows.csv | export ARTIFACT --onnx model.onnx"
