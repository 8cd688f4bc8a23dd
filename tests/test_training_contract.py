"""One training contract: fitness scored once, the training call's arguments built once."""

import inspect
import json
import math
from typing import Any

import pytest

from thunderhelm.ga.core.engine import initial_state
from thunderhelm.ga.training.candidate import train_candidate
from thunderhelm.ga.training.evaluators import (
    TRAIN_BUFFERS,
    TRAIN_FUNCTION,
    Fitness,
    parse_result,
    train_args,
)
from thunderhelm.streams.execution import steps

RAW = json.dumps({"status": "ok", "val_accuracy": 0.75, "val_loss": 0.5, "params": 2_000_000})


def test_parse_result_scores_with_the_requested_fitness() -> None:
    assert parse_result(RAW, None)["fitness"] == 0.75
    assert parse_result(RAW, None, Fitness("val_loss"))["fitness"] == -0.5
    penalised = parse_result(RAW, None, Fitness("val_accuracy", param_penalty=0.1 / 1e6))
    assert penalised["fitness"] == pytest.approx(0.75 - 0.2)
    failed = json.dumps({"status": "timeout", "val_accuracy": 0.9})
    assert parse_result(failed, None)["fitness"] == -math.inf


def test_fitness_of_a_request_follows_its_settings() -> None:
    assert steps.fitness_of({}) == Fitness()
    request = {"fitness": {"name": "val_loss", "param_penalty": 0.5}}
    assert steps.fitness_of(request) == Fitness("val_loss", 0.5 / 1e6)


def test_train_args_follow_the_training_signature() -> None:
    names = list(inspect.signature(train_candidate).parameters)
    args = train_args({"a": 1}, ["b1", "b2", "b3", "b4"], 7, 1.5, None, True)
    assert len(args) == len(names)
    assert names[1:5] == list(TRAIN_BUFFERS)
    assert dict(zip(names, args, strict=True))["n_features"] == 7
    assert dict(zip(names, args, strict=True))["export_weights"] is True
    assert TRAIN_FUNCTION.endswith(":" + train_candidate.__name__)
    with pytest.raises(ValueError, match="need 4 buffers"):
        train_args({}, ["only one"], 7, 1.5, None, False)


def test_a_generation_records_the_evaluators_fitness_as_is() -> None:
    request: dict[str, Any] = {"ga": {"population": 3, "generations": 2, "tournament_size": 2}}
    state = initial_state(steps.ga_config(request))
    scores = [0.125, -3.0, 0.5]  # not any metric: the step must not rescore

    def evaluate(networks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            {"fitness": s, "status": "ok", "val_accuracy": 0.9, "params": 10}
            for s in scores[: len(networks)]
        ]

    outcome = steps.run_generation(request, state, 4, 2, evaluate)
    assert outcome.data["fitnesses"] == scores
    assert outcome.data["best_fitness"] == 0.5


def test_runs_lists_the_artifact_of_a_finished_run() -> None:
    from thunderhelm.schemas.results import RunResult
    from thunderhelm.streams.clients.replay import Replayed, render_runs
    from thunderhelm.streams.domain.saga import RunState

    def result(run_id: str, status: str, artifact: str | None) -> RunResult:
        return RunResult.model_validate(
            {"run_id": run_id, "status": status, "best": None, "generations": 1,
             "evaluations": 4, "duration_s": 1.0, "artifact": artifact}
        )  # fmt: skip

    done = RunState("r1", "succeeded", result=result("r1", "succeeded", "/a/r1/model.json"))
    failed = RunState("r2", "failed", result=result("r2", "failed", None))
    text = render_runs(Replayed({"r1": done, "r2": failed}, {}, 0), None)
    lines = text.splitlines()
    assert lines[0].startswith("r1") and lines[0].endswith("artifact /a/r1/model.json")
    assert "artifact" not in lines[1]
