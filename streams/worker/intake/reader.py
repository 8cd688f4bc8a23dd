"""The intake: run-requests, a batch at a time, to dead-letters or run-commands.

Users produce anything to run-requests, so this is where hostile input lands.
Faust handles records one event at a time (about 1,500 per second on two
cores, whatever the handler does), which made a flood of bad records as slow
as the slowest part of the worker. The intake reads run-requests with a plain
aiokafka consumer instead: it screens each record (`admission.py`), appends
dead letters to per-partition producer batches, forwards admitted commands to
run-commands (where the run's owner drives the saga, `command_reader.py`), awaits every write's
acknowledgement (`intake_writes.py`) and only then commits the batch's
offsets, in order (`intake_offsets.py`). A crash before the commit means the
batch is read again: a dead letter may be written twice, never lost, and a
forwarded command twice, which the saga's de-duplication absorbs.

Tracing: an input that carries a trace context gets its own `process` span
and dead-letter span in that trace. Inputs without one (random bytes, as a
rule) share one dead-letter span per batch, with an event per record, rather
than one new single-span trace each; every dead letter's `traceparent` names
the span that holds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaProducer
from aiokafka.structs import TopicPartition
from opentelemetry.trace import Span

from thunderhelm.streams.config.settings import Settings
from thunderhelm.streams.observability import metrics as meters
from thunderhelm.streams.observability import telemetry
from thunderhelm.streams.wire.failures import Failure, Origin, dead_letter_headers
from thunderhelm.streams.worker.dead_letters.acks import ThrottledLog
from thunderhelm.streams.worker.intake.admission import (
    forward_headers,
    run_id_of_key,
    screen_command,
)
from thunderhelm.streams.worker.intake.writes import Item, Writes
from thunderhelm.streams.worker.kafka.group_consumer import (
    group_consumer,
    keep_running,
    observe_lag,
    start_when_up,
)
from thunderhelm.streams.worker.kafka.offsets import (
    InOrderCommits,
    Rebalance,
    Record,
    faust_group_offsets,
)

log = logging.getLogger(__name__)

# Called for a dead letter whose key names a run this worker knows: the run's
# log gets a `dead-lettered` event.
KnownRunNote = Callable[[str, Failure, Origin], Awaitable[None]]

MAX_RECORDS_PER_BATCH = 2000
# A producer batch this large amortises the per-request cost well; a bigger
# record still goes alone in a batch of its own.
PRODUCER_BATCH_BYTES = 256 * 1024
MAX_REQUEST_BYTES = 4 * 1024 * 1024
DRAIN_TIMEOUT_S = 30.0
# Events kept on a shared dead-letter span; the rest are counted.
EVENTS_PER_SPAN = 100


class _SharedDeadLetterSpan:
    """One dead-letter span for a batch's inputs that carry no trace context."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.span: Span | None = None
        self.headers: dict[str, bytes] = {}
        self.count = 0
        self.stages: Counter[str] = Counter()

    def add(self, record: Record, failure: Failure) -> dict[str, bytes]:
        if self.span is None:
            self.span = telemetry.start_dead_letter_batch_span(self.topic)
            self.headers = telemetry.headers_of(self.span)
        self.count += 1
        self.stages[failure.stage] += 1
        if self.count <= EVENTS_PER_SPAN:
            self.span.add_event(
                "dead letter",
                {
                    "messaging.destination.partition.id": str(record.partition),
                    "messaging.kafka.offset": record.offset,
                    "dlq.stage": failure.stage,
                    "error.type": failure.error_class,
                    "exception.message": failure.message[:300],
                },
            )
        return self.headers

    def end(self) -> None:
        if self.span is None:
            return
        classes = ", ".join(f"{stage} {n}" for stage, n in sorted(self.stages.items()))
        telemetry.mark_failed(self.span, "DeadLettered", f"{self.count} inputs ({classes})")
        self.span.set_attribute("thunderhelm.dead_letter.count", self.count)
        self.span.set_attribute(
            "thunderhelm.dead_letter.events_dropped", max(0, self.count - EVENTS_PER_SPAN)
        )
        self.span.end()


