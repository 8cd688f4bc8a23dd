"""Carries out what the saga asks of a run: start it, run a generation, end it, publish its result.

Generations and endings run as background tasks (one per run at the most) on
the executor; each reports back by appending its event through the run's lane
(journal.py), which folds it, and then asks the saga again. Transient failures
are retried per the retry policy; any other failure fails the run with its
error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span

from thunderhelm.schemas import events as ev
from thunderhelm.schemas.event_data import CandidateCompleted, GenerationCompleted
from thunderhelm.streams.domain import saga
from thunderhelm.streams.domain.retry import Draw, RetryPolicy
from thunderhelm.streams.execution.executor import (
    StepInterrupted,
    WorkerExecutor,
    ended,
    step_event,
)
from thunderhelm.streams.execution.retrying import with_retries
from thunderhelm.streams.observability import telemetry
from thunderhelm.streams.worker.events.journal import RunJournal
from thunderhelm.streams.worker.events.ownership import Ownership
from thunderhelm.streams.worker.events.store import RunStore
from thunderhelm.streams.worker.events.writer import EventWriter

log = logging.getLogger(__name__)

CANDIDATE_WRITE_TIMEOUT_S = 30.0


def describe(action: saga.Action) -> str:
    if isinstance(action, saga.RunGeneration):
        return f"generation {action.generation}"
    if isinstance(action, saga.Finish):
        return f"finish ({action.status})"
    return type(action).__name__


class StepRunner:
    def __init__(
        self,
        executor: WorkerExecutor,
        writer: EventWriter,
        journal: RunJournal,
        ownership: Ownership,
        policy: RetryPolicy | None = None,
        draw: Draw | None = None,  # the backoff jitter's RNG; seeded in tests
        clock: Callable[[], float] = time.time,
        fanout: bool = False,
    ) -> None:
        self.executor = executor
        # Spread each generation's candidates over every worker (candidate-tasks).
        self.fanout = fanout
        self.writer = writer
        self.journal = journal
        self.store: RunStore = journal.store
        self.ownership = ownership
        self.policy = policy or RetryPolicy()
        self.draw = draw if draw is not None else random.Random().random
        self.clock = clock  # wall time for the saga's budget (seconds since the epoch)
        self.tasks: dict[str, asyncio.Task[None]] = {}
        # When this worker last saw each run move; the reconciler's idle clocks.
        self.last_progress: dict[str, float] = {}
        journal.on_move = self.touch
        # Each run's dispatched generation's span, ended when the generation completes.
        self.generation_spans: dict[str, Span] = {}

    def touch(self, run_id: str) -> None:
        self.last_progress[run_id] = time.monotonic()

    async def retried[T](self, attempt: Callable[[], Awaitable[T]], run_id: str) -> T:
        return await with_retries(attempt, run_id, self.policy, draw=self.draw)

    async def act(self, state: saga.RunState, *, now: float | None = None) -> None:
        """Ask the saga for the run's next step at `now` (default: the clock) and carry it out."""
        if not self.ownership.owns(self.store.partition(state.run_id)):
            # A standby copy, or this worker stood still and the group may have
            # moved the run: its owner (this one again, via the reconciler) acts.
            return
        now = self.clock() if now is None else now
        context = telemetry.context_from_traceparent(state.traceparent)
        with telemetry.decision_span(state.run_id, state.status, context) as decision:
            action = saga.react(state, now)
            decision.set_attribute("thunderhelm.saga.action", type(action).__name__)
            decision.set_attribute("thunderhelm.saga.timed_out", saga.timed_out(state, now))
        match action:
            case None:
                return
            case saga.PublishResult():
                await self.publish(state, context)
            case saga.Start():
                epoch = self.ownership.epoch
                started = await step_event(self.executor, state, action, context)
                running = await self.journal.append(
                    state.run_id,
                    started,
                    context,
                    # Not if the run moved meanwhile: its owner starts it.
                    allowed=lambda: self.still_current(state, epoch),
                )
                if running is not None:
                    await self.act(running)
            case saga.RunGeneration() | saga.Finish():
                if busy := self.tasks.get(state.run_id):
                    if isinstance(action, saga.Finish) and action.status == "cancelled":
                        self.executor.cancel(state.run_id)
                    if not busy.done():
                        return
                self.launch(state, action, context)

    async def publish(self, state: saga.RunState, context: Context | None) -> None:
        """Write the result of a finished run once, then settle its stored state."""
        stored = self.store.get(state.run_id)
        if state.settled or (stored is not None and stored.settled):
            return
        await self.writer.publish_result(state, context)
        await self.journal.settle(state.run_id)
        self.last_progress.pop(state.run_id, None)

    def launch(self, state: saga.RunState, action: saga.Action, context: Context | None) -> None:
        log.info("run %s: launching %s", state.run_id, describe(action))
        self.touch(state.run_id)
        step = self._step(state, action, context, self.ownership.epoch)
        self.tasks[state.run_id] = asyncio.get_running_loop().create_task(step)

    async def _step(
        self, state: saga.RunState, action: saga.Action, context: Context | None, epoch: int
    ) -> None:
        run_id = state.run_id
        interrupted = False
        try:
            new = await self.retried(lambda: self.perform(state, action, context, epoch), run_id)
            appended = await self.retried(
                lambda: self.journal.append(
                    run_id, new, context, allowed=lambda: self.still_current(state, epoch)
                ),
                run_id,
            )
            completed = appended is not None and new.type == ev.GENERATION_COMPLETED
            if completed and (span := self.generation_spans.pop(run_id, None)) is not None:
                assert isinstance(new.data, GenerationCompleted)
                span.set_attribute("thunderhelm.best_fitness", new.data.best_fitness or 0.0)
                span.end()
        except asyncio.CancelledError:
            raise
        except StepInterrupted as why:
            # Cancel or budget stopped the step; the saga's next decision ends the run.
            log.info("run %s: step interrupted (%s)", run_id, why)
            interrupted = True
        except Exception as exc:
            # A non-retryable failure (or retries used up) fails the run with its error.
            log.exception("run %s: step failed", run_id)
            result = self.executor.failure_result(state, exc)
            failed = saga.NewEvent(ev.RUN_FAILED, ended(run_id, result))
            with contextlib.suppress(Exception):
                # Not by a worker the run has moved from (or that stood still).
                await self.journal.append(
                    run_id, failed, context, allowed=lambda: self.still_current(state, epoch)
                )
        finally:
            self.tasks.pop(run_id, None)
            self.touch(run_id)
        latest = self.store.get(run_id)
        # The step's own event is folded by now, and so may be others (a
        # dispatch's outcomes) whose decisions found this step busy: only
        # this act goes on. Candidates' outcomes alone move only the version:
        # they are no reason to act, or the generation would run again.
        moved_on = latest is not None and (
            latest.generation,
            latest.status,
            latest.cancel_reason,
            latest.dispatched,
        ) != (state.generation, state.status, state.cancel_reason, state.dispatched)
        if (
            latest is not None
            and not latest.terminal
            and (interrupted or moved_on)
            and self.ownership.owns(self.store.partition(run_id))
        ):
            await self.act(latest)

    async def perform(
        self, state: saga.RunState, action: saga.Action, context: Context | None, epoch: int
    ) -> saga.NewEvent:
        assert isinstance(action, saga.RunGeneration | saga.Finish)
        if self.fanout and isinstance(action, saga.RunGeneration):
            tasks = await self.executor.generation_tasks(state)
            if tasks:  # none: every candidate has its outcome; breed the next generation here
                return await self.dispatch(state, tasks, context)
        report = (
            self.candidate_reporter(state, context, epoch)
            if isinstance(action, saga.RunGeneration)
            else None
        )
        return await step_event(self.executor, state, action, context, report)

    async def dispatch(
        self, state: saga.RunState, tasks: list[dict[str, Any]], context: Context | None
    ) -> saga.NewEvent:
        """Put the tasks out under the generation's span (their trainings nest under it)."""
        span = telemetry.start_generation_span(state.generation, context, len(tasks))
        traceparent = telemetry.traceparent_of(span)
        for task in tasks:
            task["traceparent"] = traceparent
        try:
            new = await self.writer.dispatch(state, tasks, trace.set_span_in_context(span))
        except BaseException:
            span.end()
            raise
        stale = self.generation_spans.pop(state.run_id, None)
        if stale is not None:
            stale.end()
        self.generation_spans[state.run_id] = span
        return new

    def candidate_reporter(
        self, state: saga.RunState, context: Context | None, epoch: int
    ) -> Callable[[dict[str, Any]], None]:
        """Appends `candidate-completed` from the training thread, waiting for the ack.

        Waiting keeps each candidate's event ahead of the generation's on the
        log. A write that fails only costs a retraining after a kill (the
        generation's own event carries every outcome), so it does not stop
        the generation.
        """
        loop = asyncio.get_running_loop()
        run_id = state.run_id

        async def append(data: dict[str, Any]) -> None:
            # Not once the log moved on or the run moved; after the run's
            # ending, the lane writes nothing anyway.
            outcome = saga.NewEvent(ev.CANDIDATE_COMPLETED, CandidateCompleted.model_validate(data))
            await self.journal.append(
                run_id, outcome, context, allowed=lambda: self.still_current(state, epoch)
            )

        def report(data: dict[str, Any]) -> None:
            written = asyncio.run_coroutine_threadsafe(append(data), loop)
            try:
                written.result(timeout=CANDIDATE_WRITE_TIMEOUT_S)
            except Exception as exc:  # the broker's trouble must not fail the generation
                log.warning("run %s: candidate %s not logged: %r", run_id, data["index"], exc)

        return report

    def still_current(self, state: saga.RunState, epoch: int) -> bool:
        """False when the log moved on while the step ran, or the run moved to another worker.

        `epoch` is the ownership's epoch when the step was launched: a
        revocation since makes the step stale, even if the same partition
        came back (this worker may not have folded what another wrote).
        """
        if epoch != self.ownership.epoch:
            return False
        latest = self.store.get(state.run_id)
        if latest is None:
            return True
        if not self.ownership.owns(self.store.partition(state.run_id)):
            return False
        return not latest.terminal and latest.generation == state.generation
