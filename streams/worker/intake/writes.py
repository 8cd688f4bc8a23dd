"""The intake's writes for one batch, each acknowledged before its offsets are committed.

Dead letters go in producer batches per partition, because a flood of bad
records must cost one request per batch rather than one per record; a
forwarded command goes on its own. `Writes.flush` awaits every
acknowledgement and writes whatever failed again, alone, until the broker
takes it: nothing the intake routed is lost.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.producer.message_accumulator import BatchBuilder

log = logging.getLogger(__name__)

RETRY_DELAY_S = 1.0


class Item(NamedTuple):
    """One record to write: the bytes and headers of a dead letter or a forward."""

    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


@dataclass
class Writes:
    """The batch's writes: dead letters in producer batches, forwards one by one.

    Every write's acknowledgement is awaited in `flush`; a write that fails is
    written again, alone, until the broker takes it, so nothing routed is
    lost and the batch's offsets can be committed after `flush` returns.
    """

    producer: AIOKafkaProducer
    _open: dict[tuple[str, int], tuple[BatchBuilder, list[Item]]] = field(default_factory=dict)
    _full: list[tuple[str, int, BatchBuilder, list[Item]]] = field(default_factory=list)
    _sent: list[tuple[asyncio.Future[Any], str, int | None, list[Item]]] = field(
        default_factory=list
    )

    def batched(self, topic: str, partition: int, item: Item) -> None:
        """Append to the partition's open batch; a full one waits for `send_open`."""
        slot = self._open.get((topic, partition))
        if slot is None:
            slot = self._open[(topic, partition)] = (self.producer.create_batch(), [])
        builder, items = slot
        if builder.append(key=item.key, value=item.value, timestamp=None, headers=item.headers):
            items.append(item)
            return
        self._full.append((topic, partition, builder, items))
        builder = self.producer.create_batch()
        if not builder.append(key=item.key, value=item.value, timestamp=None, headers=item.headers):
            raise RuntimeError("a record does not fit an empty producer batch")
        self._open[(topic, partition)] = (builder, [item])

    async def single(self, topic: str, item: Item) -> None:
        future = await self.producer.send(
            topic, value=item.value, key=item.key, headers=item.headers
        )
        self._sent.append((future, topic, None, [item]))

    async def send_open(self) -> None:
        """Hand every batch filled so far to the producer."""
        for topic, partition in list(self._open):
            builder, items = self._open.pop((topic, partition))
            self._full.append((topic, partition, builder, items))
        full, self._full = self._full, []
        for topic, partition, builder, items in full:
            builder.close()
            future = await self.producer.send_batch(builder, topic, partition=partition)
            self._sent.append((future, topic, partition, items))

    async def flush(self) -> None:
        """Wait for every write's ack; write again, alone, whatever failed."""
        await self.send_open()
        sent, self._sent = self._sent, []
        outcomes = await asyncio.gather(*(f for f, *_ in sent), return_exceptions=True)
        for outcome, (_, topic, where, items) in zip(outcomes, sent, strict=True):
            if isinstance(outcome, BaseException):
                log.error("intake write to %s failed (%s); writing again", topic, outcome)
                for item in items:
                    await self._until_written(topic, where, item)

    async def _until_written(self, topic: str, partition: int | None, item: Item) -> None:
        while True:
            try:
                await self.producer.send_and_wait(
                    topic, value=item.value, key=item.key, headers=item.headers, partition=partition
                )
                return
            except KafkaError as exc:
                log.error("intake write to %s failed again: %s", topic, exc)
                await asyncio.sleep(RETRY_DELAY_S)
