"""A run-commands record's work: record each admitted command as events and act on them.

A command is screened once here (`admission.screen_command`: anyone may write
to run-commands, and a record the intake admitted must read the same here);
the typed request it yields goes to the saga's `decide`, in the run's lane
(journal.py): the events the decision asks for are appended to run-events and
folded into the run's state before anything else is decided for the run, so a
second start arriving before run-events is read back finds the run already
accepted; the run-events agent later reads them as duplicates. Commands of
different runs are handled side by side (`lanes.py`).

A command is decided only by the worker that owns its run now. One that
waited in a lane while its partition moved (`superseded`) is left to the
partition's next reader; while the worker has stood still too long to trust
its assignment (`Ownership.stalled`), its commands wait until the group has
said whose the runs are.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from opentelemetry.trace import Span

from thunderhelm.schemas.envelope import utc_now_iso
from thunderhelm.schemas.event_data import CandidateCompleted
from thunderhelm.schemas.requests import CancelRequest, ContinueRequest, RunRequest
from thunderhelm.schemas.tasks import CandidateTrained
from thunderhelm.streams.config.settings import Settings
from thunderhelm.streams.domain import saga
from thunderhelm.streams.execution import warm_start
from thunderhelm.streams.execution.continuation import continue_events
from thunderhelm.streams.observability import telemetry
from thunderhelm.streams.wire.events import epoch_seconds
from thunderhelm.streams.wire.failures import Failure, InputRejected, Stage, classify
from thunderhelm.streams.worker.commands.control_pressure import ControlPressure
from thunderhelm.streams.worker.commands.lanes import RunLanes
from thunderhelm.streams.worker.dead_letters.writer import DeadLetterWriter
from thunderhelm.streams.worker.events.journal import RunJournal
from thunderhelm.streams.worker.intake.admission import (
    Admitted,
    InvalidRequest,
    screen_command,
    unwrap_forwarded,
)
from thunderhelm.streams.worker.kafka.app_seam import WorkerApp
from thunderhelm.streams.worker.kafka.records import (
    Command,
    Delivery,
    consumed,
    pairs,
    waited,
)
from thunderhelm.streams.worker.kafka.run_log import folded, run_log
from thunderhelm.streams.worker.steps.runner import StepRunner

log = logging.getLogger(__name__)

# How often a command held by a stall looks at the ownership again.
STALL_POLL_S = 0.1


def command_of(admitted: Admitted, span: Span) -> tuple[str, saga.Command | saga.NewEvent]:
    """The run an admitted command is for, and the saga command (or rejection) it makes."""
    envelope, content = admitted.envelope, admitted.command
    match content:
        case InvalidRequest(run_id=run_id, reasons=reasons):
            return run_id, saga.reject(run_id, reasons, envelope.id)
        case RunRequest():
            request = content.model_dump(mode="json")
            traceparent = telemetry.traceparent_of(span)
            when = envelope.time or utc_now_iso()
            return content.run_id, saga.StartRun(envelope.id, request, when, traceparent)
        case CancelRequest():
            cancel = saga.CancelRun(envelope.id, content.run_id, content.reason, utc_now_iso())
            return content.run_id, cancel
        case CandidateTrained():
            data = content.model_dump(mode="json", exclude_unset=True)
            outcome = CandidateCompleted.model_validate(data)
            return content.run_id, saga.RecordOutcome(envelope.id, content.run_id, outcome)
        case ContinueRequest():
            given = content.budget
            budget = None if given is None else given.model_dump(mode="json", exclude_unset=True)
            more = saga.ContinueRun(
                envelope.id, content.run_id, content.generations, budget, utc_now_iso()
            )
            return content.run_id, more


@dataclass
class CommandHandler:
    settings: Settings
    app: WorkerApp
    journal: RunJournal
    runner: StepRunner
    dead_letters: DeadLetterWriter
    pressure: ControlPressure
    lanes: RunLanes = field(init=False)

    def __post_init__(self) -> None:
        self.lanes = RunLanes(self.dead_letters.acks)

    async def submit(self, event: Delivery[Command]) -> None:
        """The command reader's entry: queue the command behind its run's lane (the record key)."""
        await self.lanes.submit(event, event.message.key, lambda: self.handle(event))

    async def handle(self, event: Delivery[Command]) -> None:
        """Handle one command now (its lane's turn has come)."""
        message = event.message
        if not await self.ours_to_decide(message):
            log.info(
                "command at %s offset %d was read before partitions moved: "
                "it is left to the partition's next reader",
                message.tp,
                message.offset,
            )
            return
        # The input as the user wrote it, and where on run-requests it was.
        original, origin = unwrap_forwarded(pairs(message.headers))
        # The command reader reports its consumer lag per batch.
        with consumed(self.app, message, dict(pairs(message.headers)), lag_reported=True) as span:
            screened = screen_command(
                message.key, message.value, original, self.settings.limits, internal=True
            )
            if isinstance(screened, Failure):
                await self.dead_letters.dead_letter(event, screened, span, original, origin)
                return
            if not isinstance(screened.command, CandidateTrained):
                # A user's request: how long it waited says whether training
                # must make room (control_pressure.py).
                self.pressure.observe(waited(message))
            span.set_attribute("cloudevents.event_id", screened.envelope.id)
            span.set_attribute("cloudevents.event_type", screened.envelope.type)
            stage: Stage = "decide"
            try:
                state = await self.decide(screened, span, message)
                while state is None and self.runner.ownership.stalled():
                    # The worker stood still as the lane passed to this command:
                    # decided again (nothing twice: `decide` is idempotent) once
                    # the group says whose the run is, or left to the next reader.
                    if not await self.ours_to_decide(message):
                        return
                    state = await self.decide(screened, span, message)
                if state is not None:
                    stage = "execute"
                    await self.runner.retried(lambda: self.runner.act(state), state.run_id)
            except Exception as exc:  # every failure of an input is dead-lettered
                await self.dead_letters.dead_letter(
                    event, classify(exc, stage), span, original, origin
                )

    async def ours_to_decide(self, message: Command) -> bool:
        """Whether the command may be decided here: False once it is superseded."""
        while not message.superseded():
            if not self.runner.ownership.stalled():
                return True
            await asyncio.sleep(STALL_POLL_S)
        return False

    async def decide(
        self, admitted: Admitted, span: Span, message: Command
    ) -> saga.RunState | None:
        """Append and fold what the command decides; the state to act on (None: nothing).

        Nothing is written once the command is superseded, or while the worker's
        ownership is in doubt, however long the run's lane kept it waiting.
        """
        run_id, command = command_of(admitted, span)
        span.set_attribute("thunderhelm.run_id", run_id)
        if isinstance(command, saga.StartRun) and command.request.get("warm_start"):
            command = await self.with_warm_start(command)
        if isinstance(command, saga.ContinueRun):
            decision = await self.continue_decision(command)
        else:

            def decision(state: saga.RunState | None) -> list[saga.NewEvent]:
                if isinstance(command, saga.NewEvent):
                    return [command]
                return saga.decide(state, command)

        return await self.journal.record(
            run_id,
            decision,
            None,
            partition=message.partition,
            allowed=lambda: not message.superseded() and not self.runner.ownership.stalled(),
        )

    async def with_warm_start(self, command: saga.StartRun) -> saga.StartRun | saga.NewEvent:
        """The start with what it takes from its source run, or the rejection that says why not.

        The source's log is read again (its partition's records from the start),
        and both datasets are loaded (in a thread, kept for the run) to compare
        their shapes; an existing run is left to `decide` (a start changes it not).
        """
        run_id = str(command.request["run_id"])
        if self.journal.store.get(run_id) is not None:
            return command
        source_id = str(command.request["warm_start"]["run_id"])
        source = folded(await run_log(self.settings, source_id))
        shape = self.runner.executor.dataset_shape
        found = await asyncio.to_thread(warm_start.taken, command.request, source, shape)
        if isinstance(found, list):
            return saga.reject(run_id, found, command.command_id)
        return dataclasses.replace(command, warm_start=found)

    async def continue_decision(
        self, command: saga.ContinueRun
    ) -> Callable[[saga.RunState | None], list[saga.NewEvent]]:
        """What a continue decides, on the run's full state (its log folded again if settled)."""
        run_id = command.run_id
        stored = self.journal.store.get(run_id)
        if stored is None:
            raise InputRejected("decide", f"no run {run_id!r} to continue")
        full: saga.RunState | None = stored
        if stored.settled and stored.status == "succeeded":
            partition = self.journal.store.partition(run_id)
            assert partition is not None
            since = None if stored.accepted_at is None else epoch_seconds(stored.accepted_at)
            full = folded(await run_log(self.settings, run_id, partition, since))
            if since is not None and (full is None or full.version != stored.version):
                full = folded(await run_log(self.settings, run_id, partition))  # from the start
            if full is None or full.version != stored.version:
                raise InputRejected("decide", f"run {run_id!r}: its log moved while it was read")
        assert full is not None
        decided = continue_events(full, command, self.settings.limits)
        version = full.version

        def decision(state: saga.RunState | None) -> list[saga.NewEvent]:
            if state is not None and state.status != "succeeded":
                # A refusal needs no checkpoint: decided on the run as it is now,
                # since a running run moves on while the command waits for its lane.
                return continue_events(state, command, self.settings.limits)
            # Decided on the run as it was read: if it moved on since, the user is
            # told, unless the log already holds this continue (a redelivery).
            if decided and (state is None or state.version != version):
                moved = f"run {run_id!r} moved on while its log was read; continue it again"
                raise InputRejected("decide", moved)
            return decided

        return decision
