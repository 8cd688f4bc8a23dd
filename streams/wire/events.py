"""Lifecycle events on the wire: a record read as a saga event, a saga event written as a record.

`to_domain` reads a run-events CloudEvent into the saga's `Event` (type,
schema version and data checked, its time also as seconds since the epoch);
`event_envelope` and `result_envelope` make the CloudEvents the worker and
`thunderhelm run` write (data validated by the event and result models).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from thunderhelm.schemas import events as ev
from thunderhelm.schemas.codec import describe_validation_error
from thunderhelm.schemas.envelope import (
    JSON_CONTENT_TYPE,
    SCHEMA_VERSION,
    CloudEvent,
    format_sequence,
    utc_now_iso,
)
from thunderhelm.schemas.event_data import EventData, event_data, wire_data
from thunderhelm.schemas.results import RUN_RESULT, validated_result
from thunderhelm.streams.domain import saga
from thunderhelm.streams.wire.failures import InputRejected

SOURCE = f"thunderhelm/worker/{socket.gethostname()}/{os.getpid()}"


def envelope(
    run_id: str, event_type: str, data: Mapping[str, Any], sequence: int | None, cause: str | None
) -> CloudEvent:
    return CloudEvent(
        specversion="1.0",
        id=str(uuid.uuid4()),
        source=SOURCE,
        type=event_type,
        subject=run_id,
        time=utc_now_iso(),
        datacontenttype=JSON_CONTENT_TYPE,
        data=dict(data),
        sequence=None if sequence is None else format_sequence(sequence),
        schemaversion=SCHEMA_VERSION,
        causationid=cause,
        correlationid=run_id,
    )


def event_envelope(run_id: str, new: saga.NewEvent, sequence: int | None) -> CloudEvent:
    """The envelope of a lifecycle event (its data: the model of its type's data)."""
    return envelope(run_id, new.type, wire_data(new.type, new.data), sequence, new.causation_id)


def result_envelope(state: saga.RunState) -> CloudEvent:
    """The run's one record on run-results; raises `ValidationError` on a malformed result."""
    assert state.result is not None, "only a finished run has a result"
    data = validated_result(state.result)
    # One id per run's result, so a consumer can drop a copy written again
    # after a crash between the write and the bookkeeping that follows it.
    record = envelope(state.run_id, RUN_RESULT, data, state.version, None)
    revision = int(data.get("revision", 1))
    suffix = "" if revision == 1 else f"/{revision}"
    return record.model_copy(update={"id": f"{state.run_id}/result{suffix}"})


def to_domain(record: CloudEvent) -> saga.Event:
    """The lifecycle event a run-events record carries, its data validated by type."""
    if record.type not in ev.EVENT_TYPES:
        raise InputRejected("validate", f"unknown event type {record.type!r}")
    if record.schemaversion not in (None, SCHEMA_VERSION):
        raise InputRejected("validate", f"unsupported schema version {record.schemaversion!r}")
    if not isinstance(record.data, dict):
        raise InputRejected("validate", "event data is not an object")
    try:
        data = event_data(record.type, record.data)
    except ValidationError as exc:
        reasons = "; ".join(describe_validation_error(exc))
        raise InputRejected("validate", f"{record.type}: {reasons}") from None
    run_id = data.run_id or record.subject
    if not isinstance(run_id, str) or not run_id:
        raise InputRejected("validate", "event has no run id")
    return _domain(record, run_id, data)


def as_written(record: CloudEvent, new: saga.NewEvent) -> saga.Event:
    """The domain event of the envelope `event_envelope` made of `new`."""
    assert record.subject is not None
    return _domain(record, record.subject, new.data)


def _domain(record: CloudEvent, run_id: str, data: EventData) -> saga.Event:
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
