"""The values the interpreter pool hands to its callers.

Kept apart from `thunderhelm.ga.pool.interpreter_pool` so the pool module holds only the machinery;
import them from `thunderhelm.ga.pool.interpreter_pool`, which re-exports every name here.
"""

import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

from thunderhelm.ga.pool.task_runner import DATASET_REF_TAG


class PoolError(Exception):
    """Base class of the pool's own errors."""


class TaskRefusedError(PoolError, ValueError):
    """The task named a function outside the allowlist or carried unshareable data."""


class PoolClosedError(PoolError, RuntimeError):
    """The pool is closed or closing."""


class PoolBrokenError(PoolError, RuntimeError):
    """No interpreter is left to run tasks (they could not be recreated)."""


def dataset_arg(key: str, name: str) -> tuple[str, str, str]:
    """A task argument that stands for the buffer `name` of the dataset attached as `key`."""
    return (DATASET_REF_TAG, key, name)


class CancelToken:
    """A 1-byte shared flag: set in the main interpreter, polled by running tasks.

    Attach `token.view` to the pool (it crosses interpreters without a copy)
    and pass its `dataset_arg` to tasks, so `cancel()` is seen by a task
    already running.
    """

    def __init__(self) -> None:
        self._flag = bytearray(1)
        self.view = memoryview(self._flag)

    def cancel(self) -> None:
        self._flag[0] = 1

    @property
    def cancelled(self) -> bool:
        return self._flag[0] != 0


@dataclass(frozen=True, slots=True)
class TaskInfo:
    """Where and when one task ran (`time.time()` seconds)."""

    task_id: int
    func: str
    slot: int
    interpreter: int | None
    submitted_at: float
    started_at: float
    ended_at: float
    ok: bool
    error: str | None = None

    @property
    def run_s(self) -> float:
        return self.ended_at - self.started_at


class TaskFuture(Future[str]):
    """A future for a JSON str result; `info` is set before the future resolves.

    While its task runs, `result` first waits for it the pool's short way
    (`wait_running`, set by the pool): the waiting thread takes the result
    from the interpreter itself instead of being woken by the slot's results
    thread, one thread hop fewer. Every other way of waiting (`exception`,
    `concurrent.futures.wait`, callbacks) sees the results thread complete it.
    """

    def __init__(self, task_id: int, func: str) -> None:
        super().__init__()
        self.task_id = task_id
        self.func = func
        self.info: TaskInfo | None = None
        self.wait_running: Callable[[TaskFuture, float | None], None] | None = None

    def result(self, timeout: float | None = None) -> str:
        wait = self.wait_running
        if wait is not None and not self.done():
            end = None if timeout is None else time.monotonic() + timeout
            wait(self, timeout)
            if end is not None:
                timeout = max(0.0, end - time.monotonic())
        return super().result(timeout)


@dataclass(frozen=True, slots=True)
class PoolStats:
    """A snapshot of the pool's load and history."""

    size: int
    alive: int
    busy: int
    idle: int
    queued: int
    tasks_done: int
    tasks_failed: int
    recycles: int
    interpreters: tuple[int | None, ...]
    recent: tuple[TaskInfo, ...]
