"""A warm pool of isolated sub-interpreters that run candidate trainings in parallel.

Each interpreter has its own GIL, so N CPU-bound trainings use N cores inside
one process, at a dispatch cost of tens of microseconds instead of a process
pool's milliseconds. The pool exists to keep that safe and boring:

- every interpreter is created, used and destroyed by one dedicated thread
  (3.13 races otherwise), and kept warm between tasks;
- work is plain data — an allowlisted ``"module:function"`` name plus a tuple
  of shareable values — so nothing from an event is ever executed;
- datasets cross once per interpreter as shared buffers (`attach`), and a
  task names them with `dataset_arg` instead of copying them per task;
- a task that raises fails alone: its interpreter is destroyed and recreated
  (datasets re-attached) while the others keep serving;
- timeouts and cancellation are cooperative (a deadline and a `CancelToken`
  the task checks), because a sub-interpreter cannot be interrupted.
"""

import collections
import contextlib
import logging
import os
import re
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping
from types import TracebackType
from typing import Self

from thunderhelm.ga import check_python
from thunderhelm.ga.pool.backend import RemoteError
from thunderhelm.ga.pool.slot import Attached, Job, Slot
from thunderhelm.ga.pool.task_runner import DATASET_REF_TAG
from thunderhelm.ga.pool.types import (
    CancelToken,
    PoolBrokenError,
    PoolClosedError,
    PoolError,
    PoolStats,
    TaskFuture,
    TaskInfo,
    TaskRefusedError,
    dataset_arg,
)

__all__ = [
    "DEFAULT_ALLOWED",
    "CancelToken",
    "InterpreterPool",
    "PoolBrokenError",
    "PoolClosedError",
    "PoolError",
    "PoolStats",
    "RemoteError",
    "TaskFuture",
    "TaskInfo",
    "TaskRefusedError",
    "dataset_arg",
]

_log = logging.getLogger(__name__)

DEFAULT_ALLOWED: tuple[str, ...] = ("thunderhelm.ga.training.candidate:train_candidate",)

_FUNC_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*", re.ASCII)
# Buffers are not task arguments: `attach` them and pass `dataset_arg` refs.
_SCALARS = (str, bytes, int, float, type(None))


def _check_shareable(value: object, depth: int = 0) -> None:
    # A narrower rule than `_interpreters.is_shareable`: only the types the
    # pool documents and marshal keeps exactly.
    if isinstance(value, tuple) and depth < 8:
        for item in value:
            _check_shareable(item, depth + 1)
    elif not isinstance(value, _SCALARS):
        raise TaskRefusedError(f"task argument of type {type(value).__name__} is not shareable")


