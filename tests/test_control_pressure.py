"""Holding an interpreter back from training while the control plane is behind.

The rule alone on a fake clock, then through the worker's parts: a run-events
record that waited too long lowers the trainer's slots.
"""

from __future__ import annotations

import asyncio
import time

from tests.test_worker_handlers import Event, Harness, Message
from thunderhelm.streams.worker.control_pressure import ControlPressure
from thunderhelm.streams.worker.settings import Settings


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_late_record_holds_one_interpreter_back_until_the_hold_ends() -> None:
    clock = Clock()
    pressure = ControlPressure(threshold_ms=25, hold_s=30.0, clock=clock)
    assert pressure.training_slots(4) == 4
    pressure.observe(0.010)  # on time
    assert pressure.training_slots(4) == 4
    pressure.observe(0.080)
    assert pressure.training_slots(4) == 3
    clock.now += 20.0
    pressure.observe(0.030)  # still behind: the hold starts again
    clock.now += 29.0
    assert pressure.training_slots(4) == 3
    clock.now += 1.0
    assert pressure.training_slots(4) == 4


def test_a_pool_of_one_always_trains() -> None:
    pressure = ControlPressure(threshold_ms=25, clock=Clock())
    pressure.observe(5.0)
    assert pressure.behind()
    assert pressure.training_slots(1) == 1


def test_a_threshold_of_zero_never_holds_back() -> None:
    pressure = ControlPressure(threshold_ms=0, clock=Clock())
    pressure.observe(60.0)
    assert pressure.training_slots(2) == 2


def test_the_setting_names_the_threshold() -> None:
    assert Settings.from_env({}).control_lag_ms == 25
    assert Settings.from_env({"THUNDERHELM_CONTROL_LAG_MS": "0"}).control_lag_ms == 0


def test_a_run_events_record_that_waited_lowers_the_trainers_slots() -> None:
    async def go() -> tuple[list[int], list[int]]:
        h = Harness()
        slots = h.worker.trainer.slots
        h.worker.pool_size = lambda: 2  # type: ignore[method-assign]  # a warm pool of two
        before = [slots()]
        fresh = Event(Message("run-events", b"r-1", b"{}", timestamp=time.time()))
        await h.worker.events.handle(fresh)  # undecodable: dead-lettered, but it came on time
        before.append(slots())
        late = Event(Message("run-events", b"r-1", b"{}", offset=1, timestamp=time.time() - 1))
        await h.worker.events.handle(late)
        return before, [slots()]

    on_time, late = asyncio.run(go())
    assert on_time == [2, 2]
    assert late == [1]
