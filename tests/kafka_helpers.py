"""The broker-test helpers live in `bench.harness` (benchmarks use them too)."""

from bench.harness import BOOTSTRAP, REPO, WorkerProcess, collect, free_port, fresh_env

__all__ = ["BOOTSTRAP", "REPO", "WorkerProcess", "collect", "free_port", "fresh_env"]
