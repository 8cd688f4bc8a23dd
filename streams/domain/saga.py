"""The run saga as a pure state machine: decide, evolve, react.

A run's state is a fold over its lifecycle events (`evolve`). Commands from
users become events through `decide`; what the worker must do next is a pure
function of the state and the time (`react`). Nothing here touches Kafka,
Faust, clocks or telemetry: the edge feeds events in, tells `react` what time
it is and executes the returned actions, so the same log always folds to the
same state and replays are exact.

Times are seconds since the epoch. An event's time arrives as a number as
well as its RFC 3339 text (the edge parses it), because the domain reads no
calendar and no clock.

Idempotency lives in the fold: an event whose id was seen, a second
`accepted`, a generation that is not the next one, anything after a terminal
event but a dead-letter note -- all leave the state unchanged (the same
object), which tells the edge there is nothing to do and nothing to write.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from thunderhelm.schemas import events as ev
from thunderhelm.schemas.event_data import (
    CancelRecorded,
    CandidateCompleted,
    CandidatesDispatched,
    ContinueRejected,
    GenerationCompleted,
    RunAccepted,
    RunContinued,
    RunEnded,
    RunRejected,
    RunStarted,
    WarmStartLineage,
    plain,
)
from thunderhelm.schemas.results import RunResult
from thunderhelm.streams.domain.messages import CancelRun as CancelRun
from thunderhelm.streams.domain.messages import Command as Command
from thunderhelm.streams.domain.messages import ContinueRun as ContinueRun
from thunderhelm.streams.domain.messages import Event as Event
from thunderhelm.streams.domain.messages import NewEvent as NewEvent
from thunderhelm.streams.domain.messages import RecordOutcome as RecordOutcome
from thunderhelm.streams.domain.messages import StartRun as StartRun

Status = Literal[
    "cancel-pending", "accepted", "running", "succeeded", "failed", "cancelled", "rejected"
]
TERMINAL: frozenset[Status] = frozenset({"succeeded", "failed", "cancelled", "rejected"})
type Ending = Literal["succeeded", "failed", "cancelled"]
# The event that ends a run with each status, and back: the one table of both.
END_EVENTS: dict[Ending, str] = {
    "succeeded": ev.RUN_SUCCEEDED,
    "failed": ev.RUN_FAILED,
    "cancelled": ev.RUN_CANCELLED,
}
ENDING_OF: dict[str, Ending] = {event: status for status, event in END_EVENTS.items()}
# How many recent event ids a run remembers for de-duplication. Redeliveries
# come close together, and stale duplicates are caught by the typed checks.
SEEN_IDS_KEPT = 64
# budget.timeout_s when a request leaves it out; schemas/requests.py has the same default.
DEFAULT_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class RunState:
    run_id: str
    status: Status
    request: Mapping[str, Any] | None = None
    ga_state: Mapping[str, Any] | None = None
    generation: int = 0  # generations completed
    evaluations: int = 0
    best: Mapping[str, Any] | None = None
    history: tuple[Mapping[str, Any], ...] = ()  # per-generation summary
    # Outcomes of the current generation's candidates, by index: one per
    # candidate, the first one folded.
    outcomes: Mapping[int, CandidateCompleted] = field(default_factory=dict)
    # The current generation's candidates put on candidate-tasks for any
    # worker to train; the run waits until each has an outcome.
    dispatched: tuple[int, ...] = ()
    version: int = 0  # events applied
    seen_ids: tuple[str, ...] = ()
    cancel_reason: str | None = None
    traceparent: str | None = None
    accepted_at: str | None = None
    # When the time budget runs out (seconds since the epoch): acceptance
    # time plus budget.timeout_s, fixed by the fold so every replay agrees.
    deadline: float | None = None
    result: RunResult | None = None
    reasons: tuple[str, ...] = field(default=())
    settled: bool = False  # terminal, result published, bulk dropped
    # Which result the run ends with next: 1, then one more per continue.
    revision: int = 1
    continues: tuple[str, ...] = ()  # ids of the continue commands taken (kept when settled)
    warm_start: WarmStartLineage | None = None  # what generation 0 took from another run

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def total_generations(self) -> int:
        if self.request is None:
            return 0
        return int(self.request.get("ga", {}).get("generations", 0))

    def to_dict(self) -> dict[str, Any]:
        if self.settled:  # kept for every run a worker ever finished: keep it small
            return {
                "run_id": self.run_id,
                "status": self.status,
                "generation": self.generation,
                "evaluations": self.evaluations,
                "version": self.version,
                "settled": True,
                "revision": self.revision,
                "continues": list(self.continues),
                "accepted_at": self.accepted_at,
            }
        return {
            "run_id": self.run_id,
            "status": self.status,
            "request": self.request,
            "ga_state": self.ga_state,
            "generation": self.generation,
            "evaluations": self.evaluations,
            "best": self.best,
            "history": list(self.history),
            "outcomes": {str(k): plain(v) for k, v in self.outcomes.items()},
            "dispatched": list(self.dispatched),
            "version": self.version,
            "seen_ids": list(self.seen_ids),
            "cancel_reason": self.cancel_reason,
            "traceparent": self.traceparent,
            "accepted_at": self.accepted_at,
            "deadline": self.deadline,
            "result": None if self.result is None else plain(self.result),
            "reasons": list(self.reasons),
            "settled": self.settled,
            "revision": self.revision,
            "continues": list(self.continues),
            "warm_start": None if self.warm_start is None else plain(self.warm_start),
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> RunState:
        return cls(
            run_id=raw["run_id"],
            status=raw["status"],
            request=raw.get("request"),
            ga_state=raw.get("ga_state"),
            generation=int(raw.get("generation", 0)),
            evaluations=int(raw.get("evaluations", 0)),
            best=raw.get("best"),
            history=tuple(raw.get("history", ())),
            outcomes={
                int(k): CandidateCompleted.model_validate(v)
                for k, v in (raw.get("outcomes") or {}).items()
            },
            dispatched=tuple(int(i) for i in raw.get("dispatched") or ()),
            version=int(raw.get("version", 0)),
            seen_ids=tuple(raw.get("seen_ids", ())),
            cancel_reason=raw.get("cancel_reason"),
            traceparent=raw.get("traceparent"),
            accepted_at=raw.get("accepted_at"),
            deadline=None if raw.get("deadline") is None else float(raw["deadline"]),
            result=None if raw.get("result") is None else RunResult.model_validate(raw["result"]),
            reasons=tuple(raw.get("reasons", ())),
            settled=bool(raw.get("settled", False)),
            revision=int(raw.get("revision", 1)),
            continues=tuple(raw.get("continues", ())),
            warm_start=(
                None
                if raw.get("warm_start") is None
                else WarmStartLineage.model_validate(raw["warm_start"])
            ),
        )


def settled(state: RunState) -> RunState:
    """What a finished run keeps once its result is out.

    A terminal state absorbs every later event and command (see `evolve` and
    `decide`), so its population, history, result and seen ids are dead
    weight: a worker that keeps them for every run it ever finished grows
    without bound. The status and version are all the fold needs.
    """
    assert state.terminal, "only a finished run settles"
    return RunState(
        run_id=state.run_id,
        status=state.status,
        generation=state.generation,
        evaluations=state.evaluations,
        version=state.version,
        settled=True,
        revision=state.revision,
        continues=state.continues,
        accepted_at=state.accepted_at,  # where a continue starts reading its log again
    )


# --- decide: commands -> events -------------------------------------------------


def decide(state: RunState | None, command: Command) -> list[NewEvent]:
    """Events that record a command; empty when it changes nothing."""
    if state is not None and command.command_id in state.seen_ids:
        return []
    match command:
        case StartRun():
            if state is not None and state.status != "cancel-pending":
                return []  # a start for a run that exists changes nothing
            run_id = str(command.request["run_id"])
            accepted: dict[str, Any] = {"run_id": run_id, "request": dict(command.request)}
            if command.traceparent:
                accepted["traceparent"] = command.traceparent
            if command.warm_start:
                accepted["warm_start"] = dict(command.warm_start)
            data = RunAccepted.model_validate(accepted)
            return [NewEvent(ev.RUN_ACCEPTED, data, command.command_id)]
        case CancelRun():
            if state is not None and (state.terminal or state.cancel_reason is not None):
                return []
            cancel = CancelRecorded(run_id=command.run_id, reason=command.reason)
            return [NewEvent(ev.CANCEL_RECORDED, cancel, command.command_id)]
        case RecordOutcome():
            if state is None or not awaits(state, command.data):
                return []  # late, duplicated or for another generation: nothing new
            return [NewEvent(ev.CANDIDATE_COMPLETED, command.data, command.command_id)]
        case ContinueRun():
            return _continue(state, command)


# A continue that cannot be taken is recorded in the run's log with its reason.
CONTINUABLE = "only a run that succeeded (it ran its generations or a budget ran out) goes on"


def _continue(state: RunState | None, command: ContinueRun) -> list[NewEvent]:
    """`run.continued` with the run's last checkpoint, or `run.continue-rejected` with why.

    `state` must be the run's full state (a settled one has dropped its
    checkpoint: the edge folds the run's log again first).
    """
    if state is None or command.command_id in state.continues:
        return []
    if state.status != "succeeded":
        reason = f"run {state.run_id} is {state.status}: {CONTINUABLE}"
        return [refuse_continue(state.run_id, [reason], command.command_id)]
    assert not state.settled and state.request is not None, "decided on the full state"
    data: dict[str, Any] = {
        "run_id": state.run_id,
        "generations": command.generations,
        "request": continued_request(state.request, command.generations, command.budget),
        "ga_state": state.ga_state,
        "generation": state.generation,
        "evaluations": state.evaluations,
        "best": state.best,
        "history": list(state.history),
        "revision": state.revision + 1,
        "traceparent": state.traceparent,
        "accepted_at": state.accepted_at,
    }
    if state.warm_start:
        data["warm_start"] = state.warm_start
    return [NewEvent(ev.RUN_CONTINUED, RunContinued.model_validate(data), command.command_id)]


def continued_request(
    request: Mapping[str, Any], more: int, budget: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The run's request as it goes on: `more` generations; `budget`'s fields replace its own.

    The time budget counts from the continue, as it did from the start.
    """
    ga = dict(request.get("ga", {}))
    ga["generations"] = int(ga.get("generations", 0)) + more
    return {**request, "ga": ga, "budget": {**request.get("budget", {}), **(budget or {})}}


