"""The one sub-interpreter API this project runs on: CPython 3.13's `_interpreters`.

3.13 only has the private `_interpreters`/`_interpqueues` modules, whose
`exec` discards return values, so results come back on a queue. 3.14's
`concurrent.interpreters` cannot be tested on the machines this project is
built and checked on, so it is not supported (`ga.SUPPORTED_PYTHON`) rather
than shipped untested.

Every method must be called from the thread that created the interpreter:
3.13 has races when interpreters are created, used and destroyed from
different threads (cpython gh-126914, gh-127041).

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

# The queue ids are ints the pool created, written into the code as literals:
# binding them through a shared namespace would leak (see the module doc).
_BOOTSTRAP = "import _interpreters, _interpqueues\n__th_inbox__, __th_outbox__ = {}, {}\n"


def _run_task_in_main() -> None:  # pragma: no cover - runs inside a pool interpreter
    """The body of every task, run as ``__main__`` code of the pool interpreter.

    `_interpreters.exec` given a function runs its code in the target's
    ``__main__`` without compiling or unmarshalling anything per call: the
    cheapest of the ways it takes code (measured: str > code object > function).
    The names are globals of that ``__main__``, bound once at creation: the
    worker module and the two queues; the task itself waits in the inbox.
    """
    __th_worker__.call_from_queue(__th_inbox__, __th_outbox__)  # type: ignore[name-defined]  # noqa: F821


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


class Interpreter:
    """One isolated interpreter with its own GIL, owned by one thread.

    Built on `_interpreters` + `_interpqueues` (CPython 3.13).
    """

    id: int

    def __init__(self) -> None:
        with _LIFECYCLE_LOCK:
            self.id = _interpreters.create(_interpreters.new_config("isolated"))
        self._queues: list[int] = []
        try:
            # inbox: values for the interpreter; outbox: the results it returns.
            for _ in range(2):
                self._queues.append(
                    _interpqueues.create(0, _QUEUE_FMT_SHAREABLE_ONLY, _QUEUE_UNBOUND_REMOVE)
                )
            self._inbox, self._outbox = self._queues
            self.exec(_BOOTSTRAP.format(self._inbox, self._outbox))
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

    def run_task(self, task: tuple[str, tuple[object, ...]]) -> str:
        _drain(self._outbox)
        self.send(encode_task(task))
        self.exec(_run_task_in_main)
        if _interpqueues.get_count(self._outbox) != 1:
            raise RuntimeError("pool interpreter returned without a result")
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

    def _destroy_interpreter(self) -> None:
        with _LIFECYCLE_LOCK:
            _interpreters.destroy(self.id)


# Extension modules run process-wide initialisation on import (OpenBLAS sets
# its thread count, for one); two interpreters importing at once crashed the
# process, so interpreters are created and warmed one at a time.
_WARMUP_LOCK = threading.Lock()


def _drain(queue: int) -> None:
    while _interpqueues.get_count(queue):
        _interpqueues.get(queue)


def encode_task(task: tuple[str, tuple[object, ...]]) -> bytes:
    """A task as one bytes object, the only kind of value a task sends across.

    CPython 3.13 shares a tuple between interpreters through memory taken
    from the sending interpreter's allocator and released later, and workers
    crashed now and then ("free(): invalid pointer") while tuples and
    memoryviews crossed with every task. marshal keeps str, bytes, int, float,
    None and nested tuples exactly; buffers cross only through `attach`.
    """
    return marshal.dumps(cast(Any, task))


def new_interpreter(path: tuple[str, ...], allowed: tuple[str, ...]) -> Interpreter:
    """Create a warm interpreter: import path copied, worker and task modules loaded."""
    modules = tuple(sorted({name.split(":", 1)[0] for name in allowed}))
    with _WARMUP_LOCK:
        interp = Interpreter()
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
