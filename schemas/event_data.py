"""The data model of each lifecycle event type (`EVENT_DATA`), the saga's typed events.

An event's data is one of these frozen models from the moment it is read
(`streams/wire/events.py:to_domain`) or decided until it is written
(`wire_data`), so the fold reads typed fields and never a JSON key. Models
allow fields they do not name: a newer writer may add one, and it is
written back as it came; the fold reads only the fields below.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from thunderhelm.schemas.events import (
    CANCEL_RECORDED,
    CANDIDATE_COMPLETED,
    CANDIDATES_DISPATCHED,
    CONTINUE_REJECTED,
    EVENT_DEAD_LETTERED,
    GENERATION_COMPLETED,
    RUN_ACCEPTED,
    RUN_CANCELLED,
    RUN_CONTINUED,
    RUN_FAILED,
    RUN_REJECTED,
    RUN_STARTED,
    RUN_SUCCEEDED,
)
from thunderhelm.schemas.results import RunResult


class _EventData(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow")

    run_id: str = Field(min_length=1)


class WarmStartLineage(BaseModel):
    """What a warm-started run's generation 0 took from another run."""

    model_config = ConfigDict(frozen=True, extra="allow")

    run_id: str = Field(min_length=1, description="the source run")
    top: int = Field(ge=1, description="how many genomes the request asked for")
    genomes: list[dict[str, Any]] = Field(description="the genomes taken, fittest first")
    keys: list[str] = Field(description="their genome keys")
    fitnesses: list[float] = Field(description="their fitness in the source run")


class RunAccepted(_EventData):
    request: dict[str, Any]
    traceparent: str | None = None
    warm_start: WarmStartLineage | None = Field(
        default=None, description="what generation 0 takes from another run (warm start)"
    )


class RunRejected(_EventData):
    reasons: list[str]


class RunStarted(_EventData):
    ga_state: dict[str, Any] = Field(description="generation 0 population")


class CandidateMetrics(BaseModel):
    """What training one candidate measured; more fields (timings, status) are kept."""

    model_config = ConfigDict(frozen=True, extra="allow")

    val_accuracy: float | None = None
    val_loss: float | None = None
    val_balanced_accuracy: float | None = None
    val_macro_f1: float | None = None
    val_roc_auc: float | None = Field(default=None, description="when the fitness is val_roc_auc")
    params: int | None = None


class CandidateCompleted(_EventData):
    """One candidate of the current generation trained: its outcome, folded once per index."""

    generation: int = Field(ge=0)
    index: int = Field(ge=0, description="the candidate's place in the generation's population")
    genome_key: str = Field(min_length=1, description="the engine's name of the genome")
    fitness: float | None = Field(description="null: the candidate failed (fitness -inf)")
    metrics: CandidateMetrics
    seed: int = Field(ge=0, description="the training seed of the candidate's network")
    duration_s: float | None = Field(default=None, ge=0)


class CandidatesDispatched(_EventData):
    """The owner put the generation's untrained candidates on candidate-tasks.

    Any worker may train them; their outcomes come back as `candidate-completed`.
    """

    generation: int = Field(ge=0)
    candidates: list[int] = Field(description="indices of the candidates put on candidate-tasks")
    topic: str = Field(min_length=1, description="where the tasks went")


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


class RunContinued(_EventData):
    """A succeeded run taken on from its last checkpoint (`run.continue-requested`)."""

    generations: int = Field(ge=1, description="how many more generations were asked for")
    request: dict[str, Any] = Field(description="the run's request as it goes on")
    ga_state: dict[str, Any] = Field(description="the checkpoint it goes on from")
    generation: int = Field(ge=0, description="generations completed so far")
    evaluations: int = Field(ge=0)
    best: dict[str, Any] | None = None
    history: list[dict[str, Any]] = Field(default_factory=list)
    revision: int = Field(ge=2, description="the revision of the result the run ends with next")
    traceparent: str | None = None
    accepted_at: str | None = None
    warm_start: WarmStartLineage | None = None


class ContinueRejected(_EventData):
    """A continue the run cannot take, with why (the run is unchanged)."""

    reasons: list[str]


# Where in the pipeline an input failed: the `dlq.stage` header and this event's `stage`.
type DeadLetterStage = Literal["decode", "validate", "decide", "execute", "produce"]


class EventDeadLettered(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow")

    run_id: str | None = None
    stage: DeadLetterStage
    error_class: str
    error_message: str
    original_topic: str | None = None
    original_offset: int | None = None


# The data of any lifecycle event: what `saga.Event.data` and `saga.NewEvent.data` hold.
type EventData = (
    RunAccepted
    | RunRejected
    | RunStarted
    | CandidatesDispatched
    | CandidateCompleted
    | GenerationCompleted
    | RunEnded
    | CancelRecorded
    | EventDeadLettered
    | RunContinued
    | ContinueRejected
)

EVENT_DATA: dict[str, type[EventData]] = {
    RUN_ACCEPTED: RunAccepted,
    RUN_REJECTED: RunRejected,
    RUN_STARTED: RunStarted,
    CANDIDATES_DISPATCHED: CandidatesDispatched,
    CANDIDATE_COMPLETED: CandidateCompleted,
    GENERATION_COMPLETED: GenerationCompleted,
    RUN_SUCCEEDED: RunEnded,
    RUN_FAILED: RunEnded,
    RUN_CANCELLED: RunEnded,
    CANCEL_RECORDED: CancelRecorded,
    EVENT_DEAD_LETTERED: EventDeadLettered,
    RUN_CONTINUED: RunContinued,
    CONTINUE_REJECTED: ContinueRejected,
}


def event_data(event_type: str, data: Any) -> EventData:
    """`data` as its event type's model; raises `ValidationError` on the wrong shape."""
    return EVENT_DATA[event_type].model_validate(data)


def wire_data(event_type: str, data: EventData) -> dict[str, Any]:
    """The JSON an event's data is written as.

    Only the fields set come out (no defaults filled in), so an event read
    and written again keeps its wire form.
    """
    expected = EVENT_DATA[event_type]
    if type(data) is not expected:
        raise TypeError(f"{event_type} data must be {expected.__name__}, not {type(data).__name__}")
    return data.model_dump(mode="json", by_alias=True, exclude_unset=True)


def plain(model: BaseModel) -> dict[str, Any]:
    """The fields `model` was given and the extra ones it kept, under their wire names.

    Equal to `model_dump(mode="json", by_alias=True, exclude_unset=True)` for
    models of JSON values, as these are, without pydantic's serializer: the
    run state is stored on every fold, and the serializer walks each
    outcome's learning curve value by value.
    """
    fields = type(model).model_fields
    out: dict[str, Any] = {}
    for name in model.model_fields_set:
        if name in fields:
            out[fields[name].alias or name] = _plain_value(getattr(model, name))
    out.update(model.__pydantic_extra__ or {})
    return out


def _plain_value(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return plain(value)
    if isinstance(value, list | tuple):
        return [_plain_value(v) for v in value]
    return value
