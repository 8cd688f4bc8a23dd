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
"""

import _interpqueues
import contextlib
import importlib
import marshal
from collections.abc import Callable

DATASET_REF_TAG = "@dataset"

_allowed: frozenset[str] = frozenset()
_functions: dict[str, Callable[..., object]] = {}
_datasets: dict[str, dict[str, memoryview]] = {}


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


def attach_from_queue(queue_id: int) -> None:
    """Keep the shared buffers of one dataset under its key (no copy is made).

    The pool sends the key, the marshalled tuple of buffer names, then one
    memoryview per name, in that order.
    """
    key = receive(queue_id)
    names = receive(queue_id)
    if not isinstance(key, str) or not isinstance(names, bytes):
        raise TypeError("a dataset attach starts with its key and its marshalled names")
    found: dict[str, memoryview] = {}
    for name in marshal.loads(names):
        view = receive(queue_id)
        if not isinstance(view, memoryview):
            raise TypeError(f"dataset buffer {name!r} did not arrive as a memoryview")
        found[name] = view
    detach(key)
    _datasets[key] = found


def detach_from_queue(queue_id: int) -> None:
    """Drop the dataset whose key the pool sent."""
    key = receive(queue_id)
    if not isinstance(key, str):
        raise TypeError("a dataset detach takes its key")
    detach(key)


def detach(key: str) -> None:
    """Drop this interpreter's references to a dataset's buffers."""
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
            raise LookupError(f"dataset buffer {key!r}/{name!r} is not attached here") from None
    return arg


def call(task: "bytes | tuple[str, tuple[object, ...]]") -> str:
    """Run one task (marshalled, or as a tuple in-process) and return its str result."""
    func_name, args = _decode(task)
    result = _lookup(func_name)(*(_resolve(a) for a in args))
    if not isinstance(result, str):
        raise TypeError(f"{func_name} returned {type(result).__name__}, expected str")
    return result


def call_from_queue(inbox: int, outbox: int) -> None:
    """Run the task waiting in `inbox` and put its result on `outbox` (3.13 path).

    On 3.13 `_interpreters.exec` discards return values, so the result travels
    back through an `_interpqueues` queue owned by the worker thread. The put is
    the last statement: a task that raised leaves the outbox empty.
    """
    task = receive(inbox)
    if not isinstance(task, bytes):
        raise TypeError("a task arrives marshalled, as bytes")
    result = call(task)
    _interpqueues.put(outbox, result, 0, 1)
