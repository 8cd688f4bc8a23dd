"""Which run-events partitions this worker owns now (its active assignment).

A worker that stood still for longer than the consumer session timeout (a
SIGSTOP, a host swapping, a loop blocked) has been dropped from the group by
then: another worker may own its partitions and may have gone on with their
runs. When it moves again, its consumer has not noticed yet, and what it had
in flight (a training that just finished, a generation's event) would be
written after the new owner's events. So the worker watches its own clock
(`watch`, every `WATCH_S`): after such a stall it owns nothing until the
group has assigned partitions again (`reassigned`), or one more session
timeout has passed without a rebalance (then the group never dropped it).
Each revocation also starts a new `epoch`: a step launched before it is
stale, whatever the next assignment holds (`StepRunner.still_current`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

from thunderhelm.streams.worker.kafka.app_seam import WorkerApp

log = logging.getLogger(__name__)

WATCH_S = 0.5  # how often the worker's loop notes that it still runs


class Ownership:
    def __init__(
        self,
        app: WorkerApp,
        topic: str,
        stall_limit_s: float | None = None,  # the consumer session timeout
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.topic = topic
        self.stall_limit_s = stall_limit_s
        self.clock = clock
        self.epoch = 0  # revocations so far
        self._seen: float | None = None  # the loop's last `watch`; None: not watched
        self._fenced_until = -math.inf

    def watch(self) -> None:
        """Note that the loop runs; a gap longer than the session timeout fences the worker."""
        now = self.clock()
        limit = self.stall_limit_s
        if limit is not None and self._seen is not None and now - self._seen > limit:
            log.warning(
                "this worker stood still for %.1fs, longer than the session timeout (%.1fs): "
                "it owns no run until the group has assigned its partitions again",
                now - self._seen,
                limit,
            )
            self._fenced_until = now + limit
        self._seen = now

    def revoked(self) -> None:
        """The group took the assignment back: every step launched so far is stale."""
        self.epoch += 1

    def reassigned(self) -> None:
        """The group assigned partitions (again): the fence of a stall is lifted.

        The clock is watched from the first assignment on, not only from the
        first `watch`: a worker stopped in between (it had decided events
        already) wrote on after it moved again, beside the run's new owner.
        """
        self._fenced_until = -math.inf
        if self.stall_limit_s is not None:
            self._seen = self.clock()

    def stalled(self) -> bool:
        """Whether the worker stood still too long to trust its assignment (see the module)."""
        if self.stall_limit_s is None or self._seen is None:
            return False
        now = self.clock()
        return now < self._fenced_until or now - self._seen > self.stall_limit_s

    def active(self) -> set[int]:
        if self.stalled():
            return set()
        return {
            tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == self.topic
        }

    def owns(self, partition: int | None) -> bool:
        """Whether a run stored under `partition` is this worker's to drive (not a standby copy)."""
        return partition is not None and partition in self.active()
