"""Dead-lettering a record the agents could not take, and noting it in its run's log.

Every failure of an input goes through `DeadLetterWriter.dead_letter` and
nowhere else. Writes are pipelined: the record's offset moves on only after
its dead-letter write (and every earlier one) is acknowledged
(`dead_letters.OrderedAcks`; Faust commits only acked offsets).
"""

from __future__ import annotations

import logging
from typing import Any

from opentelemetry.trace import Span

from thunderhelm.schemas import events as ev
from thunderhelm.schemas.event_data import EventDeadLettered
from thunderhelm.streams.config.settings import Settings
from thunderhelm.streams.domain import saga
from thunderhelm.streams.observability import metrics as meters
from thunderhelm.streams.observability import telemetry
from thunderhelm.streams.wire.failures import Failure, Origin, dead_letter_headers
from thunderhelm.streams.worker.dead_letters.acks import OrderedAcks, ThrottledLog
from thunderhelm.streams.worker.events.journal import RunJournal
from thunderhelm.streams.worker.intake.admission import run_id_of_key
from thunderhelm.streams.worker.kafka.app_seam import WorkerApp
from thunderhelm.streams.worker.kafka.records import Consumed, Delivery, pairs

log = logging.getLogger(__name__)


class DeadLetterWriter:
    def __init__(self, settings: Settings, app: WorkerApp, journal: RunJournal) -> None:
        self.settings = settings
        self.app = app
        self.journal = journal
        self.acks = OrderedAcks()
        self.log = ThrottledLog(log)

    def hold(self, event: Delivery[Consumed]) -> None:
        """Hold the record's ack until it is handled (acked in offset order)."""
        self.acks.hold(event)

    async def dead_letter(
        self,
        event: Delivery[Consumed],
        failure: Failure,
        span: Span,
        original: list[tuple[str, bytes]] | None = None,
        origin: Origin | None = None,
    ) -> None:
        """Dead-letter the event's record; `original`/`origin`: the input a forward came from."""
        message = event.message
        if original is None:
            original = pairs(message.headers)
        if origin is None:
            origin = Origin(
                message.topic,
                message.partition,
                message.offset,
                int(message.timestamp * 1000) if message.timestamp else None,
            )
        span.set_attribute("thunderhelm.dead_lettered", True)
        self.log.dead_letter(origin, failure)
        telemetry.mark_failed(span, failure.error_class, failure.message)
        meters.dead_lettered(failure.stage, failure.error_class)
        with telemetry.dead_letter_span(
            failure.stage, failure.error_class, failure.message, dict(original)
        ):
            headers = dead_letter_headers(original, failure, origin, telemetry.inject_headers())
            await self.acks.write(
                event,
                # Straight to the producer: the topic's send path costs about a
                # millisecond per record under load, which is the whole budget here.
                lambda: self.app.producer.send(
                    self.settings.dead_letters, message.key, message.value, None, None, headers
                ),
            )
            run_id = run_id_of_key(message.key)
            if run_id is not None and origin.topic != self.settings.run_events:
                await self.note(run_id, failure, origin)

    async def dead_letter_record(self, record: Any, failure: Failure, origin: Origin) -> None:
        """Dead-letter a record read outside Faust (a candidate task); waits for the ack."""
        original = list(record.headers or ())
        self.log.dead_letter(origin, failure)
        meters.dead_lettered(failure.stage, failure.error_class)
        with telemetry.dead_letter_span(
            failure.stage, failure.error_class, failure.message, dict(original)
        ):
            headers = dead_letter_headers(original, failure, origin, telemetry.inject_headers())
            sent = await self.app.producer.send(
                self.settings.dead_letters, record.key, record.value, None, None, headers
            )
            await sent

    async def note(self, run_id: str, failure: Failure, origin: Origin) -> None:
        """A `dead-lettered` event in the log of a run this worker knows (else nothing)."""
        if self.journal.store.get(run_id) is None:
            return
        data = EventDeadLettered(
            run_id=run_id,
            stage=failure.stage,
            error_class=failure.error_class,
            error_message=failure.message,
            original_topic=origin.topic,
            original_offset=origin.offset,
        )
        await self.journal.append(run_id, saga.NewEvent(ev.EVENT_DEAD_LETTERED, data), None)
