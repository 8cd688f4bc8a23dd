"""The main path against the real broker and Jaeger: request -> events -> result -> trace.

Requests are produced with a plain aiokafka producer, as any user would.
Each module gets fresh topics and a fresh consumer group.
"""

from __future__ import annotations

import json
import os
import secrets
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from tests.kafka_helpers import BOOTSTRAP, WorkerProcess, collect, module_worker
from thunderhelm.ga.training.artifact import load_model
from thunderhelm.schemas import events as ev
from thunderhelm.schemas.codec import decode_record

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
JAEGER = os.environ.get("THUNDERHELM_JAEGER_UI", "http://127.0.0.1:16686")


worker = module_worker("worker")


def small_request(run_id: str, generations: int = 2, samples: int = 300) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "dataset": {"name": "spirals", "samples": samples, "classes": 3, "seed": 7},
        "ga": {
            "population": 4,
            "generations": generations,
            "tournament_size": 2,
            "elite": 1,
            "seed": 42,
        },
        "training": {"epochs": 2, "batch_size": 32},
        "search_space": {"max_levels": 2, "max_units": 2, "max_neurons": 16},
        "budget": {"timeout_s": 300},
    }


def structured(data: dict[str, Any], kind: str = "thunderhelm.run.requested") -> bytes:
    return json.dumps(
        {
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "source": "tests/aiokafka",
            "type": kind,
            "subject": data.get("run_id"),
            "datacontenttype": "application/json",
            "data": data,
        }
    ).encode()


async def produce(
    topic: str, value: bytes, key: bytes | None, headers: list[tuple[str, bytes]] | None = None
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, value=value, key=key, headers=headers or [])
    finally:
        await producer.stop()


def for_run(
    records: list[ConsumerRecord[bytes, bytes]], run_id: str, topic: str
) -> list[ConsumerRecord[bytes, bytes]]:
    return [r for r in records if r.topic == topic and r.key == run_id.encode()]


def event_types(records: list[ConsumerRecord[bytes, bytes]]) -> list[str]:
    return [decode_record(r.value, dict(r.headers)).type for r in records]


async def wait_result(
    worker: WorkerProcess, run_id: str, timeout_s: float = 240.0
) -> list[ConsumerRecord[bytes, bytes]]:
    s = worker.settings
    return await collect(
        [s.run_events, s.run_results],
        lambda seen: bool(for_run(seen, run_id, s.run_results)),
        timeout_s=timeout_s,
    )


async def test_request_becomes_events_result_and_trace(worker: WorkerProcess) -> None:
    s = worker.settings
    run_id = f"e2e-{uuid.uuid4().hex[:6]}"
    trace_id = secrets.token_hex(16)
    traceparent = f"00-{trace_id}-{secrets.token_hex(8)}-01"
    await produce(
        s.run_requests,
        structured(small_request(run_id)),
        run_id.encode(),
        [("traceparent", traceparent.encode())],
    )

    records = await wait_result(worker, run_id)
    events = for_run(records, run_id, s.run_events)
    results = for_run(records, run_id, s.run_results)
    assert [t for t in event_types(events) if t != ev.CANDIDATE_COMPLETED] == [
        ev.RUN_ACCEPTED,
        ev.RUN_STARTED,
        ev.CANDIDATES_DISPATCHED,
        ev.GENERATION_COMPLETED,
        ev.CANDIDATES_DISPATCHED,
        ev.GENERATION_COMPLETED,
        ev.RUN_SUCCEEDED,
    ], worker.log_path.read_text()[-4000:]
    assert len(results) == 1
    # One candidate-completed per trained candidate (the elite's is taken from the cache).
    trained = event_types(events).count(ev.CANDIDATE_COMPLETED)
    assert trained == decode_record(results[0].value, {}).data["evaluations"]
    for record in [*events, *results]:
        headers = dict(record.headers)
        assert headers["traceparent"].decode().split("-")[1] == trace_id
        event = decode_record(record.value, {})  # structured: readable without headers
        assert event.specversion == "1.0" and event.subject == run_id and event.id
    generations = [
        decode_record(r.value, {}).data
        for r in events
        if decode_record(r.value, {}).type == ev.GENERATION_COMPLETED
    ]
    assert [g["generation"] for g in generations] == [0, 1]
    assert all(len(g["fitnesses"]) == 4 for g in generations)
    result = decode_record(results[0].value, {}).data
    assert result["status"] == "succeeded" and result["run_id"] == run_id
    assert result["generations"] == 2 and result["evaluations"] >= 4
    metrics = result["best"]["metrics"]
    assert 0.0 <= metrics["val_accuracy"] <= 1.0 and metrics["params"] > 0
    assert metrics["val_accuracy"] > 1 / 3  # better than chance on 3 classes
    assert Path(result["artifact"]).is_file()

    # The owner answers "what is the state of run X" over its web view.
    url = f"http://127.0.0.1:{worker.web_port}/runs/{run_id}/"
    with urllib.request.urlopen(url, timeout=10) as resp:
        state = json.load(resp)
    assert state["status"] == "succeeded" and state["generation"] == 2

    spans = _jaeger_spans(trace_id)
    names = {name for name, service in spans if service == "thunderhelm-worker"}
    assert any(n.startswith("process ") for n in names), names
    assert any(n.startswith("generation ") for n in names), names
    assert any(n.startswith("train candidate") for n in names), names


