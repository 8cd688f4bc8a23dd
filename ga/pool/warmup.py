"""A pool task that brings every interpreter to its working state at once.

Runs inside pool interpreters, so it is stdlib-only. Each interpreter imports
the training module (and with it the compiled kernel) and then waits at a
rendezvous on one shared buffer, which only completes when every interpreter
of the pool runs it at the same time: afterwards each one is known to be warm,
which a stream of ordinary tasks cannot promise (an idle interpreter may
never be picked).
"""

import importlib

from thunderhelm.ga.pool import selftest

FUNCTION = "thunderhelm.ga.pool.warmup:warm"


def warm(view: memoryview, index: int, timeout_s: float) -> str:
    importlib.import_module("thunderhelm.ga.training.candidate")
    return selftest.rendezvous(view, index, timeout_s)
