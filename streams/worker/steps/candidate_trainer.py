"""Every worker's share of every run: it trains candidate tasks while its pool has room.

Each worker is one member of a consumer group on candidate-tasks. It takes a
task only when an interpreter is free, and pauses its partitions while the
pool is full, so nothing waits in a busy worker's buffers and the records it
has not taken stay where a rebalance can hand them to another worker. A
trained candidate's outcome goes to the run's owner as a `candidate.trained`
command on run-commands; the task's offset is committed only after that
write is acknowledged, so a worker killed mid-training leaves the task to be
taken again (only tasks without an outcome are trained twice; a duplicate
outcome is dropped by the owner's fold). A malformed task is dead-lettered
with its reason, and the trainer goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata, TopicPartition
from opentelemetry.context import Context

from thunderhelm.schemas.codec import decode_record, encode_event
from thunderhelm.schemas.tasks import CANDIDATE_TASK, CANDIDATE_TRAINED, CandidateTrained
from thunderhelm.streams.config.settings import Settings
from thunderhelm.streams.execution.outcomes import settled
from thunderhelm.streams.observability import telemetry
from thunderhelm.streams.wire.events import envelope
from thunderhelm.streams.wire.failures import Failure, InputRejected, Origin, classify
from thunderhelm.streams.worker.events.writer import validated_task
from thunderhelm.streams.worker.kafka.group_consumer import group_consumer, keep_running
from thunderhelm.streams.worker.kafka.offsets import InFlightOffsets

log = logging.getLogger(__name__)

type Record = ConsumerRecord[bytes, bytes]
RETRY_DELAY_S = 1.0
# A task is a network description and a dataset spec: small.
MAX_TASK_BYTES = 1024 * 1024

# Produce (topic, key, value, trace context) and await the broker's ack.
Send = Callable[[str, str | None, bytes, Context | None], Awaitable[None]]
DeadLetter = Callable[[Record, Failure, Origin], Awaitable[None]]
Train = Callable[[dict[str, Any], Context | None], dict[str, Any]]


class CandidateTrainer:
    """Takes candidate tasks while the pool has a free interpreter; trains them; reports back."""

    def __init__(
        self,
        settings: Settings,
        slots: Callable[[], int],
        train: Train,
        send: Send,
        dead_letter: DeadLetter,
    ) -> None:
        self.settings = settings
        self.slots = slots  # free interpreters are counted against this (the pool's size)
        self.train = train
        self.send = send
        self.dead_letter = dead_letter
        # Per partition read in this consumer session (a new member starts from
        # the committed offsets).
        self.offsets: dict[TopicPartition, InFlightOffsets] = {}
        self._running: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        """Train tasks until cancelled; broker outages are waited out."""
        await keep_running(self._run_once, "candidate trainer")

    async def _run_once(self) -> None:
        s = self.settings
        consumer = group_consumer(
            s,
            s.trainer_group,
            "trainer",
            max_partition_fetch_bytes=MAX_TASK_BYTES,
            # A training can take minutes: the consumer still polls while it runs.
            max_poll_interval_ms=3_600_000,
        )
        await consumer.start()
        self.offsets = {}
        try:
            consumer.subscribe([s.candidate_tasks])
            log.info("candidate trainer reading %s", s.candidate_tasks)
            while True:
                free = self.slots() - len(self._running)
                if free <= 0:
                    # Full: fetch nothing more, so untaken tasks stay free for others.
                    consumer.pause(*consumer.assignment())
                    await asyncio.wait(self._running, return_when=asyncio.FIRST_COMPLETED)
                    continue
                consumer.resume(*consumer.paused())
                batch = await consumer.getmany(timeout_ms=500, max_records=free)
                for tp, records in batch.items():
                    for record in records:
                        if self.offsets.setdefault(tp, InFlightOffsets()).take(record.offset):
                            self._start(consumer, tp, record)
        finally:
            for task in list(self._running):
                task.cancel()
            with contextlib.suppress(Exception):
                await consumer.stop()

    def _start(self, consumer: AIOKafkaConsumer, tp: TopicPartition, record: Record) -> None:
        task = asyncio.get_running_loop().create_task(self._handle(consumer, tp, record))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _handle(self, consumer: AIOKafkaConsumer, tp: TopicPartition, record: Record) -> None:
        try:
            await self._train_one(record)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # A task this worker cannot train (its dataset will not load here,
            # say) is dead-lettered with the reason rather than retried forever;
            # the run's deadline ends a run that waits for it.
            log.exception("candidate task %s@%d could not be trained", tp, record.offset)
            origin = Origin(record.topic, record.partition, record.offset, record.timestamp)
            await self.dead_letter(record, classify(exc, "execute"), origin)
        safe = self.offsets[tp].finish(record.offset)
        try:
            await consumer.commit({tp: OffsetAndMetadata(safe, "")})
        except (CommitFailedError, KafkaError) as exc:
            # The partition moved: its new holder starts at the last commit,
            # and the owner's fold drops the outcome it may send again.
            log.warning("candidate task commit on %s failed: %s", tp, exc)

    async def _train_one(self, record: Record) -> None:
        headers = list(record.headers or ())
        origin = Origin(record.topic, record.partition, record.offset, record.timestamp)
        try:
            event = decode_record(record.value, dict(headers))
            if event.type != CANDIDATE_TASK:
                raise InputRejected("validate", f"unknown task type {event.type!r}")
            task = validated_task(event.data)
        except Exception as exc:
            await self.dead_letter(record, classify(exc, "validate"), origin)
            return
        if time.time() > float(task["deadline"]):
            log.info("candidate %s/%s: past its run's deadline", task["run_id"], task["index"])
            return
        context = telemetry.context_from_traceparent(task.get("traceparent"))
        outcome = await asyncio.to_thread(self.train, task, context)
        if not settled(outcome):
            return  # the clock stopped it: the run's deadline decides what happens
        data = CandidateTrained.model_validate(outcome).model_dump(mode="json", exclude_unset=True)
        command = envelope(task["run_id"], CANDIDATE_TRAINED, data, None, None)
        value = encode_event(command)
        while True:  # the outcome must reach the owner before the task is committed
            try:
                await self.send(self.settings.run_commands, task["run_id"], value, context)
                return
            except KafkaError as exc:
                log.warning(
                    "outcome of candidate %s/%s not sent (%s); sending again",
                    task["run_id"],
                    task["index"],
                    exc,
                )
                await asyncio.sleep(RETRY_DELAY_S)
