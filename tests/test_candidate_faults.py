"""Candidate outcomes on the real broker: one per trained candidate, and a
worker killed mid-generation costs at most the candidates without one.

Workers are real `thunderhelm worker` processes with a pool of one, so a
generation's candidates train one after another and a kill lands between
two outcomes; "kill" is SIGKILL.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from pathlib import Path

import pytest

from tests.kafka_helpers import WorkerProcess, collect
from tests.test_faults import Records, env, events, request, results, start, wait_for
from thunderhelm.schemas import events as ev
from thunderhelm.schemas.codec import decode_record
from thunderhelm.schemas.tasks import CANDIDATE_TRAINED
from thunderhelm.streams.domain.invariants import violations

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
__all__ = ["env"]  # the fixture, shared with test_faults


def outcomes(records: Records, worker: WorkerProcess, run_id: str) -> list[tuple[int, int]]:
    """(generation, index) of every candidate-completed of the run, in log order."""
    return [
        (e.data.generation, e.data.index)
        for e in events(records, worker, run_id)
        if e.type == ev.CANDIDATE_COMPLETED
    ]


def trained(worker: WorkerProcess, run_id: str) -> Counter[tuple[int, int]]:
    """How often each candidate of the run was trained, from the outcomes sent on run-commands."""
    s = worker.settings
    records = asyncio.run(collect([s.run_commands], lambda _: False, timeout_s=3))
    counts: Counter[tuple[int, int]] = Counter()
    for record in records:
        command = decode_record(record.value, {})
        if command.type == CANDIDATE_TRAINED and command.data["run_id"] == run_id:
            counts[(int(command.data["generation"]), int(command.data["index"]))] += 1
    return counts


def test_the_log_has_one_outcome_per_trained_candidate(env: dict[str, str], tmp_path: Path) -> None:
    worker = WorkerProcess(env, tmp_path / "worker.log")
    worker.start()
    run = request(f"cands-{uuid.uuid4().hex[:6]}", generations=3, epochs=3)
    try:
        start(worker, run)
        records = wait_for(worker, [run["run_id"]])
    finally:
        worker.stop()
    log = events(records, worker, run["run_id"])
    assert violations(log) == []
    (result,) = results(records, worker, run["run_id"])
    assert result["status"] == "succeeded"
    ga = run["ga"]
    # Generation 0 trains everyone; later ones reuse the elite's cached outcome.
    expected = ga["population"] + (ga["population"] - ga["elite"]) * (ga["generations"] - 1)
    seen = outcomes(records, worker, run["run_id"])
    assert len(seen) == len(set(seen)) == expected == result["evaluations"]
    # Each outcome is on the log before its generation's event, which lists it.
    for generation_event in (e for e in log if e.type == ev.GENERATION_COMPLETED):
        generation = generation_event.data.generation
        listed = {int(c["index"]) for c in generation_event.data.candidates}
        assert listed == {i for g, i in seen if g == generation}
    position = {e.id: n for n, e in enumerate(log)}
    for e in log:
        if e.type == ev.CANDIDATE_COMPLETED:
            later = [x for x in log[position[e.id] :] if x.type == ev.GENERATION_COMPLETED]
            assert later and later[0].data.generation == e.data.generation


def test_a_worker_killed_mid_generation_retrains_only_candidates_without_an_outcome(
    env: dict[str, str], tmp_path: Path
) -> None:
    first = WorkerProcess(env, tmp_path / "first.log")
    first.start()
    run = request(f"ckill-{uuid.uuid4().hex[:6]}", generations=3, epochs=30)
    run_id = run["run_id"]
    start(first, run)

    def mid_generation(seen: Records) -> bool:
        return any(g >= 1 for g, _ in outcomes(seen, first, run_id))

    asyncio.run(
        collect([first.settings.run_events], mid_generation, timeout_s=240, alive=first.alive)
    )
    first.stop(kill=True)
    at_kill = asyncio.run(collect([first.settings.run_events], lambda _: False, timeout_s=3))
    before = outcomes(at_kill, first, run_id)
    assert not any(e.type in ev.TERMINAL_TYPES for e in events(at_kill, first, run_id))

    second = WorkerProcess(env, tmp_path / "second.log")
    second.start()
    try:
        twin = request(f"ctwin-{uuid.uuid4().hex[:6]}", generations=3, epochs=30)
        wait_for(second, [run_id])
        start(second, twin)
        records = wait_for(second, [run_id, twin["run_id"]])
    finally:
        second.stop()
    log = events(records, second, run_id)
    assert violations(log) == [], [e.type for e in log]
    seen = outcomes(records, second, run_id)
    (resumed,) = results(records, second, run_id)
    (uninterrupted,) = results(records, second, twin["run_id"])
    assert seen[: len(before)] == before
    # Trainings done again: at most the killed generation's candidates that
    # had no outcome yet. (The log itself may hold a candidate's outcome twice
    # after a kill: the fold keeps the first.)
    generation = max(g for g, _ in before)
    (dispatched,) = [
        e.data.candidates
        for e in events(at_kill, first, run_id)
        if e.type == ev.CANDIDATES_DISPATCHED and e.data.generation == generation
    ]
    without = {i for i in dispatched if (generation, i) not in before}
    trainings = trained(second, run_id)
    assert sum(trainings.values()) - len(trainings) <= len(without), (trainings, without)
    assert len(set(seen)) == resumed["evaluations"] == uninterrupted["evaluations"]
    assert resumed["status"] == uninterrupted["status"] == "succeeded"
    assert resumed["best"]["genome"] == uninterrupted["best"]["genome"]
    assert resumed["best"]["fitness"] == uninterrupted["best"]["fitness"]
