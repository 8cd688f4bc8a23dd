"""Runs that build on runs, on the real broker: continue and warm start.

A run that succeeded goes on from its last checkpoint under the same run id
(`thunderhelm.run.continue-requested`) and ends with a second result record
(revision 2); what it finds equals a run requested with the larger generation
count from the start. A continue the run cannot take is refused with its
reason: in the run's log when the run exists, on dead-letters when it does
not. A request with `warm_start` begins generation 0 with the best genomes of
an earlier run, read from that run's log; a source that is missing or learned
another shape of problem is a `run.rejected` with the reason.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from tests.kafka_helpers import BOOTSTRAP, WorkerProcess, collect, module_worker
from tests.test_e2e_kafka import event_types, for_run, produce, small_request, structured
from thunderhelm.schemas import events as ev
from thunderhelm.schemas.codec import decode_record, encode_event
from thunderhelm.schemas.event_data import event_data
from thunderhelm.schemas.requests import CONTINUE_REQUESTED
from thunderhelm.streams.clients import client
from thunderhelm.streams.domain import saga
from thunderhelm.streams.wire.events import event_envelope
from thunderhelm.streams.worker.kafka.run_log import partition_of, run_log

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

type Records = list[ConsumerRecord[bytes, bytes]]


worker = module_worker("worker")


def decoded(records: Records, run_id: str, topic: str) -> list[Any]:
    return [decode_record(r.value, {}) for r in for_run(records, run_id, topic)]


def ended(seen: Records, worker: WorkerProcess, run_id: str, count: int = 1) -> bool:
    """Whether the run has ended `count` times, by its events and its results.

    Both topics are read side by side: a result may come in before the terminal
    event it follows, so both are awaited.
    """
    s = worker.settings
    types = event_types(for_run(seen, run_id, s.run_events))
    ends = sum(t in ev.TERMINAL_TYPES for t in types)
    return ends >= count and len(for_run(seen, run_id, s.run_results)) >= count


async def run_to_end(worker: WorkerProcess, request: dict[str, Any]) -> Records:
    """Produce `request`; the records once the run has ended (events and result)."""
    s = worker.settings
    run_id = request["run_id"]
    await produce(s.run_requests, structured(request), run_id.encode())
    return await collect(
        [s.run_events, s.run_results], lambda seen: ended(seen, worker, run_id), timeout_s=240.0
    )


async def test_continue_n_more_equals_one_run_of_the_larger_count(worker: WorkerProcess) -> None:
    s = worker.settings
    tag = uuid.uuid4().hex[:6]
    short, long = f"short-{tag}", f"long-{tag}"
    await run_to_end(worker, small_request(short, generations=2))
    more = {"run_id": short, "generations": 1}
    await produce(s.run_requests, structured(more, CONTINUE_REQUESTED), short.encode())

    records = await collect(
        [s.run_events, s.run_results], lambda seen: ended(seen, worker, short, 2), timeout_s=240.0
    )
    first, second = decoded(records, short, s.run_results)
    assert first.id == f"{short}/result" and first.data["revision"] == 1
    assert second.id == f"{short}/result/2" and second.data["revision"] == 2
    assert second.data["status"] == "succeeded" and second.data["generations"] == 3
    # One log: the first run's, `run.continued`, one generation more and the end again.
    types = event_types(for_run(records, short, s.run_events))
    lifecycle = [t for t in types if t not in (ev.CANDIDATE_COMPLETED, ev.CANDIDATES_DISPATCHED)]
    assert lifecycle[lifecycle.index(ev.RUN_SUCCEEDED) :] == [
        ev.RUN_SUCCEEDED,
        ev.RUN_CONTINUED,
        ev.GENERATION_COMPLETED,
        ev.RUN_SUCCEEDED,
    ]
    sequences = [int(e.sequence or 0) for e in decoded(records, short, s.run_events)]
    assert sequences == list(range(1, len(sequences) + 1))

    whole = decoded(
        await run_to_end(worker, small_request(long, generations=3)), long, s.run_results
    )
    best, expected = second.data["best"], whole[0].data["best"]
    assert (best["genome"], best["fitness"]) == (expected["genome"], expected["fitness"])
    assert second.data["evaluations"] == whole[0].data["evaluations"]


async def test_watch_follows_a_continued_run_to_its_next_result(worker: WorkerProcess) -> None:
    s = worker.settings
    run_id = f"watched-{uuid.uuid4().hex[:6]}"
    # Slow enough that the continue's generation is still training when `watch` starts.
    slow = {**small_request(run_id, generations=1, samples=8000), "training": {"epochs": 30}}
    await run_to_end(worker, slow)
    more = structured({"run_id": run_id, "generations": 1}, CONTINUE_REQUESTED)
    await produce(s.run_requests, more, run_id.encode())

    def continued(seen: Records) -> bool:
        return ev.RUN_CONTINUED in event_types(for_run(seen, run_id, s.run_events))

    records = await collect([s.run_events, s.run_results], continued, timeout_s=60.0)
    assert len(for_run(records, run_id, s.run_results)) == 1  # only the first result is out
    followed = [seen async for seen in client.follow(s, run_id, timeout_s=120.0)]
    assert followed[-1].topic == s.run_results and followed[-1].event.data["revision"] == 2


async def test_a_continue_the_run_cannot_take_is_refused_with_its_reason(
    worker: WorkerProcess,
) -> None:
    s = worker.settings
    tag = uuid.uuid4().hex[:6]
    running, failed, missing = f"busy-{tag}", f"failed-{tag}", f"missing-{tag}"
    await produce(
        s.run_requests, structured(small_request(running, generations=200)), running.encode()
    )
    # Out of time before any generation: failed with TimeoutError.
    doomed = {**small_request(failed), "budget": {"timeout_s": 0.01}}
    await run_to_end(worker, doomed)

    def started(seen: Records) -> bool:
        return ev.RUN_STARTED in event_types(for_run(seen, running, s.run_events))

    await collect([s.run_events], started, timeout_s=120.0)
    for run_id in (running, failed, missing):
        more = structured({"run_id": run_id, "generations": 2}, CONTINUE_REQUESTED)
        await produce(s.run_requests, more, run_id.encode())

    def refused(seen: Records) -> bool:
        in_logs = all(
            ev.CONTINUE_REJECTED in event_types(for_run(seen, run_id, s.run_events))
            for run_id in (running, failed)
        )
        return in_logs and bool(for_run(seen, missing, s.dead_letters))

    records = await collect([s.run_events, s.dead_letters], refused, timeout_s=120.0)
    for run_id, status in ((running, "running"), (failed, "failed")):
        (rejection,) = [
            e for e in decoded(records, run_id, s.run_events) if e.type == ev.CONTINUE_REJECTED
        ]
        assert rejection.data["reasons"] == [
            f"run {run_id} is {status}: only a run that succeeded "
            "(it ran its generations or a budget ran out) goes on"
        ]
    headers = dict(for_run(records, missing, s.dead_letters)[0].headers)
    assert headers["dlq.stage"] == b"decide"
    assert headers["dlq.error.message"] == f"no run '{missing}' to continue".encode()
    cancel = structured({"run_id": running}, "thunderhelm.run.cancel-requested")
    await produce(s.run_requests, cancel, running.encode())
    assert worker.alive()


async def test_a_warm_start_begins_with_the_best_genomes_of_its_source(
    worker: WorkerProcess,
) -> None:
    s = worker.settings
    tag = uuid.uuid4().hex[:6]
    source, warm = f"source-{tag}", f"warm-{tag}"
    first = await run_to_end(worker, small_request(source, generations=2))
    (source_result,) = decoded(first, source, s.run_results)
    request = {**small_request(warm, generations=1), "warm_start": {"run_id": source, "top": 2}}
    records = await run_to_end(worker, request)
    events = decoded(records, warm, s.run_events)
    accepted = next(e for e in events if e.type == ev.RUN_ACCEPTED)
    lineage = accepted.data["warm_start"]
    assert lineage["run_id"] == source and len(lineage["keys"]) == 2
    assert lineage["fitnesses"][0] == source_result.data["best"]["fitness"]
    started = next(e for e in events if e.type == ev.RUN_STARTED)
    assert started.data["ga_state"]["population"][:2] == lineage["genomes"]
    (result,) = decoded(records, warm, s.run_results)
    assert result.data["status"] == "succeeded"
    assert result.data["warm_start"] == {"run_id": source, "genomes": lineage["keys"]}


async def test_a_warm_start_from_a_missing_or_other_shaped_run_is_rejected_with_why(
    worker: WorkerProcess,
) -> None:
    s = worker.settings
    tag = uuid.uuid4().hex[:6]
    source, missing, other = f"three-{tag}", f"from-nothing-{tag}", f"four-{tag}"
    await run_to_end(worker, small_request(source, generations=1))
    nowhere = {**small_request(missing), "warm_start": {"run_id": f"nowhere-{tag}"}}
    four = small_request(other)
    four = {**four, "dataset": {**four["dataset"], "classes": 4}, "warm_start": {"run_id": source}}
    for request in (nowhere, four):
        await produce(s.run_requests, structured(request), request["run_id"].encode())

    def rejected(seen: Records) -> bool:
        return all(
            ev.RUN_REJECTED in event_types(for_run(seen, run_id, s.run_events))
            for run_id in (missing, other)
        )

    records = await collect([s.run_events], rejected, timeout_s=120.0)
    (why_missing,) = [e.data["reasons"] for e in decoded(records, missing, s.run_events)]
    assert why_missing == [
        f"warm_start.run_id: no run 'nowhere-{tag}' (its log has no run.accepted)"
    ]
    (why_other,) = [e.data["reasons"] for e in decoded(records, other, s.run_events)]
    assert why_other == [
        f"warm_start.run_id: run '{source}' learned 2 inputs and 3 classes; "
        "this request's dataset has 2 inputs and 4 classes"
    ]


async def test_a_runs_log_is_read_again_from_its_acceptance_when_that_is_known(
    worker: WorkerProcess,
) -> None:
    # Two notes on the run's partition, stamped ahead of every record there
    # (which the broker allows up to an hour): the second at the run's
    # acceptance, the first well before it. Read from the acceptance, the
    # first is not read; read from the start, both are.
    s = worker.settings
    run_id = f"log-{uuid.uuid4().hex[:6]}"
    accepted = time.time() + 50 * 60
    note = {"run_id": run_id, "stage": "validate", "error_class": "X", "error_message": "m"}
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all")
    await producer.start()
    try:
        for sequence, at in ((1, accepted - 40 * 60), (2, accepted)):
            data = event_data(ev.EVENT_DEAD_LETTERED, note)
            record = event_envelope(run_id, saga.NewEvent(ev.EVENT_DEAD_LETTERED, data), sequence)
            await producer.send_and_wait(
                s.run_events,
                encode_event(record),
                key=run_id.encode(),
                partition=partition_of(s, run_id),
                timestamp_ms=int(at * 1000),
            )
    finally:
        await producer.stop()
    assert len(await run_log(s, run_id)) == 2
    assert len(await run_log(s, run_id, since=accepted)) == 1
