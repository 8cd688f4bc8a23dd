"""The command reader against the real broker: ownership, offsets, reading again after a move."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from tests.kafka_helpers import BOOTSTRAP, fresh_env
from thunderhelm.streams.config.settings import Settings
from thunderhelm.streams.worker.commands import reader as command_reader
from thunderhelm.streams.worker.commands.reader import CommandEvent, CommandReader
from thunderhelm.streams.worker.kafka.topics import ensure_topics

pytestmark = [pytest.mark.kafka]


@pytest.fixture
async def settings(tmp_path: Path) -> Settings:
    s = Settings.from_env(fresh_env(tmp_path))  # two partitions
    await ensure_topics(s)
    return s


class Handler:
    """Takes each command as the lanes do (one more reference) and acks it when told."""

    def __init__(self) -> None:
        self.taken: list[CommandEvent] = []

    async def submit(self, event: CommandEvent) -> None:
        event.message.incref()
        self.taken.append(event)

    def offsets(self, partition: int) -> list[int]:
        return [e.message.offset for e in self.taken if e.message.partition == partition]

    def finish(self, partition: int, below: int | None = None) -> None:
        for event in self.taken:
            m = event.message
            if m.partition == partition and (below is None or m.offset < below) and m.refs:
                event.ack()


@contextlib.asynccontextmanager
async def running(reader: CommandReader) -> AsyncIterator[None]:
    task = asyncio.create_task(reader.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def nothing_to_fold(partition: int) -> int:
    return 0  # run-events stays empty in these tests unless one writes to it


async def produce(settings: Settings, partition: int, count: int, topic: str | None = None) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all")
    await producer.start()
    try:
        for n in range(count):
            await producer.send_and_wait(
                topic or settings.run_commands, f"c-{n}".encode(), key=b"r", partition=partition
            )
    finally:
        await producer.stop()


async def commit_as_faust(settings: Settings, topic: str, partition: int, offset: int) -> None:
    """Commit `offset` in Faust's group, as a worker's run-events agent would.

    Without auto-commit: a consumer that auto-commits commits its position
    again when it stops, and once its fetcher had reset that position to the
    log's end, the end overwrote `offset` (the reader then started at 5, not 3).
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=BOOTSTRAP, group_id=settings.app_id, enable_auto_commit=False
    )
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        await consumer.commit({tp: OffsetAndMetadata(offset, "")})
    finally:
        await consumer.stop()


async def committed(settings: Settings) -> dict[int, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(settings.command_group)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items()}


