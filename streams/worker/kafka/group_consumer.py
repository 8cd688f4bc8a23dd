"""The worker's own aiokafka consumers (intake, command reader, candidate trainer), made alike.

Both read outside Faust, in a consumer group of their own, commit by hand
after their writes are acknowledged, and start again from the committed
offsets when anything unexpected stops them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from thunderhelm.streams.config.settings import Settings
from thunderhelm.streams.observability import metrics as meters

log = logging.getLogger(__name__)
RESTART_DELAY_S = 1.0


def group_consumer(
    settings: Settings, group_id: str, role: str, **options: Any
) -> AIOKafkaConsumer:
    """A manually committed consumer in `group_id` that notices dead members as Faust's does."""
    return AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        group_id=group_id,
        client_id=f"{settings.app_id}-{role}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=int(settings.session_timeout_s * 1000),
        heartbeat_interval_ms=int(max(1.0, settings.session_timeout_s / 4) * 1000),
        **options,
    )


async def start_when_up(client: Any, role: str) -> None:
    """Start an aiokafka client, waiting for the broker as long as it takes."""
    while True:
        try:
            await client.start()
            return
        except KafkaError as exc:
            log.warning("%s waiting for the broker: %s", role, exc)
            await asyncio.sleep(RESTART_DELAY_S)


async def keep_running(run_once: Callable[[], Awaitable[None]], what: str) -> None:
    """Run `run_once` until cancelled, starting it again whenever it fails.

    What it read but did not commit is read again by the next consumer.
    """
    while True:
        try:
            await run_once()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s stopped unexpectedly; starting again", what)
            await asyncio.sleep(RESTART_DELAY_S)


def observe_lag(consumer: AIOKafkaConsumer, batch: dict[TopicPartition, list[Any]]) -> None:
    """Each fetched partition's consumer lag after this batch (a metric only)."""
    for tp, records in batch.items():
        high = consumer.highwater(tp)
        if high is not None and records:
            meters.consumer_lag(tp.topic, tp.partition, high - records[-1].offset - 1)
