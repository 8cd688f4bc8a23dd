"""Commands of different runs handled side by side, those of one run one after another.

Handling a command waits on the broker: each event it appends is awaited
until acknowledged (a start writes two, `run.accepted` and `run.started`),
and with the interpreter pool using every core an ack takes milliseconds.
Handled one at a time, a burst of commands queued behind those round trips
while the event loop sat idle (`bench stream`, bench/RESULTS.md).

So the command reader hands each command to its run's lane and reads on. A lane is a
chain of tasks: a command starts once the one before it for the same run is
done, so `decide` always reads the state its predecessor left. Each input's
ack is held until it is handled and acked in offset order
(`OrderedAcks.track`), so a crash reads every unhandled command again. The
number of commands in flight is bounded: at the bound the reader waits, and
the topic's lag is the back-pressure.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable

from thunderhelm.streams.worker.dead_letters.acks import AckableEvent, OrderedAcks

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 256


class RunLanes:
    def __init__(self, acks: OrderedAcks, max_in_flight: int = MAX_IN_FLIGHT) -> None:
        self.acks = acks
        self.max_in_flight = max_in_flight
        self._tails: dict[Hashable, asyncio.Task[None]] = {}  # each lane's last command
        self._tasks: set[asyncio.Task[None]] = set()
        self._room = asyncio.Event()

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def submit(
        self, event: AckableEvent, lane: Hashable, work: Callable[[], Awaitable[None]]
    ) -> None:
        """Queue `work` for `event` behind its lane; returns once it is queued."""
        while len(self._tasks) >= self.max_in_flight:
            self._room.clear()
            await self._room.wait()
        release = self.acks.track(event)
        before = self._tails.get(lane)
        # The task copies this context: Faust's current event stays `event` in it.
        task = asyncio.get_running_loop().create_task(self._in_turn(before, work))
        self._tails[lane] = task
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._finished(lane, done, release))

    @staticmethod
    async def _in_turn(
        before: asyncio.Task[None] | None, work: Callable[[], Awaitable[None]]
    ) -> None:
        if before is not None and not before.done():
            await asyncio.wait([before])  # its outcome is its own; only its end matters here
        await work()

    def _finished(
        self, lane: Hashable, task: asyncio.Task[None], release: Callable[[], None]
    ) -> None:
        self._tasks.discard(task)
        if self._tails.get(lane) is task:
            del self._tails[lane]
        self._room.set()
        if task.cancelled():
            return  # stopped before it was handled (shutdown): unacked, so read again
        if (exc := task.exception()) is not None:
            # The handler dead-letters every failure of an input itself; this is a bug.
            log.error("command handling failed: %r", exc, exc_info=exc)
        release()

    async def drain(self, timeout_s: float = 30.0) -> bool:
        """Wait until every queued command is handled (tests, shutdown); False on timeout."""
        if not self._tasks:
            return True
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout_s)
        return not pending and not self._tasks
