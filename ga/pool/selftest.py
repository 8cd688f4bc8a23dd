"""Stdlib-only task functions for checking and measuring the interpreter pool.

They exercise what the pool promises — dispatch, failure isolation, shared
buffers, cooperative cancellation, parallelism — without depending on the
training kernel. A pool only runs them when they are put on its allowlist.
"""

import _interpreters
import json
import time

_state: list[str] = []


def interpreter_id() -> str:
    """The id of the interpreter running this call."""
    return str(_interpreters.get_current()[0])


def echo(value: str) -> str:
    return value


def spin(n: int) -> str:
    """A pure-Python CPU-bound loop; returns its checksum."""
    total = 0
    for i in range(n):
        total = (total + i * i) % 1_000_003
    return str(total)


def fail(message: str) -> str:
    raise ValueError(message)


def not_a_str() -> str:
    return 42  # type: ignore[return-value]  # deliberately breaks the str contract


def remember(value: str) -> str:
    """Keep module state, so a test can see that a recycled interpreter starts clean."""
    _state.append(value)
    return json.dumps(_state)


def buffer_sum(view: memoryview) -> str:
    return str(sum(view.cast("B")))


def rendezvous(view: memoryview, index: int, timeout_s: float) -> str:
    """Mark `view[index]`, then wait until every byte of `view` is marked.

    Succeeds only if all participants run at the same time in interpreters
    that see one and the same buffer.
    """
    view[index] = 1
    end = time.monotonic() + timeout_s
    while not all(view):
        if time.monotonic() > end:
            raise TimeoutError(f"rendezvous timed out: {bytes(view)!r}")
        time.sleep(0.0005)
    return json.dumps({"interpreter": _interpreters.get_current()[0], "index": index})


def wait_for_cancel(cancel: memoryview, deadline: float) -> str:
    """Poll a cancel flag and a `time.time()` deadline, as the training loop does."""
    while True:
        if cancel[0]:
            return json.dumps({"status": "cancelled"})
        if time.time() >= deadline:
            return json.dumps({"status": "timeout"})
        time.sleep(0.001)


def gil_rendezvous(view: memoryview, index: int, timeout_s: float) -> str:
    """Mark `view[index]`, then busy-wait in pure Python until every byte is marked.

    Unlike `rendezvous` it never sleeps or blocks, so it never gives up the GIL
    voluntarily: two of these meet only when they run under two GILs (or when a
    shared GIL is handed over by the switch interval, which a test can set high).
    """
    view[index] = 1
    end = time.monotonic() + timeout_s
    while not all(view):
        if time.monotonic() > end:
            raise TimeoutError(f"GIL rendezvous timed out: {bytes(view)!r}")
    return json.dumps({"interpreter": _interpreters.get_current()[0], "index": index})


def kernel_net_type() -> str:
    """The identity and heap-type flag of the kernel's `Net` as this interpreter sees it."""
    from thunderhelm.ga.training import _kernel

    heap_type = 1 << 9  # Py_TPFLAGS_HEAPTYPE
    net = _kernel.Net
    return json.dumps({"id": id(net), "heap": bool(net.__flags__ & heap_type)})


def hammer_kernel(rounds: int) -> str:
    """Read a kernel object's methods and properties in a tight loop.

    Every lookup takes and drops references to the descriptors in the type's
    `__dict__`; with a process-global (static) type two interpreters did so
    without a shared lock and freed them with the wrong allocator.
    """
    from thunderhelm.ga.training import _kernel

    net = _kernel.Net(2, 2, ((0,),), (4,), (0,), (1,), 8)
    total = 0
    for _ in range(rounds):
        total += net.n_params + net.max_rows
        _ = net.get_params, net.set_params, net.evaluate, net.train_epoch
        total += len(net.get_params())
    return str(total)
