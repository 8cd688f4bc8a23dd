"""Drives runs that nothing drives: resumed after a restart, or past their time budget.

A run with no local step and no new event for `IDLE_BEFORE_RESUME_S` is
driven again; that is how a run resumes after its worker died. A rebalance
restarts every idle clock, so the run-events agent first folds what other
workers wrote meanwhile.
"""

from __future__ import annotations

import logging
import time

from thunderhelm.streams.domain import saga
from thunderhelm.streams.worker.events.ownership import Ownership
from thunderhelm.streams.worker.events.store import RunStore
from thunderhelm.streams.worker.kafka.app_seam import WorkerApp
from thunderhelm.streams.worker.steps.runner import StepRunner

log = logging.getLogger(__name__)
IDLE_BEFORE_RESUME_S = 3.0


class Reconciler:
    def __init__(
        self,
        app: WorkerApp,  # whether it is rebalancing or recovering
        store: RunStore,
        runner: StepRunner,
        ownership: Ownership,
        idle_before_resume_s: float = IDLE_BEFORE_RESUME_S,
    ) -> None:
        self.app = app
        self.store = store
        self.runner = runner
        self.ownership = ownership
        self.idle_before_resume_s = idle_before_resume_s

    async def reconcile(self) -> None:
        """One pass over the runs this worker owns (the app's timer calls it every second)."""
        clocks = self.runner.last_progress
        if self.app.rebalancing or getattr(self.app, "in_recovery", False):
            clocks.clear()  # grace again once the new assignment settles
            return
        active = self.ownership.active()
        executor = self.runner.executor
        now = time.monotonic()  # idle clocks: intervals only
        wall = self.runner.clock()  # the saga's budget: seconds since the epoch
        for state, partition in self.store.live():
            if partition not in active:
                continue  # a standby copy: another worker owns this run
            timed_out = saga.timed_out(state, wall)
            if state.run_id in self.runner.tasks:
                if timed_out:
                    # The generation stops, then the run ends; its final model is spared.
                    executor.cancel(state.run_id, final_model=False)
                continue
            last = clocks.setdefault(state.run_id, now)
            if not timed_out and now - last < self.idle_before_resume_s:
                continue
            if not timed_out and saga.react(state, wall) is None:
                # Waiting for events (its candidates' outcomes, say): driving
                # it would decide the same nothing, with a span and a log line.
                continue
            log.info("run %s: driving %s", state.run_id, "timeout" if timed_out else "resume")
            clocks[state.run_id] = now
            try:
                await self.runner.act(state, now=wall)
            except Exception:  # the next tick tries again
                log.exception("run %s: could not drive", state.run_id)

    def on_revoked(self, partitions: set[int]) -> None:
        """Stop local steps of runs that now belong to another worker.

        Every rebalance starts here, so it is also where the idle clocks
        restart: a run that comes back to this worker must first let the
        agent fold what other workers wrote meanwhile.
        """
        self.runner.last_progress.clear()
        for run_id in list(self.runner.tasks):
            if self.store.partition(run_id) in partitions:
                log.info("run %s: moved to another worker; stopping its step", run_id)
                self.runner.executor.cancel(run_id)
