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


class ModelFigures(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    accuracy: float
    loss: float = Field(description="mean cross-entropy (the log-loss)")
    balanced_accuracy: float | None = Field(
        default=None, description="the mean recall of the classes present"
    )
    macro_f1: float | None = Field(
        default=None, description="F1 averaged over the classes present or predicted"
    )
    roc_auc: float | None = Field(
        default=None,
        description=(
            "one class against the rest, averaged over the classes with rows on both sides "
            "(for two classes, the plain ROC-AUC)"
        ),
    )


class RegressionFigures(BaseModel):
    """A regression model's figures, in the target's own units."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rmse: float
    mae: float
    r2: float | None = Field(description="1 - SSE / SST (None when the targets do not vary)")
    loss: float = Field(description="mean squared error on the standardised target")


class ModelMember(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    generation: int | None
    index: int | None
    fitness: float | None
    weight: float = Field(description="share of the averaged probabilities")


class ModelEstimate(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    accuracy: float
    loss: float = Field(description="mean cross-entropy")
    accuracy_se: float = Field(ge=0.0, description="standard error over the validation rows")
    retrainings: int = Field(ge=1, description="fresh-seed trainings it was measured from")


class RegressionEstimate(RegressionFigures):
    retrainings: int = Field(ge=1, description="fresh-seed trainings it was measured from")


class DeliveredModel(BaseModel):
    """The model the artifact holds: one network or an ensemble of the search's best."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["single", "ensemble"]
    members: list[ModelMember]
    validation: ModelFigures | RegressionFigures
    test: ModelFigures | RegressionFigures = Field(
        description="on the test split the search never saw"
    )
    estimate: ModelEstimate | RegressionEstimate | None = Field(
        default=None,
        description=(
            "the delivered model's validation figures measured again with its networks "
            "retrained from fresh seeds: no weights picked on that split"
        ),
    )
    why: str = Field(description="why this model was delivered rather than the other")


class WarmStartSummary(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: str = Field(description="the run whose genomes began generation 0")
    genomes: list[str] = Field(description="the keys of the genomes taken, fittest first")


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
    model: DeliveredModel | None = Field(
        default=None, description="the delivered model (with the artifact)"
    )
    stopped_by: Literal["generations", "timeout_s", "max_evaluations", "max_work"] | None = Field(
        default=None,
        description="what ended a succeeded run: its generations or one of its budgets",
    )
    work: float | None = Field(
        default=None,
        ge=0.0,
        description=(
            "the search's training work in epoch-equivalents (one pass over the training rows), "
            "the final model's trainings not included"
        ),
    )
    error: ErrorInfo | None = None
    warm_start: WarmStartSummary | None = Field(
        default=None, description="a warm-started run's source run and the genomes it took"
    )
    revision: int = Field(
        default=1,
        ge=1,
        description=(
            "1 for a run's first result; a continued run ends with the next revision, "
            "the current one (its record id is `<run id>/result/<revision>`)"
        ),
    )


def validated_result(data: Any) -> dict[str, Any]:
    """`data` checked against `RunResult`, as the contract's JSON; raises `ValidationError`."""
    return RunResult.model_validate(data).model_dump(mode="json", by_alias=True)
