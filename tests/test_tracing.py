"""One unbroken trace per run, checked through the real Jaeger's HTTP API.

A real worker subprocess (fresh topics, fresh group) exports spans to the
Jaeger started by `thunderhelm services start`, and metrics to an OTLP/HTTP
receiver that this module runs in a thread. The request is produced with
`thunderhelm.streams.clients.client.submit` under this process's own tracer provider, so the
producer's span is in the trace too. Every wait polls until a deadline.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import secrets
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord
from opentelemetry import trace
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2

from tests.kafka_helpers import BOOTSTRAP, WorkerProcess, collect, free_port, fresh_env
from tests.test_e2e_kafka import small_request
from thunderhelm.schemas import events as ev
from thunderhelm.schemas.codec import decode_record
from thunderhelm.streams.cli.main import main as thunderhelm_cli
from thunderhelm.streams.clients import client, trace_view
from thunderhelm.streams.config.settings import Settings
from thunderhelm.streams.observability import telemetry

pytestmark = [pytest.mark.kafka, pytest.mark.jaeger, pytest.mark.slow]
JAEGER = os.environ.get("THUNDERHELM_JAEGER_UI", "http://127.0.0.1:16686")
CLIENT_SERVICE = "thunderhelm-test-client"
WORKER_SERVICE = "thunderhelm-worker"


# --- an in-test OTLP/HTTP metrics receiver ---------------------------------------------


@dataclass
class MetricsReceiver:
    port: int
    names: set[str] = field(default_factory=set)
    points: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/metrics"

    def take(self, body: bytes) -> None:
        request = metrics_service_pb2.ExportMetricsServiceRequest()
        request.ParseFromString(body)
        with self.lock:
            for resource in request.resource_metrics:
                for scope in resource.scope_metrics:
                    for metric in scope.metrics:
                        self.names.add(metric.name)
                        kind = metric.WhichOneof("data")
                        data = getattr(metric, kind) if kind else None
                        for point in getattr(data, "data_points", []):
                            attrs = {a.key: a.value.string_value for a in point.attributes}
                            self.points.setdefault(metric.name, []).append(attrs)


def _handler(receiver: MetricsReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # http.server's naming
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            status = 404
            if self.path == "/v1/metrics":
                receiver.take(body)
                status = 200
            reply = metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString()
            self.send_response(status)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            del format, args

    return Handler


@pytest.fixture(scope="module")
def receiver() -> Iterator[MetricsReceiver]:
    recv = MetricsReceiver(free_port())
    server = ThreadingHTTPServer(("127.0.0.1", recv.port), _handler(recv))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield recv
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def client_tracing() -> None:
    """This process is the user's producer: its spans go to Jaeger too."""
    from opentelemetry.sdk.trace import TracerProvider

    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        telemetry.configure(Settings(service_name=CLIENT_SERVICE))


def _worker_env(tmp: Path, receiver: MetricsReceiver) -> dict[str, str]:
    return fresh_env(
        tmp,
        OTEL_METRICS_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_METRICS_ENDPOINT=receiver.endpoint,
        OTEL_METRIC_EXPORT_INTERVAL="1000",
        OTEL_TRACES_EXPORTER="otlp",
    )


@pytest.fixture(scope="module")
def worker(
    tmp_path_factory: pytest.TempPathFactory, receiver: MetricsReceiver, client_tracing: None
) -> Iterator[WorkerProcess]:
    tmp = tmp_path_factory.mktemp("tracing")
    proc = WorkerProcess(_worker_env(tmp, receiver), tmp / "worker.log")
    proc.start()
    yield proc
    proc.stop()


def request(run_id: str, generations: int, samples: int = 300) -> dict[str, Any]:
    return small_request(run_id, generations, samples)


async def submit(settings: Settings, data: dict[str, Any]) -> str:
    trace_id = await client.submit(settings, data)
    telemetry.flush()
    return trace_id


def for_run(
    records: list[ConsumerRecord[bytes, bytes]], run_id: str, topic: str
) -> list[ConsumerRecord[bytes, bytes]]:
    return [r for r in records if r.topic == topic and r.key == run_id.encode()]


async def wait_result(
    worker: WorkerProcess, run_id: str, timeout_s: float = 240.0
) -> list[ConsumerRecord[bytes, bytes]]:
    s = worker.settings
    records = await collect(
        [s.run_events, s.run_results],
        lambda seen: bool(for_run(seen, run_id, s.run_results)),
        timeout_s=timeout_s,
    )
    assert for_run(records, run_id, s.run_results), worker.log_path.read_text()[-4000:]
    return records


