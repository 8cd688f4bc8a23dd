"""The run-events agent's work: fold each lifecycle event into its run's state and act on it.

The fold is the saga's (`saga.evolve`), in the run's lane (journal.py). What
this worker wrote is folded already and reads as a duplicate here; what
another worker wrote (before a takeover, or a standby's copy) moves the state
now. An event that changes nothing is dropped, except that a finished run
whose result is not out yet gets it now: the worker may have died between
folding the terminal event and writing the result. A candidate's outcome or a
dead-letter note is folded and stored, and nothing more.

A worker that stood still past the session timeout (`Ownership.stalled`)
folds nothing it reads until the group has said whose the partitions are:
its fold would write the runs table, whose changelog a new owner restores
from, after the new owner's own writes (a stale state that outlives the
stall). Its own events it folded when it wrote them; another worker's are
folded by whoever owns the partition next.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from thunderhelm.schemas import events as ev
from thunderhelm.schemas.codec import decode_record
from thunderhelm.streams.domain import saga
from thunderhelm.streams.wire.events import to_domain
from thunderhelm.streams.wire.failures import Stage, classify
from thunderhelm.streams.worker.dead_letters.writer import DeadLetterWriter
from thunderhelm.streams.worker.events.journal import RunJournal
from thunderhelm.streams.worker.kafka.app_seam import WorkerApp
from thunderhelm.streams.worker.kafka.records import Consumed, Delivery, consumed
from thunderhelm.streams.worker.steps.runner import StepRunner

log = logging.getLogger(__name__)


def last_outcome(state: saga.RunState | None) -> bool:
    """Whether a spread generation has every outcome in (it can now be bred)."""
    return state is not None and bool(state.dispatched) and not saga.waiting_for_candidates(state)


@dataclass
class EventHandler:
    app: WorkerApp
    journal: RunJournal
    runner: StepRunner
    dead_letters: DeadLetterWriter

    # Per run-events partition, the offset after the last record handled here:
    # a partition's new owner decides its runs' commands only once it has
    # folded what was on the log when it took the partition (command_reader.py).
    folded: dict[int, int] = field(default_factory=dict)

    def folded_to(self, partition: int) -> int:
        return self.folded.get(partition, 0)

    async def handle(self, event: Delivery[Consumed]) -> None:
        try:
            await self._handle(event)
        finally:
            message = event.message
            self.folded[message.partition] = max(
                self.folded.get(message.partition, 0), message.offset + 1
            )

    async def _handle(self, event: Delivery[Consumed]) -> None:
        self.dead_letters.hold(event)
        message = event.message
        headers = dict(event.headers or {})
        with consumed(self.app, message, headers) as span:
            stage: Stage = "decode"
            try:
                record = decode_record(message.value, headers)
                stage = "validate"
                domain = to_domain(record)
                span.set_attribute("cloudevents.event_type", record.type)
                span.set_attribute("thunderhelm.run_id", domain.run_id)
                if self.runner.ownership.stalled():
                    span.set_attribute("thunderhelm.stalled", True)
                    log.info(
                        "run %s: %s at %s offset %d not folded: this worker stood still",
                        domain.run_id,
                        domain.type,
                        message.tp,
                        message.offset,
                    )
                    return
                stage = "decide"
                after, changed = await self.journal.fold(domain, message.partition)
                if not changed or domain.type in (ev.EVENT_DEAD_LETTERED, ev.CONTINUE_REJECTED):
                    span.set_attribute("thunderhelm.duplicate", after is not None and not changed)
                    if after is None or not after.terminal or after.settled:
                        return
                if domain.type == ev.CANDIDATE_COMPLETED and not last_outcome(after):
                    # An outcome calls for a decision only when it is the last
                    # one a spread generation waits for. Otherwise its own step
                    # is running, or more outcomes are still to come.
                    return
                stage = "execute"
                assert after is not None
                await self.runner.retried(lambda: self.runner.act(after), after.run_id)
            except Exception as exc:
                await self.dead_letters.dead_letter(event, classify(exc, stage), span)
