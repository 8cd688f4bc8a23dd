"""The broker-test helpers live in `streams/devservices/worker_process.py` (benchmarks too)."""

from thunderhelm.streams.devservices.worker_process import (
    BOOTSTRAP,
    REPO,
    WorkerProcess,
    collect,
    free_port,
    fresh_env,
)

__all__ = ["BOOTSTRAP", "REPO", "WorkerProcess", "collect", "free_port", "fresh_env"]