def refuse_continue(run_id: str, reasons: list[str], command_id: str) -> NewEvent:
    rejected = ContinueRejected(run_id=run_id, reasons=reasons)
    return NewEvent(ev.CONTINUE_REJECTED, rejected, command_id)


def awaits(state: RunState, outcome: CandidateCompleted) -> bool:
    """Whether `outcome` is the first for a candidate of the running generation."""
    return (
        state.status == "running"
        and outcome.generation == state.generation
        and outcome.index not in state.outcomes
    )


def reject(run_id: str, reasons: list[str], command_id: str) -> NewEvent:
    return NewEvent(ev.RUN_REJECTED, RunRejected(run_id=run_id, reasons=reasons), command_id)


# --- evolve: the fold -----------------------------------------------------------


def _remember(state: RunState, event: Event) -> RunState:
    ids = (*state.seen_ids, event.id)
    if event.causation_id:
        ids = (*ids, event.causation_id)
    return replace(state, version=state.version + 1, seen_ids=ids[-SEEN_IDS_KEPT:])


def evolve(state: RunState | None, event: Event) -> RunState | None:
    """Apply one event; return the same object when the event changes nothing."""
    if state is not None and event.id in state.seen_ids:
        return state
    data = event.data
    if state is None:
        match data:
            case RunAccepted():
                return _remember(_accepted(event, data), event)
            case RunRejected(reasons=reasons):
                return _remember(RunState(event.run_id, "rejected", reasons=tuple(reasons)), event)
            case CancelRecorded(reason=reason):
                fresh = RunState(event.run_id, "cancel-pending", cancel_reason=reason)
                return _remember(fresh, event)
        return None  # nothing to fold onto (e.g. a dead-letter note for an unknown run)
    if event.type in (ev.EVENT_DEAD_LETTERED, ev.CONTINUE_REJECTED):
        # A note (a dead-lettered input, a refused continue) changes nothing
        # else, even after the end; it counts, so a run's version is its
        # log's length.
        return _remember(state, event)
    if isinstance(data, RunContinued):
        if state.status != "succeeded" or data.revision != state.revision + 1:
            return state
        return _remember(_continued(state, event, data), event)
    if state.terminal:
        return state
    new = _apply(state, event)
    return state if new is state else _remember(new, event)


