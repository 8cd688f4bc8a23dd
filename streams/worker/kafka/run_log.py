"""A run's whole event log, read again from its run-events partition.

The runs table keeps a finished run settled (`saga.settled`: its checkpoint
dropped), so a command that needs what the run ended with (a continue) folds
the run's log again. It reads the run's partition from its start to its
current end and keeps the run's records, from where the run was accepted
when that is known (`since`), else from the partition's start.
"""

from __future__ import annotations

import contextlib

from aiokafka import AIOKafkaConsumer
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import TopicPartition

from thunderhelm.schemas.codec import decode_record
from thunderhelm.streams.config.settings import Settings
from thunderhelm.streams.domain import saga
from thunderhelm.streams.wire.events import to_domain
from thunderhelm.streams.wire.failures import InputRejected

_partitioner = DefaultPartitioner()
# How far before the run's acceptance time reading starts: record timestamps
# are set by whichever worker wrote them, and their clocks may differ a little.
# A log read from too late folds to another version than the stored one, and
# the caller reads it again from the start.
CLOCK_SKEW_S = 300.0


def partition_of(settings: Settings, run_id: str) -> int:
    """The run-events partition of a run: the producer's partitioner over the topic's."""
    every = list(range(settings.partitions))
    return int(_partitioner(run_id.encode(), every, every))


async def run_log(
    settings: Settings, run_id: str, partition: int | None = None, since: float | None = None
) -> list[saga.Event]:
    """The run's events on run-events (its `partition`, else computed), in log order.

    `since` (seconds since the epoch): read from records written after it,
    less `CLOCK_SKEW_S`. Records that do not decode as events are skipped.
    """
    if partition is None:
        partition = partition_of(settings, run_id)
    tp = TopicPartition(settings.run_events, partition)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    events: list[saga.Event] = []
    try:
        await consumer.start()  # inside: a failed start must still be stopped
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        if since is not None:
            at = int((since - CLOCK_SKEW_S) * 1000)
            found = (await consumer.offsets_for_times({tp: max(0, at)}))[tp]
            if found is not None:
                consumer.seek(tp, found.offset)
        end = (await consumer.end_offsets([tp]))[tp]
        key = run_id.encode()
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=1000)
            for record in batch.get(tp, []):
                if record.offset >= end:
                    break
                if record.key != key or record.value is None:
                    continue
                # A record the run-events agent dead-lettered is not the run's either.
                with contextlib.suppress(ValueError, InputRejected):
                    events.append(to_domain(decode_record(record.value, dict(record.headers))))
    finally:
        await consumer.stop()
    return events


def folded(events: list[saga.Event]) -> saga.RunState | None:
    """The state the run's events fold to (never settled: the checkpoint is kept)."""
    state = None
    for event in events:
        state = saga.evolve(state, event)
    return state
