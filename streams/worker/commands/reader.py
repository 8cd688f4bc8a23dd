"""run-commands, read a batch at a time by the worker that owns each run.

Faust hands records to an agent one at a time, several event-loop turns
each. With the interpreter pool on every core, each of those turns waits
behind the loop's other work: `bench stream` found Faust's delivery to be
most of a request's latency, several times the intake's plain consumer in
the same process (bench/RESULTS.md). So run-commands is read like
run-requests: with a plain aiokafka consumer, a batch per turn, and each
command handed to its run's lane (`lanes.py`) at once.

Ownership stays Faust's. A run's commands are decided where its state is:
on the worker that Faust assigned the run's run-events partition (the same
partition number: every topic here is keyed by run id). The reader assigns
itself every run-commands partition and fetches only the ones whose
run-events partition this worker owns, and only once Faust has recovered
their state (`resume`, on Faust's rebalance-complete signal; `pause` on its
revocation). A partition gained is read from the group's committed offset
(or Faust's, where a worker before this reader left one), once the
run-events agent has folded what that partition of run-events held when the
reader took it: the worker before may have appended events it never folded
(it was killed), and a command decided without them could be decided again
(a candidate's outcome appended twice). A partition lost is paused and its
handled prefix committed.

Offsets: a command is acked once its handling, and any dead letter it made,
is done, in offset order (`OrderedAcks` in the lanes); the reader commits,
per partition, up to the first command still in hand. A command read before
partitions moved is `superseded`: its handler leaves it alone (a worker that
stood still may wake with commands in its lanes that the partition's new
owner decides), and its finish no longer moves any offset, so it is read
again wherever its partition is read next.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from thunderhelm.streams.config.settings import Settings
from thunderhelm.streams.worker.intake.writes import RETRY_DELAY_S
from thunderhelm.streams.worker.kafka.group_consumer import keep_running, observe_lag, start_when_up
from thunderhelm.streams.worker.kafka.offsets import InFlightOffsets, Record, faust_group_offsets

log = logging.getLogger(__name__)

MAX_RECORDS_PER_BATCH = 500
MAX_REQUEST_BYTES = 4 * 1024 * 1024
COMMIT_INTERVAL_S = 1.0
# How long a fetch waits for records before the reader looks at ownership again.
POLL_MS = 200
# How often, at most, the reader asks the broker for run-commands' partitions
# while Faust assigns this worker one the reader does not know (an operator
# added partitions after the reader started).
NEW_PARTITIONS_CHECK_S = 10.0
# The longest a gained partition waits for the run-events agent to fold what
# was on the log; then its commands are read anyway (the saga's de-duplication
# still holds), with a warning.
CATCH_UP_WAIT_S = 30.0
END_OFFSETS_TIMEOUT_S = 10.0


@dataclass(eq=False)
class CommandMessage:
    """A run-commands record as the handlers read it (the fields of a Faust message)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    timestamp: float | None  # CreateTime in seconds, as Faust gives it
    on_done: Callable[[CommandMessage], None] = field(repr=False)
    # Whether the reader started this command's partition again since it read
    # it (partitions moved): that reading, here or on the partition's new
    # owner, reads the command again, so this copy must not be decided.
    superseded: Callable[[], bool] = field(repr=False, default=lambda: False)
    refs: int = 1  # the reader's own; the lanes add theirs (`OrderedAcks`)

    @property
    def tp(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)

    def incref(self, n: int = 1) -> None:
        self.refs += n


@dataclass(eq=False)
class CommandEvent:
    """One command in hand: acked (`ack`) by each holder of a reference, done at zero."""

    message: CommandMessage

    @property
    def headers(self) -> dict[str, bytes]:
        return dict(self.message.headers)

    def ack(self) -> bool:
        message = self.message
        message.refs -= 1
        if message.refs == 0:
            message.on_done(message)
            return True
        return False


@dataclass
class _Partition:
    """Where the reader stands on one partition it reads."""

    offsets: InFlightOffsets  # what is handed over and what is done
    committed: int  # the last offset committed

    def done(self, message: CommandMessage) -> None:
        self.offsets.finish(message.offset)


def _unless_superseded(
    done: Callable[[CommandMessage], None], superseded: Callable[[], bool]
) -> Callable[[CommandMessage], None]:
    def on_done(message: CommandMessage) -> None:
        if not superseded():
            done(message)

    return on_done


Submit = Callable[[CommandEvent], Awaitable[None]]


