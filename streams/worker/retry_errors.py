"""Which step failures are transient, decided by the libraries' own error classes.

aiokafka marks each of its errors `retriable` (a leader election, a node not
ready, a request timed out) or not (a record too large, an authorization
failure); its connection and client-side timeout errors, the standard
library's connection and timeout errors, and a pool whose interpreter died
are transient too. Anything else is a bug or a bad request and fails the run.
The domain's retry policy (streams/domain/retry.py) takes this as its classifier.
"""

from __future__ import annotations

from aiokafka import errors as kafka_errors

from thunderhelm.ga.pool.interpreter_pool import PoolBrokenError, RemoteError

TRANSIENT: tuple[type[BaseException], ...] = (
    ConnectionError,  # refused, reset, aborted, broken pipe
    TimeoutError,  # asyncio's too
    kafka_errors.KafkaConnectionError,
    kafka_errors.KafkaTimeoutError,  # a client-side timeout; aiokafka leaves it unflagged
    PoolBrokenError,  # an interpreter died; the pool starts another
    RemoteError,  # raised inside an interpreter (e.g. out of memory); a fresh try may pass
)


def is_retryable(error: BaseException) -> bool:
    """True for a transient failure, looking through explicit `raise ... from` causes."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, kafka_errors.KafkaError) and current.retriable:
            return True
        if isinstance(current, TRANSIENT):
            return True
        current = current.__cause__
    return False
