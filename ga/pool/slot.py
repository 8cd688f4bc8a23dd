"""One slot of the interpreter pool: the sub-interpreter, the thread inside it, and its results.

CPython 3.13 races when an interpreter is created, used and destroyed from
different threads, so each interpreter lives its whole life on one `Slot`
thread: the slot creates it, then stays inside it running the serving loop
(`Interpreter.serve`) until the pool stops it or a task fails, recycles it
after a failed task, and destroys it when the pool closes. The thread stays
in because entering an interpreter per task made and freed a thread state
every time, which cost more than the rest of a dispatch.

A thread inside an interpreter cannot touch the main interpreter's objects,
so a second thread per slot, in the main interpreter, waits for the loop's
"result ready" signal and completes the task's future. The pool posts
commands to the slot's interpreter and keeps its queue, counters and lock in
interpreter_pool.py; the slot reports back only through `SlotOwner`.
"""

import contextlib
import logging
import math
import os
import select
import sys
import threading
import time
from dataclasses import dataclass
from typing import Protocol

from thunderhelm.ga.pool.backend import Interpreter, RemoteError, Signals, new_interpreter
from thunderhelm.ga.pool.types import TaskFuture

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
    """A dataset shared with the interpreters."""

    names: tuple[str, ...]
    views: tuple[memoryview, ...]


class SlotOwner(Protocol):
    """What a slot needs of its pool (InterpreterPool): where to report."""

    allowed: tuple[str, ...]
    niceness: int
    idle: bool

    def slot_started(self, slot: "Slot", error: BaseException | None) -> None: ...

    def task_succeeded(self, slot: "Slot", result: str) -> None: ...

    def task_failed(self, slot: "Slot", error: BaseException) -> None: ...

    def slot_stopping(self, slot: "Slot") -> None: ...

    def slot_recycled(self, slot: "Slot", failure: RemoteError, old_interpreter: int) -> bool: ...

    def slot_exited(self, slot: "Slot") -> None: ...


