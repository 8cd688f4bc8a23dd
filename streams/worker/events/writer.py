"""Writes of the worker: lifecycle events to run-events, results, candidate tasks.

Every event's data is validated against its type's model (schemas/events.py)
and every result against `RunResult` before it is produced, so the log and
the results topic only ever hold what the contract says.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from opentelemetry.context import Context

from thunderhelm.schemas import events as ev
from thunderhelm.schemas.codec import encode_event, structured_headers
from thunderhelm.schemas.event_data import CandidatesDispatched
from thunderhelm.schemas.tasks import CANDIDATE_TASK, CandidateTask
from thunderhelm.streams.config.settings import Settings
from thunderhelm.streams.domain import saga
from thunderhelm.streams.execution.candidates import spread, task_cost
from thunderhelm.streams.observability import telemetry
from thunderhelm.streams.wire.events import envelope, result_envelope


def validated_task(task: Mapping[str, Any]) -> dict[str, Any]:
    """A candidate task checked against `CandidateTask`; raises `ValidationError`."""
    return CandidateTask.model_validate(task).model_dump(mode="json", exclude_unset=True)


class EventWriter:
    """Produces to the worker's topics; a run's events go through its lane (journal.py)."""

    def __init__(self, settings: Settings, topics: Mapping[str, Any]) -> None:
        self.settings = settings
        self.topics = topics

    async def publish_result(self, state: saga.RunState, context: Context | None) -> None:
        record = result_envelope(state)
        await self.produce(self.settings.run_results, state.run_id, encode_event(record), context)

    async def produce(
        self, topic: str, key: str | None, value: bytes, context: Context | None
    ) -> None:
        with telemetry.produce_span(topic, key, context):
            headers = structured_headers(telemetry.inject_headers().items())
            pending = await self.topics[topic].send(
                key=None if key is None else key.encode(), value=value, headers=headers
            )
            await pending  # the broker's ack

    async def dispatch(
        self, state: saga.RunState, tasks: list[dict[str, Any]], context: Context | None
    ) -> saga.NewEvent:
        """Put a generation's candidate tasks on candidate-tasks; the event that records it.

        The tasks are spread over the partitions by their training cost
        (`candidates.spread`), so the workers that hold them get about equal
        work. Every ack is awaited before the event is made: a worker killed
        before then dispatches the generation again on resume.
        """
        topic = self.settings.candidate_tasks
        where = spread([task_cost(t) for t in tasks], self.settings.partitions)
        pending = []
        # One producer span for the generation's tasks, not one per task: a
        # task's training nests under the generation through its own traceparent.
        # Validating and encoding a generation's tasks takes milliseconds of
        # the GIL: in a thread, so the loop's commands wait a switch interval
        # for it at most, not the whole batch.
        records = await asyncio.to_thread(_task_records, state.run_id, tasks)
        with telemetry.produce_span(topic, None, context) as span:
            span.set_attribute("messaging.batch.message_count", len(tasks))
            headers = structured_headers(telemetry.inject_headers().items())
            for (key, value), partition in zip(records, where, strict=True):
                pending.append(
                    await self.topics[topic].send(
                        key=key, value=value, headers=headers, partition=partition
                    )
                )
        for ack in pending:
            await ack
        data = CandidatesDispatched(
            run_id=state.run_id,
            generation=state.generation,
            candidates=sorted(int(t["index"]) for t in tasks),
            topic=topic,
        )
        return saga.NewEvent(ev.CANDIDATES_DISPATCHED, data)


def _task_records(run_id: str, tasks: list[dict[str, Any]]) -> list[tuple[bytes, bytes]]:
    """Each task's record key and value, validated against the task contract."""
    records = []
    for task in tasks:
        data = validated_task(task)
        key = f"{run_id}/{data['generation']}/{data['index']}"
        records.append(
            (key.encode(), encode_event(envelope(run_id, CANDIDATE_TASK, data, None, None)))
        )
    return records