def _accepted(event: Event, data: RunAccepted, cancel_reason: str | None = None) -> RunState:
    return RunState(
        run_id=event.run_id,
        status="accepted",
        request=data.request,
        traceparent=data.traceparent,
        accepted_at=event.time,
        deadline=event.at + timeout_s(data.request),
        cancel_reason=cancel_reason,
        warm_start=data.warm_start,
    )


def _continued(state: RunState, event: Event, data: RunContinued) -> RunState:
    """A succeeded run running again from the checkpoint `run.continued` carries."""
    ids = (*state.continues, event.causation_id) if event.causation_id else state.continues
    return RunState(
        run_id=state.run_id,
        status="running",
        request=data.request,
        ga_state=data.ga_state,
        generation=data.generation,
        evaluations=data.evaluations,
        best=data.best,
        history=tuple(data.history),
        version=state.version,
        seen_ids=state.seen_ids,
        traceparent=data.traceparent,
        accepted_at=data.accepted_at,
        deadline=event.at + timeout_s(data.request),
        revision=data.revision,
        continues=ids[-SEEN_IDS_KEPT:],
        warm_start=data.warm_start,
    )


def timeout_s(request: Mapping[str, Any]) -> float:
    """The request's time budget (the wire model fills in its default)."""
    return float(request.get("budget", {}).get("timeout_s", DEFAULT_TIMEOUT_S))


