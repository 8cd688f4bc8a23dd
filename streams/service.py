"""RunService: what the Faust agents do with each record.

One record at a time per partition: decode (both CloudEvents modes), validate,
fold into the run's state, decide the next step, write what it asks for. Every
failure of an input goes through `_dead_letter` and nowhere else; the record's
offset moves on only after the dead-letter write is acknowledged (we await the
broker's ack inside the agent, and Faust commits after the agent returns).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Mapping
from typing import Any

import faust
from faust.types import TableT
from opentelemetry.context import Context
from opentelemetry.trace import Span
from pydantic import ValidationError

from schemas import events as ev
from schemas.codec import decode_record, describe_validation_error, encode_event
from schemas.envelope import JSON_CONTENT_TYPE, SCHEMA_VERSION, CloudEvent, utc_now_iso
from schemas.requests import (
    CANCEL_REQUESTED,
    COMMAND_TYPES,
    RUN_ID_PATTERN,
    RUN_REQUESTED,
    CancelRequest,
    RunRequest,
)
from schemas.results import RUN_RESULT
from streams import saga, telemetry
from streams.dlq import Failure, InputRejected, Origin, classify, dead_letter_headers
from streams.runner import RunExecutor, StepInterrupted
from streams.settings import Settings

log = logging.getLogger(__name__)
SOURCE = f"thunderhelm/worker/{socket.gethostname()}/{os.getpid()}"
# A run with no local task and no new event for this long is (re)driven by the
# reconciler: that is how a run resumes after its worker died.
IDLE_BEFORE_RESUME_S = 3.0


def _run_id_in(data: Any) -> str | None:
    import re

    if isinstance(data, dict):
        run_id = data.get("run_id")
        if isinstance(run_id, str) and re.fullmatch(RUN_ID_PATTERN, run_id):
            return run_id
    return None


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
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._last_progress: dict[str, float] = {}
        self._started_at = time.monotonic()

    async def start(self) -> None:
        await asyncio.to_thread(self.executor.start)

    def stop(self) -> None:
        self.executor.close()

    # --- state ------------------------------------------------------------------

    def state_of(self, run_id: str) -> saga.RunState | None:
        raw = self.runs.get(run_id.encode())
        return None if raw is None else saga.RunState.from_dict(raw)

    # --- run-requests -----------------------------------------------------------

    async def handle_request(self, event: faust.EventT[bytes]) -> None:
        message = event.message
        headers = dict(event.headers or {})
        with telemetry.consume_span(
            message.topic, message.partition, message.offset, message.key, headers
        ) as span:
            stage = "decode"
            try:
                if (
                    message.value is not None
                    and len(message.value) > self.settings.max_record_bytes
                ):
                    raise InputRejected(
                        "decode",
                        f"record of {len(message.value)} bytes exceeds the limit of "
                        f"{self.settings.max_record_bytes}",
                    )
                command = decode_record(message.value, headers)
                stage = "validate"
                if command.type not in COMMAND_TYPES:
                    raise InputRejected("validate", f"unknown command type {command.type!r}")
                span.set_attribute("cloudevents.event_id", command.id)
                span.set_attribute("cloudevents.event_type", command.type)
                await self._command(command, span)
            except Exception as exc:  # every failure of an input is dead-lettered
                await self._dead_letter(event, classify(exc, stage), span)

    async def _command(self, command: CloudEvent, span: Span) -> None:
        if command.type == RUN_REQUESTED:
            try:
                request = RunRequest.model_validate(command.data)
            except ValidationError as exc:
                run_id = _run_id_in(command.data)
                if run_id is None:
                    raise
                reasons = describe_validation_error(exc)
                span.set_attribute("thunderhelm.run_id", run_id)
                await self._append(run_id, saga.reject(run_id, reasons, command.id), None)
                return
            run_id = request.run_id
            span.set_attribute("thunderhelm.run_id", run_id)
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

    # --- run-events -------------------------------------------------------------

    async def handle_event(self, event: faust.EventT[bytes]) -> None:
        message = event.message
        headers = dict(event.headers or {})
        with telemetry.consume_span(
            message.topic, message.partition, message.offset, message.key, headers
        ) as span:
            stage = "decode"
            try:
                record = decode_record(message.value, headers)
                stage = "validate"
                domain = _to_domain(record)
                span.set_attribute("cloudevents.event_type", record.type)
                span.set_attribute("thunderhelm.run_id", domain.run_id)
                stage = "decide"
                before = self.state_of(domain.run_id)
                after = saga.evolve(before, domain)
                if after is None or after is before:
                    span.set_attribute("thunderhelm.duplicate", after is before)
                    return
                stored = after.to_dict()
                stored["_partition"] = message.partition
                self.runs[domain.run_id.encode()] = stored
                self._last_progress[domain.run_id] = time.monotonic()
                if after.status != (before.status if before else None):
                    log.info("run %s: %s", after.run_id, after.status)
                stage = "execute"
                await self._act(after)
            except Exception as exc:
                await self._dead_letter(event, classify(exc, stage), span)

    # --- actions ----------------------------------------------------------------

    async def _act(self, state: saga.RunState, *, timed_out: bool = False) -> None:
        action = saga.react(state, timed_out=timed_out)
        context = telemetry.context_from_traceparent(state.traceparent)
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
                if isinstance(action, saga.RunGeneration):
                    data = await self.executor.run_generation(state, context)
                    new = saga.NewEvent(ev.GENERATION_COMPLETED, data)
                else:
                    assert isinstance(action, saga.Finish)
                    result = await self.executor.finish(state, action)
                    kind = {
                        "succeeded": ev.RUN_SUCCEEDED,
                        "failed": ev.RUN_FAILED,
                        "cancelled": ev.RUN_CANCELLED,
                    }[action.status]
                    new = saga.NewEvent(kind, {"run_id": state.run_id, "result": result})
                await self._append(state.run_id, new, context)
            except asyncio.CancelledError:
                raise
            except StepInterrupted as why:
                # Cancel or budget stopped the step; the saga's next decision ends the run.
                log.info("run %s: step interrupted (%s)", state.run_id, why)
                interrupted = True
            except Exception as exc:
                # A step that cannot complete fails the run with its error.
                log.exception("run %s: step failed", state.run_id)
                result = self.executor.failure_result(state, exc)
                failed = saga.NewEvent(ev.RUN_FAILED, {"run_id": state.run_id, "result": result})
                await self._append(state.run_id, failed, context)
            finally:
                self._tasks.pop(state.run_id, None)
                self._last_progress[state.run_id] = time.monotonic()
            if interrupted and (latest := self.state_of(state.run_id)) is not None:
                await self._act(latest, timed_out=self.executor.timed_out(latest))

        self._last_progress[state.run_id] = time.monotonic()
        self._tasks[state.run_id] = asyncio.get_running_loop().create_task(step())

    async def reconcile(self) -> None:
        """Drive runs that nothing drives: resumed after a restart, or past their budget."""
        if time.monotonic() - self._started_at < IDLE_BEFORE_RESUME_S:
            return
        active = {
            tp.partition
            for tp in self.app.assignor.assigned_actives()
            if tp.topic == self.settings.run_events
        }
        now = time.monotonic()
        for key, raw in list(self.runs.items()):
            if raw is None or raw.get("status") not in ("accepted", "running"):
                continue
            state = saga.RunState.from_dict(raw)
            if raw.get("_partition") is not None and raw["_partition"] not in active:
                continue
            timed_out = self.executor.timed_out(state)
            task = self._tasks.get(state.run_id)
            if timed_out and task is not None:
                self.executor.cancel(state.run_id)
            idle = now - self._last_progress.get(state.run_id, 0.0) > IDLE_BEFORE_RESUME_S
            if (task is None and idle) or (timed_out and task is None):
                log.info("run %s: driving %s", state.run_id, "timeout" if timed_out else "resume")
                self._last_progress[state.run_id] = now
                await self._act(state, timed_out=timed_out)
            del key

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
            sequence=sequence,
            schemaversion=SCHEMA_VERSION,
            causationid=new.causation_id,
            correlationid=run_id,
        )

    async def _append(self, run_id: str, new: saga.NewEvent, context: Context | None) -> None:
        state = self.state_of(run_id)
        sequence = (state.version + 1) if state else 1
        envelope = self._envelope(run_id, new, sequence)
        await self._produce(self.settings.run_events, run_id, encode_event(envelope), context)

    async def _publish_result(
        self, state: saga.RunState, result: Mapping[str, Any], context: Context | None
    ) -> None:
        envelope = self._envelope(
            state.run_id, saga.NewEvent(RUN_RESULT, dict(result)), state.version
        )
        await self._produce(
            self.settings.run_results, state.run_id, encode_event(envelope), context
        )

    async def _produce(
        self,
        topic: str,
        key: str | None,
        value: bytes,
        context: Context | None,
        extra_headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        with telemetry.produce_span(topic, key, context):
            headers = list(extra_headers or []) + list(telemetry.inject_headers().items())
            pending = await self.topics[topic].send(
                key=None if key is None else key.encode(), value=value, headers=headers
            )
            await pending  # the broker's ack

    async def _dead_letter(self, event: faust.EventT[bytes], failure: Failure, span: Span) -> None:
        message = event.message
        span.set_attribute("thunderhelm.dead_lettered", True)
        log.warning(
            "dead-letter %s[%s]@%s stage=%s %s: %s",
            message.topic,
            message.partition,
            message.offset,
            failure.stage,
            failure.error_class,
            failure.message,
        )
        raw_headers = message.headers or []
        pairs = raw_headers.items() if isinstance(raw_headers, Mapping) else raw_headers
        original = [(str(k), v if isinstance(v, bytes) else str(v).encode()) for k, v in pairs]
        origin = Origin(
            message.topic,
            message.partition,
            message.offset,
            int(message.timestamp * 1000) if message.timestamp else None,
        )
        with telemetry.internal_span(
            ev.EVENT_DEAD_LETTERED,
            attributes={"dlq.stage": failure.stage, "error.type": failure.error_class},
        ) as dlq_span:
            telemetry.mark_failed(dlq_span, failure.error_class, failure.message)
            headers = dead_letter_headers(original, failure, origin, telemetry.inject_headers())
            while True:
                try:
                    pending = await self.topics[self.settings.dead_letters].send(
                        key=message.key, value=message.value, headers=headers
                    )
                    await pending
                    break
                except Exception:  # never lose the input: retry until the DLQ takes it
                    log.exception("dead-letter write failed; retrying")
                    await asyncio.sleep(1.0)
            run_id = message.key.decode("utf-8", "replace") if message.key else None
            if (
                run_id
                and self.state_of(run_id) is not None
                and message.topic != self.settings.run_events
            ):
                note = saga.NewEvent(
                    ev.EVENT_DEAD_LETTERED,
                    {
                        "run_id": run_id,
                        "stage": failure.stage,
                        "error_class": failure.error_class,
                        "error_message": failure.message,
                        "original_topic": message.topic,
                        "original_offset": message.offset,
                    },
                )
                await self._append(run_id, note, None)


def _to_domain(record: CloudEvent) -> saga.Event:
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
