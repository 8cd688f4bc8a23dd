"""`thunderhelm dlq list | show | redrive` against the real broker and a real worker.

The story: a worker with a tight record-size limit dead-letters a valid
request; the operator lists and inspects it, raises the limit (a new worker),
and re-drives the record twice by mistake. The run happens exactly once, and
a record that is still bad comes back with its attempt count incremented.
"""

from __future__ import annotations

import asyncio
import io
import json
import secrets
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from tests.kafka_helpers import BOOTSTRAP, WorkerProcess, collect, fresh_env
from tests.test_e2e_kafka import for_run, produce, small_request, structured
from thunderhelm.schemas import events as ev
from thunderhelm.schemas.codec import decode_record
from thunderhelm.streams.cli.base import CliState
from thunderhelm.streams.cli.main import main as thunderhelm_cli
from thunderhelm.streams.config.settings import Settings

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return fresh_env(tmp_path, THUNDERHELM_LIMIT_MAX_RECORD_BYTES="300")


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.stop()


async def cli(settings: Settings, *argv: str) -> tuple[int, str]:
    """The command as a user runs it (in a thread: it runs its own event loop)."""
    out = io.StringIO()
    state = CliState(settings, out)
    code = await asyncio.to_thread(thunderhelm_cli, ["dlq", *argv], state=state)
    return code, out.getvalue()


async def wait_committed(settings: Settings, topic: str, timeout_s: float = 60.0) -> None:
    """Until the worker has committed every record now on `topic`.

    run-requests is read by the intake's group, run-commands by the command
    reader's, every other topic by Faust's.
    """
    groups = {
        settings.run_requests: settings.intake_group,
        settings.run_commands: settings.command_group,
    }
    group = groups.get(topic, settings.app_id)
    consumer = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP, enable_auto_commit=False)
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await consumer.start()
    await admin.start()
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        ends = await consumer.end_offsets(parts)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            committed = await admin.list_consumer_group_offsets(group)
            if all(
                ends[tp] == 0 or (tp in committed and committed[tp].offset >= ends[tp])
                for tp in parts
            ):
                return
            await asyncio.sleep(0.3)
        raise AssertionError(f"{topic} not committed up to {ends}")
    finally:
        await consumer.stop()
        await admin.close()


def rows(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


async def test_list_show_and_redrive_after_a_fix(
    env: dict[str, str], workers: list[WorkerProcess], tmp_path: Path
) -> None:
    first = WorkerProcess(env, tmp_path / "worker-1.log")
    workers.append(first)
    await asyncio.to_thread(first.start)
    s = first.settings
    run_id = f"redrive-{uuid.uuid4().hex[:6]}"
    request = structured(small_request(run_id, generations=1))
    traceparent = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01".encode()
    junk = b"\xff\x00 not an event"
    await produce(
        s.run_requests,
        request,
        run_id.encode(),
        [("traceparent", traceparent), ("x-origin", b"test")],
    )
    await produce(s.run_requests, junk, b"junk-key")
    await collect([s.dead_letters], lambda seen: len(seen) >= 2, timeout_s=60)
    await wait_committed(s, s.run_requests)  # the DLQ writes were acked, then committed

    code, out = await cli(s, "list", "--json")
    assert code == 0
    listed = {r["error_class"]: r for r in rows(out)}
    assert set(listed) == {"InputRejected", "DecodeError"}
    assert all(r["stage"] == "decode" and r["attempt"] == "1" for r in listed.values())
    assert listed["InputRejected"]["key"] == {"text": run_id, "bytes": len(run_id)}
    assert len(rows((await cli(s, "list", "--json", "--error", "inputrejected"))[1])) == 1
    assert rows((await cli(s, "list", "--json", "--topic", "elsewhere"))[1]) == []
    assert rows((await cli(s, "list", "--json", "--since", "2999-01-01T00:00:00Z"))[1]) == []
    assert len(rows((await cli(s, "list", "--json", "--stage", "decode", "--since", "0"))[1])) == 2
    code, table = await cli(s, "list")
    assert code == 0 and "2 of 2 matching dead letters" in table

    big = listed["InputRejected"]
    where = f"{big['partition']}:{big['offset']}"
    code, out = await cli(s, "show", where)
    shown = json.loads(out)
    assert code == 0 and shown["value"]["text"] == request.decode()[:400]
    assert "exceeds the limit of 300" in shown["error_message"]
    names = [h["name"] for h in shown["headers"]]
    assert names[:2] == ["dlq.original.traceparent", "x-origin"] and names[-1] == "traceparent"
    bad = listed["DecodeError"]
    code, out = await cli(s, "show", f"{bad['partition']}:{bad['offset']}")
    assert json.loads(out)["value"]["base64"]
    assert (await cli(s, "show", f"{bad['partition']}:999999"))[0] == 5  # not found
    assert (await cli(s, "redrive"))[0] == 2  # no selector: refuses to re-drive everything

    # The fix: the operator raises the limit and restarts the worker.
    first.stop()
    second = WorkerProcess(
        {**env, "THUNDERHELM_LIMIT_MAX_RECORD_BYTES": "1000000"}, tmp_path / "worker-2.log"
    )
    workers.append(second)
    await asyncio.to_thread(second.start)
    assert (await cli(s, "redrive", where))[0] == 0
    assert (await cli(s, "redrive", where))[0] == 0  # by mistake, twice
    code, out = await cli(s, "redrive", "--error", "DecodeError")
    assert code == 0 and "re-drove 1 dead letters" in out

    records = await collect(
        [s.run_events, s.run_results, s.dead_letters],
        lambda seen: (
            bool(for_run(seen, run_id, s.run_results))
            and len([r for r in seen if r.topic == s.dead_letters]) >= 3
        ),
        timeout_s=240,
    )
    await wait_committed(s, s.run_requests)  # both re-driven copies were screened
    await wait_committed(s, s.run_commands)  # and handled by the agent
    records = await collect(
        [s.run_events, s.run_results, s.dead_letters], lambda seen: False, timeout_s=3
    )
    kinds = [decode_record(r.value, {}).type for r in for_run(records, run_id, s.run_events)]
    assert kinds.count(ev.RUN_ACCEPTED) == 1, kinds
    assert kinds.count(ev.RUN_STARTED) == 1 and kinds.count(ev.RUN_SUCCEEDED) == 1, kinds
    assert len(for_run(records, run_id, s.run_results)) == 1
    accepted = next(
        decode_record(r.value, {})
        for r in for_run(records, run_id, s.run_events)
        if decode_record(r.value, {}).type == ev.RUN_ACCEPTED
    )
    assert accepted.data["traceparent"].split("-")[1] == traceparent.decode().split("-")[1]

    dead = [r for r in records if r.topic == s.dead_letters and r.value == junk]
    assert len(dead) == 2
    again = dict(max(dead, key=lambda r: r.timestamp).headers)
    first_time = dict(min(dead, key=lambda r: r.timestamp).headers)
    assert again["dlq.attempt"] == b"2"
    assert again["dlq.first.failure.time"] == first_time["dlq.first.failure.time"]
    assert all(r.key == b"junk-key" for r in dead)
    assert second.alive()
