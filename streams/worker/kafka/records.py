"""Reading a consumed record: its headers, lag and span, and the domain event it carries."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Protocol

from opentelemetry.trace import Span

from thunderhelm.streams.observability import metrics as meters
from thunderhelm.streams.observability import telemetry
from thunderhelm.streams.worker.dead_letters.acks import AckableMessage
from thunderhelm.streams.worker.kafka.app_seam import WorkerApp


class Consumed(telemetry.ConsumedRecord, AckableMessage, Protocol):
    """A consumed record as the handlers read it: a Faust message or a `CommandMessage`
    (where it is, as spans name it, and its references, as acks count them)."""

    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Any: ...  # pairs, or a mapping (Faust gives either)
    @property
    def timestamp(self) -> float | None: ...  # CreateTime in seconds


class Command(Consumed, Protocol):
    """A run-commands record: one the reader read again since is not to be decided."""

    def superseded(self) -> bool: ...


class Delivery[M: Consumed](Protocol):
    """An input in hand, a Faust event or a `CommandEvent`: acked once handled."""

    @property
    def message(self) -> M: ...
    @property
    def headers(self) -> Mapping[str, bytes] | None: ...
    def ack(self) -> bool: ...


def pairs(headers: Any) -> list[tuple[str, bytes]]:
    """A Faust message's headers (a list of pairs or a mapping) as a list of pairs."""
    items = headers.items() if isinstance(headers, Mapping) else (headers or [])
    return [(str(k), v if isinstance(v, bytes) else str(v).encode()) for k, v in items]


def observe_lag(app: WorkerApp, message: Consumed) -> None:
    """Consumer lag of the record's partition as of this record (a metric only)."""
    if app.consumer is None:
        return
    try:
        high = app.consumer.highwater(message.tp)
    except Exception:  # no consumer yet, or no fetch seen: nothing to report
        return
    if high is not None:
        meters.consumer_lag(message.topic, message.partition, high - message.offset - 1)


def waited(message: Consumed) -> float:
    """Seconds from the record's CreateTime (its producer's clock) until now; 0: unknown."""
    stamp = message.timestamp
    if not isinstance(stamp, int | float) or stamp <= 0:
        return 0.0
    return max(0.0, time.time() - float(stamp))


@contextmanager
def consumed(
    app: WorkerApp, message: Consumed, headers: Mapping[str, Any], *, lag_reported: bool = False
) -> Iterator[Span]:
    """The CONSUMER span of one record an agent handles, its lag reported first
    (unless its reader reports lag itself: `lag_reported`)."""
    if not lag_reported:
        observe_lag(app, message)
    with telemetry.consume_span(
        message.topic, message.partition, message.offset, message.key, headers
    ) as span:
        yield span
