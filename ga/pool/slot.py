"""One thread of the interpreter pool and the sub-interpreter it owns.

CPython 3.13 races when an interpreter is created, used and destroyed from
different threads, so each interpreter lives its whole life on one `Slot`
thread: the slot creates it, runs tasks and dataset attaches on it, recycles
it after a failed task, and destroys it when the pool closes. The slot asks
its pool for work and reports back only through `SlotOwner`, so the pool's
queue, counters and lock stay in interpreter_pool.py.
"""

import logging
import marshal
import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import Protocol

from thunderhelm.ga.pool.backend import Interpreter, new_interpreter
from thunderhelm.ga.pool.types import PoolBrokenError, TaskFuture, TaskInfo

_log = logging.getLogger(__name__)


@dataclass(slots=True)
class Job:
    """A submitted task waiting for (or on) a slot."""

    future: TaskFuture
    task: tuple[str, tuple[object, ...]]
    deadline: float | None
    submitted_at: float


@dataclass(frozen=True, slots=True)
class Attached:
    """A dataset shared with the interpreters; `generation` tells a re-attach apart."""

    generation: int
    names: tuple[str, ...]
    views: tuple[memoryview, ...]


class SlotOwner(Protocol):
    """What a slot needs of its pool (InterpreterPool): work, and where to report."""

    allowed: tuple[str, ...]
    niceness: int
    idle: bool

    def slot_started(self, slot: "Slot", error: BaseException | None) -> None: ...

    def next_job(self, slot: "Slot") -> "Job | tuple[int, dict[str, Attached]] | None": ...

    def task_finished(self, info: TaskInfo | None) -> None: ...

    def recycled(self, slot: "Slot") -> None: ...

    def slot_exited(self, slot: "Slot") -> None: ...


class Slot:
    """One worker thread and the interpreter it owns."""

    def __init__(self, pool: SlotOwner, index: int) -> None:
        self.pool = pool
        self.index = index
        self.interp: Interpreter | None = None
        self.attached: dict[str, int] = {}
        self.ds_version = -1
        # A binary semaphore, held while the slot is on the pool's idle stack;
        # the pool releases it exactly once to wake this slot.
        self.wake = threading.Lock()
        self.wake.acquire()
        self.thread = threading.Thread(target=self._main, name=f"thunderhelm-pool-{index}")

    def _main(self) -> None:
        pool = self.pool
        if pool.niceness or pool.idle:
            _lower_priority(pool.niceness, pool.idle)
        try:
            self.interp = new_interpreter(import_path(), pool.allowed)
        except BaseException as exc:
            pool.slot_started(self, exc)
            return
        pool.slot_started(self, None)
        try:
            while (job := pool.next_job(self)) is not None:
                if isinstance(job, Job):
                    self._execute(job)
                else:
                    self._sync_datasets(job)
        finally:
            self._close_interp()
            pool.slot_exited(self)

    def _sync_datasets(self, wanted: tuple[int, dict[str, Attached]]) -> None:
        version, datasets = wanted
        self.ds_version = version
        interp = self.interp
        assert interp is not None
        try:
            for key in [k for k in self.attached if k not in datasets]:
                interp.send(key)
                interp.exec("__th_worker__.detach_from_queue(__th_inbox__)")
                del self.attached[key]
            for key, att in datasets.items():
                if self.attached.get(key) != att.generation:
                    # One value per item, no tuples: see `encode_task` on why.
                    interp.send(key, marshal.dumps(att.names), *att.views)
                    interp.exec("__th_worker__.attach_from_queue(__th_inbox__)")
                    self.attached[key] = att.generation
        except Exception:
            # A task that needs the missing buffer will fail alone and
            # recycle this interpreter, which retries the attach.
            _log.exception("attaching datasets to pool interpreter %s failed", interp.id)

    def _execute(self, job: Job) -> None:
        fut = job.future
        started = time.time()
        interp = self.interp
        result: str | None = None
        error: BaseException | None = None
        ran = False
        if not fut.set_running_or_notify_cancel():
            self.pool.task_finished(None)
            return
        if job.deadline is not None and started >= job.deadline:
            error = TimeoutError(f"task {fut.task_id} reached its deadline while queued")
        elif interp is None:
            error = PoolBrokenError("pool interpreter is gone")
        else:
            ran = True
            try:
                result = interp.run_task(job.task)
            except Exception as exc:
                error = exc
        ended = time.time()
        info = TaskInfo(
            task_id=fut.task_id,
            func=fut.func,
            slot=self.index,
            interpreter=interp.id if interp is not None else None,
            submitted_at=job.submitted_at,
            started_at=started,
            ended_at=ended,
            ok=error is None,
            error=None if error is None else f"{type(error).__name__}: {error}",
        )
        fut.info = info
        if error is not None and ran:
            # The task's module state may be half-updated or the interpreter
            # broken: start over before the failure becomes visible, so stats
            # are consistent for whoever reacts to the future.
            self._recycle()
        self.pool.task_finished(info)
        if error is None:
            assert result is not None
            fut.set_result(result)
        else:
            fut.set_exception(error)

    def _recycle(self) -> None:
        self._close_interp()
        self.attached.clear()
        self.ds_version = -1
        try:
            self.interp = new_interpreter(import_path(), self.pool.allowed)
        except Exception:
            _log.exception("could not recreate pool interpreter in slot %d", self.index)
        self.pool.recycled(self)

    def _close_interp(self) -> None:
        interp, self.interp = self.interp, None
        if interp is not None:
            try:
                interp.close()
            except Exception:
                _log.exception("destroying pool interpreter %s failed", interp.id)


def import_path() -> tuple[str, ...]:
    # Interpreters start with the default path; give them the main
    # interpreter's current one (test runners and editable installs add to it).
    return tuple(p for p in sys.path if isinstance(p, str))


def _lower_priority(niceness: int, idle: bool) -> None:
    """Raise this thread's nice value by `niceness`, then move it to SCHED_IDLE if `idle`.

    Best effort, one step at a time: Linux names threads by id; elsewhere, or
    where a sandbox refuses the policy, the pool keeps what it could get.
    """
    try:
        tid = threading.get_native_id()
        if niceness:
            os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + niceness)
        if idle:
            os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
    except (OSError, AttributeError):
        pass  # no per-thread priorities here: the pool runs at the process's