# --- reading Jaeger ----------------------------------------------------------------------


@dataclass(frozen=True)
class JSpan:
    span_id: str
    name: str
    service: str
    instance: str | None
    parent: str | None
    links: tuple[str, ...]
    start_us: int
    duration_us: int
    tags: dict[str, Any]


def jaeger_trace(trace_id: str) -> list[JSpan]:
    try:
        with urllib.request.urlopen(f"{JAEGER}/api/traces/{trace_id}", timeout=5) as resp:
            body = json.load(resp)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return []
        raise
    spans = []
    for tr in body.get("data") or []:
        procs = tr["processes"]
        for sp in tr["spans"]:
            proc = procs[sp["processID"]]
            ptags = {t["key"]: t["value"] for t in proc.get("tags", [])}
            refs = sp.get("references", [])
            spans.append(
                JSpan(
                    span_id=sp["spanID"],
                    name=sp["operationName"],
                    service=proc["serviceName"],
                    instance=ptags.get("service.instance.id"),
                    parent=next((r["spanID"] for r in refs if r["refType"] == "CHILD_OF"), None),
                    links=tuple(r["spanID"] for r in refs if r["refType"] == "FOLLOWS_FROM"),
                    start_us=int(sp["startTime"]),
                    duration_us=int(sp["duration"]),
                    tags={t["key"]: t["value"] for t in sp.get("tags", [])},
                )
            )
    return spans


def poll_trace(
    trace_id: str, ready: Callable[[list[JSpan]], bool], timeout_s: float = 60.0
) -> list[JSpan]:
    deadline = time.monotonic() + timeout_s
    spans: list[JSpan] = []
    while time.monotonic() < deadline:
        spans = jaeger_trace(trace_id)
        if ready(spans):
            return spans
        time.sleep(0.5)
    names = sorted(s.name for s in spans)
    raise AssertionError(f"trace {trace_id} incomplete after {timeout_s}s: {names}")


def named(spans: list[JSpan], name: str) -> list[JSpan]:
    return [s for s in spans if s.name == name]


def one(spans: list[JSpan], name: str) -> JSpan:
    found = named(spans, name)
    assert len(found) == 1, (name, [s.name for s in spans])
    return found[0]


def trace_ids_of(records: list[ConsumerRecord[bytes, bytes]]) -> set[str]:
    ids = set()
    for record in records:
        values = [v for k, v in record.headers if k == "traceparent"]
        assert len(values) == 1, record.headers  # exactly one per record
        ids.add(values[0].decode().split("-")[1])
    return ids


# --- the tests ---------------------------------------------------------------------------


