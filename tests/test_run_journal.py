"""The run's lane to its log (worker/events/journal.py), without a broker.

The writer is a fake whose acks the test releases; the store is a dict. What
is under test: what the lane writes and folds, the numbering, the end of a
run, and that whatever else touches the run waits for an append's ack.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from thunderhelm.schemas import events as ev
from thunderhelm.schemas.codec import decode_record
from thunderhelm.schemas.event_data import RunAccepted, RunStarted, event_data
from thunderhelm.streams.domain import saga
from thunderhelm.streams.wire.events import to_domain
from thunderhelm.streams.worker.events.journal import RunJournal
from thunderhelm.streams.worker.events.store import RunStore

RUN = "r-1"
PARTITION = 2


class Writer:
    """Records what is produced; each ack waits for `release` while `holding`."""

    def __init__(self) -> None:
        self.produced: list[dict[str, Any]] = []
        self.holding = False
        self.release = asyncio.Event()

    async def produce(self, topic: str, key: str | None, value: bytes, context: Any) -> None:
        self.produced.append(json.loads(value))
        if self.holding:
            await self.release.wait()

    def types(self) -> list[str]:
        return [record["type"] for record in self.produced]

    def sequences(self) -> list[int]:
        return [int(record["sequence"]) for record in self.produced]


def journal() -> tuple[RunJournal, Writer]:
    writer = Writer()
    return RunJournal(writer, RunStore({}), "run-events"), writer  # type: ignore[arg-type]


ACCEPTED = saga.NewEvent(ev.RUN_ACCEPTED, RunAccepted(run_id=RUN, request={"run_id": RUN}), "c-1")
STARTED = saga.NewEvent(ev.RUN_STARTED, RunStarted(run_id=RUN, ga_state={"population": []}))
RESULT = {
    "run_id": RUN,
    "status": "cancelled",
    "best": None,
    "generations": 0,
    "evaluations": 0,
    "duration_s": 0.1,
    "artifact": None,
    "error": {"class": "Cancelled", "message": "by the user"},
}
CANCELLED = saga.NewEvent(
    ev.RUN_CANCELLED, event_data(ev.RUN_CANCELLED, {"run_id": RUN, "result": RESULT})
)


def outcome(generation: int, index: int = 0) -> saga.NewEvent:
    data = {
        "run_id": RUN,
        "generation": generation,
        "index": index,
        "genome_key": f"g{index}",
        "fitness": 0.5,
        "metrics": {"val_accuracy": 0.5},
        "seed": 1,
    }
    return saga.NewEvent(ev.CANDIDATE_COMPLETED, event_data(ev.CANDIDATE_COMPLETED, data))


def note() -> saga.NewEvent:
    data = {"run_id": RUN, "stage": "validate", "error_class": "X", "error_message": "bad"}
    return saga.NewEvent(ev.EVENT_DEAD_LETTERED, event_data(ev.EVENT_DEAD_LETTERED, data))


def test_each_append_is_folded_at_once_and_numbers_the_log() -> None:
    async def go() -> tuple[RunJournal, Writer]:
        j, w = journal()
        accepted = await j.record(RUN, lambda state: [ACCEPTED], None, partition=PARTITION)
        assert accepted is not None and accepted.status == "accepted"
        running = await j.append(RUN, STARTED, None)
        assert running is not None and running.status == "running"
        await j.append(RUN, outcome(0), None)
        return j, w

    j, w = asyncio.run(go())
    assert w.sequences() == [1, 2, 3]
    state = j.store.get(RUN)
    assert state is not None and state.version == 3 and 0 in state.outcomes
    assert j.store.partition(RUN) == PARTITION


def test_what_the_fold_does_not_take_is_not_written() -> None:
    async def go() -> Writer:
        j, w = journal()
        await j.append(RUN, ACCEPTED, None)
        await j.append(RUN, STARTED, None)
        assert await j.append(RUN, STARTED, None) is None  # a second start
        await j.append(RUN, outcome(0), None)
        assert await j.append(RUN, outcome(0), None) is None  # the same candidate again
        assert await j.append(RUN, outcome(5), None) is None  # another generation's
        assert await j.append(RUN, outcome(0, index=1), None) is not None
        return w

    w = asyncio.run(go())
    assert w.types() == [ev.RUN_ACCEPTED, ev.RUN_STARTED] + [ev.CANDIDATE_COMPLETED] * 2
    assert w.sequences() == [1, 2, 3, 4]


def test_after_the_end_only_a_dead_letter_note_is_written_and_it_is_numbered() -> None:
    async def go() -> tuple[RunJournal, Writer]:
        j, w = journal()
        for new in (ACCEPTED, STARTED, CANCELLED):
            await j.append(RUN, new, None)
        assert await j.append(RUN, outcome(0), None) is None
        assert await j.append(RUN, CANCELLED, None) is None
        assert await j.append(RUN, note(), None) is not None
        await j.settle(RUN)
        assert await j.append(RUN, note(), None) is not None  # settled, still numbered
        return j, w

    j, w = asyncio.run(go())
    assert (
        w.types()
        == [ev.RUN_ACCEPTED, ev.RUN_STARTED, ev.RUN_CANCELLED] + [ev.EVENT_DEAD_LETTERED] * 2
    )
    assert w.sequences() == [1, 2, 3, 4, 5]
    state = j.store.get(RUN)
    assert state is not None and state.settled and state.status == "cancelled"


def test_nothing_is_written_when_the_writer_may_no_longer_write() -> None:
    async def go() -> Writer:
        j, w = journal()
        await j.append(RUN, ACCEPTED, None)
        assert await j.append(RUN, STARTED, None, allowed=lambda: False) is None
        return w

    assert asyncio.run(go()).types() == [ev.RUN_ACCEPTED]


def test_a_run_is_decided_again_only_after_the_last_append_is_acked_and_folded() -> None:
    """While the ending waits for its ack, an outcome's decision and a fold of
    what is read back wait for the lane; then the outcome finds the run ended."""

    async def go() -> tuple[RunJournal, Writer, list[str]]:
        j, w = journal()
        await j.append(RUN, ACCEPTED, None)
        await j.append(RUN, STARTED, None)
        w.holding = True
        ending = asyncio.create_task(j.append(RUN, CANCELLED, None))
        await asyncio.sleep(0)
        seen: list[str] = []

        def decide(state: saga.RunState | None) -> list[saga.NewEvent]:
            assert state is not None
            seen.append(state.status)
            return [outcome(0)]

        late = asyncio.create_task(j.record(RUN, decide, None))
        # The accepted event read back from run-events: a duplicate, folded in turn.
        read_back = to_domain(decode_record(json.dumps(w.produced[0]).encode(), {}))
        folded = asyncio.create_task(j.fold(read_back, PARTITION))
        for _ in range(10):
            await asyncio.sleep(0)
        assert not late.done() and not folded.done() and seen == []
        w.release.set()
        assert await late is None
        assert await folded == (j.store.get(RUN), False)
        await ending
        return j, w, seen

    j, w, seen = asyncio.run(go())
    assert seen == ["cancelled"]
    assert w.types()[-1] == ev.RUN_CANCELLED
    assert j._lanes == {}  # a lane lives only while the run is written or folded


async def test_a_worker_that_stood_still_during_an_append_stores_nothing_after_its_ack() -> None:
    # Its store would reach the runs table's changelog after the new owner's
    # writes, and a restore of the partition would take it as the last state.
    lane, writer = journal()
    await lane.record(RUN, lambda _state: [ACCEPTED], None, partition=PARTITION)
    stood_still = False
    lane.fenced = lambda: stood_still
    writer.holding = True
    pending = asyncio.create_task(lane.append(RUN, STARTED, None))
    await asyncio.sleep(0)
    stood_still = True  # the worker stops, and moves again before the ack comes
    writer.release.set()
    assert await pending is None
    assert writer.types() == [ev.RUN_ACCEPTED, ev.RUN_STARTED]  # written, as it was sent
    stored = lane.store.get(RUN)
    assert stored is not None and (stored.status, stored.version) == ("accepted", 1)
    # Nor is anything read back folded, or a finished run settled, while it is fenced.
    started = to_domain(decode_record(json.dumps(writer.produced[1]).encode(), {}))
    assert await lane.fold(started, PARTITION) == (stored, False)
    stood_still = False
    after, changed = await lane.fold(started, PARTITION)
    assert changed and after is not None and after.status == "running"