class CommandReader:
    def __init__(
        self,
        settings: Settings,
        owned: Callable[[], set[int]],
        submit: Submit,
        folded_to: Callable[[int], int],
    ) -> None:
        self.settings = settings
        self.owned = owned  # run-events partitions Faust assigned this worker (active only)
        self.submit = submit
        self.folded_to = folded_to  # run-events partition -> the offset folded up to
        # Gained partitions waiting for the fold: run-events offset to reach, since when.
        self._catching_up: dict[int, tuple[int, float]] = {}
        self._ready = False
        # Bumped by each pause: a reader that sees it moved starts every
        # partition again from its committed offset, whatever came back.
        self._epoch = 0
        self._seen_epoch = 0
        self._reading: dict[TopicPartition, _Partition] = {}
        self._last_commit = 0.0
        self._next_partitions_check = 0.0

    def pause(self) -> None:
        """Faust is moving partitions: read nothing until its state is recovered."""
        self._ready = False
        self._epoch += 1

    def resume(self) -> None:
        """Faust recovered the state of what it assigned: follow its assignment again."""
        self._ready = True

    def following(self) -> str | None:
        """None when the reader reads every run-commands partition Faust assigned this
        worker; else what it waits for (a readiness check: until then a command waits)."""
        if not self._ready:
            return "the command reader waits for Faust to recover the runs' state"
        reading = {tp.partition for tp in self._reading}
        waiting = sorted(set(self.owned()) - reading)
        if waiting:
            return f"the command reader does not read partitions {waiting} yet"
        return None

    def _superseded_after(self, epoch: int) -> Callable[[], bool]:
        return lambda: self._epoch != epoch

    async def run(self) -> None:
        """Read run-commands until cancelled; broker outages and surprises are waited out."""
        await keep_running(self._run_once, "command reader")

    async def _run_once(self) -> None:
        s = self.settings
        consumer = AIOKafkaConsumer(
            bootstrap_servers=s.bootstrap_servers,
            group_id=s.command_group,
            client_id=f"{s.app_id}-commands",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=MAX_REQUEST_BYTES,
        )
        await start_when_up(consumer, "command reader")
        self._reading = {}
        try:
            inherited = await faust_group_offsets(s, s.run_commands)
            partitions = await _partitions(s, s.run_commands)
            every = [TopicPartition(s.run_commands, p) for p in sorted(partitions)]
            consumer.assign(every)
            consumer.pause(*every)
            log.info("command reader ready on %s (%d partitions)", s.run_commands, len(every))
            while True:
                if await self._topic_grew(partitions):
                    # Start again on the larger topic: what is in hand is read
                    # again from the committed offsets, as after a move.
                    log.info("run-commands gained partitions; the command reader starts again")
                    return
                await self._follow_ownership(consumer, set(every), inherited)
                batch = await consumer.getmany(
                    timeout_ms=POLL_MS, max_records=MAX_RECORDS_PER_BATCH
                )
                for tp, records in batch.items():
                    await self._hand_over(tp, records)
                observe_lag(consumer, batch)
                await self._maybe_commit(consumer)
        finally:
            with contextlib.suppress(Exception):
                await self._commit(consumer, set(self._reading))
            self._reading = {}
            with contextlib.suppress(Exception):
                await consumer.stop()

    async def _topic_grew(self, known: set[int]) -> bool:
        """Whether run-commands now has partitions beyond `known` that Faust assigns here."""
        if not self._ready or set(self.owned()) <= known:
            return False
        now = time.monotonic()
        if now < self._next_partitions_check:
            return False
        self._next_partitions_check = now + NEW_PARTITIONS_CHECK_S
        return bool(await _partitions(self.settings, self.settings.run_commands) - known)

    async def _follow_ownership(
        self,
        consumer: AIOKafkaConsumer,
        every: set[TopicPartition],
        inherited: dict[TopicPartition, int],
    ) -> None:
        topic = self.settings.run_commands
        wanted = {TopicPartition(topic, p) for p in self.owned()} & every if self._ready else set()
        lost = set(self._reading) - wanted
        if self._seen_epoch != self._epoch:
            # Partitions moved since the last look (even if the same came back):
            # what another worker may have handled meanwhile is read from the
            # committed offsets, never skipped.
            self._seen_epoch = self._epoch
            lost = set(self._reading)
            self._catching_up = {}
        if lost:
            consumer.pause(*lost)
            await self._commit(consumer, lost)
            for tp in lost:
                # Commands of it still in hand finish; their acks no longer move
                # this reader's offsets (the partition's new owner reads them again).
                del self._reading[tp]
            lost_partitions = sorted(tp.partition for tp in lost)
            log.info("command reader stops reading partitions %s", lost_partitions)
        gained = wanted - set(self._reading)
        await self._note_targets({tp.partition for tp in gained})
        for tp in gained:
            if not self._caught_up(tp.partition):
                continue
            committed = await consumer.committed(tp)
            if committed is None and tp in inherited:
                committed = inherited[tp]
                log.info("command reader starts %s at %d, where Faust's group left", tp, committed)
            if committed is None:
                await consumer.seek_to_beginning(tp)
                start = await consumer.position(tp)
            else:
                consumer.seek(tp, committed)
                start = committed
            self._reading[tp] = _Partition(InFlightOffsets(start), committed=start)
            consumer.resume(tp)
            log.info("command reader reads partition %d from offset %d", tp.partition, start)

    async def _note_targets(self, partitions: set[int]) -> None:
        """For each partition just gained, the run-events offset to fold before reading it."""
        new = partitions - set(self._catching_up)
        if not new:
            return
        now = time.monotonic()
        for partition, target in (await unfolded_ends(self.settings, new)).items():
            self._catching_up[partition] = (target, now)
            if target > self.folded_to(partition):
                log.info(
                    "command reader waits for run-events partition %d to be folded to %d",
                    partition,
                    target,
                )

    def _caught_up(self, partition: int) -> bool:
        """Whether the run-events agent has folded what the partition held when it came here."""
        target, since = self._catching_up[partition]
        if self.folded_to(partition) >= target:
            return True
        if time.monotonic() - since >= CATCH_UP_WAIT_S:
            log.warning(
                "run-events partition %d not folded to %d after %.0f s (at %d); "
                "reading its commands anyway",
                partition,
                target,
                CATCH_UP_WAIT_S,
                self.folded_to(partition),
            )
            return True
        return False

    async def _hand_over(self, tp: TopicPartition, records: list[Record]) -> None:
        for record in records:
            at = self._reading.get(tp)
            if at is None or self._epoch != self._seen_epoch:
                # Partitions are moving: the rest is read again from the
                # committed offset, here or by the partition's new owner.
                return
            at.offsets.take(record.offset)
            superseded = self._superseded_after(self._epoch)
            event = CommandEvent(
                CommandMessage(
                    topic=tp.topic,
                    partition=tp.partition,
                    offset=record.offset,
                    key=record.key,
                    value=record.value,
                    headers=list(record.headers or ()),
                    timestamp=record.timestamp / 1000.0 if record.timestamp else None,
                    on_done=_unless_superseded(at.done, superseded),
                    superseded=superseded,
                )
            )
            try:
                await self.submit(event)
            finally:
                event.ack()  # the reader's own reference; the lanes hold theirs

    async def _maybe_commit(self, consumer: AIOKafkaConsumer) -> None:
        now = time.monotonic()
        if now - self._last_commit >= COMMIT_INTERVAL_S:
            self._last_commit = now
            await self._commit(consumer, set(self._reading))

    async def _commit(self, consumer: AIOKafkaConsumer, tps: set[TopicPartition]) -> None:
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        for tp in tps:
            at = self._reading.get(tp)
            if at is not None and (point := at.offsets.commit_point()) > at.committed:
                offsets[tp] = OffsetAndMetadata(point, "")
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except KafkaError as exc:
            # Not committed: after a crash these commands are read again,
            # which the saga's de-duplication absorbs.
            log.warning("command reader commit failed (%s); will try again", exc)
            return
        for tp, meta in offsets.items():
            if (at := self._reading.get(tp)) is not None:
                at.committed = meta.offset


