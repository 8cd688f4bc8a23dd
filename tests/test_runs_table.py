"""The runs table's changelog partition: the key's, known before the producer knows the topic."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from tests.kafka_helpers import BOOTSTRAP, fresh_env
from thunderhelm.streams.config.settings import Settings
from thunderhelm.streams.worker.app import create_app
from thunderhelm.streams.worker.kafka.topics import ensure_topics

KEYS = [f"run-{n}".encode() for n in range(40)] + [b"scale-1x1-ef38c2"]


def test_a_key_has_its_partition_before_any_producer_has_started(tmp_path: Path) -> None:
    # A new worker's first write to the table comes before its producer has
    # the changelog topic's metadata; asking the producer then failed.
    app, _ = create_app(Settings.model_validate({"partitions": 2, "faust_dir": tmp_path}))
    table = app.tables["runs"]
    assert table.partition_for_key(b"scale-1x1-ef38c2") == 1  # where run-events put it
    assert {table.partition_for_key(k) for k in KEYS} == {0, 1}


@pytest.mark.kafka
async def test_a_key_has_the_partition_the_broker_gives_its_run_events(tmp_path: Path) -> None:
    settings = Settings.from_env(fresh_env(tmp_path))
    await ensure_topics(settings)
    app, _ = create_app(settings)
    table = app.tables["runs"]
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all")
    await producer.start()
    try:
        for key in KEYS:
            sent = await producer.send_and_wait(settings.run_events, b"{}", key=key)
            assert table.partition_for_key(key) == sent.partition, key
    finally:
        await producer.stop()
