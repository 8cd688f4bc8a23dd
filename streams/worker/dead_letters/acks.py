"""Dead-lettered inputs on the worker: their acks in offset order and their log lines.

What a dead letter holds (`classify`, the `dlq.*` headers) is
`streams/wire/failures.py`. `OrderedAcks` lets the agents keep consuming
while dead-letter writes are in flight, without ever letting an input's
offset be committed before its dead-letter write is acknowledged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, Protocol

from thunderhelm.streams.wire.failures import Failure, Origin

log = logging.getLogger(__name__)

# --- acknowledging dead-lettered inputs in offset order ----------------------------


class AckableMessage(Protocol):
    """The part of a Faust message this module touches."""

    @property
    def tp(self) -> Hashable: ...

    def incref(self, n: int = 1) -> None: ...


class AckableEvent(Protocol):
    """The part of an input event (Faust's, or the command reader's) this module touches."""

    @property
    def message(self) -> AckableMessage: ...

    def ack(self) -> bool: ...


# Starts one write and returns its ack (an awaitable, usually an asyncio.Future).
Send = Callable[[], Awaitable[Awaitable[Any]]]


@dataclass(eq=False)
class _Slot:
    event: AckableEvent
    pending: int  # unfinished work that holds the input's ack: handlings, writes


class OrderedAcks:
    """Pipelined dead-letter writes whose inputs are acknowledged in offset order.

    Awaiting each dead-letter write inside the agent costs a broker round trip
    per bad record. Instead, the write is started, the input's Faust message
    gets an extra reference (so the stream's own ack after the handler is not
    the final one), and the write's ack callback releases it. Faust commits up
    to the first offset that is not acked, but a gap at the head of its acked
    list can be committed over (faust-streaming #606), so acks must reach it
    in order: while a partition has a write in flight, every later input of
    that partition is held too (`hold`) and released behind it. The input's
    offset is therefore committed only after its dead-letter write, and every
    earlier one on the partition, is acknowledged.

    The same order holds for inputs handled off the agent's loop (`track`):
    an input is acked once all its work is done and every earlier input of
    its partition is acked.
    """

    def __init__(self, max_in_flight: int = 2000, retry_delay_s: float = 1.0) -> None:
        self.max_in_flight = max_in_flight
        self.retry_delay_s = retry_delay_s
        self._slots: dict[Hashable, deque[_Slot]] = {}
        # The slot of each input still queued, by identity (an input's work may
        # add to its slot while later inputs queue behind it).
        self._open: dict[int, _Slot] = {}
        self._in_flight = 0
        self._room = asyncio.Event()
        self._retries: set[asyncio.Task[None]] = set()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def hold(self, event: AckableEvent) -> None:
        """Call first for every input: behind an in-flight write its ack waits its turn."""
        if self._slots.get(event.message.tp) and id(event) not in self._open:
            self._slot(event).pending -= 1  # nothing to wait for but its turn

    def track(self, event: AckableEvent) -> Callable[[], None]:
        """Hold the input's ack until the returned release is called (and its turn comes)."""
        slot = self._slot(event)
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._release(slot)

        return release

    async def write(self, event: AckableEvent, send: Send) -> None:
        """Start the dead-letter write `send`; the input is acked once the broker has it.

        Returns as soon as the write is queued (or, with too many in flight,
        once there is room again), so the agent goes on to the next record.
        """
        while self._in_flight >= self.max_in_flight:
            self._room.clear()
            await self._room.wait()
        slot = self._slot(event)
        self._in_flight += 1
        try:
            future = asyncio.ensure_future(await send())
        except Exception as exc:
            self._retry_later(slot, send, exc)
            return
        future.add_done_callback(lambda f: self._on_sent(slot, send, f))

    def _slot(self, event: AckableEvent) -> _Slot:
        """The input's queued slot, with one more piece of work pending on it."""
        slot = self._open.get(id(event))
        if slot is None:
            event.message.incref()  # the stream's own ack after the handler is not the last
            slot = _Slot(event, pending=0)
            self._slots.setdefault(event.message.tp, deque()).append(slot)
            self._open[id(event)] = slot
        slot.pending += 1
        return slot

    def _on_sent(self, slot: _Slot, send: Send, future: asyncio.Future[Any]) -> None:
        if future.cancelled():
            self._retry_later(slot, send, asyncio.CancelledError())
        elif (exc := future.exception()) is not None:
            self._retry_later(slot, send, exc)
        else:
            self._complete(slot)

    def _retry_later(self, slot: _Slot, send: Send, exc: BaseException) -> None:
        """Never lose the input: retry until the dead-letter topic takes it."""
        log.error("dead-letter write failed (%s: %s); retrying", type(exc).__name__, exc)

        async def again() -> None:
            while True:
                await asyncio.sleep(self.retry_delay_s)
                try:
                    await (await send())
                except Exception as retry_exc:
                    log.error("dead-letter write failed again: %s", retry_exc)
                    continue
                self._complete(slot)
                return

        task = asyncio.get_running_loop().create_task(again())
        self._retries.add(task)
        task.add_done_callback(self._retries.discard)

    def _complete(self, slot: _Slot) -> None:
        self._in_flight -= 1
        self._room.set()
        self._release(slot)

    def _release(self, slot: _Slot) -> None:
        slot.pending -= 1
        tp = slot.event.message.tp
        queue = self._slots.get(tp)
        while queue and queue[0].pending == 0:
            head = queue.popleft()
            del self._open[id(head.event)]
            head.event.ack()
        if queue is not None and not queue:
            del self._slots[tp]

    async def drain(self, timeout_s: float = 30.0) -> bool:
        """Wait until no write is in flight (shutdown, tests); False on timeout."""
        deadline = time.monotonic() + timeout_s
        while self._in_flight and time.monotonic() < deadline:
            self._room.clear()
            try:
                await asyncio.wait_for(self._room.wait(), max(deadline - time.monotonic(), 0))
            except TimeoutError:
                break
        return self._in_flight == 0


class ThrottledLog:
    """One log line per dead letter until a flood, then one summary line per interval.

    A hostile producer must not turn the worker's log into its bottleneck.
    """

    def __init__(self, logger: logging.Logger, per_interval: int = 20, interval_s: float = 5.0):
        self._log = logger
        self._per_interval = per_interval
        self._interval_s = interval_s
        self._window = 0.0
        self._count = 0
        self._muted = 0

    def dead_letter(self, origin: Origin, failure: Failure) -> None:
        """The line for one dead-lettered input."""
        self.warning(
            "dead-letter %s[%s]@%s stage=%s %s: %s",
            origin.topic,
            origin.partition,
            origin.offset,
            failure.stage,
            failure.error_class,
            failure.message,
        )

    def warning(self, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._window >= self._interval_s:
            if self._muted:
                self._log.warning("... %d more dead letters not logged one by one", self._muted)
            self._window, self._count, self._muted = now, 0, 0
        self._count += 1
        if self._count <= self._per_interval:
            self._log.warning(msg, *args)
        else:
            self._muted += 1
