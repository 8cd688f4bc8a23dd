"""The task runner that lives inside every pool interpreter.

`interpreter_pool` keeps a warm isolated sub-interpreter per worker thread; this module
is what those interpreters import. It must stay stdlib-only (numpy and most
third-party extensions refuse to load in an isolated interpreter) and small,
because every warm interpreter pays for what it imports.

Work arrives as plain data — ``("module:function", args)`` — and the function
is looked up here against the allowlist the pool installed at start-up, so an
interpreter never runs anything the main interpreter did not allow, even if a
caller bypassed the pool's own check. Arguments of the form
``("@dataset", key, name)`` are replaced by the buffer attached under that
key, which is how datasets cross once per interpreter instead of per task.

The interpreter's thread stays in `serve`, taking commands from its inbox
one at a time: a task, a dataset attach or detach, or stop.
"""

import _interpqueues
import contextlib
import importlib
import marshal
import os
import time
from collections.abc import Callable

DATASET_REF_TAG = "@dataset"

# Command kinds: the first item of every marshalled command `serve` reads.
TASK = "task"
ATTACH = "attach"
DETACH = "detach"
STOP = "stop"

# How long the loop waits, spinning, for a caller to start waiting for a
# result before it hands it to the results thread: a few thread wake-ups.
HANDOVER_S = 50e-6

_allowed: frozenset[str] = frozenset()
_functions: dict[str, Callable[..., object]] = {}
_datasets: dict[str, dict[str, memoryview]] = {}
# Why an attach failed, kept for the task that looks the dataset up.
_attach_errors: dict[str, str] = {}


def configure(allowed: tuple[str, ...]) -> None:
    """Install the allowlist; called once when the interpreter is created."""
    global _allowed
    _allowed = frozenset(allowed)
    _functions.clear()


def receive(queue_id: int) -> object:
    """The next value the pool sent to this interpreter (`Interpreter.send`)."""
    if not _interpqueues.get_count(queue_id):
        raise LookupError("the pool sent nothing for this step")
    return _interpqueues.get(queue_id)[0]


def serve(
    inbox: int, outbox: int, wake_fd: int, done_fd: int, caller_fd: int, waiting: memoryview
) -> None:
    """Run the commands posted to `inbox` until told to stop (3.13 path).

    One read of the semaphore eventfd `wake_fd` per command: the pool writes
    it after the command's last item is queued. A task's str result goes on
    `outbox`, then `caller_fd` is signalled if a caller waits for it
    (`waiting[0]`, read after the put), else `done_fd`. A task that raises
    ends the loop with its exception (nothing put on the outbox), so the
    pool recycles this interpreter.
    """
    while True:
        os.eventfd_read(wake_fd)
        # The token is written after the command's items are queued.
        command = _interpqueues.get(inbox)[0]
        if not isinstance(command, bytes):
            raise TypeError("a command arrives marshalled, as bytes")
        decoded = marshal.loads(command)
        kind = decoded[0]
        if kind == TASK:
            _interpqueues.put(outbox, call(decoded[1]), 0, 1)
            if not waiting[0]:
                # The caller that submitted a short task is usually about to
                # wait for it: a moment's grace lets it take the result itself
                # instead of being woken through the results thread.
                # Yielding, not spinning: the caller may be waiting for
                # this very CPU (its wake-up of this thread can preempt it).
                end = time.perf_counter() + HANDOVER_S
                while not waiting[0] and time.perf_counter() < end:
                    os.sched_yield()
            if _interpqueues.get_count(outbox):  # else a waiting caller took it already
                os.eventfd_write(caller_fd if waiting[0] else done_fd, 1)
        elif kind == ATTACH:
            _, key, names = decoded
            views = [receive(inbox) for _ in names]
            attach(key, names, views)
        elif kind == DETACH:
            detach(decoded[1])
        elif kind == STOP:
            return
        else:
            raise ValueError(f"unknown pool command {kind!r}")


def attach(key: str, names: tuple[str, ...], views: list[object]) -> None:
    """Keep the shared buffers of one dataset under its key (no copy is made).

    A bad attach does not end the loop: the task that needs the dataset
    fails instead (and its interpreter is recycled, which retries the attach).
    """
    detach(key)
    found: dict[str, memoryview] = {}
    for name, view in zip(names, views, strict=True):
        if not isinstance(view, memoryview):
            _attach_errors[key] = f"dataset buffer {name!r} did not arrive as a memoryview"
            return
        found[name] = view
    _datasets[key] = found


def detach(key: str) -> None:
    """Drop this interpreter's references to a dataset's buffers."""
    _attach_errors.pop(key, None)
    views = _datasets.pop(key, None)
    if views is not None:
        # Releasing promptly lets the owning interpreter free the memory
        # without waiting for this interpreter's garbage collector.
        for view in views.values():
            with contextlib.suppress(BufferError):  # a task kept an export of it
                view.release()


def _lookup(func_name: str) -> Callable[..., object]:
    fn = _functions.get(func_name)
    if fn is not None:
        return fn
    if func_name not in _allowed:
        raise PermissionError(f"function {func_name!r} is not on the pool allowlist")
    module_name, _, attr = func_name.partition(":")
    found: object = getattr(importlib.import_module(module_name), attr)
    if not callable(found):
        raise TypeError(f"{func_name!r} is not callable")
    _functions[func_name] = found
    return found


def _decode(task: "bytes | tuple[str, tuple[object, ...]]") -> tuple[str, tuple[object, ...]]:
    decoded = marshal.loads(task) if isinstance(task, bytes) else task
    if not (isinstance(decoded, tuple) and len(decoded) == 2):
        raise TypeError("a task is a (function, arguments) pair")
    func_name, args = decoded
    if not isinstance(func_name, str) or not isinstance(args, tuple):
        raise TypeError("a task is a (function, arguments) pair")
    return func_name, args


def _resolve(arg: object) -> object:
    if isinstance(arg, tuple) and len(arg) == 3 and arg[0] == DATASET_REF_TAG:
        _, key, name = arg
        try:
            return _datasets[key][name]
        except KeyError:
            why = _attach_errors.get(key, "not attached here")
            raise LookupError(f"dataset buffer {key!r}/{name!r}: {why}") from None
    return arg


def call(task: "bytes | tuple[str, tuple[object, ...]]") -> str:
    """Run one task (marshalled, or as a tuple in-process) and return its str result."""
    func_name, args = _decode(task)
    result = _lookup(func_name)(*[_resolve(a) for a in args])
    if not isinstance(result, str):
        raise TypeError(f"{func_name} returned {type(result).__name__}, expected str")
    return result