class Intake:
    """Screens run-requests; dead-letters or forwards each record; commits after the acks."""

    def __init__(self, settings: Settings, note_known_run: KnownRunNote | None = None) -> None:
        self.settings = settings
        self.note_known_run = note_known_run
        self._log = ThrottledLog(log)
        self._dead_letter_partitions: list[int] = []

    async def run(self) -> None:
        """Read run-requests until cancelled; broker outages and surprises are waited out."""
        await keep_running(self._run_once, "intake")

    async def _run_once(self) -> None:
        s = self.settings
        consumer = group_consumer(
            s, s.intake_group, "intake", max_partition_fetch_bytes=MAX_REQUEST_BYTES
        )
        producer = AIOKafkaProducer(
            bootstrap_servers=s.bootstrap_servers,
            client_id=f"{s.app_id}-intake",
            acks="all",
            max_batch_size=PRODUCER_BATCH_BYTES,
            max_request_size=MAX_REQUEST_BYTES,
        )
        commits = InOrderCommits(consumer)
        await start_when_up(producer, "intake")
        await start_when_up(consumer, "intake")
        try:
            inherited = await faust_group_offsets(s, s.run_requests)
            consumer.subscribe([s.run_requests], listener=Rebalance(consumer, commits, inherited))
            partitions = await producer.partitions_for(s.dead_letters)
            self._dead_letter_partitions = sorted(partitions)
            log.info("intake reading %s", s.run_requests)
            while True:
                batch = await consumer.getmany(timeout_ms=500, max_records=MAX_RECORDS_PER_BATCH)
                commits.raise_if_failed()
                if batch:
                    # The next batch is screened while this one's writes are in flight.
                    await commits.add(self.route(batch, producer), batch)
                    observe_lag(consumer, batch)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(commits.drain(), DRAIN_TIMEOUT_S)
            with contextlib.suppress(Exception):
                await consumer.stop()
            with contextlib.suppress(Exception):
                await producer.stop()

    async def route(
        self, batch: dict[TopicPartition, list[Record]], producer: AIOKafkaProducer
    ) -> Awaitable[None]:
        """Start the writes of every record of `batch`; the result waits for all acks."""
        writes = Writes(producer)
        shared = _SharedDeadLetterSpan(self.settings.run_requests)
        notes: list[tuple[str, Failure, Origin]] = []
        dead: Counter[tuple[str, str]] = Counter()
        try:
            for tp, records in batch.items():
                for record in records:
                    origin = Origin(tp.topic, tp.partition, record.offset, record.timestamp)
                    headers = list(record.headers)
                    screened = screen_command(
                        record.key, record.value, headers, self.settings.limits
                    )
                    if isinstance(screened, Failure):
                        self._dead_letter(record, headers, screened, origin, writes, shared)
                        dead[(screened.stage, screened.error_class)] += 1
                        run_id = run_id_of_key(record.key)
                        if run_id is not None and self.note_known_run is not None:
                            notes.append((run_id, screened, origin))
                    else:
                        await self._forward(record, headers, origin, writes)
        finally:
            shared.end()
        await writes.send_open()

        async def acknowledged() -> None:
            await writes.flush()
            for (stage, error_class), n in dead.items():
                meters.dead_lettered(stage, error_class, n)
            if self.note_known_run is not None:
                for run_id, failure, origin in notes:
                    await self.note_known_run(run_id, failure, origin)

        return acknowledged()

    def _dead_letter(
        self,
        record: Record,
        headers: list[tuple[str, bytes]],
        failure: Failure,
        origin: Origin,
        writes: Writes,
        shared: _SharedDeadLetterSpan,
    ) -> None:
        self._log.dead_letter(origin, failure)
        context = telemetry.record_context(headers)
        if context is None:
            trace_headers = shared.add(record, failure)
        else:
            trace_headers = telemetry.dead_letter_spans(
                record, context, failure.error_class, failure.stage, failure.message
            )
        partitions = self._dead_letter_partitions or [0]
        writes.batched(
            self.settings.dead_letters,
            # Same partition number as the input (when there are as many), so
            # the dead letters of one input partition stay in their order.
            partitions[origin.partition % len(partitions)],
            Item(
                record.key,
                record.value,
                dead_letter_headers(headers, failure, origin, trace_headers),
            ),
        )

    async def _forward(
        self, record: Record, headers: list[tuple[str, bytes]], origin: Origin, writes: Writes
    ) -> None:
        trace_headers = telemetry.forward_span(record, telemetry.record_context(headers))
        await writes.single(
            self.settings.run_commands,
            Item(record.key, record.value, forward_headers(headers, origin, trace_headers)),
        )