async def until(check: Callable[[], bool | Awaitable[bool]], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        met = check()
        if not isinstance(met, bool):
            met = await met
        if met:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not met in time")


async def test_reads_only_what_it_owns_once_ready_and_commits_only_what_is_done(
    settings: Settings,
) -> None:
    await produce(settings, 0, 4)
    await produce(settings, 1, 3)
    handler = Handler()
    owned = {0}
    reader = CommandReader(settings, lambda: owned, handler.submit, nothing_to_fold)
    async with running(reader):
        await asyncio.sleep(2.0)
        assert handler.taken == [], "read before Faust's state was recovered"
        reader.resume()
        await until(lambda: len(handler.offsets(0)) == 4)
        assert handler.offsets(1) == [], "read a partition another worker owns"

        handler.finish(0, below=2)  # offsets 0 and 1 done, 2 and 3 still in hand
        await until(lambda: _committed_is(settings, 0, 2))
        await asyncio.sleep(1.5)
        assert (await committed(settings)).get(0) == 2, "committed past a command in hand"

        handler.finish(0)
        await until(lambda: _committed_is(settings, 0, 4))

        owned = {1}  # partition 0 moved to another worker, 1 came here
        await until(lambda: handler.offsets(1) == [0, 1, 2])
        await produce(settings, 0, 1)
        await asyncio.sleep(1.5)
        assert handler.offsets(0) == [0, 1, 2, 3], "read a partition it no longer owns"


async def three_commands_and_their_owner(settings: Settings) -> tuple[Handler, CommandReader]:
    """Three commands on partition 0, and a reader that owns it, ready to read."""
    await produce(settings, 0, 3)
    handler = Handler()
    reader = CommandReader(settings, lambda: {0}, handler.submit, nothing_to_fold)
    reader.resume()
    return handler, reader


async def test_after_a_move_it_reads_again_from_the_committed_offset(settings: Settings) -> None:
    handler, reader = await three_commands_and_their_owner(settings)
    async with running(reader):
        await until(lambda: handler.offsets(0) == [0, 1, 2])
        handler.finish(0, below=1)
        await until(lambda: _committed_is(settings, 0, 1))
        # A rebalance that gives the same partition back: what was in hand may
        # have been handled by another worker meanwhile, or not at all.
        reader.pause()
        reader.resume()
        await until(lambda: handler.offsets(0) == [0, 1, 2, 1, 2])


async def test_commands_read_before_a_move_are_superseded_and_move_no_offset(
    settings: Settings,
) -> None:
    # A worker that stood still wakes with commands in its lanes; once the
    # group moved its partitions, their handler leaves them alone, and their
    # end must not commit past them (the next reading reads them again).
    handler, reader = await three_commands_and_their_owner(settings)
    async with running(reader):
        await until(lambda: handler.offsets(0) == [0, 1, 2])
        first = list(handler.taken)
        assert not any(e.message.superseded() for e in first)
        reader.pause()
        assert all(e.message.superseded() for e in first)
        handler.finish(0)  # left alone by their handler
        reader.resume()
        await until(lambda: handler.offsets(0) == [0, 1, 2, 0, 1, 2])
        await asyncio.sleep(1.5)
        assert (await committed(settings)).get(0) is None, "a superseded command moved the offset"
        assert not any(e.message.superseded() for e in handler.taken[3:])
        handler.finish(0)
        await until(lambda: _committed_is(settings, 0, 3))


async def test_a_new_group_starts_where_faust_group_left(settings: Settings) -> None:
    await produce(settings, 0, 5)
    # Workers before the reader committed run-commands in Faust's group.
    await commit_as_faust(settings, settings.run_commands, 0, 3)
    handler = Handler()
    reader = CommandReader(settings, lambda: {0}, handler.submit, nothing_to_fold)
    reader.resume()
    async with running(reader):
        await until(lambda: handler.offsets(0) == [3, 4])


async def _committed_is(settings: Settings, partition: int, offset: int) -> bool:
    return (await committed(settings)).get(partition) == offset


async def test_partitions_added_later_are_read_once_faust_assigns_them(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(command_reader, "NEW_PARTITIONS_CHECK_S", 0.5)
    s = settings
    await produce(settings, 0, 2)
    handler = Handler()
    reader = CommandReader(settings, lambda: {0, 2}, handler.submit, nothing_to_fold)
    reader.resume()
    async with running(reader):
        await until(lambda: handler.offsets(0) == [0, 1])
        handler.finish(0)
        await until(lambda: _committed_is(settings, 0, 2))
        admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
        await admin.start()
        try:
            await admin.create_partitions(
                {topic: NewPartitions(total_count=3) for topic in (s.run_commands, s.run_events)}
            )
        finally:
            await admin.close()
        await produce(settings, 2, 2)
        await until(lambda: handler.offsets(2) == [0, 1])
        assert handler.offsets(0) == [0, 1], "read again what was committed"


async def test_a_gained_partition_is_read_once_its_run_events_are_folded(
    settings: Settings,
) -> None:
    # The worker before appended three events to run-events partition 0 and
    # was killed before its agent folded (and committed) them.
    await produce(settings, 0, 3, topic=settings.run_events)
    await produce(settings, 0, 2)
    folded: dict[int, int] = {}
    handler = Handler()
    reader = CommandReader(settings, lambda: {0}, handler.submit, lambda p: folded.get(p, 0))
    reader.resume()
    async with running(reader):
        await asyncio.sleep(2.0)
        assert handler.taken == [], "decided commands before the log was folded"
        folded[0] = 2
        await asyncio.sleep(1.0)
        assert handler.taken == [], "decided commands with an event still unfolded"
        folded[0] = 3
        await until(lambda: handler.offsets(0) == [0, 1])


async def test_what_faust_committed_needs_no_folding_and_the_wait_has_an_end(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    await produce(settings, 0, 3, topic=settings.run_events)
    await produce(settings, 1, 2, topic=settings.run_events)
    await commit_as_faust(settings, settings.run_events, 0, 3)  # folded by the worker before
    await produce(settings, 0, 1)
    await produce(settings, 1, 1)
    monkeypatch.setattr(command_reader, "CATCH_UP_WAIT_S", 4.0)
    handler = Handler()
    reader = CommandReader(settings, lambda: {0, 1}, handler.submit, nothing_to_fold)
    reader.resume()
    began = time.monotonic()
    async with running(reader):
        await until(lambda: handler.offsets(0) == [0])
        assert handler.offsets(1) == [], "read before its run-events were folded"
        assert time.monotonic() - began < 4.0
        # Partition 1's events are never folded here (an agent that is stuck):
        # its commands are read after the wait, not never.
        await until(lambda: handler.offsets(1) == [0], timeout_s=15.0)
        assert time.monotonic() - began >= 4.0
