"""Records of the internal candidate fan-out: tasks out, trained outcomes back.

A run's owner puts each untrained candidate of a generation on
`thunderhelm.candidate-tasks` as a `thunderhelm.candidate.task` CloudEvent;
any worker with a free interpreter trains it and sends the outcome to the
run's owner as a `thunderhelm.candidate.trained` command on run-commands
(keyed by run id). The owner appends it to the run's log as
`thunderhelm.run.candidate-completed`, so one writer numbers each run's log.

A task is read back strictly, as every input is: the dataset is one of the
request's named, validated specs and the network is a plain description the
kernel builds; nothing in a task is executed or used as an unchecked path.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from thunderhelm.schemas.event_data import CandidateCompleted
from thunderhelm.schemas.requests import RUN_ID_PATTERN, DatasetSpec, FitnessSettings

CANDIDATE_TASK = "thunderhelm.candidate.task"
CANDIDATE_TRAINED = "thunderhelm.candidate.trained"


class CandidateTask(BaseModel):
    """One candidate to train: everything a worker that knows nothing of the run needs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: str = Field(pattern=RUN_ID_PATTERN)
    generation: int = Field(ge=0)
    index: int = Field(ge=0, description="the candidate's place in the generation's population")
    genome_key: str = Field(min_length=1, max_length=4096)
    seed: int = Field(ge=0, description="the training seed of the network")
    network: dict[str, Any] = Field(description="the network to train, as the kernel reads it")
    dataset: DatasetSpec
    fitness: FitnessSettings = FitnessSettings()
    class_weight: Literal["balanced"] | None = Field(
        default=None, description="the run's training.class_weight"
    )
    deadline: float = Field(description="the run's deadline, seconds since the epoch")
    traceparent: str | None = Field(default=None, max_length=128)


class CandidateTrained(CandidateCompleted):
    """A trained candidate's outcome, on its way to the run's owner."""

    worker: str | None = Field(default=None, description="the worker that trained it")
