"""What flows into and out of the run saga: events, commands, and events to append.

Plain frozen dataclasses with no behaviour; `saga` re-exports them, so callers
write `saga.Event`, `saga.StartRun` and so on. An event's data is its type's
frozen model (thunderhelm/schemas/event_data.py), never a bare mapping.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from thunderhelm.schemas.event_data import CandidateCompleted, EventData


@dataclass(frozen=True)
class Event:
    """A lifecycle event as the domain sees it (the envelope minus transport)."""

    id: str
    type: str
    run_id: str
    time: str  # RFC 3339, as written on the log
    data: EventData  # the model of `type`'s data
    causation_id: str | None = None
    at: float = field(kw_only=True)  # `time` in seconds since the epoch


@dataclass(frozen=True)
class StartRun:
    command_id: str
    request: Mapping[str, Any]
    time: str
    traceparent: str | None = None
    # What a warm start takes from its source run (streams/execution/warm_start.py).
    warm_start: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class CancelRun:
    command_id: str
    run_id: str
    reason: str
    time: str


@dataclass(frozen=True)
class RecordOutcome:
    """A worker trained one of the run's candidates (a candidate-tasks task)."""

    command_id: str
    run_id: str
    data: CandidateCompleted  # validated by the edge


@dataclass(frozen=True)
class ContinueRun:
    """Take a run that succeeded on from its last checkpoint for `generations` more."""

    command_id: str
    run_id: str
    generations: int
    budget: Mapping[str, Any] | None  # fields that replace the run's budget's
    time: str


Command = StartRun | CancelRun | RecordOutcome | ContinueRun


@dataclass(frozen=True)
class NewEvent:
    """An event `decide` asks the edge to append (the edge assigns id and time)."""

    type: str
    data: EventData  # the model of `type`'s data
    causation_id: str | None = None