def _apply(state: RunState, event: Event) -> RunState:
    match event.data:
        case RunAccepted() as data if state.status == "cancel-pending":
            return _accepted(event, data, cancel_reason=state.cancel_reason)
        case RunStarted(ga_state=ga_state) if state.status == "accepted":
            return replace(state, status="running", ga_state=ga_state)
        case CandidatesDispatched(generation=generation, candidates=candidates) if (
            state.status == "running" and generation == state.generation and not state.dispatched
        ):
            return replace(state, dispatched=tuple(candidates))
        case CandidateCompleted() as outcome if awaits(state, outcome):
            # Training is deterministic, so a second outcome for the same
            # candidate (a redelivery, a step run again) says nothing new.
            return replace(state, outcomes={**state.outcomes, outcome.index: outcome})
        case GenerationCompleted() as done if (
            state.status == "running" and done.generation == state.generation
        ):
            summary = {
                "generation": done.generation,
                "best_fitness": done.best_fitness,
                "mean_fitness": done.mean_fitness,
                "duration_s": done.duration_s,
            }
            return replace(
                state,
                ga_state=done.ga_state,
                generation=state.generation + 1,
                evaluations=done.evaluations,
                best=done.best if "best" in done.model_fields_set else state.best,
                history=(*state.history, summary),
                outcomes={},
                dispatched=(),
            )
        case CancelRecorded(reason=reason) if state.cancel_reason is None:
            return replace(state, cancel_reason=reason)
        case RunEnded(result=result) if result.revision == state.revision:
            # A worker that takes a continued run over reads run-events again
            # from its last committed offset, which may lie before the
            # continue, and the ids of the events before it are forgotten once
            # the run settled: the ending of an earlier revision ends nothing.
            return replace(state, status=ENDING_OF[event.type], result=result)
        case _:
            return state


