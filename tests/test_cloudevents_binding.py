"""What the worker writes, read back from the real broker by the CloudEvents SDK.

A module-scoped worker gets two runs (one request in each binding mode, both
carrying documented extensions such as `partitionkey`), a rejected request,
two conformant CloudEvents it cannot use (dead-lettered) and a junk record
keyed by a known run. Every record on run-events and run-results must then be
read by the official SDK's Kafka binding in the mode its `content-type`
header selects, with extension attributes of their spec types; the dead
letters of conformant inputs must read back in their input's mode.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from aiokafka.structs import ConsumerRecord
from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings.kafka import KafkaMessage, from_binary, from_structured
from cloudevents.core.formats.json import JSONFormat

from tests.kafka_helpers import WorkerProcess, collect, fresh_env
from tests.test_e2e_kafka import for_run, produce, small_request, structured
from thunderhelm.schemas import events as ev
from thunderhelm.schemas.catalog import DATASCHEMA, DEAD_LETTER_HEADERS, ENVELOPE
from thunderhelm.schemas.codec import decode_record
from thunderhelm.schemas.results import RUN_RESULT

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
Record = ConsumerRecord[bytes, bytes]
SCHEMAS = Path(__file__).resolve().parents[1] / "schemas" / "json"


def sdk_read(record: Record) -> BaseCloudEvent:
    """The Kafka binding's receiver rule (section 3): the content-type header picks the mode."""
    headers = {name: bytes(value) for name, value in record.headers}
    message = KafkaMessage(headers=headers, key=record.key, value=record.value)
    content_type = headers.get("content-type", b"").decode().lower()
    if content_type.startswith("application/cloudevents"):
        return from_structured(message, JSONFormat())
    return from_binary(message, JSONFormat())


@dataclass
class Observed:
    worker: WorkerProcess
    runs: dict[str, str]  # name -> run id
    records: list[Record]
    dead: dict[bytes | None, Record]  # dead letters by key

    def of(self, name: str, topic: str) -> list[Record]:
        return for_run(self.records, self.runs[name], topic)


def _tiny(run_id: str) -> dict[str, Any]:
    request = small_request(run_id, generations=1, samples=120)
    request["ga"]["population"] = 2
    request["training"]["epochs"] = 1
    return request


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    tmp = tmp_path_factory.mktemp("binding")
    worker = WorkerProcess(fresh_env(tmp), tmp / "worker.log")
    worker.start()
    try:
        yield _drive(worker)
    finally:
        worker.stop()


def _drive(worker: WorkerProcess) -> Observed:
    import asyncio

    return asyncio.run(_drive_async(worker))


async def _drive_async(worker: WorkerProcess) -> Observed:
    s = worker.settings
    tag = uuid.uuid4().hex[:6]
    runs = {"structured": f"ces-{tag}", "binary": f"ceb-{tag}", "rejected": f"cer-{tag}"}
    ct = [("content-type", b"application/cloudevents+json; charset=utf-8")]

    envelope = json.loads(structured(_tiny(runs["structured"])))
    envelope.update(partitionkey=runs["structured"], sampledrate=3, sequence="7")
    envelope["recordedtime"] = "2026-01-01T00:00:00Z"
    key = runs["structured"].encode()
    await produce(s.run_requests, json.dumps(envelope).encode(), key, ct)

    binary = [
        ("ce_specversion", b"1.0"),
        ("ce_id", uuid.uuid4().hex.encode()),
        ("ce_source", b"tests/binding"),
        ("ce_type", b"thunderhelm.run.requested"),
        ("ce_partitionkey", runs["binary"].encode()),
        ("ce_sampledrate", b"2"),
        ("ce_deprecated", b"false"),
        ("content-type", b"application/json"),
    ]
    body = json.dumps(_tiny(runs["binary"])).encode()
    await produce(s.run_requests, body, runs["binary"].encode(), binary)

    bad = _tiny(runs["rejected"])
    bad["ga"]["population"] = "many"
    await produce(s.run_requests, structured(bad), runs["rejected"].encode(), ct)

    unknown = json.loads(structured({"run_id": "x"}, kind="com.example.unknown"))
    await produce(s.run_requests, json.dumps(unknown).encode(), b"dl-structured", ct)
    binary_unknown = [(n, b"com.example.unknown" if n == "ce_type" else v) for n, v in binary]
    await produce(s.run_requests, b'{"run_id": "x"}', b"dl-binary", binary_unknown)

    def settled(seen: list[Record]) -> bool:
        return (
            bool(for_run(seen, runs["structured"], s.run_results))
            and bool(for_run(seen, runs["binary"], s.run_results))
            and bool(for_run(seen, runs["rejected"], s.run_events))
            and {b"dl-structured", b"dl-binary"} <= {r.key for r in seen}
        )

    topics = [s.run_events, s.run_results, s.dead_letters]
    await collect(topics, settled, timeout_s=240.0, alive=worker.alive)
    # A junk record keyed by a finished run: a dead letter and a note in its log.
    await produce(s.run_requests, b"\xffjunk", runs["structured"].encode())

    def noted(seen: list[Record]) -> bool:
        log = for_run(seen, runs["structured"], s.run_events)
        types = [decode_record(r.value, {}).type for r in log]
        return settled(seen) and ev.EVENT_DEAD_LETTERED in types

    records = await collect(topics, noted, timeout_s=60.0, alive=worker.alive)
    assert noted(records), worker.log_path.read_text()[-4000:]
    dead = {r.key: r for r in records if r.topic == s.dead_letters}
    return Observed(worker, runs, records, dead)


