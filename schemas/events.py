"""Lifecycle event types written to `thunderhelm.run-events`.

The event log is the source of truth: a run's state is a fold over these.
Payloads stay plain JSON objects so the pure saga can hold them without
pydantic; `EVENT_DATA_REQUIRED` names the keys each type must carry, and the
fold rejects an event that lacks them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from thunderhelm.schemas.results import RunResult

RUN_ACCEPTED = "thunderhelm.run.accepted"
RUN_REJECTED = "thunderhelm.run.rejected"
RUN_STARTED = "thunderhelm.run.started"
GENERATION_COMPLETED = "thunderhelm.run.generation-completed"
RUN_SUCCEEDED = "thunderhelm.run.succeeded"
RUN_FAILED = "thunderhelm.run.failed"
RUN_CANCELLED = "thunderhelm.run.cancelled"
CANCEL_RECORDED = "thunderhelm.run.cancel-recorded"
EVENT_DEAD_LETTERED = "thunderhelm.event.dead-lettered"

TERMINAL_TYPES = frozenset({RUN_SUCCEEDED, RUN_FAILED, RUN_CANCELLED})

EVENT_DATA_REQUIRED: dict[str, frozenset[str]] = {
    RUN_ACCEPTED: frozenset({"run_id", "request"}),
    RUN_REJECTED: frozenset({"run_id", "reasons"}),
    RUN_STARTED: frozenset({"run_id", "ga_state"}),
    GENERATION_COMPLETED: frozenset(
        {"run_id", "generation", "fitnesses", "candidates", "ga_state", "evaluations"}
    ),
    RUN_SUCCEEDED: frozenset({"run_id", "result"}),
    RUN_FAILED: frozenset({"run_id", "result"}),
    RUN_CANCELLED: frozenset({"run_id", "result"}),
    CANCEL_RECORDED: frozenset({"run_id", "reason"}),
    EVENT_DEAD_LETTERED: frozenset({"stage", "error_class", "error_message"}),
}

EVENT_TYPES = frozenset(EVENT_DATA_REQUIRED)


# The shape of each type's `data`, the source of the JSON Schemas in
# schemas/json/. Fields they do not name are allowed: a newer writer may add one.


class _EventData(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow")

    run_id: str = Field(min_length=1)


class RunAccepted(_EventData):
    request: dict[str, Any]
    traceparent: str | None = None


class RunRejected(_EventData):
    reasons: list[str]


class RunStarted(_EventData):
    ga_state: dict[str, Any] = Field(description="generation 0 population")


class GenerationCompleted(_EventData):
    generation: int = Field(ge=0)
    fitnesses: list[float | None]
    candidates: list[dict[str, Any]]
    evaluations: int = Field(ge=0)
    ga_state: dict[str, Any] = Field(description="the checkpoint of the next generation")
    best: dict[str, Any] | None = None
    best_fitness: float | None = None
    mean_fitness: float | None = None
    duration_s: float | None = None
    training: dict[str, Any] | None = None


class RunEnded(_EventData):
    """`run.succeeded`, `run.failed` and `run.cancelled`: the result as on run-results."""

    result: RunResult


class CancelRecorded(_EventData):
    reason: str


class EventDeadLettered(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow")

    run_id: str | None = None
    stage: str
    error_class: str
    error_message: str
    original_topic: str | None = None
    original_offset: int | None = None


EVENT_DATA: dict[str, type[BaseModel]] = {
    RUN_ACCEPTED: RunAccepted,
    RUN_REJECTED: RunRejected,
    RUN_STARTED: RunStarted,
    GENERATION_COMPLETED: GenerationCompleted,
    RUN_SUCCEEDED: RunEnded,
    RUN_FAILED: RunEnded,
    RUN_CANCELLED: RunEnded,
    CANCEL_RECORDED: CancelRecorded,
    EVENT_DEAD_LETTERED: EventDeadLettered,
}
