"""Commands users produce to `thunderhelm.run-requests`: start, cancel and continue a run.

Every field is validated strictly (no coercion from strings, no unknown keys)
and bounded, because requests come from any Kafka client. Datasets and fitness
functions are chosen by name from a closed set; nothing is ever executed.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

RUN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
# A path under the configured data root: relative, plain segments only.
# The loader resolves it again and refuses anything that escapes the root.
DATA_PATH_PATTERN = r"^[A-Za-z0-9._/-]{1,255}$"

RUN_REQUESTED = "thunderhelm.run.requested"
CANCEL_REQUESTED = "thunderhelm.run.cancel-requested"
CONTINUE_REQUESTED = "thunderhelm.run.continue-requested"
COMMAND_TYPES = frozenset({RUN_REQUESTED, CANCEL_REQUESTED, CONTINUE_REQUESTED})

Seed = Annotated[int, Field(ge=0, le=2**63 - 1)]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class SpiralsDataset(_Strict):
    name: Literal["spirals"]
    samples: int = Field(default=1200, ge=30, le=200_000)
    classes: int = Field(default=3, ge=2, le=16)
    noise: float = Field(default=0.2, ge=0.0, le=5.0)
    seed: Seed = 0


class DigitsDataset(_Strict):
    name: Literal["digits"]
    seed: Seed = 0


class ShakespeareDataset(_Strict):
    name: Literal["shakespeare"]
    context: int = Field(default=8, ge=1, le=64)
    samples: int = Field(default=20_000, ge=100, le=500_000)
    seed: Seed = 0


class Friedman1Dataset(_Strict):
    """Friedman #1 regression (scikit-learn's formula): ten uniform features, five used."""

    name: Literal["friedman1"]
    samples: int = Field(default=5000, ge=30, le=1_000_000)
    noise: float = Field(default=1.0, ge=0.0, le=100.0, description="sd of the added N(0, 1)")
    seed: Seed = 0


class FileDataset(_Strict):
    name: Literal["csv", "npz"]
    path: str = Field(pattern=DATA_PATH_PATTERN)
    seed: Seed = 0

    @field_validator("path")
    @classmethod
    def _relative_and_plain(cls, value: str) -> str:
        parts = value.split("/")
        if value.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise ValueError("path must be relative to the data root, without '.' or '..'")
        return value


ColumnName = Annotated[str, Field(min_length=1, max_length=256)]


class TableDataset(FileDataset):
    """A CSV or Parquet table with a named target (ga/training/tables.py)."""

    name: Literal["table"]  # type: ignore[assignment]  # the discriminator differs
    target: ColumnName = Field(description="the column to predict")
    task: Literal["classification", "regression"] = Field(
        default="classification",
        description=(
            "regression: a numeric target, predicted as a number (standardised for training, "
            "reported in its own units); a numeric target with more than 50 distinct values "
            "needs it"
        ),
    )
    features: list[ColumnName] | None = Field(
        default=None, max_length=4096, description="input columns (default: all but the target)"
    )
    drop: list[ColumnName] | None = Field(default=None, max_length=4096)
    categorical: list[ColumnName] | None = Field(
        default=None, max_length=4096, description="default: text and boolean columns"
    )

    @model_validator(mode="after")
    def _features_or_drop(self) -> TableDataset:
        if self.features is not None and self.drop is not None:
            raise ValueError("give 'features' or 'drop', not both")
        return self


DatasetSpec = Annotated[
    SpiralsDataset
    | DigitsDataset
    | ShakespeareDataset
    | FileDataset
    | TableDataset
    | Friedman1Dataset,
    Field(discriminator="name"),
]


class GASettings(_Strict):
    population: int = Field(default=8, ge=2, le=512)
    generations: int = Field(default=4, ge=1, le=1000)
    tournament_size: int = Field(default=3, ge=1, le=64)
    # Defaults equal ga.core.engine.GAConfig's (a test checks): rank-based
    # tournament temperature, uniform crossover rate, per-aspect mutation rate.
    temperature: float = Field(default=0.5, ge=0.0, le=1000.0)
    crossover_rate: float = Field(default=0.9, ge=0.0, le=1.0)
    mutation_rate: float = Field(default=0.07, ge=0.0, le=1.0)
    elite: int = Field(default=1, ge=0, le=511)
    seed: Seed = 0

    @model_validator(mode="after")
    def _fits_population(self) -> GASettings:
        if self.elite >= self.population:
            raise ValueError("elite must be smaller than population")
        if self.tournament_size > self.population:
            raise ValueError("tournament_size must not exceed population")
        return self


class TrainingSettings(_Strict):
    epochs: int = Field(default=3, ge=1, le=200, description="most epochs a candidate trains")
    batch_size: int = Field(default=64, ge=1, le=8192)
    class_weight: Literal["balanced"] | None = Field(
        default=None,
        description=(
            "balanced: each training row's loss is scaled by n / (classes x rows of its "
            "class), so rare classes weigh as much as common ones; null: every row alike"
        ),
    )


