"""Follow run-events and run-results from the start, forever, without a consumer group.

The dashboard reads the same topics the workers read, so it must not move
their offsets: its consumer has no group id (partitions are assigned, never
subscribed) and never commits. New partitions of a topic created after the
start are picked up on the next metadata refresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition

from thunderhelm.streams.config.settings import Settings
from thunderhelm.streams.dashboard.read_model import ReadModel

log = logging.getLogger(__name__)
Changed = Callable[[str], None]


class LogReader:
    def __init__(self, settings: Settings, model: ReadModel, changed: Changed) -> None:
        self.settings = settings
        self.model = model
        self.changed = changed
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="dashboard-log-reader")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception:  # the broker went away: keep the page up, try again
                log.exception("reading the event log failed; retrying")
                await asyncio.sleep(2.0)

    async def _assign(self, consumer: AIOKafkaConsumer, have: set[TopicPartition]) -> None:
        await consumer._client.force_metadata_update()  # aiokafka has no public refresh
        found = {
            TopicPartition(topic, p)
            for topic in (self.settings.run_events, self.settings.run_results)
            for p in consumer.partitions_for_topic(topic) or ()
        }
        if found - have:
            new = found - have
            have |= new
            consumer.assign(sorted(have))
            await consumer.seek_to_beginning(*new)

    async def _follow(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            max_partition_fetch_bytes=8 * 2**20,
        )
        await consumer.start()
        try:
            have: set[TopicPartition] = set()
            while not have:
                await self._assign(consumer, have)
                if not have:
                    await asyncio.sleep(1.0)  # no worker has created the topics yet
            loop = asyncio.get_running_loop()
            refresh_at = loop.time() + 5.0
            while True:
                batch = await consumer.getmany(timeout_ms=300)
                for tp, records in batch.items():
                    for r in records:
                        headers = {k: bytes(v) for k, v in r.headers}
                        if tp.topic == self.settings.run_events:
                            run_id = self.model.apply_event(r.value, headers)
                        else:
                            run_id = self.model.apply_result(r.value, headers)
                        if run_id is not None:
                            self.changed(run_id)
                if loop.time() >= refresh_at:
                    await self._assign(consumer, have)
                    refresh_at = loop.time() + 5.0
        finally:
            await consumer.stop()
