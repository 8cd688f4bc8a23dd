"""The broker-test helpers live in `streams/devservices/worker_process.py` (benchmarks too)."""

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from thunderhelm.streams.devservices.worker_process import (
    BOOTSTRAP,
    REPO,
    WorkerProcess,
    collect,
    free_port,
    fresh_env,
)

__all__ = [
    "BOOTSTRAP",
    "REPO",
    "WorkerProcess",
    "collect",
    "free_port",
    "fresh_env",
    "module_worker",
]


def module_worker(name: str) -> Callable[..., Any]:
    """A module's fixture: one worker on fresh topics, shared by the module's tests."""

    @pytest.fixture(scope="module")
    def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
        tmp = tmp_path_factory.mktemp(name)
        proc = WorkerProcess(fresh_env(tmp), tmp / "worker.log")
        proc.start()
        yield proc
        proc.stop()

    return worker
