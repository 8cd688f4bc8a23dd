"""Liveness and readiness decisions, with a hand-driven clock and hand-made checks."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from tests.clock import Clock
from thunderhelm.streams.worker.health import (
    Health,
    consumer_check,
    pool_check,
    producer_check,
)


def test_liveness_fails_when_the_loop_stops_ticking() -> None:
    clock = Clock()
    health = Health({}, clock=clock, stall_s=10.0)
    assert health.liveness() == (200, {"status": "ok", "loop": "starting"})
    health.last_tick = clock.now
    clock.now += 3.0
    status, body = health.liveness()
    assert status == 200 and body["last_tick_s_ago"] == 3.0
    clock.now += 8.0
    status, body = health.liveness()
    assert status == 503 and body["status"] == "stalled"


async def test_the_heartbeat_ticks_on_a_running_loop() -> None:
    health = Health({})
    beat = asyncio.create_task(health.heartbeat())
    try:
        for _ in range(100):
            if health.last_tick is not None:
                break
            await asyncio.sleep(0.05)
        assert health.last_tick is not None and health.liveness()[0] == 200
    finally:
        beat.cancel()


def test_readiness_lists_what_is_not_ready() -> None:
    def broken() -> str | None:
        raise RuntimeError("no answer")

    health = Health({"a": lambda: None, "b": lambda: "b is warming up", "c": broken})
    status, body = health.readiness()
    assert status == 503
    assert body == {
        "status": "not ready",
        "not_ready": {"b": "b is warming up", "c": "check failed: RuntimeError: no answer"},
    }
    assert Health({"a": lambda: None}).readiness() == (200, {"status": "ready", "checks": ["a"]})


@dataclass
class FakeConsumer:
    assigned: set[Any]

    def assignment(self) -> set[Any]:
        return self.assigned


@dataclass
class FakeProducer:
    started: bool


@dataclass
class FakeApp:
    rebalancing: bool = False
    _consumer: FakeConsumer | None = None
    _producer: FakeProducer | None = None


@dataclass
class FakeStats:
    alive: int


@dataclass
class FakeExecutor:
    stats: FakeStats | None

    def pool_stats(self) -> FakeStats | None:
        return self.stats


def test_the_worker_checks_read_consumer_producer_and_pool() -> None:
    app = FakeApp()
    consumer, producer = consumer_check(app), producer_check(app)
    assert consumer() == "the Kafka consumer has not started"
    assert producer() == "the Kafka producer has not started"
    app._consumer, app._producer = FakeConsumer(set()), FakeProducer(started=True)
    assert consumer() == "the Kafka consumer has no partitions assigned"
    assert producer() is None
    app._consumer.assigned = {("run-events", 0)}
    assert consumer() is None
    app.rebalancing = True
    assert consumer() == "the consumer group is rebalancing"
    assert pool_check(FakeExecutor(None))() == "the interpreter pool is warming up"
    assert pool_check(FakeExecutor(FakeStats(alive=0)))() == "no pool interpreter is alive"
    assert pool_check(FakeExecutor(FakeStats(alive=2)))() is None


def test_the_command_reader_is_ready_once_it_reads_every_owned_partition() -> None:
    from aiokafka.structs import TopicPartition

    from thunderhelm.streams.config.settings import Settings
    from thunderhelm.streams.worker.commands.reader import (
        CommandReader,
        InFlightOffsets,
        _Partition,
    )

    async def submit(_: object) -> None: ...

    settings = Settings()
    reader = CommandReader(settings, lambda: {0, 2}, submit, lambda _: 0)
    assert reader.following() == "the command reader waits for Faust to recover the runs' state"
    reader.resume()  # Faust recovered: the partitions are still to be read
    assert reader.following() == "the command reader does not read partitions [0, 2] yet"
    tp = TopicPartition(settings.run_commands, 0)
    reader._reading[tp] = _Partition(InFlightOffsets(0), committed=0)
    assert reader.following() == "the command reader does not read partitions [2] yet"
    tp = TopicPartition(settings.run_commands, 2)
    reader._reading[tp] = _Partition(InFlightOffsets(0), committed=0)
    assert reader.following() is None
    reader.pause()  # partitions move: not ready until Faust recovered again
    assert reader.following() is not None
