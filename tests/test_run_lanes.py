"""Run lanes: commands of different runs side by side, of one run in order; acks in offset order.

Faust's message and event are the small fakes of test_dlq_unit.py, which
record the order of final acks (what decides the committed offset).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from tests.test_dlq_unit import Broker, FakeEvent, FakeMessage
from thunderhelm.streams.worker.commands.lanes import RunLanes
from thunderhelm.streams.worker.dead_letters.acks import OrderedAcks


class Gate:
    """Work whose end the test decides: each command waits for its own release."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.finished: list[str] = []
        self._gates: dict[str, asyncio.Event] = {}

    def work(self, name: str) -> Callable[[], asyncio.Future[None]]:
        gate = self._gates.setdefault(name, asyncio.Event())

        async def run() -> None:
            self.started.append(name)
            await gate.wait()
            self.finished.append(name)

        return lambda: asyncio.ensure_future(run())

    def release(self, name: str) -> None:
        self._gates[name].set()


def event(offset: int, log: list[int], tp: str = "p0") -> FakeEvent:
    return FakeEvent(FakeMessage(tp, offset, log))


async def submit(lanes: RunLanes, e: FakeEvent, lane: str, work: Callable[..., object]) -> None:
    """What the agent does per record: queue it, then the stream acks its own reference."""
    await lanes.submit(e, lane, work)  # type: ignore[arg-type]
    e.ack()


async def turn() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_commands_of_different_runs_run_side_by_side() -> None:
    log: list[int] = []
    lanes, gate = RunLanes(OrderedAcks()), Gate()
    await submit(lanes, event(0, log), "run-a", gate.work("a0"))
    await submit(lanes, event(1, log), "run-b", gate.work("b0"))
    await turn()
    assert gate.started == ["a0", "b0"]  # b0 did not wait for a0
    gate.release("b0")
    await turn()
    assert gate.finished == ["b0"]
    assert log == []  # offset 1 is handled, but offset 0 is not: nothing may be committed
    gate.release("a0")
    assert await lanes.drain(1.0)
    assert log == [0, 1]


async def test_commands_of_one_run_run_one_after_another_in_offset_order() -> None:
    log: list[int] = []
    lanes, gate = RunLanes(OrderedAcks()), Gate()
    for n in range(3):
        await submit(lanes, event(n, log), "run-a", gate.work(f"a{n}"))
    await turn()
    assert gate.started == ["a0"]
    gate.release("a2")  # released early: still waits its turn
    gate.release("a1")
    await turn()
    assert gate.started == ["a0"] and log == []
    gate.release("a0")
    assert await lanes.drain(1.0)
    assert gate.started == ["a0", "a1", "a2"] and gate.finished == ["a0", "a1", "a2"]
    assert log == [0, 1, 2]


async def test_a_failed_command_does_not_stop_its_lane() -> None:
    log: list[int] = []
    lanes, gate = RunLanes(OrderedAcks()), Gate()

    async def broken() -> None:
        raise RuntimeError("a bug in the handler")

    await submit(lanes, event(0, log), "run-a", broken)
    await submit(lanes, event(1, log), "run-a", gate.work("a1"))
    gate.release("a1")
    assert await lanes.drain(1.0)
    assert gate.finished == ["a1"] and log == [0, 1]


async def test_a_command_stopped_before_it_is_handled_is_not_acked() -> None:
    log: list[int] = []
    lanes, gate = RunLanes(OrderedAcks()), Gate()
    await submit(lanes, event(0, log), "run-a", gate.work("a0"))
    await submit(lanes, event(1, log), "run-b", gate.work("b0"))
    await turn()
    for task in list(lanes._tasks):  # shutdown cancels what is in flight
        task.cancel()
    await turn()
    assert log == []  # both are read again after the restart
    assert lanes.in_flight == 0


async def test_a_dead_letter_written_while_handling_holds_the_ack_until_it_lands() -> None:
    log: list[int] = []
    acks, broker = OrderedAcks(), Broker()
    lanes = RunLanes(acks)
    first, second = event(0, log), event(1, log)

    async def dead_letter_first() -> None:
        await acks.write(first, broker.send(0))  # as the handler does for a bad command

    await submit(lanes, first, "run-a", dead_letter_first)
    await submit(lanes, second, "run-b", _done)
    assert await lanes.drain(1.0)
    assert log == []  # the dead letter of offset 0 is not acknowledged yet
    broker.pending[0].set_result("ok")
    await turn()
    assert log == [0, 1]


async def _done() -> None:
    return None


async def test_commands_in_flight_are_bounded() -> None:
    log: list[int] = []
    lanes, gate = RunLanes(OrderedAcks(), max_in_flight=2), Gate()
    await submit(lanes, event(0, log), "run-a", gate.work("a"))
    await submit(lanes, event(1, log), "run-b", gate.work("b"))
    third = asyncio.ensure_future(submit(lanes, event(2, log), "run-c", gate.work("c")))
    await turn()
    assert not third.done() and gate.started == ["a", "b"]
    gate.release("a")
    await asyncio.wait_for(third, 1.0)
    gate.release("b")
    gate.release("c")
    assert await lanes.drain(1.0)
    assert log == [0, 1, 2]


@pytest.mark.parametrize("held_first", [True, False])
async def test_hold_and_track_share_one_order(held_first: bool) -> None:
    """An input only held (nothing in flight of its own) is acked in its turn too."""
    log: list[int] = []
    acks = OrderedAcks()
    e0, e1 = event(0, log), event(1, log)
    release = acks.track(e0)
    e0.ack()
    if held_first:
        acks.hold(e1)
    e1.ack()
    assert log == ([] if held_first else [1])
    release()
    release()  # a second release changes nothing
    assert log == ([0, 1] if held_first else [1, 0])