async def _partitions(settings: Settings, topic: str) -> set[int]:
    """The topic's partitions, waiting until the broker knows the topic."""
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
        try:
            await admin.start()
            described = await admin.describe_topics([topic])
        except KafkaError as exc:
            log.warning("command reader waiting for the broker: %s", exc)
            described = []
        finally:
            await admin.close()
        found = {
            int(part["partition"])
            for meta in described
            if meta.get("topic") == topic and not meta.get("error_code")
            for part in meta.get("partitions", ())
        }
        if found:
            return found
        log.warning("command reader waiting for topic %s", topic)
        await asyncio.sleep(RETRY_DELAY_S)


async def unfolded_ends(settings: Settings, partitions: set[int]) -> dict[int, int]:
    """Per run-events partition, the offset its new owner must fold to (0: nothing to wait for).

    Its end offset, unless Faust's group committed that far: records before
    the committed offset were folded by the worker before, and their state
    came back with the runs table.
    """
    tps = [TopicPartition(settings.run_events, p) for p in sorted(partitions)]
    committed = await faust_group_offsets(settings, settings.run_events)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers)
    try:
        await consumer.start()
        consumer.assign(tps)
        # aiokafka waits for ever on a partition the broker does not know.
        ends = await asyncio.wait_for(consumer.end_offsets(tps), END_OFFSETS_TIMEOUT_S)
    except (KafkaError, TimeoutError) as exc:
        log.warning("command reader could not read run-events' end offsets: %s", exc)
        ends = {}
    finally:
        await consumer.stop()
    return {
        tp.partition: end if (end := ends.get(tp, 0)) > committed.get(tp, 0) else 0 for tp in tps
    }
