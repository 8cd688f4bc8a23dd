"""Lifecycle event types written to `thunderhelm.run-events`.

The event log is the source of truth: a run's state is a fold over these.
This module holds only the names, so the pure saga can use them without
pydantic; each type's data model is in `schemas/event_data.py`, which the
worker applies when it writes an event and when it reads one back.
"""

from __future__ import annotations

RUN_ACCEPTED = "thunderhelm.run.accepted"
RUN_REJECTED = "thunderhelm.run.rejected"
RUN_STARTED = "thunderhelm.run.started"
CANDIDATES_DISPATCHED = "thunderhelm.run.candidates-dispatched"
CANDIDATE_COMPLETED = "thunderhelm.run.candidate-completed"
GENERATION_COMPLETED = "thunderhelm.run.generation-completed"
RUN_SUCCEEDED = "thunderhelm.run.succeeded"
RUN_FAILED = "thunderhelm.run.failed"
RUN_CANCELLED = "thunderhelm.run.cancelled"
CANCEL_RECORDED = "thunderhelm.run.cancel-recorded"
EVENT_DEAD_LETTERED = "thunderhelm.event.dead-lettered"
# A succeeded run taken on for more generations, and a continue it refused.
RUN_CONTINUED = "thunderhelm.run.continued"
CONTINUE_REJECTED = "thunderhelm.run.continue-rejected"

TERMINAL_TYPES = frozenset({RUN_SUCCEEDED, RUN_FAILED, RUN_CANCELLED})

EVENT_TYPES = frozenset(
    {
        RUN_ACCEPTED,
        RUN_REJECTED,
        RUN_STARTED,
        CANDIDATES_DISPATCHED,
        CANDIDATE_COMPLETED,
        GENERATION_COMPLETED,
        RUN_SUCCEEDED,
        RUN_FAILED,
        RUN_CANCELLED,
        CANCEL_RECORDED,
        EVENT_DEAD_LETTERED,
        RUN_CONTINUED,
        CONTINUE_REJECTED,
    }
)
