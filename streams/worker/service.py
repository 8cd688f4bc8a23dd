"""RunService: what the Faust agents do with each record.

One record at a time per partition: decode (both CloudEvents modes), validate,
fold into the run's state, decide the next step, write what it asks for. Every
failure of an input goes through `_dead_letter` and nowhere else; the record's
offset moves on only after the dead-letter write is acknowledged (writes are
pipelined and `dead_letters.OrderedAcks` acks each input, in offset order, from
its write's ack callback; Faust commits only acked offsets).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import faust
from faust.types import TableT
from opentelemetry.context import Context
from opentelemetry.trace import Span
from pydantic import ValidationError

from thunderhelm.schemas import events as ev
from thunderhelm.schemas.codec import (
    decode_record,
    describe_validation_error,
    encode_event,
    structured_headers,
)
from thunderhelm.schemas.envelope import (
    JSON_CONTENT_TYPE,
    SCHEMA_VERSION,
    CloudEvent,
    format_sequence,
    utc_now_iso,
)
from thunderhelm.schemas.limits import validate_request
from thunderhelm.schemas.requests import (
    CANCEL_REQUESTED,
    RUN_REQUESTED,
    CancelRequest,
)
from thunderhelm.schemas.results import RUN_RESULT
from thunderhelm.streams.domain import saga
from thunderhelm.streams.domain.retry import RetryPolicy, next_delay
from thunderhelm.streams.execution.executor import RunExecutor, StepInterrupted
from thunderhelm.streams.observability import metrics as meters
from thunderhelm.streams.observability import telemetry
from thunderhelm.streams.worker.admission import (
    run_id_in,
    run_id_of_key,
    screen_command,
    unwrap_forwarded,
)
from thunderhelm.streams.worker.dead_letters import (
    Failure,
    InputRejected,
    OrderedAcks,
    Origin,
    ThrottledLog,
    classify,
    dead_letter_headers,
)
from thunderhelm.streams.worker.settings import Settings

log = logging.getLogger(__name__)
SOURCE = f"thunderhelm/worker/{socket.gethostname()}/{os.getpid()}"
# A run with no local task and no new event for this long is (re)driven by the
# reconciler: that is how a run resumes after its worker died.
IDLE_BEFORE_RESUME_S = 3.0


class RunService:
    def __init__(
        self,
        settings: Settings,
        app: faust.App,
        topics: Mapping[str, faust.TopicT],
        runs: TableT[bytes, Any],
    ) -> None:
        self.settings = settings
        self.app = app
        self.topics = topics
        self.runs = runs
        self.executor = RunExecutor(settings)
        self.retry_policy = RetryPolicy()
        # Dead-letter writes are pipelined; inputs are acked in offset order behind them.
        self._dlq_acks = OrderedAcks()
        self._dlq_log = ThrottledLog(log)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._last_progress: dict[str, float] = {}
        # Runs whose `accepted` this worker wrote but has not folded yet, so a
        # duplicate start arriving in between adds nothing to the log.
        self._accepting: set[str] = set()

    async def start(self) -> None:
        await asyncio.to_thread(self.executor.start)

    def stop(self) -> None:
        self.executor.close()

    # --- state ------------------------------------------------------------------

    def state_of(self, run_id: str) -> saga.RunState | None:
        raw = self.runs.get(run_id.encode())
        return None if raw is None else saga.RunState.from_dict(raw)

    # --- run-commands (admitted by the intake) ----------------------------------

    async def handle_command(self, event: faust.EventT[bytes]) -> None:
        self._dlq_acks.hold(event)
        message = event.message
        # The input as the user wrote it, and where on run-requests it was.
        original, origin = unwrap_forwarded(_pairs(message.headers))
        self._observe_lag(message)
        with telemetry.consume_span(
            message.topic,
            message.partition,
            message.offset,
            message.key,
            dict(_pairs(message.headers)),
        ) as span:
            # Screened again: anyone may write to run-commands, and a record
            # the intake admitted must read the same here.
            screened = screen_command(message.key, message.value, original, self.settings.limits)
            if isinstance(screened, Failure):
                await self._dead_letter(event, screened, span, original, origin)
                return
            span.set_attribute("cloudevents.event_id", screened.id)
            span.set_attribute("cloudevents.event_type", screened.type)
            try:
                await self._command(screened, span)
            except Exception as exc:  # every failure of an input is dead-lettered
                await self._dead_letter(event, classify(exc, "decide"), span, original, origin)

    async def _command(self, command: CloudEvent, span: Span) -> None:
        if command.type == RUN_REQUESTED:
            try:
                request = validate_request(command.data, self.settings.limits)
            except ValidationError as exc:
                run_id = run_id_in(command.data)
                if run_id is None:
                    raise
                reasons = describe_validation_error(exc)
                span.set_attribute("thunderhelm.run_id", run_id)
                await self._append(run_id, saga.reject(run_id, reasons, command.id), None)
                return
            run_id = request.run_id
            span.set_attribute("thunderhelm.run_id", run_id)
            if run_id in self._accepting:
                return  # accepted a moment ago; the fold has not caught up yet
            decided = saga.decide(
                self.state_of(run_id),
                saga.StartRun(
                    command.id,
                    request.model_dump(mode="json"),
                    command.time or utc_now_iso(),
                    telemetry.traceparent_of(span),
                ),
            )
        else:
            assert command.type == CANCEL_REQUESTED
            cancel = CancelRequest.model_validate(command.data)
            run_id = cancel.run_id
            span.set_attribute("thunderhelm.run_id", run_id)
            decided = saga.decide(
                self.state_of(run_id),
                saga.CancelRun(command.id, run_id, cancel.reason, utc_now_iso()),
            )
        for new in decided:
            await self._append(run_id, new, None)
            if new.type == ev.RUN_ACCEPTED:
                self._accepting.add(run_id)

    # --- run-events -------------------------------------------------------------

    async def handle_event(self, event: faust.EventT[bytes]) -> None:
        self._dlq_acks.hold(event)
        message = event.message
        headers = dict(event.headers or {})
        self._observe_lag(message)
        with telemetry.consume_span(
            message.topic, message.partition, message.offset, message.key, headers
        ) as span:
            stage = "decode"
            try:
                record = decode_record(message.value, headers)
                stage = "validate"
                domain = to_domain(record)
                span.set_attribute("cloudevents.event_type", record.type)
                span.set_attribute("thunderhelm.run_id", domain.run_id)
                stage = "decide"
                before = self.state_of(domain.run_id)
                after = saga.evolve(before, domain)
                if after is None or after is before:
                    span.set_attribute("thunderhelm.duplicate", after is before)
                    if after is not None and after.terminal and not self._published(after):
                        # The worker died between folding the terminal event and
                        # writing the result: the redelivery finishes the job.
                        await self._with_retries(lambda: self._act(after), after.run_id)
                    return
                self._accepting.discard(domain.run_id)
                stored = after.to_dict()
                stored["_partition"] = message.partition
                self.runs[domain.run_id.encode()] = stored
                self._last_progress[domain.run_id] = time.monotonic()
                if after.status != (before.status if before else None):
                    log.info("run %s: %s", after.run_id, after.status)
                    meters.run_status(after.status, domain.data)
                stage = "execute"
                await self._with_retries(lambda: self._act(after), after.run_id)
            except Exception as exc:
                await self._dead_letter(event, classify(exc, stage), span)

    # --- actions ----------------------------------------------------------------

    def _observe_lag(self, message: faust.types.Message) -> None:
        """Consumer lag of the record's partition as of this record (a metric only)."""
        try:
            high = self.app.consumer.highwater(message.tp)
        except Exception:  # no consumer yet, or no fetch seen: nothing to report
            return
        if high is not None:
            meters.consumer_lag(message.topic, message.partition, high - message.offset - 1)

    async def _act(self, state: saga.RunState, *, timed_out: bool = False) -> None:
        context = telemetry.context_from_traceparent(state.traceparent)
        with telemetry.decision_span(state.run_id, state.status, context) as decision:
            action = saga.react(state, timed_out=timed_out)
            decision.set_attribute("thunderhelm.saga.action", type(action).__name__)
            decision.set_attribute("thunderhelm.saga.timed_out", timed_out)
        match action:
            case None:
                return
            case saga.PublishResult(result=result):
                await self._publish_result(state, result, context)
            case saga.Start():
                ga_state = self.executor.initial_ga_state(state)
                data = {"run_id": state.run_id, "ga_state": ga_state}
                await self._append(state.run_id, saga.NewEvent(ev.RUN_STARTED, data), context)
            case saga.RunGeneration() | saga.Finish():
                if action_busy := self._tasks.get(state.run_id):
                    if isinstance(action, saga.Finish) and action.status == "cancelled":
                        self.executor.cancel(state.run_id)
                    if not action_busy.done():
                        return
                self._launch(state, action, context)

    def _launch(self, state: saga.RunState, action: saga.Action, context: Context | None) -> None:
        async def step() -> None:
            interrupted = False
            try:
                new = await self._with_retries(
                    lambda: self._perform(state, action, context), state.run_id
                )
                if self._still_current(state):
                    await self._with_retries(
                        lambda: self._append(state.run_id, new, context), state.run_id
                    )
            except asyncio.CancelledError:
                raise
            except StepInterrupted as why:
                # Cancel or budget stopped the step; the saga's next decision ends the run.
                log.info("run %s: step interrupted (%s)", state.run_id, why)
                interrupted = True
            except Exception as exc:
                # A non-retryable failure (or retries used up) fails the run with its error.
                log.exception("run %s: step failed", state.run_id)
                result = self.executor.failure_result(state, exc)
                failed = saga.NewEvent(ev.RUN_FAILED, {"run_id": state.run_id, "result": result})
                with contextlib.suppress(Exception):
                    await self._append(state.run_id, failed, context)
            finally:
                self._tasks.pop(state.run_id, None)
                self._last_progress[state.run_id] = time.monotonic()
            latest = self.state_of(state.run_id)
            # The step's own event may have been folded while this task was still
            # awaiting its ack; that fold saw the step busy and did nothing.
            moved_on = latest is not None and latest.version != state.version
            if (
                latest is not None
                and not latest.terminal
                and (interrupted or moved_on)
                and self._owns(state.run_id)
            ):
                await self._act(latest, timed_out=self.executor.timed_out(latest))

        what = (
            f"generation {action.generation}"
            if isinstance(action, saga.RunGeneration)
            else (
                f"finish ({action.status})"
                if isinstance(action, saga.Finish)
                else type(action).__name__
            )
        )
        log.info("run %s: launching %s", state.run_id, what)
        self._last_progress[state.run_id] = time.monotonic()
        self._tasks[state.run_id] = asyncio.get_running_loop().create_task(step())

    async def _perform(
        self, state: saga.RunState, action: saga.Action, context: Context | None
    ) -> saga.NewEvent:
        if isinstance(action, saga.RunGeneration):
            data = await self.executor.run_generation(state, context)
            return saga.NewEvent(ev.GENERATION_COMPLETED, data)
        assert isinstance(action, saga.Finish)
        result = await self.executor.finish(state, action)
        kind = {
            "succeeded": ev.RUN_SUCCEEDED,
            "failed": ev.RUN_FAILED,
            "cancelled": ev.RUN_CANCELLED,
        }[action.status]
        return saga.NewEvent(kind, {"run_id": state.run_id, "result": result})

    def _still_current(self, state: saga.RunState) -> bool:
        """False when the log moved on while the step ran, or the run moved to another worker."""
        raw = self.runs.get(state.run_id.encode())
        if raw is None:
            return True
        if raw.get("_partition") not in self._active_partitions():
            return False
        latest = saga.RunState.from_dict(raw)
        return not latest.terminal and latest.generation == state.generation

    def _owns(self, run_id: str) -> bool:
        raw = self.runs.get(run_id.encode())
        return raw is not None and raw.get("_partition") in self._active_partitions()

    def _active_partitions(self) -> set[int]:
        return {
            tp.partition
            for tp in self.app.assignor.assigned_actives()
            if tp.topic == self.settings.run_events
        }

    def on_revoked(self, partitions: set[int]) -> None:
        """Stop local steps of runs that now belong to another worker.

        Every rebalance starts here, so it is also where the reconciler's idle
        clocks restart: a run that comes back to this worker must first let
        the agent fold what other workers wrote meanwhile.
        """
        self._last_progress.clear()
        for run_id in list(self._tasks):
            raw = self.runs.get(run_id.encode())
            if raw is not None and raw.get("_partition") in partitions:
                log.info("run %s: moved to another worker; stopping its step", run_id)
                self.executor.cancel(run_id)

    async def _with_retries[T](self, attempt: Callable[[], Awaitable[T]], run_id: str) -> T:
        """Run `attempt`, retrying transient failures per the retry policy."""
        tries = 0
        while True:
            tries += 1
            try:
                return await attempt()
            except Exception as exc:
                delay = next_delay(exc, tries, self.retry_policy)
                if delay is None:
                    raise
                log.warning(
                    "run %s: transient %s (%s); retry %d in %.1fs",
                    run_id,
                    type(exc).__name__,
                    exc,
                    tries,
                    delay,
                )
                await asyncio.sleep(delay)

    async def reconcile(self) -> None:
        """Drive runs that nothing drives: resumed after a restart, or past their budget.

        A run this worker has not seen progress for gets a grace period first,
        so after a restart or a rebalance the agent can fold the events still
        waiting on the partition before anything is re-run.
        """
        if self.app.rebalancing or getattr(self.app, "in_recovery", False):
            self._last_progress.clear()  # grace again once the new assignment settles
            return
        active = self._active_partitions()
        now = time.monotonic()
        for raw in list(self.runs.values()):
            if raw is None or raw.get("status") not in ("accepted", "running"):
                continue
            if raw.get("_partition") not in active:
                continue  # a standby copy: another worker owns this run
            state = saga.RunState.from_dict(raw)
            task = self._tasks.get(state.run_id)
            timed_out = self.executor.timed_out(state)
            if task is not None:
                if timed_out:
                    self.executor.cancel(state.run_id)  # the step stops, then the run fails
                continue
            last = self._last_progress.setdefault(state.run_id, now)
            if not timed_out and now - last < IDLE_BEFORE_RESUME_S:
                continue
            log.info("run %s: driving %s", state.run_id, "timeout" if timed_out else "resume")
            self._last_progress[state.run_id] = now
            try:
                await self._act(state, timed_out=timed_out)
            except Exception:  # the next tick tries again
                log.exception("run %s: could not drive", state.run_id)

    # --- writes -----------------------------------------------------------------

    def _envelope(self, run_id: str, new: saga.NewEvent, sequence: int | None) -> CloudEvent:
        return CloudEvent(
            specversion="1.0",
            id=str(uuid.uuid4()),
            source=SOURCE,
            type=new.type,
            subject=run_id,
            time=utc_now_iso(),
            datacontenttype=JSON_CONTENT_TYPE,
            data=dict(new.data),
            sequence=None if sequence is None else format_sequence(sequence),
            schemaversion=SCHEMA_VERSION,
            causationid=new.causation_id,
            correlationid=run_id,
        )

    async def _append(self, run_id: str, new: saga.NewEvent, context: Context | None) -> None:
        state = self.state_of(run_id)
        sequence = (state.version + 1) if state else 1
        envelope = self._envelope(run_id, new, sequence)
        await self._produce(self.settings.run_events, run_id, encode_event(envelope), context)

    def _published(self, state: saga.RunState) -> bool:
        raw = self.runs.get(state.run_id.encode())
        return bool(raw and raw.get("_result_published"))

    async def _publish_result(
        self, state: saga.RunState, result: Mapping[str, Any], context: Context | None
    ) -> None:
        if self._published(state):
            return
        envelope = self._envelope(
            state.run_id, saga.NewEvent(RUN_RESULT, dict(result)), state.version
        )
        # One id per run's result, so a consumer can drop a copy written again
        # after a crash between the write and the bookkeeping below.
        envelope = envelope.model_copy(update={"id": f"{state.run_id}/result"})
        await self._produce(
            self.settings.run_results, state.run_id, encode_event(envelope), context
        )
        raw = self.runs.get(state.run_id.encode())
        if raw is not None and faust.current_event() is not None:  # table writes need the event
            latest = saga.RunState.from_dict(raw)
            kept = saga.settled(latest).to_dict() if latest.terminal else dict(raw)
            self.runs[state.run_id.encode()] = {
                **kept,
                "_partition": raw.get("_partition"),
                "_result_published": True,
            }
        self._last_progress.pop(state.run_id, None)

    async def _produce(
        self,
        topic: str,
        key: str | None,
        value: bytes,
        context: Context | None,
        extra_headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        with telemetry.produce_span(topic, key, context):
            headers = structured_headers(
                list(extra_headers or []) + list(telemetry.inject_headers().items())
            )
            pending = await self.topics[topic].send(
                key=None if key is None else key.encode(), value=value, headers=headers
            )
            await pending  # the broker's ack

    async def _dead_letter(
        self,
        event: faust.EventT[bytes],
        failure: Failure,
        span: Span,
        original: list[tuple[str, bytes]] | None = None,
        origin: Origin | None = None,
    ) -> None:
        """Dead-letter the event's record; `original`/`origin`: the input a forward came from."""
        message = event.message
        if original is None:
            original = _pairs(message.headers)
        if origin is None:
            origin = Origin(
                message.topic,
                message.partition,
                message.offset,
                int(message.timestamp * 1000) if message.timestamp else None,
            )
        span.set_attribute("thunderhelm.dead_lettered", True)
        self._dlq_log.dead_letter(origin, failure)
        telemetry.mark_failed(span, failure.error_class, failure.message)
        meters.dead_lettered(failure.stage, failure.error_class)
        with telemetry.dead_letter_span(
            failure.stage, failure.error_class, failure.message, dict(original)
        ):
            headers = dead_letter_headers(original, failure, origin, telemetry.inject_headers())
            await self._dlq_acks.write(
                event,
                # Straight to the producer: the topic's send path costs about a
                # millisecond per record under load, which is the whole budget here.
                lambda: self.app.producer.send(
                    self.settings.dead_letters, message.key, message.value, None, None, headers
                ),
            )
            run_id = run_id_of_key(message.key)
            if run_id is not None and origin.topic != self.settings.run_events:
                await self.note_dead_letter(run_id, failure, origin)

    async def note_dead_letter(self, run_id: str, failure: Failure, origin: Origin) -> None:
        """A `dead-lettered` event in the log of a run this worker knows (else nothing)."""
        if self.state_of(run_id) is None:
            return
        note = saga.NewEvent(
            ev.EVENT_DEAD_LETTERED,
            {
                "run_id": run_id,
                "stage": failure.stage,
                "error_class": failure.error_class,
                "error_message": failure.message,
                "original_topic": origin.topic,
                "original_offset": origin.offset,
            },
        )
        await self._append(run_id, note, None)


def _pairs(headers: Any) -> list[tuple[str, bytes]]:
    """A Faust message's headers (a list of pairs or a mapping) as a list of pairs."""
    pairs = headers.items() if isinstance(headers, Mapping) else (headers or [])
    return [(str(k), v if isinstance(v, bytes) else str(v).encode()) for k, v in pairs]


def to_domain(record: CloudEvent) -> saga.Event:
    if record.type not in ev.EVENT_TYPES:
        raise InputRejected("validate", f"unknown event type {record.type!r}")
    if record.schemaversion not in (None, SCHEMA_VERSION):
        raise InputRejected("validate", f"unsupported schema version {record.schemaversion!r}")
    if not isinstance(record.data, dict):
        raise InputRejected("validate", "event data is not an object")
    missing = ev.EVENT_DATA_REQUIRED[record.type] - set(record.data)
    if missing:
        raise InputRejected("validate", f"{record.type} lacks {', '.join(sorted(missing))}")
    run_id = record.data.get("run_id", record.subject)
    if not isinstance(run_id, str) or not run_id:
        raise InputRejected("validate", "event has no run id")
    return saga.Event(
        id=record.id,
        type=record.type,
        run_id=run_id,
        time=record.time or utc_now_iso(),
        data=record.data,
        causation_id=record.causationid,
    )
