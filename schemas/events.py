"""Lifecycle event types written to `thunderhelm.run-events`.

The event log is the source of truth: a run's state is a fold over these.
Payloads stay plain JSON objects so the pure saga can hold them without
pydantic; `EVENT_DATA_REQUIRED` names the keys each type must carry, and the
fold rejects an event that lacks them.
"""

from __future__ import annotations

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
