"""A warm pool of isolated sub-interpreters that run candidate trainings in parallel.

Each interpreter has its own GIL, so N CPU-bound trainings use N cores inside
one process, at a dispatch cost of tens of microseconds instead of a process
pool's milliseconds. The pool exists to keep that safe and boring:

- every interpreter is created, used and destroyed by one dedicated thread
  (3.13 races otherwise), which stays inside it between tasks, waiting for
  the next command the pool posts (entering per task cost a thread state
  each time);
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
from thunderhelm.ga.pool.backend import (
    STOP,
    RemoteError,
    encode_attach,
    encode_detach,
    encode_task,
)
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
        # Guards the queue, the counters and every slot's `accepting`/`job`;
        # commands are posted to an interpreter only while it is held, so one
        # command's items never interleave with another's.
        self._lock = threading.Lock()
        # Idle slots, most recently idle last: popped first, since its
        # thread and interpreter are still hot in the CPU caches.
        self._idle: list[Slot] = []
        self._jobs: collections.deque[Job] = collections.deque()
        self._datasets: dict[str, Attached] = {}
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
            slot.start()
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
            expired = self._assign(self._idle.pop()) if self._idle else []
        _fail(expired)
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

        The buffers are posted to every interpreter at once, ahead of any task
        submitted later, so such a task always sees them. The views
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
            att = self._datasets[key] = Attached(names, views)
            for slot in self._slots:
                if slot.accepting:
                    self._post(slot, encode_attach(key, names), *att.views)

    def detach(self, key: str) -> None:
        """Stop sharing a dataset; interpreters drop their views (no error if unknown)."""
        with self._lock:
            if self._datasets.pop(key, None) is not None:
                for slot in self._slots:
                    if slot.accepting:
                        self._post(slot, encode_detach(key))

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
            self._idle.clear()
            for slot in self._slots:
                if slot.accepting:
                    # Queued behind a running task, which finishes first.
                    slot.accepting = False
                    self._post(slot, STOP)
        for job in pending:
            job.future.cancel()
        if wait:
            # A slot's own threads (a future's callback may close the pool)
            # cannot wait for that slot to exit.
            me = threading.current_thread()
            for slot in self._slots:
                if not slot.owns(me) and slot.thread.ident is not None:
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

    # -- dispatch (caller holds self._lock) --------------------------------

    def _post(self, slot: Slot, command: bytes, *views: memoryview) -> bool:
        interp = slot.interp
        try:
            if interp is None:
                raise RuntimeError("the slot has no interpreter")
            interp.post(command, *views)
        except Exception:
            # A task that needs what was lost fails alone and recycles the
            # interpreter, which posts every dataset again.
            _log.exception("posting to pool interpreter in slot %d failed", slot.index)
            return False
        return True

    def _assign(self, slot: Slot) -> list[tuple[Job, BaseException]]:
        """Start the next queued job on the idle `slot`, or mark it idle.

        Returns the jobs that failed without running (their deadline passed
        while queued), for the caller to complete once the lock is released.
        """
        failed: list[tuple[Job, BaseException]] = []
        while self._jobs:
            job = self._jobs.popleft()
            if not job.future.set_running_or_notify_cancel():
                continue
            now = time.time()
            if job.deadline is not None and now >= job.deadline:
                error: BaseException = TimeoutError(
                    f"task {job.future.task_id} reached its deadline while queued"
                )
                self._finish(job, slot, now, now, error, slot_interpreter(slot))
                failed.append((job, error))
                continue
            slot.job, slot.started_at = job, now
            job.future.wait_running = slot.wait_for
            self._busy += 1
            if self._post(slot, encode_task(job.task)):
                return failed
            slot.job = None
            self._busy -= 1
            error = PoolBrokenError("could not hand the task to its interpreter")
            self._finish(job, slot, now, time.time(), error, slot_interpreter(slot))
            failed.append((job, error))
        if slot.accepting:
            self._idle.append(slot)
        return failed

    def _accept(self, slot: Slot) -> list[tuple[Job, BaseException]]:
        """Let a new interpreter take work: datasets first, then the next job."""
        slot.accepting = True
        for key, att in self._datasets.items():
            self._post(slot, encode_attach(key, att.names), *att.views)
        return self._assign(slot)

    def _finish(
        self,
        job: Job,
        slot: Slot,
        started: float,
        ended: float,
        error: BaseException | None,
        interpreter: int | None,
    ) -> None:
        fut = job.future
        info = TaskInfo(
            task_id=fut.task_id,
            func=fut.func,
            slot=slot.index,
            interpreter=interpreter,
            submitted_at=job.submitted_at,
            started_at=started,
            ended_at=ended,
            ok=error is None,
            error=None if error is None else f"{type(error).__name__}: {error}",
        )
        # Set before the future resolves, and the counters updated, so
        # whoever reacts to the future sees them.
        fut.info = info
        self._recent.append(info)
        if error is None:
            self._done += 1
        else:
            self._failed += 1

    def _take_job(self, slot: Slot) -> Job | None:
        job, slot.job = slot.job, None
        if job is not None:
            self._busy -= 1
        return job

    # -- called by the slot threads (slot.py: SlotOwner) ------------------

    def slot_started(self, slot: Slot, error: BaseException | None) -> None:
        expired: list[tuple[Job, BaseException]] = []
        with self._lock:
            self._started += 1
            if error is not None:
                self._start_errors.append(error)
            else:
                self._alive += 1
                if self._closing:
                    self._post(slot, STOP)
                else:
                    expired = self._accept(slot)
            if self._started == len(self._slots):
                self._all_started.set()
        _fail(expired)

    def task_succeeded(self, slot: Slot, result: str) -> None:
        self._task_ended(slot, result, None)

    def task_failed(self, slot: Slot, error: BaseException) -> None:
        self._task_ended(slot, None, error)

    def _task_ended(self, slot: Slot, result: str | None, error: BaseException | None) -> None:
        ended = time.time()
        with self._lock:
            job = self._take_job(slot)
            if job is not None:
                self._finish(job, slot, slot.started_at, ended, error, slot_interpreter(slot))
            # The interpreter starts its next task before this one's caller wakes.
            expired = self._assign(slot) if slot.accepting else []
        _fail(expired)
        if job is None:
            _log.error("pool slot %d handed back a result for no task", slot.index)
            return
        if error is None:
            assert result is not None
            job.future.set_result(result)
        else:
            job.future.set_exception(error)
        slot.poke_waiter()

    def slot_stopping(self, slot: Slot) -> None:
        with self._lock:
            slot.accepting = False
            if slot in self._idle:
                self._idle.remove(slot)

    def slot_recycled(self, slot: Slot, failure: RemoteError, old_interpreter: int) -> bool:
        ended = time.time()
        with self._lock:
            self._recycles += 1
            job = self._take_job(slot)
            if job is not None:
                self._finish(job, slot, slot.started_at, ended, failure, old_interpreter)
            keep = slot.interp is not None and not self._closing
            expired = self._accept(slot) if keep else []
        _fail(expired)
        if job is None:
            _log.error("pool interpreter %d failed between tasks: %s", old_interpreter, failure)
        else:
            job.future.set_exception(failure)
            slot.poke_waiter()
        return keep

    def slot_exited(self, slot: Slot) -> None:
        with self._lock:
            slot.accepting = False
            if slot in self._idle:
                self._idle.remove(slot)
            self._alive -= 1
            # Only if the slot's thread failed itself: every other way out
            # completes the running task first.
            lost = self._take_job(slot)
            if lost is not None:
                error = PoolBrokenError("the pool interpreter's thread stopped")
                self._finish(lost, slot, slot.started_at, time.time(), error, None)
            orphans: list[Job] = []
            if self._alive == 0:
                orphans, self._jobs = list(self._jobs), collections.deque()
        if lost is not None:
            lost.future.set_exception(error)
            slot.poke_waiter()
        for job in orphans:
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(PoolBrokenError("no pool interpreter is alive"))


def slot_interpreter(slot: Slot) -> int | None:
    return None if slot.interp is None else slot.interp.id


def _fail(jobs: list[tuple[Job, BaseException]]) -> None:
    for job, error in jobs:
        job.future.set_exception(error)


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