class InterpreterPool:
    """N warm isolated interpreters behind a `submit`/`map` interface.

    `allowed` lists the ``"module:function"`` names tasks may call; the
    default allows only the candidate training function. A task's `deadline`
    is an absolute `time.time()` value, the same clock the training function
    checks: a task still queued when it passes fails with `TimeoutError`
    without running (a running task must honour the deadline itself).
    """

    def __init__(
        self,
        size: int | None = None,
        *,
        allowed: Iterable[str] = DEFAULT_ALLOWED,
        history: int = 256,
        niceness: int = 0,
        idle: bool = False,
    ) -> None:
        check_python()
        # Added to each pool thread's nice value (Linux schedules threads one
        # by one): a positive one lets the host's event loop win a busy CPU.
        self.niceness = niceness
        # SCHED_IDLE where the OS has it: the threads run only on CPU time no
        # other thread of the host wants, and a waking thread takes a CPU from
        # them at once instead of queueing beside them (bench/stream.py).
        self.idle = idle
        size = (os.cpu_count() or 1) if size is None else size
        if size < 1:
            raise ValueError("pool size must be at least 1")
        self.allowed = tuple(sorted(set(allowed)))
        for name in self.allowed:
            if not _FUNC_NAME.fullmatch(name):
                raise ValueError(f"allowlist entry {name!r} is not 'module:function'")
        self._lock = threading.Lock()
        self._idle: list[Slot] = []
        self._jobs: collections.deque[Job] = collections.deque()
        self._datasets: dict[str, Attached] = {}
        self._ds_version = 0
        self._ds_generation = 0
        self._recent: collections.deque[TaskInfo] = collections.deque(maxlen=history)
        self._task_ids = 0
        self._busy = self._done = self._failed = self._recycles = 0
        self._closing = False
        self._started = 0
        self._start_errors: list[BaseException] = []
        self._all_started = threading.Event()
        _preload_blas()
        self._slots = [Slot(self, i) for i in range(size)]
        self._alive = 0
        for slot in self._slots:
            slot.thread.start()
        self._all_started.wait()
        if self._start_errors:
            self.close()
            raise PoolError("could not start pool interpreters") from self._start_errors[0]
        _close_at_exit(self)

    # -- public API ---------------------------------------------------------

    @property
    def size(self) -> int:
        return len(self._slots)

    def submit(
        self, func: str, args: tuple[object, ...] = (), *, deadline: float | None = None
    ) -> TaskFuture:
        """Queue one task; the future resolves to the function's str result."""
        if func not in self.allowed:
            raise TaskRefusedError(f"function {func!r} is not on the pool allowlist")
        if not isinstance(args, tuple):
            raise TaskRefusedError("task arguments must be a tuple")
        _check_shareable(args)
        with self._lock:
            self._check_refs(args)
            if self._closing:
                raise PoolClosedError("the pool is closed")
            if self._alive == 0:
                raise PoolBrokenError("no pool interpreter is alive")
            self._task_ids += 1
            fut = TaskFuture(self._task_ids, func)
            self._jobs.append(Job(fut, (func, args), deadline, time.time()))
            self._wake(every=False)
        return fut

    def map(
        self,
        func: str,
        arg_tuples: Iterable[tuple[object, ...]],
        *,
        deadline: float | None = None,
        timeout: float | None = None,
    ) -> Iterator[str]:
        """Submit every task now and yield results in order (like `Executor.map`)."""
        futures = [self.submit(func, args, deadline=deadline) for args in arg_tuples]

        def results() -> Iterator[str]:
            try:
                end = None if timeout is None else time.time() + timeout
                for fut in futures:
                    yield fut.result(None if end is None else max(0.0, end - time.time()))
            finally:
                for fut in futures:
                    fut.cancel()

        return results()

    def attach(self, key: str, buffers: Mapping[str, memoryview]) -> None:
        """Share `buffers` with every interpreter under `key` (replacing a previous one).

        Interpreters pick the buffers up before their next task (idle ones at
        once), so a task submitted after `attach` always sees them. The views
        stay referenced until `detach`; keep their exporters alive and do not
        resize them.
        """
        if not key or not isinstance(key, str):
            raise ValueError("dataset key must be a non-empty str")
        names = tuple(buffers)
        views = tuple(buffers[n] for n in names)
        for name, view in zip(names, views, strict=True):
            if not isinstance(name, str) or not isinstance(view, memoryview):
                raise TypeError("attach takes a mapping of str to memoryview")
            if not view.c_contiguous:
                raise ValueError(f"buffer {name!r} is not C-contiguous")
        with self._lock:
            self._ds_generation += 1
            self._datasets[key] = Attached(self._ds_generation, names, views)
            self._ds_version += 1
            self._wake(every=True)

    def detach(self, key: str) -> None:
        """Stop sharing a dataset; interpreters drop their views (no error if unknown)."""
        with self._lock:
            if self._datasets.pop(key, None) is not None:
                self._ds_version += 1
                self._wake(every=True)

    def attached(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(self._datasets)

    def stats(self) -> PoolStats:
        with self._lock:
            return PoolStats(
                size=len(self._slots),
                alive=self._alive,
                busy=self._busy,
                idle=self._alive - self._busy,
                queued=len(self._jobs),
                tasks_done=self._done,
                tasks_failed=self._failed,
                recycles=self._recycles,
                interpreters=tuple(
                    s.interp.id if s.interp is not None else None for s in self._slots
                ),
                recent=tuple(self._recent),
            )

    def close(self, *, wait: bool = True) -> None:
        """Cancel queued tasks, let running ones finish, destroy the interpreters.

        Safe to call more than once. Running tasks are not interrupted: set
        their cancel tokens first for a quick close.
        """
        with self._lock:
            self._closing = True
            pending = list(self._jobs)
            self._jobs.clear()
            self._wake(every=True)
        for job in pending:
            job.future.cancel()
        if wait:
            me = threading.current_thread()
            for slot in self._slots:
                if slot.thread is not me and slot.thread.ident is not None:
                    slot.thread.join()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _check_refs(self, args: tuple[object, ...]) -> None:
        for arg in args:
            if isinstance(arg, tuple) and len(arg) == 3 and arg[0] == DATASET_REF_TAG:
                att = self._datasets.get(str(arg[1]))
                if att is None or arg[2] not in att.names:
                    raise LookupError(f"dataset buffer {arg[1]!r}/{arg[2]!r} is not attached")

    # -- called by the slot threads (slot.py: SlotOwner) ------------------

    def slot_started(self, slot: Slot, error: BaseException | None) -> None:
        with self._lock:
            self._started += 1
            if error is None:
                self._alive += 1
            else:
                self._start_errors.append(error)
            if self._started == len(self._slots):
                self._all_started.set()

    def next_job(self, slot: Slot) -> Job | tuple[int, dict[str, Attached]] | None:
        while True:
            with self._lock:
                if self._closing or slot.interp is None:
                    return None
                if slot.ds_version != self._ds_version:
                    return self._ds_version, dict(self._datasets)
                if self._jobs:
                    self._busy += 1
                    return self._jobs.popleft()
                self._idle.append(slot)
            slot.wake.acquire()

    def _wake(self, *, every: bool) -> None:
        # Caller holds self._lock. The most recently idle slot is woken first:
        # its thread and interpreter are still hot in the CPU caches, which
        # roughly halves dispatch latency compared with round-robin wake-ups.
        while self._idle:
            self._idle.pop().wake.release()
            if not every:
                return

    def task_finished(self, info: TaskInfo | None) -> None:
        with self._lock:
            self._busy -= 1
            if info is not None:
                self._recent.append(info)
                if info.ok:
                    self._done += 1
                else:
                    self._failed += 1

    def recycled(self, slot: Slot) -> None:
        with self._lock:
            self._recycles += 1

    def slot_exited(self, slot: Slot) -> None:
        with self._lock:
            self._alive -= 1
            orphans: list[Job] = []
            if self._alive == 0:
                orphans, self._jobs = list(self._jobs), collections.deque()
        for job in orphans:
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(PoolBrokenError("no pool interpreter is alive"))


def _preload_blas() -> None:
    """Put the kernel's BLAS library in the process before any interpreter imports the kernel.

    Interpreters then bind to it by its soname whatever the kernel's search
    path says, and none of them needs ctypes.
    """
    try:
        from thunderhelm.ga.training import blas

        blas.preload()
    except (ImportError, OSError) as exc:  # tasks that need no BLAS still work
        _log.debug("BLAS preload skipped: %s", exc)


def _close_at_exit(pool: InterpreterPool) -> None:
    # Worker threads are not daemons (a daemon thread inside a sub-interpreter
    # at shutdown is unsafe), so an unclosed pool would block exit forever.
    # `threading._register_atexit` runs before non-daemon threads are joined;
    # concurrent.futures relies on the same hook.
    register = getattr(threading, "_register_atexit", None)
    if register is None:
        return
    ref = weakref.ref(pool)

    def close() -> None:
        live = ref()
        if live is not None:
            live.close()

    with contextlib.suppress(RuntimeError):  # the interpreter is already shutting down
        register(close)
