"""Holding an interpreter back from training while the control plane is behind.

The rule alone on a fake clock, then through the worker's parts: a user's
request that waited too long lowers the trainer's slots, a late candidate
outcome does not.
"""

from __future__ import annotations

import asyncio
import json
import time
from types import SimpleNamespace
from typing import Any

from tests.clock import Clock
from tests.test_worker_handlers import SETTINGS, Event, Harness, Message, request
from thunderhelm.schemas.requests import RUN_REQUESTED
from thunderhelm.schemas.tasks import CANDIDATE_TRAINED
from thunderhelm.streams.config.settings import Settings
from thunderhelm.streams.worker.commands.control_pressure import ControlPressure


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


def test_a_late_record_on_an_idle_pool_is_no_reason_to_hold_back() -> None:
    busy = False
    pressure = ControlPressure(threshold_ms=25, busy=lambda: busy, clock=Clock())
    pressure.observe(5.0)  # the first request after a start, say: nothing was training
    assert pressure.training_slots(2) == 2
    busy = True
    pressure.observe(5.0)
    assert pressure.training_slots(2) == 1


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
    assert Settings.from_env({}).control_lag_ms == 15
    assert Settings.from_env({"THUNDERHELM_CONTROL_LAG_MS": "0"}).control_lag_ms == 0


def command(data: dict[str, Any], kind: str, waited_s: float, offset: int) -> Event:
    value = json.dumps(
        {"specversion": "1.0", "id": f"c-{offset}", "source": "t", "type": kind, "data": data}
    ).encode()
    message = Message(
        SETTINGS.run_commands,
        str(data["run_id"]).encode(),
        value,
        offset=offset,
        timestamp=time.time() - waited_s,
    )
    return Event(message)


def outcome(run_id: str) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "generation": 0,
        "index": 0,
        "genome_key": "g0",
        "fitness": 0.5,
        "metrics": {"status": "ok", "val_accuracy": 0.5},
        "seed": 1,
    }


def test_a_users_request_that_waited_lowers_the_trainers_slots() -> None:
    async def go() -> list[int]:
        h = Harness()
        slots = h.worker.trainer.slots
        h.worker.pool_size = lambda: 2  # type: ignore[method-assign]  # a warm pool of two
        busy = False
        h.worker.pressure.busy = lambda: busy
        seen = [slots()]
        await h.worker.commands.handle(command(request("r-0"), RUN_REQUESTED, 1.0, 9))
        seen.append(slots())  # late, but nothing was training
        await h.worker.commands.handle(command(request("r-1"), RUN_REQUESTED, 0.0, 0))
        seen.append(slots())  # on time
        late_outcome = command(outcome("r-1"), CANDIDATE_TRAINED, 1.0, 1)
        await h.worker.commands.handle(late_outcome)
        seen.append(slots())  # a late outcome is no user waiting
        busy = True
        await h.worker.commands.handle(command(request("r-2"), RUN_REQUESTED, 1.0, 2))
        seen.append(slots())
        return seen

    assert asyncio.run(go()) == [2, 2, 2, 2, 1]


def test_the_pool_counts_as_saturated_with_all_but_one_interpreter_training() -> None:
    h = Harness()
    found: list[bool] = []
    for size, busy in ((2, 0), (2, 1), (2, 2), (4, 2), (4, 3), (1, 1)):
        stats = SimpleNamespace(size=size, busy=busy)
        h.executor.pool_stats = lambda stats=stats: stats  # type: ignore[attr-defined]
        found.append(h.worker.pool_saturated())
    assert found == [False, True, True, False, True, False]
