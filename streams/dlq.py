"""The dead-letter record: the one place that shapes what a failed input becomes.

The value and key are the original bytes, unchanged; the original headers are
kept (order and duplicates included) and `dlq.*` headers explain the failure.
Whether a failure is retryable is data on the failure, decided where it is
classified (`classify`), never by scattered try/except blocks.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import ValidationError

from schemas.codec import DecodeError, EnvelopeError

Stage = str  # decode | validate | decide | execute | produce

HEADER_PREFIX = "dlq."


@dataclass(frozen=True)
class Failure:
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
        case ConnectionError() | TimeoutError():
            return Failure(stage, type(exc).__name__, message, retryable=True)
        case _:
            return Failure(stage, type(exc).__name__, message)


@dataclass(frozen=True)
class Origin:
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


def _int(raw: bytes, default: int) -> int:
    try:
        return int(raw.decode())
    except (UnicodeDecodeError, ValueError):
        return default
