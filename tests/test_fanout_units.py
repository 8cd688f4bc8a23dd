"""Candidate fan-out without a broker: the fold's wait, the owner's dedup, tasks, offsets.

The real-broker side (two workers sharing one run, a malformed task) is in
tests/test_fanout_kafka.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from thunderhelm.ga.core.engine import GAState, candidate_training_seed, initial_state, pending
from thunderhelm.schemas import events as ev
from thunderhelm.schemas.envelope import CloudEvent
from thunderhelm.schemas.event_data import CandidateCompleted, CandidateMetrics, event_data
from thunderhelm.schemas.limits import Limits
from thunderhelm.schemas.tasks import CANDIDATE_TRAINED, CandidateTask
from thunderhelm.streams.clients.client import Observed, describe
from thunderhelm.streams.domain import saga
from thunderhelm.streams.execution import candidates, steps
from thunderhelm.streams.wire.failures import Failure
from thunderhelm.streams.worker.events.handler import last_outcome
from thunderhelm.streams.worker.events.writer import validated_task
from thunderhelm.streams.worker.intake.admission import Admitted, screen_command

REQUEST: dict[str, Any] = {
    "run_id": "fan-1",
    "dataset": {"name": "spirals", "samples": 200, "seed": 1},
    "ga": {"population": 4, "generations": 2, "seed": 7},
    "training": {"epochs": 2, "batch_size": 32},
    "budget": {"timeout_s": 600},
}
_ids = iter(range(1_000_000))


def event(kind: str, data: dict[str, Any]) -> saga.Event:
    typed = event_data(kind, data)
    return saga.Event(str(next(_ids)), kind, "fan-1", "2026-12-06T00:00:00Z", typed, at=1000.0)


def running() -> saga.RunState:
    state = saga.evolve(None, event(ev.RUN_ACCEPTED, {"run_id": "fan-1", "request": REQUEST}))
    ga_state = initial_state(steps.ga_config(REQUEST)).to_dict()
    state = saga.evolve(state, event(ev.RUN_STARTED, {"run_id": "fan-1", "ga_state": ga_state}))
    assert state is not None and state.status == "running"
    return state


def outcome(index: int, generation: int = 0) -> CandidateCompleted:
    return CandidateCompleted(
        run_id="fan-1",
        generation=generation,
        index=index,
        genome_key=f"g{index}",
        fitness=0.5,
        metrics=CandidateMetrics.model_validate({"status": "ok", "val_accuracy": 0.5}),
        seed=1,
    )


def dispatched(state: saga.RunState, indices: list[int]) -> saga.RunState:
    data = {"run_id": "fan-1", "generation": 0, "candidates": indices, "topic": "t"}
    after = saga.evolve(state, event(ev.CANDIDATES_DISPATCHED, data))
    assert after is not None
    return after


def record(state: saga.RunState, index: int, generation: int = 0) -> saga.RunState:
    (new,) = saga.decide(
        state, saga.RecordOutcome(f"c{index}", "fan-1", outcome(index, generation))
    )
    after = saga.evolve(state, event(new.type, new.data.model_dump(exclude_unset=True)))
    assert after is not None
    return after


def test_a_dispatched_generation_waits_for_every_outcome_then_completes_once() -> None:
    state = dispatched(running(), [0, 1, 2, 3])
    assert saga.react(state, 1001.0) is None
    for index in (2, 0, 3):
        state = record(state, index)
        assert saga.react(state, 1001.0) is None, index
    state = record(state, 1)
    assert saga.react(state, 1001.0) == saga.RunGeneration(0, (0, 1, 2, 3))


def test_the_owner_appends_only_the_first_outcome_of_the_running_generation() -> None:
    state = record(dispatched(running(), [0, 1]), 0)
    again = saga.RecordOutcome("other", "fan-1", outcome(0))
    assert saga.decide(state, again) == []
    assert saga.decide(state, saga.RecordOutcome("late", "fan-1", outcome(1, generation=3))) == []
    (new,) = saga.decide(state, saga.RecordOutcome("c1", "fan-1", outcome(1)))
    assert new.type == ev.CANDIDATE_COMPLETED and new.causation_id == "c1"
    assert saga.decide(None, saga.RecordOutcome("x", "fan-1", outcome(0))) == []


def test_a_second_dispatch_of_the_generation_changes_nothing_and_completion_clears_it() -> None:
    state = dispatched(running(), [0, 1])
    data = {"run_id": "fan-1", "generation": 0, "candidates": [0, 1, 2, 3], "topic": "t"}
    assert saga.evolve(state, event(ev.CANDIDATES_DISPATCHED, data)) is state
    assert saga.RunState.from_dict(state.to_dict()).dispatched == (0, 1)


def test_a_timed_out_or_cancelled_run_stops_waiting() -> None:
    state = dispatched(running(), [0, 1])
    assert saga.react(state, 1000.0 + 601.0) == saga.Finish(
        "failed", "TimeoutError", "run exceeded its budget.timeout_s"
    )
    cancelled = saga.evolve(state, event(ev.CANCEL_RECORDED, {"run_id": "fan-1", "reason": "r"}))
    assert cancelled is not None
    action = saga.react(cancelled, 1001.0)
    assert isinstance(action, saga.Finish) and action.status == "cancelled"


def test_tasks_cover_the_untrained_candidates_and_read_back_strictly() -> None:
    ga_state = GAState.from_dict(initial_state(steps.ga_config(REQUEST)).to_dict())
    known = {1: outcome(1)}
    tasks = candidates.generation_tasks(
        REQUEST, ga_state, 2, 2, run_id="fan-1", deadline=2000.0, traceparent=None, known=known
    )
    assert [t["index"] for t in tasks] == [i for i, _ in pending(ga_state) if i != 1]
    config = steps.ga_config(REQUEST)
    for task in tasks:
        assert validated_task(task)["network"] == task["network"]
        assert task["seed"] == candidate_training_seed(config, 0, task["index"])
    with pytest.raises(ValidationError):
        CandidateTask.model_validate({**tasks[0], "dataset": {"name": "csv", "path": "../x"}})
    with pytest.raises(ValidationError):
        CandidateTask.model_validate({**tasks[0], "command": "rm -rf /"})
    assert all("class_weight" not in t for t in tasks)  # every row alike unless asked
    weighted = {**REQUEST, "training": {**REQUEST.get("training", {}), "class_weight": "balanced"}}
    tasks = candidates.generation_tasks(
        weighted, ga_state, 2, 2, run_id="fan-1", deadline=2000.0, traceparent=None, known={}
    )
    assert all(validated_task(t)["class_weight"] == "balanced" for t in tasks)
    with pytest.raises(ValidationError):
        CandidateTask.model_validate({**tasks[0], "class_weight": "rare-first"})


def test_an_outcome_is_taken_from_run_commands_only() -> None:
    value = json.dumps(
        {
            "specversion": "1.0",
            "id": "o-1",
            "source": "tests",
            "type": CANDIDATE_TRAINED,
            "data": {**outcome(0).model_dump(exclude_unset=True), "worker": "w/1"},
        }
    ).encode()
    from_users = screen_command(b"fan-1", value, [], Limits())
    assert isinstance(from_users, Failure) and "unknown command type" in from_users.message
    internal = screen_command(b"fan-1", value, [], Limits(), internal=True)
    assert isinstance(internal, Admitted)


def test_watch_says_where_a_candidate_trained_and_how_many_went_out() -> None:
    def line(kind: str, data: dict[str, Any]) -> str:
        envelope = CloudEvent(specversion="1.0", id="e", source="t", type=kind, data=data)
        return describe(Observed("run-events", envelope, None))

    dispatched = {"run_id": "fan-1", "generation": 0, "candidates": [0, 2, 3], "topic": "t"}
    assert line(ev.CANDIDATES_DISPATCHED, dispatched) == (
        "generation 1: 3 candidates out to every worker"
    )
    trained = line(
        ev.CANDIDATE_COMPLETED, {**outcome(2).model_dump(exclude_unset=True), "worker": "host/41"}
    )
    assert (
        trained.startswith("generation 1: candidate 2  fitness 0.5000") and "on host/41" in trained
    )


def test_tasks_spread_so_each_partition_gets_about_the_same_training_time() -> None:
    costs = [90, 10, 10, 10, 40, 40, 50, 30]
    where = candidates.spread(costs, 2)
    loads = [sum(c for c, p in zip(costs, where, strict=True) if p == part) for part in (0, 1)]
    assert sorted(loads) == [140, 140]
    assert candidates.spread([5, 5, 5, 5], 4) == [0, 1, 2, 3]
    assert candidates.spread([], 3) == []


def test_only_the_last_awaited_outcome_calls_for_a_decision() -> None:
    state = dispatched(running(), [0, 1])
    assert not last_outcome(state) and not last_outcome(record(state, 0))
    assert last_outcome(record(record(state, 0), 1))
    assert not last_outcome(record(running(), 0))  # not spread: the owner's own step runs
