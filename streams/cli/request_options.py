"""The run-request options `submit` and `run` share, and the request they build.

A request comes from a file (its `data`, or a whole CloudEvent) or from the
flags; either way it is validated here against the wire model before anything
is produced or started, so a bad request is one line and exit 5, never a
dead letter or a traceback.
"""

from __future__ import annotations

import json
import uuid
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from thunderhelm.streams.cli.base import options_of
from thunderhelm.streams.cli.exits import CliError, ExitCode

PANEL = "Request (ignored with --file, except --run-id)"


class Dataset(StrEnum):
    spirals = "spirals"
    digits = "digits"
    shakespeare = "shakespeare"


FileOpt = Annotated[
    Path | None,
    typer.Option(
        "--file", "--request", help="request JSON: its data, or a whole CloudEvent", dir_okay=False
    ),
]
RunIdOpt = Annotated[str | None, typer.Option(help="run id (default: run-<random>)")]
DatasetOpt = Annotated[Dataset, typer.Option(help="dataset by name", rich_help_panel=PANEL)]
SamplesOpt = Annotated[int, typer.Option(min=1, help="spirals: samples", rich_help_panel=PANEL)]
ClassesOpt = Annotated[int, typer.Option(min=2, help="spirals: classes", rich_help_panel=PANEL)]
PopulationOpt = Annotated[int, typer.Option(min=1, help="GA population", rich_help_panel=PANEL)]
GenerationsOpt = Annotated[int, typer.Option(min=1, help="GA generations", rich_help_panel=PANEL)]
EpochsOpt = Annotated[int, typer.Option(min=1, help="training epochs", rich_help_panel=PANEL)]
BatchOpt = Annotated[int, typer.Option(min=1, help="training batch size", rich_help_panel=PANEL)]
SeedOpt = Annotated[int, typer.Option(help="dataset and GA seed", rich_help_panel=PANEL)]
BudgetOpt = Annotated[
    float,
    typer.Option(
        "--budget-s", min=0, help="the run's time budget in seconds", rich_help_panel=PANEL
    ),
]


def build_request(
    file: FileOpt = None,
    run_id: RunIdOpt = None,
    dataset: DatasetOpt = Dataset.spirals,
    samples: SamplesOpt = 1200,
    classes: ClassesOpt = 3,
    population: PopulationOpt = 6,
    generations: GenerationsOpt = 3,
    epochs: EpochsOpt = 4,
    batch_size: BatchOpt = 64,
    seed: SeedOpt = 7,
    budget_s: BudgetOpt = 600.0,
) -> dict[str, Any]:
    """The request `data`, validated; CliError(NOT_FOUND) for a bad file or request.

    Its parameters declare the request options of `submit` and `run`
    (`with_request`).
    """
    if file is not None:
        request = _from_file(file)
        if run_id or "run_id" not in request:  # a file without one gets one, as options do
            request["run_id"] = run_id or f"run-{uuid.uuid4().hex[:10]}"
    else:
        data: dict[str, Any] = {"name": dataset.value, "seed": seed}
        if dataset is Dataset.spirals:
            data |= {"samples": samples, "classes": classes}
        request = {
            "run_id": run_id or f"run-{uuid.uuid4().hex[:10]}",
            "dataset": data,
            "ga": {
                "population": population,
                "generations": generations,
                "tournament_size": min(3, population),
                "elite": 1,
                "seed": seed,
            },
            "training": {"epochs": epochs, "batch_size": batch_size},
            "budget": {"timeout_s": budget_s},
        }
    return validated(request, str(file) if file else "the request")


# A command's `request` parameter: the request its options make.
with_request = options_of(build_request, "request")


def _from_file(path: Path) -> dict[str, Any]:
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CliError(ExitCode.NOT_FOUND, f"{path}: not valid JSON: {exc}") from None
    if not isinstance(loaded, dict):
        raise CliError(ExitCode.NOT_FOUND, f"{path}: expected a JSON object")
    if "specversion" in loaded:  # a whole CloudEvent: the request is its data
        loaded = loaded.get("data")
        if not isinstance(loaded, dict):
            raise CliError(ExitCode.NOT_FOUND, f"{path}: the CloudEvent's data is not an object")
    return loaded


def validated(request: dict[str, Any], where: str) -> dict[str, Any]:
    from pydantic import ValidationError

    from thunderhelm.schemas.codec import describe_validation_error
    from thunderhelm.schemas.requests import RunRequest

    try:
        RunRequest.model_validate(request)
    except ValidationError as exc:
        reasons = "; ".join(describe_validation_error(exc))
        raise CliError(ExitCode.NOT_FOUND, f"{where}: invalid request: {reasons}") from None
    return request