# --- react: state -> next action --------------------------------------------------


@dataclass(frozen=True)
class Start:
    """Build the initial GA population and append `run.started`."""


@dataclass(frozen=True)
class RunGeneration:
    """Train generation `generation`, all but the candidates in `done`.

    `done` holds the indices whose outcome the log already has (a step cut
    short by a kill or a rebalance): they are taken from the log, not trained.
    """

    generation: int
    done: tuple[int, ...] = ()


# What ended a run that ran its course: its generations, or one of its budgets.
type StoppedBy = Literal["generations", "timeout_s", "max_evaluations", "max_work"]


@dataclass(frozen=True)
class Finish:
    status: Ending
    error_class: str | None = None
    message: str | None = None
    stopped_by: StoppedBy | None = None


@dataclass(frozen=True)
class PublishResult:
    result: RunResult


Action = Start | RunGeneration | Finish | PublishResult


def work_done(state: RunState) -> float:
    """Training work of the completed generations, in epoch-equivalents (the GA state's)."""
    return float((state.ga_state or {}).get("work") or 0.0)


def timed_out(state: RunState, now: float) -> bool:
    """Whether `now` (seconds since the epoch) is past the run's deadline."""
    return state.deadline is not None and now > state.deadline


def react(state: RunState, now: float) -> Action | None:
    """The one next step for a run in this state at time `now` (None: wait for events).

    `now` is seconds since the epoch, from the caller's clock. A run ends
    when its generations are done, when it is past its deadline or when its
    `max_evaluations` or `max_work` are spent, whatever generations are left: with the best
    network it found (`succeeded`, `stopped_by` says which), or, if no
    generation completed yet, failed with TimeoutError or BudgetExceeded.
    """
    if state.settled:
        return None
    if state.status in ("succeeded", "failed", "cancelled"):
        assert state.result is not None
        return PublishResult(state.result)
    if state.status in ("rejected", "cancel-pending"):
        return None
    if state.cancel_reason is not None:
        return Finish("cancelled", "Cancelled", state.cancel_reason)
    if timed_out(state, now):
        if state.best is None:
            return Finish("failed", "TimeoutError", "run exceeded its budget.timeout_s")
        return Finish("succeeded", stopped_by="timeout_s")
    if state.status == "accepted":
        return Start()
    budget = (state.request or {}).get("budget", {})
    max_evaluations = budget.get("max_evaluations")
    if max_evaluations is not None and state.evaluations >= int(max_evaluations):
        if state.best is None:
            message = f"reached max_evaluations={max_evaluations}"
            return Finish("failed", "BudgetExceeded", message)
        return Finish("succeeded", stopped_by="max_evaluations")
    max_work = budget.get("max_work")
    if max_work is not None and work_done(state) >= float(max_work):
        if state.best is None:
            return Finish("failed", "BudgetExceeded", f"reached max_work={max_work}")
        return Finish("succeeded", stopped_by="max_work")
    if state.generation >= state.total_generations:
        return Finish("succeeded", stopped_by="generations")
    if waiting_for_candidates(state):
        return None  # workers are training them; each outcome folds in and asks again
    return RunGeneration(state.generation, done_candidates(state))


def waiting_for_candidates(state: RunState) -> bool:
    """Whether a dispatched candidate of the current generation has no outcome yet."""
    return any(index not in state.outcomes for index in state.dispatched)


def done_candidates(state: RunState) -> tuple[int, ...]:
    """Indices of the current generation's candidates that have an outcome, in order."""
    return tuple(sorted(state.outcomes))