async def test_a_three_generation_run_is_one_trace(
    worker: WorkerProcess, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    s = worker.settings
    run_id = f"trace-{uuid.uuid4().hex[:6]}"
    trace_id = await submit(s, request(run_id, generations=3))
    records = await wait_result(worker, run_id)
    events = for_run(records, run_id, s.run_events)
    results = for_run(records, run_id, s.run_results)
    assert trace_ids_of(events + results) == {trace_id}

    generations = [
        decode_record(r.value, {}).data
        for r in events
        if decode_record(r.value, {}).type == ev.GENERATION_COMPLETED
    ]
    assert [g["generation"] for g in generations] == [0, 1, 2]
    trained = {(g["generation"], c["index"]) for g in generations for c in g["candidates"]}
    for g in generations:
        training = g["training"]
        assert training["candidates_trained"] == len(g["candidates"])
        assert training["train_time_total_s"] > 0 and training["interpreters"]
        assert all(c.get("interpreter") is not None for c in g["candidates"])

    def complete(spans: list[JSpan]) -> bool:
        names = {sp.name for sp in spans}
        return (
            len([n for n in names if n.startswith("train candidate")]) == len(trained)
            and telemetry.send_span_name(s.run_results) in names
            and telemetry.send_span_name(s.run_requests) in names
            and len(named(spans, telemetry.process_span_name(s.run_events))) >= len(events)
        )

    spans = poll_trace(trace_id, complete)
    by_id = {sp.span_id: sp for sp in spans}

    producer = one(spans, telemetry.send_span_name(s.run_requests))
    assert producer.service == CLIENT_SERVICE and producer.parent is None
    assert producer.tags["span.kind"] == "producer"
    assert producer.tags["messaging.destination.name"] == s.run_requests
    # The intake screens the request, the Faust agent takes the admitted command.
    intake = one(spans, telemetry.process_span_name(s.run_requests))
    assert intake.parent == producer.span_id and intake.service == WORKER_SERVICE
    # The agent takes the admitted command (run-commands also carries the
    # outcomes workers send back, each under its generation's span).
    (process,) = [
        sp
        for sp in named(spans, telemetry.process_span_name(s.run_commands))
        if sp.parent == intake.span_id
    ]
    assert process.service == WORKER_SERVICE
    for consumer in (intake, process):
        assert consumer.tags["span.kind"] == "consumer"
        assert consumer.tags["messaging.operation.type"] == "process"

    for generation in range(3):
        span = one(spans, telemetry.GENERATION_SPAN.format(generation=generation))
        assert span.parent == process.span_id
        for g, index in sorted(trained):
            if g != generation:
                continue
            cand = one(spans, telemetry.CANDIDATE_SPAN.format(generation=g, index=index))
            assert cand.parent == span.span_id
            assert cand.tags["thunderhelm.params"] > 0 and cand.tags["thunderhelm.epochs"] >= 1
            assert 0.0 <= cand.tags["thunderhelm.val_accuracy"] <= 1.0
            assert "thunderhelm.val_loss" in cand.tags and "thunderhelm.train_loss" in cand.tags
            assert cand.tags["thunderhelm.interpreter"] != ""
            # timed inside the interpreter, within the generation's span
            assert span.start_us - 5_000 <= cand.start_us
            assert cand.start_us + cand.duration_us <= span.start_us + span.duration_us + 5_000

    result_send = one(spans, telemetry.send_span_name(s.run_results))
    assert result_send.parent == process.span_id
    assert result_send.tags["span.kind"] == "producer"
    for consumed in named(spans, telemetry.process_span_name(s.run_events)):
        assert by_id[consumed.parent or ""].name == telemetry.send_span_name(s.run_events)
    # A decision nests under the record that caused it, or (driven by the
    # reconciler) directly under the run's own context.
    decisions = named(spans, telemetry.DECISION_SPAN)
    allowed = {telemetry.process_span_name(s.run_events), process.name}
    assert decisions and all(by_id[d.parent or ""].name in allowed for d in decisions)
    assert not [sp.name for sp in spans if sp.tags.get("error") is True]

    # the terminal view of the same trace
    assert await trace_view.find_trace_id(s, run_id) == trace_id
    for key, value in worker.env.items():
        if key.startswith("THUNDERHELM_"):
            monkeypatch.setenv(key, value)
    assert await asyncio.to_thread(thunderhelm_cli, ["trace", run_id, "--color", "never"]) == 0
    out = capsys.readouterr().out
    assert f"trace {trace_id}" in out and f"/trace/{trace_id}" in out
    assert "generation 2" in out and "train candidate 2." in out and "✗" not in out


async def test_a_killed_and_resumed_run_keeps_one_trace(
    tmp_path: Path, receiver: MetricsReceiver, client_tracing: None
) -> None:
    proc = WorkerProcess(_worker_env(tmp_path, receiver), tmp_path / "worker.log")
    proc.start()
    try:
        s = proc.settings
        run_id = f"resume-{uuid.uuid4().hex[:6]}"
        slow = request(run_id, generations=4, samples=6000)
        slow["ga"]["population"] = 6
        slow["training"]["epochs"] = 12
        slow["search_space"] = {"max_levels": 3, "max_units": 3, "max_neurons": 128}
        trace_id = await submit(s, slow)
        # Kill the first worker as soon as its generation 0 is in the log: the
        # rest of the run is left to the restarted worker. (Spans still in the
        # first worker's export buffer die with it; its earlier ones are in Jaeger.)
        await collect(
            [s.run_events],
            lambda seen: any(
                decode_record(r.value, {}).type == ev.GENERATION_COMPLETED
                for r in for_run(seen, run_id, s.run_events)
            ),
            timeout_s=120.0,
        )
        proc.stop(kill=True)
        proc.start()
        records = await wait_result(proc, run_id)
    finally:
        proc.stop()
    events = for_run(records, run_id, s.run_events)
    results = for_run(records, run_id, s.run_results)
    assert trace_ids_of(events + results) == {trace_id}
    result = decode_record(results[0].value, {}).data
    assert result["status"] == "succeeded" and result["generations"] == 4

    spans = poll_trace(
        trace_id,
        lambda sp: (
            bool(named(sp, telemetry.send_span_name(s.run_results)))
            and bool(named(sp, "generation 3"))
        ),
    )
    intake = one(spans, telemetry.process_span_name(s.run_requests))
    # The killed worker may not have committed the request on run-commands, so
    # the restarted one may process it again: at-least-once delivery allows
    # that. What the contract promises is one effect: one run.accepted.
    processes = sorted(
        (
            sp
            for sp in named(spans, telemetry.process_span_name(s.run_commands))
            if sp.parent == intake.span_id
        ),
        key=lambda sp: sp.start_us,
    )
    process = processes[0]
    killed_instance = process.instance  # the first worker took the request
    assert all(sp.instance != killed_instance for sp in processes[1:]), "processed twice"
    accepted = [r for r in events if decode_record(r.value, {}).type == ev.RUN_ACCEPTED]
    assert len(accepted) == 1, "the redelivered request was accepted again"
    workers = {sp.instance for sp in spans if sp.service == WORKER_SERVICE}
    assert len(workers) >= 2, workers
    result_send = one(spans, telemetry.send_span_name(s.run_results))
    assert result_send.instance != killed_instance, "the run ended before the kill"
    resumed = [
        sp for sp in spans if sp.name.startswith("generation ") and sp.instance != killed_instance
    ]
    assert resumed and all(sp.parent == process.span_id for sp in resumed)


async def test_a_dead_letter_is_an_error_span_in_its_inputs_trace(worker: WorkerProcess) -> None:
    s = worker.settings
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    traceparent = f"00-{trace_id}-{parent_id}-01"
    value = b"\x00not json " + uuid.uuid4().hex.encode()
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            s.run_requests,
            value=value,
            key=b"dlq-trace",
            headers=[("traceparent", traceparent.encode())],
        )
    finally:
        await producer.stop()
    records = await collect(
        [s.dead_letters], lambda seen: any(r.value == value for r in seen), timeout_s=60.0
    )
    dead = next(r for r in records if r.value == value)
    headers = dict(dead.headers)
    assert headers["dlq.original.traceparent"] == traceparent.encode()
    assert trace_ids_of([dead]) == {trace_id}

    spans = poll_trace(trace_id, lambda sp: bool(named(sp, telemetry.DEAD_LETTER_SPAN)))
    dlq = one(spans, telemetry.DEAD_LETTER_SPAN)
    process = one(spans, telemetry.process_span_name(s.run_requests))
    assert process.parent == parent_id and dlq.parent == process.span_id
    assert parent_id in dlq.links  # linked to the input's producer context
    assert dlq.tags["error"] is True and dlq.tags["otel.status_code"] == "ERROR"
    assert dlq.tags["error.type"] == headers["dlq.error.class"].decode()
    assert dlq.tags["dlq.stage"] == "decode"
    assert process.tags["error"] is True and "error.type" in process.tags
    assert headers["traceparent"].decode().split("-")[2] == dlq.span_id


async def test_metrics_reach_the_otlp_endpoint(
    worker: WorkerProcess, receiver: MetricsReceiver
) -> None:
    s = worker.settings
    run_id = f"metrics-{uuid.uuid4().hex[:6]}"
    await submit(s, request(run_id, generations=1))
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(s.run_requests, value=b"{broken", key=b"metrics-bad")
    finally:
        await producer.stop()
    await wait_result(worker, run_id)
    wanted = {
        "thunderhelm.runs",
        "thunderhelm.run.duration",
        "thunderhelm.generation.duration",
        "thunderhelm.candidate.training.duration",
        "thunderhelm.pool.interpreters.busy",
        "thunderhelm.pool.interpreters.idle",
        "thunderhelm.pool.queue.depth",
        "thunderhelm.dead_letters",
        "messaging.kafka.consumer.lag",
    }
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline and not wanted <= receiver.names:
        time.sleep(0.5)
    assert wanted <= receiver.names, wanted - receiver.names
    with receiver.lock:
        outcomes = {p.get("thunderhelm.run.outcome") for p in receiver.points["thunderhelm.runs"]}
        stages = {p.get("dlq.stage") for p in receiver.points["thunderhelm.dead_letters"]}
    assert "succeeded" in outcomes and "decode" in stages
