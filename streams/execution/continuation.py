"""What a continue decides, the same for the worker and the local run.

The saga decides it on the run's full state (`run.continued` with the
checkpoint, or `run.continue-rejected` with why); the request the run goes on
with is then held to the operator's limits like any request, and a request
past them turns the continue into a refusal that names every reason.
"""

from __future__ import annotations

from pydantic import ValidationError

from thunderhelm.schemas import events as ev
from thunderhelm.schemas.codec import describe_validation_error
from thunderhelm.schemas.event_data import RunContinued
from thunderhelm.schemas.limits import Limits, validate_request
from thunderhelm.streams.domain import saga


def continue_events(
    state: saga.RunState | None, command: saga.ContinueRun, limits: Limits
) -> list[saga.NewEvent]:
    """The events a continue makes of `state` (empty: it is taken already)."""
    decided = saga.decide(state, command)
    if decided and decided[0].type == ev.RUN_CONTINUED:
        try:
            assert isinstance(decided[0].data, RunContinued)
            validate_request(decided[0].data.request, limits)
        except ValidationError as exc:
            why = describe_validation_error(exc)
            return [saga.refuse_continue(command.run_id, why, command.command_id)]
    return decided