class SearchSpaceSettings(_Strict):
    max_levels: int = Field(default=3, ge=1, le=12, description="hidden levels")
    max_units: int = Field(default=3, ge=1, le=16, description="units per level")
    max_neurons: int = Field(default=64, ge=1, le=1024, description="neurons per unit")


CLASSIFICATION_FITNESS = ("val_accuracy", "val_balanced_accuracy", "val_macro_f1", "val_roc_auc")
REGRESSION_FITNESS = ("val_r2", "val_rmse")


FitnessName = Literal[
    "val_accuracy",
    "val_loss",
    "val_balanced_accuracy",
    "val_macro_f1",
    "val_roc_auc",
    "val_r2",
    "val_rmse",
]


class FitnessSettings(_Strict):
    name: FitnessName | None = Field(
        default=None,
        description=(
            "the validation measure the search maximises (val_loss, val_rmse: minimises); "
            "null: val_accuracy for classification, val_r2 for regression. "
            "val_balanced_accuracy and val_macro_f1 weigh every class alike, for "
            "imbalanced classes; val_roc_auc (one class against the rest, averaged) "
            "rewards probabilities that rank the rows well; val_r2 and val_rmse (in the "
            "target's units) are for regression only"
        ),
    )
    param_penalty: float = Field(default=0.0, ge=0.0, le=1.0, description="per million params")


class FinalModelSettings(_Strict):
    deliver: Literal["auto", "ensemble", "single"] = Field(
        default="auto",
        description=(
            "auto: the average of the best networks unless the best alone is better on "
            "validation; ensemble or single: always that"
        ),
    )
    ensemble_size: int = Field(
        default=5, ge=2, le=8, description="networks averaged (the search's best, distinct)"
    )


class FidelitySettings(_Strict):
    """Successive-halving rungs inside each training (docs/search.md, "Multi-fidelity")."""

    rungs: bool = Field(
        default=True,
        description=(
            "stop a candidate at epoch 1, eta, eta^2, ... when its validation figure there is "
            "not among the best 1/eta measured at that epoch by earlier generations"
        ),
    )
    eta: float = Field(default=2.0, gt=1.0, le=16.0, description="keep the best 1/eta at a rung")
    min_figures: int = Field(
        default=6, ge=1, le=10_000, description="earlier figures a rung needs before it stops any"
    )


class Budget(_Strict):
    timeout_s: float = Field(default=600.0, gt=0.0, le=7 * 24 * 3600.0)
    max_evaluations: int | None = Field(default=None, ge=1, le=1_000_000)
    max_work: float | None = Field(
        default=None,
        gt=0.0,
        le=1e9,
        description="training work in epoch-equivalents (one pass over the training rows)",
    )


class WarmStart(_Strict):
    run_id: str = Field(pattern=RUN_ID_PATTERN, description="the run to start from")
    top: int = Field(
        default=5, ge=1, le=8, description="how many of its best distinct genomes to take"
    )


class RunRequest(_Strict):
    """`data` of a `thunderhelm.run.requested` command."""

    run_id: str = Field(pattern=RUN_ID_PATTERN)
    dataset: DatasetSpec
    ga: GASettings = GASettings()
    training: TrainingSettings = TrainingSettings()
    search_space: SearchSpaceSettings = SearchSpaceSettings()
    fitness: FitnessSettings = FitnessSettings()
    budget: Budget = Budget()
    final_model: FinalModelSettings = FinalModelSettings()
    fidelity: FidelitySettings = FidelitySettings()
    warm_start: WarmStart | None = Field(
        default=None,
        description=(
            "generation 0 begins with the best distinct genomes of this earlier run "
            "(read from its event log); the rest is drawn as usual"
        ),
    )

    @field_validator("run_id")
    @classmethod
    def _no_dots_only(cls, value: str) -> str:
        if set(value) <= {"."}:
            raise ValueError("run_id must not be only dots")
        return value

    @model_validator(mode="after")
    def _fitness_fits_task(self) -> RunRequest:
        regression = isinstance(self.dataset, Friedman1Dataset) or (
            isinstance(self.dataset, TableDataset) and self.dataset.task == "regression"
        )
        name = self.fitness.name
        if regression and name in CLASSIFICATION_FITNESS:
            raise ValueError(f"fitness {name!r} is for classification; this dataset is regression")
        if not regression and name in REGRESSION_FITNESS:
            raise ValueError(f"fitness {name!r} is for regression; this dataset is classification")
        return self


class CancelRequest(_Strict):
    """`data` of a `thunderhelm.run.cancel-requested` command."""

    run_id: str = Field(pattern=RUN_ID_PATTERN)
    reason: str = Field(default="cancelled by user", max_length=500)


class ContinueRequest(_Strict):
    """`data` of a `thunderhelm.run.continue-requested` command.

    Takes a run that succeeded (it ran its generations or one of its budgets
    ran out) on from its last checkpoint for `generations` more; the fields
    `budget` names replace the run's own (its time budget counts from the
    continue, as it did from the start).
    """

    run_id: str = Field(pattern=RUN_ID_PATTERN)
    generations: int = Field(ge=1, le=1000, description="how many more generations")
    budget: Budget | None = Field(default=None, description="only the fields given count")
