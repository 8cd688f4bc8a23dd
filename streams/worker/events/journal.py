"""Each run's lane to its log: the one place where a run's events are appended and folded.

Whatever writes to a run (a command's decision, a step's event, a training's
outcome, a dead-letter note) and whatever folds what is read back from
run-events takes the run's lane in turn. An append is produced, acknowledged
and folded into the stored state before the lane passes on, so the next
writer decides on every event this worker wrote: the fold is the only run
state there is. Two rules follow, and they live only here:

- an event is appended only if the fold takes it (`saga.evolve` returns a new
  state): a duplicate, an outcome of a stale generation, anything after the
  run's terminal event but a note or a `run.continued` is not written at all;
- its sequence is the run's version once it is folded, so a run's log is
  numbered 1, 2, 3, ... whoever wrote it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

from opentelemetry.context import Context

from thunderhelm.schemas.codec import encode_event
from thunderhelm.schemas.event_data import EventData
from thunderhelm.streams.domain import saga
from thunderhelm.streams.observability import metrics as meters
from thunderhelm.streams.wire.events import as_written, event_envelope
from thunderhelm.streams.worker.events.store import RunStore
from thunderhelm.streams.worker.events.writer import EventWriter

log = logging.getLogger(__name__)

# What a writer asks the lane to append, given the run's state (None: unknown run).
type Decision = Callable[[saga.RunState | None], Sequence[saga.NewEvent]]


@dataclass
class _Lane:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0  # holders and waiters: the lane is dropped when none is left


class RunJournal:
    def __init__(self, writer: EventWriter, store: RunStore, topic: str) -> None:
        self.writer = writer
        self.store = store
        self.topic = topic  # run-events
        # Called with a run's id whenever its state moves (the reconciler's idle clocks).
        self.on_move: Callable[[str], None] = lambda _run_id: None
        # Whether this worker stood still past its session (`Ownership.stalled`):
        # then it stores nothing in the runs table. A store written after the
        # stall reaches the changelog after the new owner's writes, and whoever
        # restores the partition next would take that stale state as the last.
        self.fenced: Callable[[], bool] = lambda: False
        self._lanes: dict[str, _Lane] = {}

    @contextlib.asynccontextmanager
    async def lane(self, run_id: str) -> AsyncIterator[None]:
        """Hold the run's lane: no other append or fold of the run meanwhile."""
        lane = self._lanes.setdefault(run_id, _Lane())
        lane.users += 1
        try:
            async with lane.lock:
                yield
        finally:
            lane.users -= 1
            if lane.users == 0:
                del self._lanes[run_id]

    async def record(
        self,
        run_id: str,
        decision: Decision,
        context: Context | None,
        *,
        partition: int | None = None,
        allowed: Callable[[], bool] | None = None,
    ) -> saga.RunState | None:
        """Append and fold the events `decision` makes of the run's state, in its lane.

        `allowed` is asked first, in the lane (whether this worker may still
        write for the run); `partition` is where a run new to the store lives.
        Returns the state after the last event appended; None when nothing
        was (not allowed, or nothing the fold takes).
        """
        async with self.lane(run_id):
            if allowed is not None and not allowed():
                return None
            state = self.store.get(run_id)
            written = None
            for new in decision(state):
                record = event_envelope(run_id, new, 1 if state is None else state.version + 1)
                event = as_written(record, new)
                taken = saga.evolve(state, event)
                if taken is None or taken is state:
                    continue  # the fold takes nothing from it: not written
                await self.writer.produce(self.topic, run_id, encode_event(record), context)
                if self.fenced():
                    # It stood still while the append waited for its ack: the
                    # partition's new owner folds this event from the log.
                    log.info("run %s: %s written but not folded: fenced", run_id, new.type)
                    return None
                # Folded again on what is stored after the ack, not on `state`: while
                # the append waited, a rebalance may have restored the runs table
                # from its changelog under the lane.
                state, _ = self._fold(event, partition)
                written = state
            return written

    async def append(
        self,
        run_id: str,
        new: saga.NewEvent,
        context: Context | None,
        *,
        allowed: Callable[[], bool] | None = None,
    ) -> saga.RunState | None:
        """Append one event if the fold takes it; the state after it (None: not written)."""
        return await self.record(run_id, lambda _state: [new], context, allowed=allowed)

    async def fold(self, event: saga.Event, partition: int) -> tuple[saga.RunState | None, bool]:
        """Fold an event read from run-events: (state after, whether it changed)."""
        async with self.lane(event.run_id):
            return self._fold(event, partition)

    async def settle(self, run_id: str) -> None:
        """Keep only what a finished run needs once its result is out (`saga.settled`)."""
        async with self.lane(run_id):
            stored = self.store.get(run_id)
            if self.fenced():
                return
            if stored is not None and stored.terminal and not stored.settled:
                self.store.replace_state(saga.settled(stored))

    def _fold(self, event: saga.Event, partition: int | None) -> tuple[saga.RunState | None, bool]:
        before = self.store.get(event.run_id)
        after = saga.evolve(before, event)
        if after is None or after is before:
            return after, False
        if self.fenced():
            return before, False
        self._keep(before, after, partition, event.data)
        return after, True

    def _keep(
        self,
        before: saga.RunState | None,
        after: saga.RunState,
        partition: int | None,
        data: EventData,
    ) -> None:
        """Store a state the fold moved to (`partition`: None keeps the run's own)."""
        if partition is None:
            partition = self.store.partition(after.run_id)
        self.store.put(after, partition)
        self.on_move(after.run_id)
        if after.status != (before.status if before else None):
            log.info("run %s: %s", after.run_id, after.status)
            meters.run_status(after.status, data)
