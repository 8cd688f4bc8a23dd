"""What `/healthz` and `/readyz` on the worker's web port answer.

Liveness (`/healthz`) is "restart me if this fails": the process answers and
its event loop keeps time (a heartbeat task ticks every `TICK_S`; a loop
blocked by a long synchronous call stops the ticks). Readiness (`/readyz`) is
"send me work": the Kafka consumer has its partitions, the producer is
started, the interpreter pool is warm and the command reader reads every
run-commands partition of the runs this worker owns. Each readiness check returns None
when it passes or a sentence saying what is missing, and a 503 body lists
them, so an operator reads why a worker is not ready without its logs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

TICK_S = 0.5
# A loop whose last tick is older than this is stuck (a generation never blocks it).
STALL_S = 10.0

Check = Callable[[], str | None]


class Health:
    def __init__(
        self,
        checks: Mapping[str, Check],
        clock: Callable[[], float] = time.monotonic,
        stall_s: float = STALL_S,
    ) -> None:
        self.checks = dict(checks)
        self.clock = clock
        self.stall_s = stall_s
        self.last_tick: float | None = None
        self.lag_s = 0.0

    async def heartbeat(self) -> None:
        """Tick until cancelled, noting how late each tick came (the loop's lag)."""
        while True:
            due = self.clock() + TICK_S
            await asyncio.sleep(TICK_S)
            now = self.clock()
            self.lag_s = max(0.0, now - due)
            self.last_tick = now

    def liveness(self) -> tuple[int, dict[str, Any]]:
        if self.last_tick is None:
            # Before the first tick the loop has not been put to the test yet.
            return 200, {"status": "ok", "loop": "starting"}
        since = self.clock() - self.last_tick
        body = {"loop_lag_s": round(self.lag_s, 3), "last_tick_s_ago": round(since, 3)}
        if since > self.stall_s:
            return 503, {"status": "stalled", **body}
        return 200, {"status": "ok", **body}

    def readiness(self) -> tuple[int, dict[str, Any]]:
        failing: dict[str, str] = {}
        for name, check in self.checks.items():
            try:
                problem = check()
            except Exception as exc:  # a check that cannot tell is a check that fails
                problem = f"check failed: {type(exc).__name__}: {exc}"
            if problem is not None:
                failing[name] = problem
        if failing:
            return 503, {"status": "not ready", "not_ready": failing}
        return 200, {"status": "ready", "checks": sorted(self.checks)}


def consumer_check(app: Any) -> Check:
    """The Faust consumer is past its rebalance and has partitions assigned."""

    def check() -> str | None:
        if app.rebalancing:
            return "the consumer group is rebalancing"
        consumer = getattr(app, "_consumer", None)  # not created yet: not started
        if consumer is None:
            return "the Kafka consumer has not started"
        if not consumer.assignment():
            return "the Kafka consumer has no partitions assigned"
        return None

    return check


def producer_check(app: Any) -> Check:
    def check() -> str | None:
        producer = getattr(app, "_producer", None)
        if producer is None or not producer.started:
            return "the Kafka producer has not started"
        return None

    return check


def pool_check(executor: Any) -> Check:
    """The interpreter pool exists and has a live interpreter (warming is the slow part)."""

    def check() -> str | None:
        stats = executor.pool_stats()
        if stats is None:
            return "the interpreter pool is warming up"
        if stats.alive < 1:
            return "no pool interpreter is alive"
        return None

    return check
