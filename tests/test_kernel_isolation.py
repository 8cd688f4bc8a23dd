"""The compiled kernel holds no process-global Python object, so interpreters cannot share one.

Why these tests exist: a Cython ``cdef class`` built without
``CYTHON_USE_TYPE_SPECS`` is one static ``PyTypeObject`` for the whole
process. Interpreters with their own GILs then reference-count the
descriptors in its ``__dict__`` without a common lock and free them with the
wrong allocator; the worker died with SIGSEGV after some hundreds of runs.
These tests pin the fix: ``Net`` is a heap type, every interpreter has its own
``Net`` type object, and two interpreters hammering a ``Net`` survive (in a
child process, so a crash fails the test instead of killing pytest).
"""

import json
import os
import subprocess
import sys

import pytest

from thunderhelm.ga.pool.interpreter_pool import InterpreterPool

_kernel = pytest.importorskip("thunderhelm.ga.training._kernel")

NET_TYPE = "thunderhelm.ga.pool.selftest:kernel_net_type"
HAMMER = "thunderhelm.ga.pool.selftest:hammer_kernel"
HEAP_TYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE


def test_net_is_a_heap_type() -> None:
    assert _kernel.Net.__flags__ & HEAP_TYPE, "thunderhelm.ga.training._kernel.Net is a static type"


def test_every_interpreter_has_its_own_net_type() -> None:
    seen: dict[int, dict[str, object]] = {}
    with InterpreterPool(2, allowed=[NET_TYPE]) as pool:
        for _ in range(50):
            if len(seen) == 2:
                break
            futures = [pool.submit(NET_TYPE) for _ in range(4)]
            for fut in futures:
                info = json.loads(fut.result(timeout=60))
                assert fut.info is not None and fut.info.interpreter is not None
                seen[fut.info.interpreter] = info
    assert len(seen) == 2, "both pool interpreters should have answered"
    ids = {int(str(info["id"])) for info in seen.values()}
    assert all(info["heap"] for info in seen.values())
    assert len(ids) == 2 and id(_kernel.Net) not in ids, "interpreters share one Net type object"


_HAMMER_SCRIPT = """
import sys
from thunderhelm.ga.pool.interpreter_pool import InterpreterPool

with InterpreterPool(2, allowed=[{hammer!r}]) as pool:
    futures = [pool.submit({hammer!r}, ({rounds},)) for _ in range({tasks})]
    results = {{f.result(timeout=600) for f in futures}}
    interpreters = {{f.info.interpreter for f in futures if f.info is not None}}
assert len(results) == 1, results
assert len(interpreters) == 2, interpreters
print("survived", len(futures), "tasks on", len(interpreters), "interpreters")
"""


@pytest.mark.slow
def test_two_interpreters_hammering_a_net_survive() -> None:
    # On the static-type build this child died within a few seconds
    # (SIGSEGV or "free(): invalid pointer").
    script = _HAMMER_SCRIPT.format(hammer=HAMMER, rounds=200_000, tasks=8)
    proc = subprocess.run(
        [sys.executable, "-X", "faulthandler", "-c", script],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
    )
    assert proc.returncode == 0, (
        f"two interpreters hammering Net: exit {proc.returncode}\n{proc.stderr[-3000:]}"
    )
    assert "survived 8 tasks on 2 interpreters" in proc.stdout
