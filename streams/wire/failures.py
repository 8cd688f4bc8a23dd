"""Why an input or a step failed: the dead-letter reason, its headers, and whether to retry.

`classify` turns an exception into a `Failure` (stage, class, message,
retryable); `dead_letter_headers` and `original_headers` are the `dlq.*`
headers of docs/contract.md and their inverse. Whether a failure is
transient is one answer for everyone (`is_retryable`): aiokafka marks each of
its errors `retriable` (a leader election, a node not ready, a request timed
out) or not (a record too large, an authorization failure); its connection
and client-side timeout errors, the standard library's connection and
timeout errors, and a pool whose interpreter died are transient too. Anything
else is a bug or a bad request. The domain's retry policy
(streams/domain/retry.py) takes `is_retryable` as its classifier, and a dead
letter's `dlq.retryable` says the same.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import NamedTuple

from aiokafka import errors as kafka_errors
from pydantic import ValidationError

from thunderhelm.ga.pool.interpreter_pool import PoolBrokenError, RemoteError
from thunderhelm.schemas.codec import DecodeError, EnvelopeError
from thunderhelm.schemas.event_data import DeadLetterStage

type Stage = DeadLetterStage  # decode | validate | decide | execute | produce

HEADER_PREFIX = "dlq."


class Failure(NamedTuple):  # a tuple: one is made per bad record, on the hot path
    stage: Stage
    error_class: str
    message: str
    retryable: bool = False


class InputRejected(Exception):
    """A record that can never be processed as it is (not retryable)."""

    def __init__(self, stage: Stage, message: str) -> None:
        super().__init__(message)
        self.stage = stage


def classify(exc: BaseException, stage: Stage) -> Failure:
    """Map an exception raised while handling a record to a dead-letter reason."""
    message = str(exc)[:2000] or type(exc).__name__
    match exc:
        case InputRejected():
            return Failure(exc.stage, type(exc).__name__, message)
        case DecodeError():
            return Failure("decode", type(exc).__name__, message)
        case EnvelopeError() | ValidationError():
            return Failure("validate", type(exc).__name__, message)
        case _:
            # The same answer the step retries go by.
            return Failure(stage, type(exc).__name__, message, retryable=is_retryable(exc))


class Origin(NamedTuple):
    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None


def dead_letter_headers(
    original: Sequence[tuple[str, bytes]],
    failure: Failure,
    origin: Origin,
    trace_headers: dict[str, bytes],
    *,
    now: float | None = None,
) -> list[tuple[str, bytes]]:
    """Original headers, then the `dlq.*` explanation, then our trace context.

    An original `traceparent` is kept as `dlq.original.traceparent` so the
    record carries exactly one `traceparent`: the dead-letter span's.
    """
    attempt = 1
    first_failure = None
    kept: list[tuple[str, bytes]] = []
    for name, value in original:
        if name == "dlq.attempt":
            attempt = _int(value, 0) + 1
        elif name == "dlq.first.failure.time":
            first_failure = value
        if name.startswith(HEADER_PREFIX):
            continue  # a re-driven record gets fresh dlq.* headers
        if name in ("traceparent", "tracestate"):
            kept.append((f"dlq.original.{name}", value))
            continue
        kept.append((name, value))
    stamp = str(int((time.time() if now is None else now) * 1000)).encode()
    dlq = [
        ("dlq.error.class", failure.error_class.encode()),
        ("dlq.error.message", failure.message.encode("utf-8", "replace")),
        ("dlq.stage", failure.stage.encode()),
        ("dlq.retryable", b"true" if failure.retryable else b"false"),
        ("dlq.original.topic", origin.topic.encode()),
        ("dlq.original.partition", str(origin.partition).encode()),
        ("dlq.original.offset", str(origin.offset).encode()),
        ("dlq.original.timestamp", str(origin.timestamp_ms or "").encode()),
        ("dlq.attempt", str(attempt).encode()),
        ("dlq.first.failure.time", first_failure or stamp),
        ("dlq.time", stamp),
    ]
    return kept + dlq + list(trace_headers.items())


def original_headers(headers: Sequence[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """The input's headers as they were: the inverse of `dead_letter_headers`.

    Drops every `dlq.*` header and the dead-letter span's trace context, and
    restores `dlq.original.traceparent`/`tracestate` to their own names.
    """
    out: list[tuple[str, bytes]] = []
    for name, value in headers:
        if name in ("dlq.original.traceparent", "dlq.original.tracestate"):
            out.append((name.removeprefix("dlq.original."), value))
        elif not name.startswith(HEADER_PREFIX) and name not in ("traceparent", "tracestate"):
            out.append((name, value))
    return out


def _int(raw: bytes, default: int) -> int:
    try:
        return int(raw.decode())
    except (UnicodeDecodeError, ValueError):
        return default


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