def _jaeger_spans(trace_id: str, timeout_s: float = 30.0) -> list[tuple[str, str]]:
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{JAEGER}/api/traces/{trace_id}", timeout=5) as resp:
                body = json.load(resp)
            spans = []
            for tr in body.get("data", []):
                procs = tr["processes"]
                spans += [
                    (sp["operationName"], procs[sp["processID"]]["serviceName"])
                    for sp in tr["spans"]
                ]
            # Trainings end before their generation's span (ended by its last outcome).
            names = [n for n, _ in spans]
            if any(n.startswith("train candidate") for n in names) and any(
                n.startswith("generation ") for n in names
            ):
                return spans
        except Exception as exc:  # 404 until the spans arrive
            last = exc
        time.sleep(1.0)
    raise AssertionError(f"trace {trace_id} not complete in Jaeger: {last}")


async def test_bad_records_are_dead_lettered_and_a_valid_run_follows(
    worker: WorkerProcess,
) -> None:
    s = worker.settings
    not_json = b"\x00this is not json{"
    missing_run_id = structured({"dataset": {"name": "spirals"}})
    await produce(s.run_requests, not_json, b"k-bad-1", [("x-origin", b"test")])
    await produce(s.run_requests, missing_run_id, None)
    run_id = f"after-{uuid.uuid4().hex[:6]}"
    await produce(s.run_requests, structured(small_request(run_id, generations=1)), run_id.encode())

    records = await collect(
        [s.dead_letters, s.run_results],
        lambda seen: (
            len([r for r in seen if r.topic == s.dead_letters]) >= 2
            and bool(for_run(seen, run_id, s.run_results))
        ),
        timeout_s=240.0,
    )
    # Different keys land on different partitions: match records by content.
    dead = {r.value: r for r in records if r.topic == s.dead_letters}
    assert set(dead) == {not_json, missing_run_id}
    first = dict(dead[not_json].headers)
    assert dead[not_json].key == b"k-bad-1"
    assert first["x-origin"] == b"test"
    assert first["dlq.stage"] == b"decode"
    assert first["dlq.original.topic"] == s.run_requests.encode()
    assert int(first["dlq.original.offset"]) >= 0
    assert "traceparent" in first and b"not JSON" in first["dlq.error.message"]
    second = dict(dead[missing_run_id].headers)
    assert second["dlq.stage"] == b"validate" and b"run_id" in second["dlq.error.message"]
    result = decode_record(for_run(records, run_id, s.run_results)[0].value, {}).data
    assert result["status"] == "succeeded"
    assert worker.alive()


async def test_binary_mode_request_is_accepted(worker: WorkerProcess) -> None:
    s = worker.settings
    run_id = f"bin-{uuid.uuid4().hex[:6]}"
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", uuid.uuid4().hex.encode()),
        ("ce_source", b"tests/binary"),
        ("ce_type", b"thunderhelm.run.requested"),
        ("content-type", b"application/json"),
    ]
    await produce(
        s.run_requests, json.dumps(small_request(run_id, 1)).encode(), run_id.encode(), headers
    )
    records = await wait_result(worker, run_id)
    result = decode_record(for_run(records, run_id, s.run_results)[0].value, {}).data
    assert result["status"] == "succeeded"


async def test_a_bad_record_keyed_by_a_known_run_is_noted_in_its_log(
    worker: WorkerProcess,
) -> None:
    s = worker.settings
    run_id = f"noted-{uuid.uuid4().hex[:6]}"
    await produce(s.run_requests, structured(small_request(run_id, generations=1)), run_id.encode())
    await wait_result(worker, run_id)
    junk = b"\xffnot an event " + uuid.uuid4().hex.encode()
    await produce(s.run_requests, junk, run_id.encode())

    def noted(seen: list[ConsumerRecord[bytes, bytes]]) -> bool:
        return ev.EVENT_DEAD_LETTERED in event_types(for_run(seen, run_id, s.run_events))

    records = await collect([s.run_events, s.dead_letters], noted, timeout_s=60.0)
    (note,) = [
        decode_record(r.value, {})
        for r in for_run(records, run_id, s.run_events)
        if decode_record(r.value, {}).type == ev.EVENT_DEAD_LETTERED
    ]
    assert note.data["stage"] == "decode" and note.data["original_topic"] == s.run_requests
    dead = [r for r in records if r.topic == s.dead_letters and r.value == junk]
    assert len(dead) == 1
    assert int(dict(dead[0].headers)["dlq.original.offset"]) == note.data["original_offset"]
    assert worker.alive()


async def test_a_regression_run_ends_with_r2_and_a_model_in_the_targets_units(
    worker: WorkerProcess,
) -> None:
    s = worker.settings
    run_id = f"reg-{uuid.uuid4().hex[:6]}"
    request = small_request(run_id, generations=2)
    request["dataset"] = {"name": "friedman1", "samples": 800, "noise": 0.1, "seed": 5}
    request["training"] = {"epochs": 12, "batch_size": 32}
    await produce(s.run_requests, structured(request), run_id.encode())
    records = await wait_result(worker, run_id)
    (record,) = for_run(records, run_id, s.run_results)
    result = decode_record(record.value, {}).data
    assert result["status"] == "succeeded", result.get("error")
    metrics = result["best"]["metrics"]
    assert metrics["val_accuracy"] is None and metrics["val_r2"] > 0.2, metrics
    assert result["best"]["fitness"] == pytest.approx(metrics["val_r2"])  # the default fitness
    model = load_model(result["artifact"])
    x = np.random.default_rng(0).uniform(size=(5, 10)).astype(np.float32)
    predicted = np.asarray(model.predict(x), dtype=np.float64)
    # Friedman #1 targets lie in about [-3, 30]; predictions come back in those units.
    assert predicted.shape == (5,) and np.all((predicted > -10) & (predicted < 40)), predicted
