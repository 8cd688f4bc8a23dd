"""The one record per finished run on `thunderhelm.run-results`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

RUN_RESULT = "thunderhelm.run.result"


class BestCandidate(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    genome: dict[str, Any]
    fitness: float
    metrics: dict[str, Any] = Field(description="val_accuracy, val_loss, params, ...")


class ErrorInfo(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    error_class: str = Field(alias="class")
    message: str


class RunResult(BaseModel):
    """`data` of a record on run-results (the contract's result format)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    run_id: str
    status: Literal["succeeded", "failed", "cancelled"]
    best: BestCandidate | None
    generations: int
    evaluations: int
    duration_s: float
    artifact: str | None
    error: ErrorInfo | None = None


def validated_result(data: Any) -> dict[str, Any]:
    """`data` checked against `RunResult`, as the contract's JSON; raises `ValidationError`."""
    return RunResult.model_validate(data).model_dump(mode="json", by_alias=True)
