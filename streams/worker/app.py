"""The Faust application: topics, the run-state table, agents and timers.

Users' records on run-requests are screened by the intake (intake/reader.py),
a batch at a time outside Faust's per-record loop: bad ones go to
dead-letters, admitted commands to the internal run-commands topic, which the
command reader (commands/reader.py) reads the same way on the worker Faust
made the run's owner. Faust keeps the group, the run-state table and the
run-events agent. Handlers stay thin: each record goes to its handler
(commands/handler.py, events/handler.py; wired in components.py). Nothing
here awaits a generation: generations run as background tasks on the
interpreter pool and report back by appending to run-events.
"""

from __future__ import annotations

import asyncio
from typing import Any

import faust

from thunderhelm.streams.config.settings import Settings
from thunderhelm.streams.observability import metrics as meters
from thunderhelm.streams.observability import prometheus
from thunderhelm.streams.worker.events.ownership import WATCH_S
from thunderhelm.streams.worker.kafka.runs_table import RunsTable


def create_app(settings: Settings) -> tuple[faust.App, Any]:
    """Build the app and its `RunWorker`; returned together for the worker entry point."""
    from thunderhelm.streams.worker.components import RunWorker
    from thunderhelm.streams.worker.intake.reader import Intake

    # Faust makes its folder but not the ones above it.
    settings.faust_dir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.bootstrap_servers}",
        store="memory://",
        datadir=str(settings.faust_dir / settings.app_id),
        key_serializer="raw",
        value_serializer="raw",
        Table=RunsTable,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication,
        producer_acks=-1,
        web_enabled=settings.web_port > 0,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_port=max(settings.web_port, 1),
        broker_commit_every=100,
        broker_commit_interval=1.0,
        consumer_auto_offset_reset="earliest",
        stream_wait_empty=False,
        topic_disable_leader=True,
        # Room for a dead letter: an input as large as the broker takes, plus headers.
        producer_max_request_size=4 * 1024 * 1024,
        # A topic missing from the group's metadata when it formed (the changelog
        # Faust creates at start, on a busy broker) is assigned at the next
        # refresh: every 15 s rather than aiokafka's 5 minutes.
        consumer_metadata_max_age_ms=15_000,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=max(1.0, settings.session_timeout_s / 4),
    )
    topics = {
        name: app.topic(
            name,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=settings.partitions,
        )
        for name in settings.topics
    }
    runs = app.Table(
        "runs",
        default=None,
        partitions=settings.partitions,
        key_type=bytes,  # raw run-id bytes; values are JSON (the state's dict)
        # The changelog partition from the key (RunsTable), as for every topic
        # here, not from the event in hand: commands are handled outside
        # Faust's events.
        use_partitioner=True,
    )
    service = RunWorker(settings, app, topics, runs)
    intake = Intake(settings, service.dead_letters.note)

    @app.agent(topics[settings.run_events], name="run-events")
    async def on_event(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            await service.events.handle(event)

    @app.timer(interval=1.0)  # type: ignore[untyped-decorator]  # faust leaves it untyped
    async def reconcile() -> None:
        await service.reconciler.reconcile()
        meters.runs_active(service.active_runs())

    @app.timer(interval=WATCH_S)  # type: ignore[untyped-decorator]  # faust leaves it untyped
    async def watch_the_clock() -> None:
        service.ownership.watch()

    @app.task  # type: ignore[untyped-decorator]  # faust leaves it untyped
    async def heartbeat() -> None:
        await service.health.heartbeat()

    @app.task  # type: ignore[untyped-decorator]  # faust leaves it untyped
    async def on_started() -> None:
        await service.start()
        # Commands are admitted and tasks taken once the pool is warm: warming
        # interpreters up is the heaviest work of a start and would share the cores.
        readers = [intake.run(), service.command_reader.run()]
        if settings.fanout:
            readers.append(service.trainer.run())
        await asyncio.gather(*readers)

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]  # mode's signal type is narrower
    async def on_revoked(app: faust.App, revoked: set[Any], **kwargs: Any) -> None:
        service.ownership.revoked()
        service.command_reader.pause()
        service.reconciler.on_revoked(
            {tp.partition for tp in revoked if tp.topic == settings.run_events}
        )

    @app.on_rebalance_complete.connect  # type: ignore[arg-type]  # mode's signal type is narrower
    async def on_rebalanced(app: faust.App, **kwargs: Any) -> None:
        # The tables of what Faust assigned are recovered: their runs' commands can be decided.
        service.ownership.reassigned()
        service.command_reader.resume()

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        # Liveness: the process answers and its event loop keeps time.
        status, body = service.health.liveness()
        return web.json({**body, "app": settings.app_id}, status=status)

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        # Readiness: partitions assigned, producer started, pool warm; 503 says what is not.
        status, body = service.health.readiness()
        return web.json({**body, "app": settings.app_id}, status=status)

    @app.page("/metrics")
    async def scrape(web: Any, request: Any) -> Any:
        if not prometheus.enabled():
            return web.json({"error": "metrics are off (THUNDERHELM_METRICS)"}, status=404)
        # Fresh at every scrape (the timer keeps it current for OTLP export).
        meters.runs_active(service.active_runs())
        body, content_type = prometheus.exposition(request.headers.get("Accept"))
        # The content type carries a charset, which aiohttp refuses in `content_type=`.
        return web.bytes(body, headers={"Content-Type": content_type})

    @app.page("/runs/{run_id}/")
    async def run_view(web: Any, request: Any, run_id: str) -> Any:
        state = service.state_of(run_id)
        if state is None:
            return web.json({"error": f"unknown run {run_id}"}, status=404)
        return web.json(state.to_dict())

    return app, service
