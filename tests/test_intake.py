"""The intake on its own against the real broker: routing, headers, and commit after acks."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.structs import TopicPartition
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from tests.kafka_helpers import BOOTSTRAP, collect, fresh_env
from tests.test_e2e_kafka import produce, small_request, structured
from thunderhelm.schemas.codec import decode_record
from thunderhelm.streams.config.settings import Settings
from thunderhelm.streams.observability import telemetry
from thunderhelm.streams.wire.failures import Failure, Origin, original_headers
from thunderhelm.streams.worker.intake.admission import unwrap_forwarded
from thunderhelm.streams.worker.intake.reader import Intake
from thunderhelm.streams.worker.kafka.topics import DEAD_LETTER_MAX_BYTES, ensure_topics

pytestmark = [pytest.mark.kafka]


@pytest.fixture
async def settings(tmp_path: Path) -> Settings:
    s = Settings.from_env(fresh_env(tmp_path))
    await ensure_topics(s)
    return s


@contextlib.asynccontextmanager
async def running(intake: Intake) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(intake.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def committed(settings: Settings) -> dict[int, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(settings.intake_group)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items()}


async def end_offsets(topic: str, count: int) -> dict[int, int]:
    """Next offset per partition once `count` records are on `topic`."""
    records = await collect([topic], lambda seen: len(seen) >= count, timeout_s=30)
    ends: dict[int, int] = {}
    for r in records:
        ends[r.partition] = max(ends.get(r.partition, 0), r.offset + 1)
    return ends


async def wait_for(check: object, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.2)
    raise AssertionError("condition not met in time")


async def test_bad_records_are_dead_lettered_and_commands_forwarded(
    settings: Settings, spans: InMemorySpanExporter
) -> None:
    s = settings
    run_id = f"in-{uuid.uuid4().hex[:6]}"
    traceparent = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01".encode()
    valid = structured(small_request(run_id, 1))
    await produce(s.run_requests, valid, run_id.encode(), [("traceparent", traceparent)])
    bad = [
        (b"\xff junk", b"k-1", [("x-h", b"1"), ("x-h", b"2")]),
        (b"{", None, []),
        (json.dumps({"specversion": "1.0"}).encode(), b"", [("traceparent", traceparent)]),
    ]
    for value, key, headers in bad:
        await produce(s.run_requests, value, key, headers)

    notes: list[tuple[str, Failure, Origin]] = []

    async def note(run_id: str, failure: Failure, origin: Origin) -> None:
        notes.append((run_id, failure, origin))

    intake = Intake(s, note)
    async with running(intake):
        records = await collect(
            [s.dead_letters, s.run_commands],
            lambda seen: len(seen) >= 4,
            timeout_s=60,
        )
        ends = await end_offsets(s.run_requests, 1 + len(bad))
        await wait_for(
            lambda: _committed_up_to(s, ends)  # type: ignore[arg-type, return-value]
        )

    dead = [r for r in records if r.topic == s.dead_letters]
    assert Counter((r.key, r.value, tuple(original_headers(r.headers))) for r in dead) == Counter(
        (k, v, tuple(h)) for v, k, h in bad
    )
    for r in dead:
        h = dict(r.headers)
        assert h["dlq.original.topic"] == s.run_requests.encode()
        assert h["dlq.stage"] in (b"decode", b"validate") and h["dlq.error.message"]
        assert len([n for n, _ in r.headers if n == "traceparent"]) == 1
    traced = next(r for r in dead if dict(r.headers).get("dlq.original.traceparent"))
    # A traced input's dead letter is in the input's trace.
    assert dict(traced.headers)["traceparent"].split(b"-")[1] == traceparent.split(b"-")[1]
    # The keyed junk names a run: the worker is asked to note it in that run's log.
    assert [(r, f.stage) for r, f, _ in notes] == [("k-1", "decode")]

    (forwarded,) = [r for r in records if r.topic == s.run_commands]
    assert forwarded.key == run_id.encode() and forwarded.value == valid
    original, origin = unwrap_forwarded(list(forwarded.headers))
    assert original == [("traceparent", traceparent)]
    assert origin is not None and origin.topic == s.run_requests
    assert decode_record(forwarded.value, {}).data["run_id"] == run_id
    forwarded_trace = dict(forwarded.headers)["traceparent"].split(b"-")
    assert forwarded_trace[1] == traceparent.split(b"-")[1]  # same trace,
    assert forwarded_trace[2] != traceparent.split(b"-")[2]  # under the intake's span

    finished = spans.get_finished_spans()
    by_id = {f"{sp.context.span_id:016x}": sp for sp in finished}
    intake_span = by_id[forwarded_trace[2].decode()]
    assert intake_span.name == telemetry.process_span_name(s.run_requests)
    # The traced bad input: a process span and, under it, its dead-letter span.
    dlq_span = by_id[dict(traced.headers)["traceparent"].split(b"-")[2].decode()]
    assert dlq_span.name == telemetry.DEAD_LETTER_SPAN
    assert dlq_span.status.status_code == StatusCode.ERROR
    assert dlq_span.parent is not None
    assert by_id[f"{dlq_span.parent.span_id:016x}"].name == intake_span.name
    # The two untraced ones share one dead-letter span, an event each.
    shared = {dict(r.headers)["traceparent"] for r in dead if r is not traced}
    assert len(shared) == 1
    shared_span = by_id[shared.pop().split(b"-")[2].decode()]
    assert shared_span.status.status_code == StatusCode.ERROR and shared_span.parent is None
    assert (shared_span.attributes or {})["thunderhelm.dead_letter.count"] == 2
    events = {
        (
            int((e.attributes or {})["messaging.destination.partition.id"]),  # type: ignore[arg-type]
            (e.attributes or {})["messaging.kafka.offset"],
        )
        for e in shared_span.events
    }
    inputs = {
        (
            int(dict(r.headers)["dlq.original.partition"]),
            int(dict(r.headers)["dlq.original.offset"]),
        )
        for r in dead
        if r is not traced
    }
    assert events == inputs


async def _committed_up_to(s: Settings, ends: dict[int, int]) -> bool:
    done = await committed(s)
    return all(end == 0 or done.get(p, -1) >= end for p, end in ends.items())


async def test_no_offset_is_committed_past_a_write_the_broker_refuses(settings: Settings) -> None:
    """A dead letter the topic refuses holds the commit until the broker takes it."""
    s = settings
    await _dead_letter_max_bytes(s, 2_000)
    big = b"\x00" + b"x" * 5_000  # not JSON, and too big for the shrunken topic
    await produce(s.run_requests, big, b"p0")
    await produce(s.run_requests, b"small junk", b"p0")
    ends = await end_offsets(s.run_requests, 2)
    intake = Intake(s)
    async with running(intake):
        await asyncio.sleep(6)  # several retries
        assert not await _committed_up_to(s, ends)
        dead = await collect([s.dead_letters], lambda seen: False, timeout_s=1)
        assert big not in [r.value for r in dead]
        await _dead_letter_max_bytes(s, DEAD_LETTER_MAX_BYTES)
        await wait_for(lambda: _committed_up_to(s, ends), timeout_s=60)  # type: ignore[arg-type, return-value]
    dead = await collect([s.dead_letters], lambda seen: len(seen) >= 2, timeout_s=30)
    assert sorted(r.value for r in dead) == sorted([big, b"small junk"])


async def _dead_letter_max_bytes(s: Settings, limit: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    try:
        await admin.alter_configs(
            [
                ConfigResource(
                    ConfigResourceType.TOPIC,
                    s.dead_letters,
                    configs={"max.message.bytes": str(limit)},
                )
            ]
        )
    finally:
        await admin.close()


async def test_the_intake_starts_where_faust_s_group_left_run_requests(settings: Settings) -> None:
    """An upgraded worker does not read again what an older one (in Faust's group) handled."""
    s = settings
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all")
    await producer.start()
    try:
        for i in range(4):
            await producer.send_and_wait(s.run_requests, f"old junk {i}".encode(), partition=0)
    finally:
        await producer.stop()
    older = AIOKafkaConsumer(
        bootstrap_servers=BOOTSTRAP, group_id=s.app_id, enable_auto_commit=False
    )
    await older.start()
    try:
        older.assign([TopicPartition(s.run_requests, 0)])
        await older.commit({TopicPartition(s.run_requests, 0): 3})  # handled 0..2
    finally:
        with contextlib.suppress(asyncio.CancelledError):
            await older.stop()
    async with running(Intake(s)):
        ends = {0: 4}
        await wait_for(lambda: _committed_up_to(s, ends))  # type: ignore[arg-type, return-value]
    dead = await collect([s.dead_letters], lambda seen: False, timeout_s=2)
    assert [r.value for r in dead] == [b"old junk 3"]