def test_standard_extensions_on_input_are_accepted(observed: Observed) -> None:
    s = observed.worker.settings
    for name in ("structured", "binary"):
        (result,) = observed.of(name, s.run_results)
        assert decode_record(result.value, {}).data["status"] == "succeeded"
    (rejected,) = observed.of("rejected", s.run_events)
    assert decode_record(rejected.value, {}).type == ev.RUN_REJECTED
    assert b"dl-structured" in observed.dead and b"dl-binary" in observed.dead


def test_every_record_written_is_a_structured_cloudevent_for_the_sdk(observed: Observed) -> None:
    s = observed.worker.settings
    written = [r for r in observed.records if r.topic in (s.run_events, s.run_results)]
    assert len(written) >= 10
    for record in written:
        names = [n for n, _ in record.headers]
        assert names.count("content-type") == 1, names
        assert dict(record.headers)["content-type"] == b"application/cloudevents+json"
        event = sdk_read(record)
        assert event.get_specversion() == "1.0"
        assert event.get_subject() == record.key.decode()  # type: ignore[union-attr]
        assert event.get_dataschema() == DATASCHEMA[event.get_type()]
        assert event.get_datacontenttype() == "application/json"
        assert isinstance(event.get_data(), dict)
        for name in ("sequence", "schemaversion", "causationid", "correlationid"):
            value = event.get_extension(name)
            assert value is None or isinstance(value, str), (name, value)
        assert isinstance(event.get_extension("sequence"), str)
        assert event.get_extension("correlationid") == record.key.decode()  # type: ignore[union-attr]


def test_sequence_strings_order_a_runs_log(observed: Observed) -> None:
    s = observed.worker.settings
    for name in ("structured", "binary"):
        log = [sdk_read(r) for r in observed.of(name, s.run_events)]
        sequences = [e.get_extension("sequence") for e in log]
        assert sequences == sorted(sequences)  # plain string order is log order
        assert [int(q) for q in sequences] == list(range(1, len(log) + 1))
        (result,) = [sdk_read(r) for r in observed.of(name, s.run_results)]
        # The result names the sequence of the terminal event it reports.
        assert result.get_extension("sequence") == sequences[-1 if name == "binary" else -2]


def test_dead_letters_of_conformant_inputs_read_back_in_their_mode(observed: Observed) -> None:
    from_structured_input = sdk_read(observed.dead[b"dl-structured"])
    assert from_structured_input.get_type() == "com.example.unknown"
    assert from_structured_input.get_source() == "tests/aiokafka"
    from_binary_input = sdk_read(observed.dead[b"dl-binary"])
    assert from_binary_input.get_type() == "com.example.unknown"
    assert from_binary_input.get_extension("sampledrate") == "2"  # binary headers are text
    assert from_binary_input.get_data() == {"run_id": "x"}


def _validator(name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / f"{name}.json").read_text())
    return jsonschema.Draft202012Validator(schema)


def test_real_records_validate_against_the_committed_schemas(observed: Observed) -> None:
    s = observed.worker.settings
    envelope = _validator(ENVELOPE)
    seen_types: set[str] = set()
    for record in (r for r in observed.records if r.topic in (s.run_events, s.run_results)):
        body = json.loads(record.value)
        assert list(envelope.iter_errors(body)) == [], body["type"]
        errors = list(_validator(body["type"]).iter_errors(body["data"]))
        assert errors == [], (body["type"], [e.message for e in errors[:3]])
        assert body["dataschema"].endswith(":" + body["type"])
        seen_types.add(body["type"])
    assert seen_types >= {
        ev.RUN_ACCEPTED,
        ev.RUN_REJECTED,
        ev.RUN_STARTED,
        ev.GENERATION_COMPLETED,
        ev.RUN_SUCCEEDED,
        ev.EVENT_DEAD_LETTERED,
        RUN_RESULT,
    }
    headers = _validator(DEAD_LETTER_HEADERS)
    assert len(observed.dead) >= 3
    for record in observed.dead.values():
        text = {n: bytes(v).decode() for n, v in record.headers}
        errors = list(headers.iter_errors(text))
        assert errors == [], [e.message for e in errors[:3]]
