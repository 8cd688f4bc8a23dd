"""Reading a consumed record: its headers, lag and span, and the domain event it carries."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry.trace import Span

from thunderhelm.streams.observability import metrics as meters
from thunderhelm.streams.observability import telemetry


def pairs(headers: Any) -> list[tuple[str, bytes]]:
    """A Faust message's headers (a list of pairs or a mapping) as a list of pairs."""
    items = headers.items() if isinstance(headers, Mapping) else (headers or [])
    return [(str(k), v if isinstance(v, bytes) else str(v).encode()) for k, v in items]


def observe_lag(app: Any, message: Any) -> None:
    """Consumer lag of the record's partition as of this record (a metric only)."""
    if getattr(message, "lag_observed", False):
        return  # read outside Faust, whose reader reported it
    try:
        high = app.consumer.highwater(message.tp)
    except Exception:  # no consumer yet, or no fetch seen: nothing to report
        return
    if high is not None:
        meters.consumer_lag(message.topic, message.partition, high - message.offset - 1)


def waited(message: Any) -> float:
    """Seconds from the record's CreateTime (its producer's clock) until now; 0: unknown."""
    stamp = getattr(message, "timestamp", None)
    if not isinstance(stamp, int | float) or stamp <= 0:
        return 0.0
    return max(0.0, time.time() - float(stamp))


@contextmanager
def consumed(app: Any, message: Any, headers: Mapping[str, Any]) -> Iterator[Span]:
    """The CONSUMER span of one record an agent handles, its lag reported first."""
    observe_lag(app, message)
    with telemetry.consume_span(
        message.topic, message.partition, message.offset, message.key, headers
    ) as span:
        yield span
