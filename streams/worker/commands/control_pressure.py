"""Whether the worker's control plane is behind, and how many trainings it may run meanwhile.

`bench stream` found what keeps run requests waiting while the pool is
saturated: not the cores but how many trainings run at once (its figures
are in bench/RESULTS.md). So the candidate trainer holds one interpreter back while
users' requests (run-commands records other than candidate outcomes) wait
too long before the command reader takes them (`observe`: the time from the
record's CreateTime until then), and for `hold_s` after the last one; calm
again, it trains on every interpreter. Only users' requests count: a
generation's burst of outcomes waits too, and is no reason to train slower.
And only while the pool is training on (all but at most one of) its
interpreters: a request that waited on an idle pool, as the first one after
a worker starts does, is no reason either.
The CreateTime is the forwarding intake's clock, which may be another
host's; a clock behind this one's makes requests look late.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

HOLD_S = 30.0  # long beside a burst of requests, short beside a search


class ControlPressure:
    def __init__(
        self,
        threshold_ms: int,
        busy: Callable[[], bool] = lambda: True,
        hold_s: float = HOLD_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold_s = threshold_ms / 1000.0  # 0: never hold an interpreter back
        self.busy = busy  # whether the pool is training on all but at most one interpreter
        self.hold_s = hold_s
        self.clock = clock
        self._until = float("-inf")
        self._holding = False

    def observe(self, waited_s: float) -> None:
        """A record waited `waited_s` between its write and its handling."""
        if self.threshold_s <= 0 or waited_s <= self.threshold_s or not self.busy():
            return
        self._until = self.clock() + self.hold_s
        if not self._holding:
            self._holding = True
            log.info(
                "control plane behind (a record waited %.0f ms): "
                "one interpreter held back from training for at least %.0f s",
                waited_s * 1000,
                self.hold_s,
            )

    def behind(self) -> bool:
        if self._holding and self.clock() >= self._until:
            self._holding = False
            log.info("control plane caught up: training on every interpreter again")
        return self._holding

    def training_slots(self, pool_size: int) -> int:
        """Trainings to run at once: one fewer than the pool while behind (never none)."""
        if pool_size > 1 and self.behind():
            return pool_size - 1
        return pool_size
