"""The worker's parts, built once and wired together: what each agent and timer calls."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, MutableMapping
from typing import Any

from thunderhelm.streams.config.settings import Settings
from thunderhelm.streams.domain import saga
from thunderhelm.streams.execution.executor import RunExecutor, WorkerExecutor
from thunderhelm.streams.worker.commands.control_pressure import ControlPressure
from thunderhelm.streams.worker.commands.handler import CommandHandler
from thunderhelm.streams.worker.commands.reader import CommandReader
from thunderhelm.streams.worker.dead_letters.writer import DeadLetterWriter
from thunderhelm.streams.worker.events.handler import EventHandler
from thunderhelm.streams.worker.events.journal import RunJournal
from thunderhelm.streams.worker.events.ownership import Ownership
from thunderhelm.streams.worker.events.store import RunStore
from thunderhelm.streams.worker.events.writer import EventWriter
from thunderhelm.streams.worker.health import Health, consumer_check, pool_check, producer_check
from thunderhelm.streams.worker.kafka.app_seam import WorkerApp
from thunderhelm.streams.worker.steps.candidate_trainer import CandidateTrainer
from thunderhelm.streams.worker.steps.reconciler import Reconciler
from thunderhelm.streams.worker.steps.runner import StepRunner


class RunWorker:
    def __init__(
        self,
        settings: Settings,
        app: WorkerApp,
        topics: Mapping[str, Any],
        table: MutableMapping[bytes, Any],
        executor: WorkerExecutor | None = None,  # a RunExecutor unless given (a fake in tests)
    ) -> None:
        self.executor = executor if executor is not None else RunExecutor(settings)
        self.store = RunStore(table)
        self.ownership = Ownership(app, settings.run_events, settings.session_timeout_s)
        self.writer = EventWriter(settings, topics)
        self.journal = RunJournal(self.writer, self.store, settings.run_events)
        self.journal.fenced = self.ownership.stalled
        self.runner = StepRunner(
            self.executor, self.writer, self.journal, self.ownership, fanout=settings.fanout
        )
        self.dead_letters = DeadLetterWriter(settings, app, self.journal)
        self.pressure = ControlPressure(settings.control_lag_ms, self.pool_saturated)
        self.commands = CommandHandler(
            settings, app, self.journal, self.runner, self.dead_letters, self.pressure
        )
        self.events = EventHandler(app, self.journal, self.runner, self.dead_letters)
        self.command_reader = CommandReader(
            settings, self.ownership.active, self.commands.submit, self.events.folded_to
        )
        self.reconciler = Reconciler(app, self.store, self.runner, self.ownership)
        self.trainer = CandidateTrainer(
            settings,
            lambda: self.pressure.training_slots(self.pool_size()),
            lambda task, context: self.executor.train_task(task, context),
            self.writer.produce,
            self.dead_letters.dead_letter_record,
        )
        self.health = Health(
            {
                "kafka_consumer": consumer_check(app),
                "kafka_producer": producer_check(app),
                "interpreter_pool": pool_check(self.executor),
                "command_reader": self.command_reader.following,
            }
        )

    async def start(self) -> None:
        await asyncio.to_thread(self.executor.start)

    def pool_size(self) -> int:
        """Interpreters this worker trains on (0 until the pool is warm)."""
        stats = self.executor.pool_stats()
        return 0 if stats is None else int(stats.size)

    def pool_saturated(self) -> bool:
        """Whether the pool trains on all its interpreters but at most one (held back or not)."""
        stats = self.executor.pool_stats()
        return stats is not None and stats.size > 1 and stats.busy >= stats.size - 1

    def stop(self) -> None:
        self.executor.close()

    def state_of(self, run_id: str) -> saga.RunState | None:
        return self.store.get(run_id)

    def active_runs(self) -> int:
        """Runs in progress whose partition this worker owns (standby copies excluded)."""
        owned = self.ownership.active()
        return sum(1 for _state, partition in self.store.live() if partition in owned)
