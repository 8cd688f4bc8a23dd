"""Durability against the real broker: killed workers, duplicates, cancels, budgets.

Every test here uses fresh topics and a fresh consumer group (tests/kafka_helpers).
Workers are real `thunderhelm worker` processes; "kill" is SIGKILL.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from tests.kafka_helpers import BOOTSTRAP, WorkerProcess, collect, fresh_env
from thunderhelm.schemas import events as ev
from thunderhelm.schemas.codec import decode_record
from thunderhelm.schemas.envelope import CloudEvent
from thunderhelm.streams.domain import saga
from thunderhelm.streams.domain.invariants import violations
from thunderhelm.streams.wire.events import to_domain

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
Records = list[ConsumerRecord[bytes, bytes]]


def request(
    run_id: str, *, generations: int = 4, seed: int = 42, timeout_s: float = 300, epochs: int = 4
) -> dict[str, Any]:
    # Big enough that a generation takes a noticeable fraction of a second.
    return {
        "run_id": run_id,
        "dataset": {"name": "digits", "seed": 3},
        "ga": {
            "population": 4,
            "generations": generations,
            "tournament_size": 2,
            "elite": 1,
            "seed": seed,
        },
        "training": {"epochs": epochs, "batch_size": 32},
        "search_space": {"max_levels": 2, "max_units": 2, "max_neurons": 48},
        "budget": {"timeout_s": timeout_s},
    }


def command(kind: str, data: dict[str, Any], command_id: str | None = None) -> bytes:
    return json.dumps(
        {
            "specversion": "1.0",
            "id": command_id or str(uuid.uuid4()),
            "source": "tests/faults",
            "type": kind,
            "data": data,
        }
    ).encode()


async def send(topic: str, key: str, value: bytes, bootstrap: str = BOOTSTRAP) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, value=value, key=key.encode())
    finally:
        await producer.stop()


def start(worker: WorkerProcess, run: dict[str, Any], command_id: str | None = None) -> None:
    asyncio.run(
        send(
            worker.settings.run_requests,
            run["run_id"],
            command("thunderhelm.run.requested", run, command_id),
        )
    )


def cancel(worker: WorkerProcess, run_id: str) -> None:
    asyncio.run(
        send(
            worker.settings.run_requests,
            run_id,
            command("thunderhelm.run.cancel-requested", {"run_id": run_id}),
        )
    )


def of(records: Records, topic: str, run_id: str) -> Records:
    return [r for r in records if r.topic == topic and r.key == run_id.encode()]


def events(records: Records, worker: WorkerProcess, run_id: str) -> list[saga.Event]:
    return [
        to_domain(decode_record(r.value, {}))
        for r in of(records, worker.settings.run_events, run_id)
    ]


def wait_for(
    worker: WorkerProcess,
    run_ids: list[str],
    timeout_s: float = 240.0,
    *,
    generation_of: str | None = None,
    generation: int = 0,
) -> Records:
    """Read until every run has a result (or `generation_of` finished `generation`)."""
    s = worker.settings

    def done(seen: Records) -> bool:
        if generation_of is not None:
            return any(
                e.type == ev.GENERATION_COMPLETED and e.data.generation >= generation
                for e in events(seen, worker, generation_of)
            )
        return all(of(seen, s.run_results, r) for r in run_ids)

    return asyncio.run(collect([s.run_events, s.run_results], done, timeout_s=timeout_s))


def results(records: Records, worker: WorkerProcess, run_id: str) -> list[dict[str, Any]]:
    return [
        decode_record(r.value, {}).data for r in of(records, worker.settings.run_results, run_id)
    ]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return fresh_env(
        tmp_path,
        THUNDERHELM_POOL_SIZE="1",
        THUNDERHELM_SESSION_TIMEOUT_S="6",
        OTEL_TRACES_EXPORTER="none",
    )


@pytest.fixture
def worker(env: dict[str, str], tmp_path: Path) -> Iterator[WorkerProcess]:
    proc = WorkerProcess(env, tmp_path / "worker.log")
    proc.start()
    yield proc
    proc.stop()


def test_killed_worker_resumes_from_last_generation_with_the_same_result(
    env: dict[str, str], tmp_path: Path
) -> None:
    first = WorkerProcess(env, tmp_path / "first.log")
    first.start()
    run = request(f"kill-{uuid.uuid4().hex[:6]}", epochs=40)
    start(first, run)
    wait_for(first, [], generation_of=run["run_id"], generation=1)
    first.stop(kill=True)  # mid-generation 2

    second = WorkerProcess(env, tmp_path / "second.log")
    second.start()
    try:
        twin = request(f"twin-{uuid.uuid4().hex[:6]}", epochs=40)
        records = wait_for(second, [run["run_id"]])
        start(second, twin)
        records = wait_for(second, [run["run_id"], twin["run_id"]])
    finally:
        second.stop()
    log = events(records, second, run["run_id"])
    assert violations(log) == [], [e.type for e in log]
    types = [e.type for e in log]
    assert types.count(ev.RUN_STARTED) == 1  # resumed, not restarted
    generations = [e.data.generation for e in log if e.type == ev.GENERATION_COMPLETED]
    assert generations == [0, 1, 2, 3]
    # Generations 0 and 1 were written by the killed worker, the rest by its successor.
    raw = [
        decode_record(r.value, {}) for r in of(records, second.settings.run_events, run["run_id"])
    ]
    writers = [e.source for e in raw if e.type == ev.GENERATION_COMPLETED]
    assert writers[0] == writers[1] != writers[-1], writers
    (resumed,) = results(records, second, run["run_id"])
    (uninterrupted,) = results(records, second, twin["run_id"])
    assert resumed["status"] == uninterrupted["status"] == "succeeded"
    assert resumed["best"]["genome"] == uninterrupted["best"]["genome"]
    assert resumed["best"]["fitness"] == uninterrupted["best"]["fitness"]


def test_a_worker_killed_in_a_continued_generation_resumes_to_the_same_result(
    env: dict[str, str], tmp_path: Path
) -> None:
    first = WorkerProcess(env, tmp_path / "first.log")
    first.start()
    run = request(f"more-{uuid.uuid4().hex[:6]}", generations=1, epochs=40)
    run_id = run["run_id"]
    start(first, run)
    wait_for(first, [run_id])
    more = command("thunderhelm.run.continue-requested", {"run_id": run_id, "generations": 3})
    asyncio.run(send(first.settings.run_requests, run_id, more))
    wait_for(first, [], generation_of=run_id, generation=1)
    first.stop(kill=True)  # mid-generation 3, the second of the continue

    second = WorkerProcess(env, tmp_path / "second.log")
    second.start()
    s = second.settings
    try:
        twin = request(f"twin-{uuid.uuid4().hex[:6]}", epochs=40)
        start(second, twin)

        def done(seen: Records) -> bool:
            # Both topics are read side by side: a result may come in before
            # the terminal event it follows, so both revisions' endings are awaited.
            ends = [e for e in events(seen, second, run_id) if e.type in ev.TERMINAL_TYPES]
            return (
                len(ends) >= 2
                and len(of(seen, s.run_results, run_id)) >= 2
                and bool(of(seen, s.run_results, twin["run_id"]))
            )

        records = asyncio.run(collect([s.run_events, s.run_results], done, timeout_s=240.0))
    finally:
        second.stop()
    log = events(records, second, run_id)
    assert violations(log) == [], [e.type for e in log]
    types = [e.type for e in log]
    assert types.count(ev.RUN_CONTINUED) == 1 and types.count(ev.RUN_STARTED) == 1
    generations = [e.data.generation for e in log if e.type == ev.GENERATION_COMPLETED]
    assert generations == [0, 1, 2, 3]
    raw = [decode_record(r.value, {}) for r in of(records, s.run_events, run_id)]
    writers = [e.source for e in raw if e.type == ev.GENERATION_COMPLETED]
    assert writers[1] != writers[-1], writers  # the successor finished what the first began
    _, resumed = results(records, second, run_id)
    (uninterrupted,) = results(records, second, twin["run_id"])
    assert resumed["revision"] == 2 and resumed["status"] == "succeeded"
    assert resumed["best"]["genome"] == uninterrupted["best"]["genome"]
    assert resumed["best"]["fitness"] == uninterrupted["best"]["fitness"]


def test_two_workers_one_killed_repeatedly_every_run_ends_once(
    env: dict[str, str], tmp_path: Path
) -> None:
    steady = WorkerProcess(env, tmp_path / "steady.log")
    flaky = WorkerProcess(env, tmp_path / "flaky.log")
    steady.start()
    flaky.start()
    runs = [
        request(f"multi{i}-{uuid.uuid4().hex[:5]}", generations=3, seed=i, epochs=12)
        for i in range(4)
    ]
    try:
        for run in runs:
            start(steady, run)
        for _ in range(2):
            time.sleep(2.5)
            flaky.stop(kill=True)
            time.sleep(1.0)
            flaky.start()
        records = wait_for(steady, [r["run_id"] for r in runs], timeout_s=300)
    finally:
        flaky.stop()
        steady.stop()
    for run in runs:
        outcome = results(records, steady, run["run_id"])
        assert len(outcome) == 1 and outcome[0]["status"] == "succeeded", outcome
        log = events(records, steady, run["run_id"])
        assert violations(log) == [], (
            run["run_id"],
            [(e.type, getattr(e.data, "generation", None)) for e in log],
        )


def test_duplicate_commands_and_redelivered_events_change_nothing(worker: WorkerProcess) -> None:
    run = request(f"dup-{uuid.uuid4().hex[:6]}", generations=2)
    start(worker, run, command_id="same-id")
    start(worker, run, command_id="same-id")  # the same command again
    start(worker, run)  # a second start for an existing run
    records = wait_for(worker, [run["run_id"]])
    s = worker.settings
    # Redeliver a generation event and the terminal event, byte for byte.
    copies = [
        r
        for r in of(records, s.run_events, run["run_id"])
        if decode_record(r.value, {}).type in (ev.GENERATION_COMPLETED, ev.RUN_SUCCEEDED)
    ]
    for record in copies:
        asyncio.run(send(s.run_events, run["run_id"], record.value))
    time.sleep(3.0)  # let the worker see the copies before reading everything again
    records = wait_for(worker, [run["run_id"]])
    assert len(results(records, worker, run["run_id"])) == 1
    types = [e.type for e in events(records, worker, run["run_id"])]
    assert types.count(ev.RUN_ACCEPTED) == 1 and types.count(ev.RUN_STARTED) == 1
    state = None
    for e in events(records, worker, run["run_id"]):
        state = saga.evolve(state, e)
    assert state is not None and state.status == "succeeded" and state.generation == 2


def test_cancel_before_during_and_after(worker: WorkerProcess) -> None:
    before = request(f"cb-{uuid.uuid4().hex[:6]}")
    cancel(worker, before["run_id"])
    time.sleep(1.0)
    start(worker, before)
    during = request(f"cd-{uuid.uuid4().hex[:6]}", generations=30)
    start(worker, during)
    wait_for(worker, [], generation_of=during["run_id"], generation=0)
    cancel(worker, during["run_id"])
    after = request(f"ca-{uuid.uuid4().hex[:6]}", generations=1)
    start(worker, after)
    wait_for(worker, [after["run_id"]])
    cancel(worker, after["run_id"])
    records = wait_for(worker, [before["run_id"], during["run_id"], after["run_id"]])
    time.sleep(2.0)
    records = wait_for(worker, [before["run_id"], during["run_id"], after["run_id"]])
    assert [r["status"] for r in results(records, worker, before["run_id"])] == ["cancelled"]
    (stopped,) = results(records, worker, during["run_id"])
    assert stopped["status"] == "cancelled" and stopped["generations"] < 30
    assert [r["status"] for r in results(records, worker, after["run_id"])] == ["succeeded"]
    for run in (before, during, after):
        assert violations(events(records, worker, run["run_id"])) == []


def test_timeout_budget_ends_the_run_with_its_best_so_far(worker: WorkerProcess) -> None:
    run = request(f"budget-{uuid.uuid4().hex[:6]}", generations=200, timeout_s=4)
    start(worker, run)
    records = wait_for(worker, [run["run_id"]], timeout_s=120)
    (result,) = results(records, worker, run["run_id"])
    assert result["generations"] < 200
    if result["generations"] > 0:  # something found: delivered, with the budget named
        assert result["status"] == "succeeded" and result["stopped_by"] == "timeout_s"
        assert result["artifact"] and result["best"]["metrics"]["test_accuracy"] is not None
    else:  # the clock ran out before a generation completed: nothing to deliver
        assert result["status"] == "failed" and result["error"]["class"] == "TimeoutError"


def test_a_worker_paused_past_the_session_timeout_writes_nothing_stale(
    env: dict[str, str], tmp_path: Path
) -> None:
    """SIGSTOP one of two workers mid-run for longer than the session timeout:
    the other takes its runs over; when it moves again it writes nothing after
    the new owner's events (but what it had handed to its Kafka client before
    it stopped), folds nothing it reads, and says why."""
    steady = WorkerProcess(env, tmp_path / "steady.log")
    paused = WorkerProcess(env, tmp_path / "paused.log")
    steady.start()
    paused.start()
    runs = [
        request(f"stop{i}-{uuid.uuid4().hex[:5]}", generations=3, seed=i, epochs=12)
        for i in range(4)
    ]
    try:
        for run in runs:
            start(steady, run)
        wait_for(steady, [], generation_of=runs[0]["run_id"], generation=0)
        pid = paused.worker_pid
        os.kill(pid, signal.SIGSTOP)
        time.sleep(15.0)  # the session timeout is 6 s
        os.kill(pid, signal.SIGCONT)
        records = wait_for(steady, [r["run_id"] for r in runs], timeout_s=300)
        time.sleep(3.0)  # whatever the paused one still had in flight
        records = wait_for(steady, [r["run_id"] for r in runs], timeout_s=300)
    finally:
        paused.stop()
        steady.stop()
    paused_source = f"/{pid}"
    for run in runs:
        outcome = results(records, steady, run["run_id"])
        assert len(outcome) == 1 and outcome[0]["status"] == "succeeded", outcome
        log, stale = stale_writes_apart(records, steady, run["run_id"])
        assert violations(log) == [], run["run_id"]
        # The one write a worker may land after the new owner's events: one it
        # had handed to its Kafka client before it stopped. Its sequence is one
        # the log has already, so a fold takes nothing from it.
        assert len(stale) <= 1 and all(e.source.endswith(paused_source) for e in stale), stale
        replayed = fold(log)
        assert replayed is not None and fold(events(records, steady, run["run_id"])) == replayed
    assert "stood still" in paused.log_path.read_text(errors="replace")


def stale_writes_apart(
    records: Records, worker: WorkerProcess, run_id: str
) -> tuple[list[saga.Event], list[CloudEvent]]:
    """The run's log, and apart from it the writes whose sequence the log had already."""
    log: list[saga.Event] = []
    stale: list[CloudEvent] = []
    last = 0
    for r in of(records, worker.settings.run_events, run_id):
        record = decode_record(r.value, {})
        sequence = int(record.sequence or 0)
        if sequence <= last:
            stale.append(record)
            continue
        last = sequence
        log.append(to_domain(record))
    return log, stale


def fold(log: list[saga.Event]) -> saga.RunState | None:
    state: saga.RunState | None = None
    for event in log:
        state = saga.evolve(state, event)
    return state
