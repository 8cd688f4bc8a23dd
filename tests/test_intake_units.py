"""The intake's writes and commits without a broker: small fakes of the aiokafka clients.

The broker tests (test_intake.py) show the whole path; these pin the two
promises the intake's commit rests on, each in isolation: an offset is
committed only once every input before it is acknowledged, whatever order
the acks come in (and never past a batch whose writes failed), and a write
the broker refuses is written again until it is taken.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata, TopicPartition

from thunderhelm.streams.worker.intake import writes as intake_writes
from thunderhelm.streams.worker.intake.writes import Item, Writes
from thunderhelm.streams.worker.kafka.offsets import InOrderCommits, Record

TP = TopicPartition("requests", 0)


def record(offset: int) -> Record:
    return ConsumerRecord("requests", 0, offset, 0, 0, b"k", b"v", None, 1, 1, [])


class Consumer:
    def __init__(self) -> None:
        self.commits: list[int] = []

    async def commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        self.commits.append(offsets[TP].offset)


async def started(acked: asyncio.Future[None]) -> Any:
    """What `Intake.route` returns: its writes started, an awaitable of their acks."""

    async def acknowledged() -> None:
        await acked

    return acknowledged()


async def three_batches(size: int) -> tuple[Consumer, InOrderCommits, list[asyncio.Future[None]]]:
    """Three batches of `size` records routed, none of their writes acknowledged yet."""
    consumer = Consumer()
    commits = InOrderCommits(consumer)  # type: ignore[arg-type]  # the fake has what is used
    loop = asyncio.get_running_loop()
    acks: list[asyncio.Future[None]] = [loop.create_future() for _ in range(3)]
    for n, ack in enumerate(acks):
        await commits.add(started(ack), {TP: [record(size * n + i) for i in range(size)]})
    return consumer, commits, acks


async def test_an_offset_is_committed_once_every_input_before_it_is_acknowledged() -> None:
    consumer, commits, acks = await three_batches(10)
    acks[2].set_result(None)
    acks[1].set_result(None)
    await asyncio.sleep(0.01)
    assert consumer.commits == []  # the first batch is not acknowledged yet
    acks[0].set_result(None)
    await commits.drain()
    assert consumer.commits == [30]  # then past all three at once


async def test_in_order_acks_commit_batch_by_batch() -> None:
    consumer, commits, acks = await three_batches(10)
    for ack in acks:
        ack.set_result(None)
        await asyncio.sleep(0.01)
    await commits.drain()
    assert consumer.commits == [10, 20, 30]


async def test_nothing_is_committed_past_a_batch_whose_writes_failed() -> None:
    consumer, commits, acks = await three_batches(1)
    acks[0].set_result(None)
    acks[1].set_exception(RuntimeError("writes lost"))
    acks[2].set_result(None)
    with pytest.raises(RuntimeError, match="writes lost"):
        await commits.drain()
    assert consumer.commits == [1]


class Producer:
    """Refuses the first `refusals` writes, then takes every one."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.written: list[tuple[str, bytes | None]] = []

    def _ack(self, topic: str, value: bytes | None) -> asyncio.Future[None]:
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.refusals > 0:
            self.refusals -= 1
            ack.set_exception(KafkaError("not now"))
        else:
            self.written.append((topic, value))
            ack.set_result(None)
        return ack

    async def send(self, topic: str, value: bytes | None, **_: Any) -> asyncio.Future[None]:
        return self._ack(topic, value)

    async def send_and_wait(self, topic: str, value: bytes | None, **_: Any) -> None:
        await self._ack(topic, value)


async def test_a_refused_write_is_written_again_until_the_broker_takes_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(intake_writes, "RETRY_DELAY_S", 0.0)
    producer = Producer(refusals=3)
    writes = Writes(producer)  # type: ignore[arg-type]  # the fake has what is used
    await writes.single("commands", Item(b"k", b"one", []))
    await writes.single("commands", Item(b"k", b"two", []))
    await writes.flush()
    assert sorted(producer.written) == [("commands", b"one"), ("commands", b"two")]
