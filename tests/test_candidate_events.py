"""Candidate-level event sourcing: the fold keeps one outcome per candidate, a
resumed generation trains only the candidates without one, and the result is
the same with or without an interruption."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest

from thunderhelm.ga.core.engine import initial_state, pending
from thunderhelm.schemas import events as ev
from thunderhelm.schemas.event_data import CandidateCompleted, event_data
from thunderhelm.streams.domain import saga
from thunderhelm.streams.execution import steps

REQUEST: dict[str, Any] = {
    "run_id": "r1",
    "dataset": {"name": "spirals"},
    "ga": {"population": 4, "generations": 2, "tournament_size": 2, "seed": 3},
    "budget": {"timeout_s": 60.0},
}
T0 = 1_767_225_600.0
_ids = itertools.count()


def event(kind: str, **data: Any) -> saga.Event:
    return saga.Event(
        f"c{next(_ids)}",
        kind,
        "r1",
        "2026-01-01T00:00:00Z",
        event_data(kind, {"run_id": "r1", **data}),
        at=T0,
    )


def candidate(generation: int, index: int, fitness: float | None = 0.5) -> saga.Event:
    return event(
        ev.CANDIDATE_COMPLETED,
        generation=generation,
        index=index,
        genome_key=f"g{index}",
        fitness=fitness,
        metrics={"status": "ok", "val_accuracy": fitness, "val_loss": 1.0, "params": 10},
        seed=index,
        duration_s=0.1,
    )


def generation(k: int) -> saga.Event:
    return event(
        ev.GENERATION_COMPLETED,
        generation=k,
        fitnesses=[0.5],
        candidates=[],
        ga_state={"generation": k + 1, "population": [{}] * 4},
        evaluations=(k + 1) * 4,
    )


def fold(*events: saga.Event) -> saga.RunState:
    state: saga.RunState | None = None
    for e in events:
        state = saga.evolve(state, e)
    assert state is not None
    return state


RUNNING = (
    event(ev.RUN_ACCEPTED, request=REQUEST),
    event(ev.RUN_STARTED, ga_state={"generation": 0, "population": [{}] * 4}),
)


@pytest.mark.parametrize(
    ("after", "outcomes", "action"),
    [
        ((), {}, saga.RunGeneration(0)),
        ((candidate(0, 2),), {2: 0.5}, saga.RunGeneration(0, (2,))),
        (
            (candidate(0, 2), candidate(0, 0, 0.25)),
            {0: 0.25, 2: 0.5},
            saga.RunGeneration(0, (0, 2)),
        ),
        # a second outcome for a candidate (redelivered, or trained again) changes nothing
        ((candidate(0, 2), candidate(0, 2, 0.9)), {2: 0.5}, saga.RunGeneration(0, (2,))),
        # an outcome of another generation is not this generation's
        ((candidate(1, 0),), {}, saga.RunGeneration(0)),
        # the generation's event folds every outcome in; the next one starts empty
        ((candidate(0, 1), generation(0)), {}, saga.RunGeneration(1)),
        ((candidate(0, 1), generation(0), candidate(0, 3)), {}, saga.RunGeneration(1)),
        (
            (candidate(0, 1), generation(0), candidate(1, 3)),
            {3: 0.5},
            saga.RunGeneration(1, (3,)),
        ),
    ],
)
def test_the_fold_keeps_one_outcome_per_candidate(
    after: tuple[saga.Event, ...], outcomes: dict[int, float], action: saga.Action
) -> None:
    state = fold(*RUNNING, *after)
    assert {k: v.fitness for k, v in state.outcomes.items()} == outcomes
    assert saga.react(state, T0) == action
    assert saga.RunState.from_dict(json.loads(json.dumps(state.to_dict()))) == state


def test_a_duplicate_candidate_event_returns_the_same_state() -> None:
    state = fold(*RUNNING, candidate(0, 1))
    again = candidate(0, 1, 0.75)
    assert saga.evolve(state, again) is state
    redelivered = fold(*RUNNING)
    first = candidate(0, 1)
    once = saga.evolve(redelivered, first)
    assert once is not None and saga.evolve(once, first) is once


def test_candidate_events_before_start_or_after_the_end_change_nothing() -> None:
    accepted = fold(RUNNING[0])
    assert saga.evolve(accepted, candidate(0, 0)) is accepted


def test_candidate_data_is_validated_by_its_model() -> None:
    data = dict(candidate(0, 1).data)
    assert event_data(ev.CANDIDATE_COMPLETED, data).index == 1
    with pytest.raises(ValueError):
        event_data(ev.CANDIDATE_COMPLETED, {**data, "index": -1})
    with pytest.raises(ValueError):
        event_data(ev.CANDIDATE_COMPLETED, {k: v for k, v in data.items() if k != "seed"})


class Recording:
    """Scores each network by its training seed (deterministic), remembering what it trained."""

    def __init__(self) -> None:
        self.trained: list[int] = []

    def __call__(
        self, networks: list[dict[str, Any]], on_result: Any = None
    ) -> list[dict[str, Any]]:
        results = []
        for position, network in enumerate(networks):
            seed = int(network["seed"])
            self.trained.append(seed)
            result = {
                "fitness": (seed % 1000) / 1000,
                "status": "ok",
                "val_accuracy": (seed % 1000) / 1000,
                "val_loss": 1.0,
                "params": seed % 97,
                "started_at": 1.0,
                "ended_at": 1.5,
            }
            results.append(result)
            if on_result is not None:
                on_result(position, result)
        return results


def test_a_resumed_generation_trains_only_candidates_without_an_outcome() -> None:
    state = initial_state(steps.ga_config(REQUEST))
    whole, reported = Recording(), []
    full = steps.run_generation(REQUEST, state, 2, 3, whole, report=reported.append)
    assert sorted(r["index"] for r in reported) == [i for i, _ in pending(state)]
    assert all(r["duration_s"] == 0.5 for r in reported)
    # Killed after two outcomes were logged: the resumed step trains the rest only.
    known = {r["index"]: CandidateCompleted(run_id="r1", **r) for r in reported[:2]}
    resumed = Recording()
    again = steps.run_generation(REQUEST, state, 2, 3, resumed, known=known, report=lambda _: None)
    assert len(resumed.trained) == len(whole.trained) - 2
    assert set(resumed.trained) == set(whole.trained) - {r["seed"] for r in reported[:2]}
    assert again.data["ga_state"] == full.data["ga_state"]
    assert again.data["fitnesses"] == full.data["fitnesses"]
    assert again.data["candidates"] == full.data["candidates"]
    # Every outcome known: nothing is trained, and the checkpoint is the same.
    idle = Recording()
    done = steps.run_generation(
        REQUEST,
        state,
        2,
        3,
        idle,
        known={r["index"]: CandidateCompleted(run_id="r1", **r) for r in reported},
    )
    assert idle.trained == [] and done.data["ga_state"] == full.data["ga_state"]


def test_only_trainings_that_ran_to_their_end_are_reported() -> None:
    state = initial_state(steps.ga_config(REQUEST))

    def cut_short(networks: list[dict[str, Any]], on_result: Any = None) -> list[dict[str, Any]]:
        results = [{"fitness": float("-inf"), "status": "cancelled"} for _ in networks]
        for position, result in enumerate(results):
            on_result(position, result)
        return results

    reported: list[dict[str, Any]] = []
    steps.run_generation(REQUEST, state, 2, 3, cut_short, report=reported.append)
    assert reported == []
