"""Where the aiokafka readers stand: offsets committed in order, after the work is done.

A committed offset must never pass a record whose work is not done, or a
crash would lose it. Every aiokafka reader keeps an `InFlightOffsets` per
partition, whose commit point is its first record in hand:

* the command reader hands each record to the run lanes, the candidate
  trainer to the pool, and each record is done when its work is;
* the intake routes whole batches at once (the next is screened while the
  last one's writes are in flight): `InOrderCommits` takes a batch's records
  when it routes them and finishes them once its writes are acknowledged.

The rebalance listener commits before a partition moves away and starts a
new group where the Faust group of older workers stopped.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections import deque
from collections.abc import Awaitable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata, TopicPartition

from thunderhelm.streams.config.settings import Settings

log = logging.getLogger(__name__)

type Record = ConsumerRecord[bytes, bytes]
# Routed batches whose acks may be outstanding at once.
MAX_BATCHES_IN_FLIGHT = 4
# Tries at reading Faust's group offsets before the reader starts again.
GROUP_OFFSETS_ATTEMPTS = 10


class InFlightOffsets:
    """One partition's records finish in any order; its commit point passes only finished ones.

    `take` says whether a record is new here: after a rebalance the consumer
    reads from the committed offset again, and a record in hand, or finished
    but not yet committed past, must not be handed on twice. Reading starts
    at `start` (the committed offset) or else at the first record taken. A
    reader makes a new one each time it starts reading a partition, so the
    late finish of a record from an earlier reading never moves this one.
    """

    def __init__(self, start: int | None = None) -> None:
        self._next = start  # after the last record taken
        self._in_hand: set[int] = set()
        # The offsets in hand as a min-heap, finished ones dropped lazily: the
        # intake finishes a whole batch at once, and `min` over the set per
        # finished record made that quadratic (`bench dlq` measured it).
        self._lowest: list[int] = []

    def take(self, offset: int) -> bool:
        if self._next is None:
            self._next = offset
        if offset in self._in_hand or self.commit_point() <= offset < self._next:
            return False
        self._in_hand.add(offset)
        heapq.heappush(self._lowest, offset)
        self._next = max(self._next, offset + 1)
        return True

    def finish(self, offset: int) -> int:
        """Mark a record done; returns the commit point."""
        self._in_hand.discard(offset)
        return self.commit_point()

    def commit_point(self) -> int:
        """The first offset not done: every record below it is finished."""
        lowest = self._lowest
        while lowest and lowest[0] not in self._in_hand:
            heapq.heappop(lowest)
        if lowest:
            return lowest[0]
        return 0 if self._next is None else self._next

    def in_flight(self) -> int:
        return len(self._in_hand)


class InOrderCommits:
    """Routed batches finish in any order; a partition is committed up to its first unacked input.

    A batch's records are taken (`InFlightOffsets`) when it is routed and
    finished once all its writes are acknowledged, so a committed offset
    never passes an input whose write is in flight, or failed.
    """

    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self._consumer = consumer
        self._tasks: deque[asyncio.Task[None]] = deque()
        self._offsets: dict[TopicPartition, InFlightOffsets] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._committing = asyncio.Lock()  # commits go out one at a time, never backwards

    async def add(
        self, routing: Awaitable[Awaitable[None]], batch: dict[TopicPartition, list[Record]]
    ) -> None:
        """Await `routing` (the writes started), then commit past `batch` once they are acked."""
        while len(self._tasks) >= MAX_BATCHES_IN_FLIGHT:
            await asyncio.wait({self._tasks[0]})
            self._forget_done()
        for tp, records in batch.items():
            offsets = self._offsets.setdefault(tp, InFlightOffsets())
            if records:
                self._committed.setdefault(tp, records[0].offset)  # where reading began
            for record in records:
                offsets.take(record.offset)
        waiting = await routing
        self._tasks.append(asyncio.ensure_future(self._commit_after(waiting, batch)))

    async def _commit_after(
        self, acknowledged: Awaitable[None], batch: dict[TopicPartition, list[Record]]
    ) -> None:
        await acknowledged  # raises if a write failed: its inputs stay in hand, never passed
        for tp, records in batch.items():
            for record in records:
                self._offsets[tp].finish(record.offset)
        async with self._committing:
            points = {
                tp: point
                for tp, offsets in self._offsets.items()
                if (point := offsets.commit_point()) > self._committed.get(tp, point)
            }
            if points:
                await commit(self._consumer, points)
                self._committed.update(points)

    def _forget_done(self) -> None:
        while self._tasks and self._tasks[0].done():
            self._tasks.popleft().result()  # a failed batch raises here

    def raise_if_failed(self) -> None:
        self._forget_done()

    async def drain(self) -> None:
        """Wait for every routed batch (raises if one failed); the next reading starts afresh."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))
            self._forget_done()
        self._offsets.clear()
        self._committed.clear()


class Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Commit before a partition moves away; start where an older worker stopped.

    Workers before the intake read run-requests in Faust's own group: where
    the intake's group has no offset yet, it starts at that group's.
    """

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        commits: InOrderCommits,
        inherited: dict[TopicPartition, int],
    ) -> None:
        self._consumer = consumer
        self._commits = commits
        self._inherited = inherited

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._commits.drain()

    async def on_partitions_assigned(self, assigned: Any) -> None:
        for tp in assigned:
            offset = self._inherited.get(tp)
            if offset is not None and await self._consumer.committed(tp) is None:
                log.info("intake starts %s at %d, where Faust's group stopped", tp, offset)
                self._consumer.seek(tp, offset)


async def faust_group_offsets(settings: Settings, topic: str) -> dict[TopicPartition, int]:
    """`topic`'s offsets committed by Faust's group, left by workers that read it in Faust.

    Asked again while the broker fails to answer (a busy broker times out the
    group coordinator lookup), and raised if it never does: answering "none"
    would start a new group at the log's beginning and handle again every
    command the workers before had handled.
    """
    for attempt in range(1, GROUP_OFFSETS_ATTEMPTS + 1):
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
        try:
            await admin.start()
            offsets = await admin.list_consumer_group_offsets(settings.app_id)
        except KafkaError as exc:
            if attempt == GROUP_OFFSETS_ATTEMPTS:
                raise
            log.warning("could not read Faust's group offsets (%s); asking again", exc)
            await asyncio.sleep(min(0.5 * attempt, 2.0))
            continue
        finally:
            await admin.close()
        return {
            tp: meta.offset
            for tp, meta in offsets.items()
            if tp.topic == topic and meta.offset >= 0
        }
    raise AssertionError("unreachable")


async def commit(consumer: AIOKafkaConsumer, points: dict[TopicPartition, int]) -> None:
    """Commit each partition's next offset to read."""
    offsets = {tp: OffsetAndMetadata(point, "") for tp, point in points.items()}
    try:
        await consumer.commit(offsets)
    except CommitFailedError as exc:
        # The group rebalanced: the new owner reads these records again.
        log.warning("intake commit after a rebalance failed (%s); records are read again", exc)
