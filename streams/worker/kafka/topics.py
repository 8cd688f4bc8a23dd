"""Create the contract's four topics, and the internal run-commands, when they are missing."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from thunderhelm.streams.config.settings import Settings

log = logging.getLogger(__name__)
DEAD_LETTER_MAX_BYTES = 4 * 1024 * 1024


async def ensure_topics(settings: Settings, *, timeout_s: float = 30.0) -> list[str]:
    """Create missing topics; return the names created. Waits for the broker."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=settings.bootstrap_servers, request_timeout_ms=10_000
        )
        try:
            await admin.start()
            break
        except KafkaConnectionError:
            await admin.close()
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.5)
    try:
        existing = set(await admin.list_topics())
        wanted = [t for t in settings.topics if t not in existing]
        if not wanted:
            return []
        new = [
            NewTopic(
                t,
                settings.partitions,
                settings.replication,
                # A dead letter carries an input the broker accepted plus our
                # headers, so its topic must take records larger than the default.
                topic_configs={"max.message.bytes": str(DEAD_LETTER_MAX_BYTES)}
                if t == settings.dead_letters
                else {},
            )
            for t in wanted
        ]
        # Another worker may create a topic between our list and create.
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics(new)
        await _until_visible(admin, wanted, deadline)
        log.info("created topics %s", ", ".join(wanted))
        return wanted
    finally:
        await admin.close()


async def _until_visible(admin: AIOKafkaAdminClient, names: list[str], deadline: float) -> None:
    """Wait until the broker's metadata lists every partition of `names` with a leader.

    A consumer group formed before then leaves the missing topics out of its
    assignment until its next metadata refresh (minutes on a busy broker).
    """
    loop = asyncio.get_running_loop()
    while True:
        described = await admin.describe_topics(names)
        ready = {
            t["topic"]
            for t in described
            if t["error_code"] == 0
            and t["partitions"]
            and all(p["leader"] >= 0 for p in t["partitions"])
        }
        if ready >= set(names):
            return
        if loop.time() > deadline:
            missing = ", ".join(sorted(set(names) - ready))
            raise TimeoutError(f"topics created but not in the broker's metadata: {missing}")
        await asyncio.sleep(0.2)
