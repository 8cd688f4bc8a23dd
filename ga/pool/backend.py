"""The one sub-interpreter API this project runs on: CPython 3.13's `_interpreters`.

3.13 only has the private `_interpreters`/`_interpqueues` modules, whose
`exec` discards return values, so results come back on a queue. 3.14's
`concurrent.interpreters` cannot be tested on the machines this project is
built and checked on, so it is not supported (`ga.SUPPORTED_PYTHON`) rather
than shipped untested.

Every method must be called from the thread that created the interpreter:
3.13 has races when interpreters are created, used and destroyed from
different threads (cpython gh-126914, gh-127041).

A pool interpreter is entered once, not per task: its thread runs
`task_runner.serve` inside it (`Interpreter.serve`) and waits there on an
eventfd for commands posted to its inbox. Entering with `_interpreters.exec`
makes and frees a thread state on every call, which cost more than the task
itself (bench pool, `dispatch_parts`). 3.13's `_interpqueues` has no blocking
get, and thread locks cannot cross interpreters, hence the eventfds: plain
file descriptors, shared by the whole process, whose blocking read releases
the waiting interpreter's GIL.

Values reach an interpreter only through its inbox queue, never through a
shared namespace (`exec`'s `shared` dict, `set___main___attrs`): CPython 3.13.0
leaks one 40-byte cross-interpreter data block for every value passed that way
(gh-140306, fixed in later 3.13 releases). Measured: a task and a dataset attach
each crossed that way, a worker grew by about 2 KB per run; queue items are
freed on both sides.
"""

import _interpqueues
import _interpreters
import marshal
import os
import threading
import types
from collections.abc import Callable
from typing import Any, Final, cast

from thunderhelm.ga.pool import task_runner

WORKER_MODULE = task_runner.__name__

# Interpreter creation and destruction are serialised across the whole
# process: 3.13.0 has a known race on a new interpreter's initial thread state
# (gh-126914), and the cost is a few milliseconds only when the pool starts or
# recycles.
_LIFECYCLE_LOCK = threading.Lock()

# The queue ids and file descriptors are ints the pool created, written into
# the code as literals: binding them through a shared namespace would leak
# (see the module doc).
_BOOTSTRAP = (
    "import _interpreters, _interpqueues\n"
    "__th_inbox__, __th_outbox__, __th_wake__, __th_done__, __th_caller__ = {}, {}, {}, {}, {}\n"
)


def _serve_in_main() -> None:  # pragma: no cover - runs inside a pool interpreter
    """The serving loop's entry, run as ``__main__`` code of the pool interpreter.

    The names are globals of that ``__main__``, bound once at creation: the
    worker module, the two queues, the three eventfds and the waiting flag.
    """
    __th_worker__.serve(  # type: ignore[name-defined]  # noqa: F821
        __th_inbox__,  # type: ignore[name-defined]  # noqa: F821
        __th_outbox__,  # type: ignore[name-defined]  # noqa: F821
        __th_wake__,  # type: ignore[name-defined]  # noqa: F821
        __th_done__,  # type: ignore[name-defined]  # noqa: F821
        __th_caller__,  # type: ignore[name-defined]  # noqa: F821
        __th_waiting__,  # type: ignore[name-defined]  # noqa: F821
    )


_QUEUE_FMT_SHAREABLE_ONLY: Final = 0
_QUEUE_UNBOUND_REMOVE: Final = 1


class RemoteError(Exception):
    """An exception raised inside a pool interpreter, as a formatted snapshot.

    The remote exception object itself cannot cross interpreters, so the
    class name, message and formatted traceback travel as text.
    """

    def __init__(self, exc_type: str, message: str, formatted: str, interpreter: int) -> None:
        super().__init__(f"{exc_type}: {message} (in interpreter {interpreter})")
        self.exc_type = exc_type
        self.message = message
        self.formatted = formatted
        self.interpreter = interpreter

    @classmethod
    def from_snapshot(cls, snap: Any, interpreter: int) -> "RemoteError":
        """Build from the snapshot `_interpreters.exec` returns (`type`, `msg`, ...)."""
        kind = getattr(snap, "type", None)
        name = str(getattr(kind, "__qualname__", None) or getattr(kind, "__name__", None) or kind)
        message = str(getattr(snap, "msg", "") or "")
        formatted = str(
            getattr(snap, "errdisplay", None) or getattr(snap, "formatted", None) or message
        )
        return cls(name, message, formatted, interpreter)


