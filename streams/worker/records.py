"""Reading a consumed record: its headers, lag and span, and the domain event it carries."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from opentelemetry.trace import Span
from pydantic import ValidationError

from thunderhelm.schemas import events as ev
from thunderhelm.schemas.codec import describe_validation_error
from thunderhelm.schemas.envelope import SCHEMA_VERSION, CloudEvent, utc_now_iso
from thunderhelm.schemas.event_data import validated_data
from thunderhelm.streams.domain import saga
from thunderhelm.streams.observability import metrics as meters
from thunderhelm.streams.observability import telemetry
from thunderhelm.streams.worker.dead_letters import InputRejected


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


def to_domain(record: CloudEvent) -> saga.Event:
    """The lifecycle event a run-events record carries, its data validated by type."""
    if record.type not in ev.EVENT_TYPES:
        raise InputRejected("validate", f"unknown event type {record.type!r}")
    if record.schemaversion not in (None, SCHEMA_VERSION):
        raise InputRejected("validate", f"unsupported schema version {record.schemaversion!r}")
    if not isinstance(record.data, dict):
        raise InputRejected("validate", "event data is not an object")
    try:
        data = validated_data(record.type, record.data)
    except ValidationError as exc:
        reasons = "; ".join(describe_validation_error(exc))
        raise InputRejected("validate", f"{record.type}: {reasons}") from None
    run_id = data.get("run_id") or record.subject
    if not isinstance(run_id, str) or not run_id:
        raise InputRejected("validate", "event has no run id")
    time = record.time or utc_now_iso()
    return saga.Event(
        id=record.id,
        type=record.type,
        run_id=run_id,
        time=time,
        data=data,
        causation_id=record.causationid,
        at=epoch_seconds(time),
    )


def epoch_seconds(time: str) -> float:
    """An event's RFC 3339 time as seconds since the epoch (no offset: UTC)."""
    try:
        parsed = datetime.fromisoformat(time)
    except ValueError:
        raise InputRejected("validate", f"event time {time[:64]!r} is not RFC 3339") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()