class Slot:
    """One worker thread, the interpreter it owns, and the thread that hands its results back.

    `interp` (its reference), `accepting`, `job` and `started_at` are written
    under the pool's lock: the pool posts to `interp` only while `accepting`,
    and `job` is the task the loop is running (None when idle). Results are
    taken from the interpreter's outbox only under `_collect_lock`, which
    also guards replacing `interp`, so no one reads an outbox being destroyed.
    """

    def __init__(self, pool: SlotOwner, index: int) -> None:
        self.pool = pool
        self.index = index
        self.interp: Interpreter | None = None
        self.accepting = False
        self.job: Job | None = None
        self.started_at = 0.0
        self.signals = Signals()
        self._collect_lock = threading.Lock()
        self._waiter = 0  # the thread id of the caller in `wait_for`, 0 if none
        self._retired = False  # the slot has exited; `signals` close with the last waiter
        self._caller_poll = select.poll()
        self._caller_poll.register(self.signals.caller_fd, select.POLLIN)
        self._exiting = False
        self.thread = threading.Thread(target=self._main, name=f"thunderhelm-pool-{index}")
        self.results = threading.Thread(
            target=self._hand_back, name=f"thunderhelm-pool-{index}-results"
        )

    def start(self) -> None:
        # Both from the pool's thread: a new thread inherits its creator's
        # nice value and policy, and only the task thread is lowered.
        self.results.start()
        self.thread.start()

    def owns(self, thread: threading.Thread) -> bool:
        return thread is self.thread or thread is self.results

    # -- the task thread ------------------------------------------------------

    def _main(self) -> None:
        pool = self.pool
        if pool.niceness or pool.idle:
            _lower_priority(pool.niceness, pool.idle)
        try:
            self.interp = new_interpreter(import_path(), pool.allowed, self.signals)
        except BaseException as exc:
            self._stop_results()
            self.signals.close()
            pool.slot_started(self, exc)
            return
        pool.slot_started(self, None)
        try:
            while (interp := self.interp) is not None:
                failure = interp.serve()
                if failure is None:
                    break  # the pool posted stop
                if not self._recycle(interp, failure):
                    break
        finally:
            # The results thread hands back every result the loop signalled
            # to it before it returned, this thread any left for a waiter;
            # only then may the outbox go.
            self._stop_results()
            self._collect()
            self._close_interp()
            pool.slot_exited(self)
            self._retire_signals()

    def _recycle(self, interp: Interpreter, failure: RemoteError) -> bool:
        """Replace the interpreter after a failure; False if the slot should exit."""
        old = interp.id
        self.pool.slot_stopping(self)
        self._close_interp()
        try:
            new = new_interpreter(import_path(), self.pool.allowed, self.signals)
        except Exception:
            _log.exception("could not recreate pool interpreter in slot %d", self.index)
        else:
            with self._collect_lock:
                self.interp = new
        return self.pool.slot_recycled(self, failure, old)

    def _close_interp(self) -> None:
        with self._collect_lock:
            interp, self.interp = self.interp, None
        if interp is not None:
            try:
                interp.close()
            except Exception:
                _log.exception("destroying pool interpreter %s failed", interp.id)

    def _stop_results(self) -> None:
        self._exiting = True
        os.eventfd_write(self.signals.done_fd, 1)
        self.results.join()

    def _retire_signals(self) -> None:
        # A caller may still be in `wait_for`, about to read caller_fd: the
        # descriptors close when it leaves, never under it (the number could
        # be reused by another file by then).
        with self._collect_lock:
            self._retired = True
            if self._waiter:
                return
        self.signals.close()

    # -- handing results back -------------------------------------------------

    def _hand_back(self) -> None:
        # One token per result the loop signalled here, and one more when the
        # slot exits; a token may find its result already taken by a waiting
        # caller (see `wait_for`).
        while True:
            os.eventfd_read(self.signals.done_fd)
            try:
                if not self._collect(waiter=False) and self._exiting:
                    return
            except Exception:  # never leave the slot without its results thread
                _log.exception("handing back a result of pool slot %d failed", self.index)

    def _collect(self, *, waiter: bool = True) -> bool:
        """Hand back the result waiting on the outbox, if there is one.

        The results thread leaves it to a waiting caller, which checks the
        outbox after it starts waiting and again after it stops.
        """
        with self._collect_lock:
            interp = self.interp
            if interp is None or (not waiter and self.signals.waiting[0]):
                return False
            try:
                result = interp.take_result()
            except Exception as exc:
                error: BaseException | None = exc
            else:
                if result is None:
                    return False
                error = None
        # Completed outside the lock: a future's callbacks run here and may
        # wait for another task of this slot.
        if error is None:
            assert result is not None
            self.pool.task_succeeded(self, result)
        else:
            self.pool.task_failed(self, error)
        return True

    def wait_for(self, fut: TaskFuture, timeout: float | None) -> None:
        """Wait until `fut` (running here) is done or `timeout` passes, taking results directly.

        One caller at a time waits this way (others wait on the future as
        usual). While `signals.waiting` is set the loop signals `caller_fd`
        rather than the results thread, and the waiter collects: the loop
        reads the flag after putting the result, and the waiter checks the
        outbox after setting or clearing the flag, so every result is seen by
        one of the two.
        """
        end = None if timeout is None else time.monotonic() + timeout
        waiting = self.signals.waiting
        me = threading.get_ident()
        with self._collect_lock:
            if self._retired or fut.done():
                return
            # Nested: a callback run by this waiter's own collect waits for
            # another task here; this thread is already the one that collects.
            nested = self._waiter == me
            if waiting[0] and not nested:
                return
            waiting[0] = 1
            self._waiter = me
        try:
            while True:
                self._collect()
                if fut.done():
                    return
                if end is not None:
                    left = end - time.monotonic()
                    if left <= 0 or not self._caller_poll.poll(math.ceil(left * 1000)):
                        return
                # Only this waiter reads caller_fd, so after poll this does
                # not block. A token may be stale (its result taken already):
                # then the loop just goes round once more.
                os.eventfd_read(self.signals.caller_fd)
        finally:
            if not nested:
                self._stop_waiting()

    def _stop_waiting(self) -> None:
        with self._collect_lock:
            self.signals.waiting[0] = 0
            self._waiter = 0
            retired = self._retired
        if retired:
            self.signals.close()
            return
        # A result the loop signalled to this waiter after it stopped
        # looking (only possible while a task is still running here).
        if self.job is not None:
            self._collect()

    def poke_waiter(self) -> None:
        """Wake the waiting caller after its task was completed some other way."""
        if self.signals.waiting[0] and self._waiter != threading.get_ident():
            with contextlib.suppress(OSError):
                os.eventfd_write(self.signals.caller_fd, 1)


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