class Signals:
    """How a serving loop says a result is on its outbox (a pool slot keeps one across recycles).

    Normally the loop signals `done_fd` (semaphore mode: one token per
    result), read by the slot's results thread. While `waiting` is set, a
    caller is blocked in `TaskFuture.result` on `caller_fd` and takes the
    result itself, which saves the hop through the results thread; the loop
    then signals `caller_fd` instead. `waiting` is one byte shared with the
    interpreter, like a `CancelToken`.
    """

    def __init__(self) -> None:
        self.done_fd = os.eventfd(0, os.EFD_SEMAPHORE | os.EFD_CLOEXEC)
        try:
            self.caller_fd = os.eventfd(0, os.EFD_CLOEXEC)
        except BaseException:
            os.close(self.done_fd)
            raise
        self._waiting = bytearray(1)
        self.waiting = memoryview(self._waiting)

    def close(self) -> None:
        for fd in (self.done_fd, self.caller_fd):
            if fd >= 0:
                os.close(fd)
        self.done_fd = self.caller_fd = -1


class Interpreter:
    """One isolated interpreter with its own GIL, owned by one thread.

    Built on `_interpreters` + `_interpqueues` (CPython 3.13). `signals` are
    how its serving loop reports results; the caller owns them (the pool
    keeps one per slot across recycles). Without them the interpreter makes
    and owns its own.
    """

    id: int

    def __init__(self, signals: Signals | None = None) -> None:
        self._queues: list[int] = []
        self._fds: list[int] = []
        self._own_signals = signals is None
        self.signals = Signals() if signals is None else signals
        try:
            # Semaphore mode: one write per posted command, one read takes
            # one, so a command is read only once all its items are queued.
            self.wake_fd = _eventfd(self._fds)
            with _LIFECYCLE_LOCK:
                self.id = _interpreters.create(_interpreters.new_config("isolated"))
            # inbox: values for the interpreter; outbox: the results it returns.
            for _ in range(2):
                self._queues.append(
                    _interpqueues.create(0, _QUEUE_FMT_SHAREABLE_ONLY, _QUEUE_UNBOUND_REMOVE)
                )
            self._inbox, self._outbox = self._queues
            sig = self.signals
            self.exec(
                _BOOTSTRAP.format(
                    self._inbox, self._outbox, self.wake_fd, sig.done_fd, sig.caller_fd
                )
            )
            # A memoryview crosses only once `_interpreters` is imported there
            # (the bootstrap does), and only through the queue (module doc).
            self.send(sig.waiting)
            self.exec("__th_waiting__ = _interpqueues.get(__th_inbox__)[0]\n")
        except BaseException:
            self.close()
            raise

    def exec(self, code: str | types.CodeType | Callable[[], None]) -> None:
        """Run `code` in the interpreter's ``__main__``; values it needs are `send` first.

        Whatever the code left in the inbox is dropped, so a failed step never
        hands its leftovers to the next one.
        """
        try:
            snap = _interpreters.exec(self.id, code)
        finally:
            _drain(self._inbox)
        if snap is not None:
            raise RemoteError.from_snapshot(snap, self.id)

    def send(self, *values: object) -> None:
        """Queue shareable values for the next `exec`, which takes them in order."""
        for value in values:
            _interpqueues.put(self._inbox, value, _QUEUE_FMT_SHAREABLE_ONLY, _QUEUE_UNBOUND_REMOVE)

    def serve(self) -> RemoteError | None:
        """Run the serving loop in this thread until a `stop` command (None) or a failure.

        A task that raised ends the loop with its exception (returned, not
        raised): the interpreter may be half-updated, so the caller recycles it.
        """
        try:
            self.exec(_serve_in_main)
        except RemoteError as exc:
            return exc
        return None

    def post(self, command: bytes, *views: memoryview) -> None:
        """Queue one command (`task_runner` encodes them) for the serving loop, and wake it.

        The exception to "one thread only": any thread may post (the pool
        serialises posts to one interpreter under its lock), since this only
        touches the process-wide queue and eventfd, not the interpreter.
        """
        _interpqueues.put(self._inbox, command, _QUEUE_FMT_SHAREABLE_ONLY, _QUEUE_UNBOUND_REMOVE)
        if views:
            self.send(*views)
        os.eventfd_write(self.wake_fd, 1)

    def take_result(self) -> str | None:
        """The result the serving loop put on the outbox before signalling `done_fd`, if any."""
        if not _interpqueues.get_count(self._outbox):
            return None
        result, _, _ = _interpqueues.get(self._outbox)
        if not isinstance(result, str):
            raise TypeError(f"pool interpreter returned {type(result).__name__}")
        return result

    def close(self) -> None:
        try:
            if hasattr(self, "id"):
                self._destroy_interpreter()
        finally:
            for queue in self._queues:
                _interpqueues.destroy(queue)
            self._queues.clear()
            for fd in self._fds:
                os.close(fd)
            self._fds.clear()
            if self._own_signals:
                self.signals.close()

    def _destroy_interpreter(self) -> None:
        with _LIFECYCLE_LOCK:
            _interpreters.destroy(self.id)


# Extension modules run process-wide initialisation on import (OpenBLAS sets
# its thread count, for one); two interpreters importing at once crashed the
# process, so interpreters are created and warmed one at a time.
_WARMUP_LOCK = threading.Lock()


def _eventfd(owned: list[int]) -> int:
    fd = os.eventfd(0, os.EFD_SEMAPHORE | os.EFD_CLOEXEC)
    owned.append(fd)
    return fd


def _drain(queue: int) -> None:
    while _interpqueues.get_count(queue):
        _interpqueues.get(queue)


def encode_task(task: tuple[str, tuple[object, ...]]) -> bytes:
    """A task as one command bytes object, the only kind of value a task sends across.

    CPython 3.13 shares a tuple between interpreters through memory taken
    from the sending interpreter's allocator and released later, and workers
    crashed now and then ("free(): invalid pointer") while tuples and
    memoryviews crossed with every task. marshal keeps str, bytes, int, float,
    None and nested tuples exactly; buffers cross only through `attach`.
    """
    return marshal.dumps(cast(Any, (task_runner.TASK, task)))


def encode_attach(key: str, names: tuple[str, ...]) -> bytes:
    """The command that precedes a dataset's views (one queue item per view)."""
    return marshal.dumps((task_runner.ATTACH, key, names))


def encode_detach(key: str) -> bytes:
    return marshal.dumps((task_runner.DETACH, key))


STOP: Final = marshal.dumps((task_runner.STOP,))


def new_interpreter(
    path: tuple[str, ...], allowed: tuple[str, ...], signals: Signals | None = None
) -> Interpreter:
    """Create a warm interpreter: import path copied, worker and task modules loaded."""
    modules = tuple(sorted({name.split(":", 1)[0] for name in allowed}))
    with _WARMUP_LOCK:
        interp = Interpreter(signals)
        try:
            interp.send(marshal.dumps((path, allowed, modules)))
            interp.exec(
                "import sys, importlib, marshal\n"
                "__th_path__, __th_allowed__, __th_modules__ = "
                "marshal.loads(_interpqueues.get(__th_inbox__)[0])\n"
                "sys.path[:] = list(__th_path__)\n"
                f"import {WORKER_MODULE} as __th_worker__\n"
                "__th_worker__.configure(__th_allowed__)\n"
                "for __th_m__ in __th_modules__:\n"
                "    importlib.import_module(__th_m__)\n"
                "del __th_path__, __th_allowed__, __th_modules__\n"
            )
        except BaseException:
            interp.close()
            raise
    return interp
