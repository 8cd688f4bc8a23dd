"""Health, readiness and Prometheus metrics of a real worker, over HTTP.

One worker (fresh topics and group) finishes a small spirals run; its
/metrics must then count exactly that run's candidates, generations and
outcome, and the one broken record sent beside it as a dead letter.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord
from prometheus_client.parser import text_string_to_metric_families

from tests.kafka_helpers import BOOTSTRAP, WorkerProcess, collect, fresh_env
from tests.test_operations_docs import PROMETHEUS_OWN, rules, selectors
from thunderhelm.schemas.codec import decode_record

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    tmp = tmp_path_factory.mktemp("ops")
    env = fresh_env(tmp, THUNDERHELM_POOL_SIZE="2", THUNDERHELM_LOG_FORMAT="json")
    proc = WorkerProcess(env, tmp / "worker.log")
    proc.start()
    yield proc
    proc.stop()


def get(worker: WorkerProcess, path: str) -> tuple[int, str, str]:
    """(status, content type, body) of a GET on the worker's web port; 5xx is an answer too."""
    url = f"http://127.0.0.1:{worker.web_port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status, reply.headers["Content-Type"], reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read().decode()


def wait_ready(worker: WorkerProcess, timeout_s: float = 90.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        status, _, body = get(worker, "/readyz")
        if status == 200:
            ready: dict[str, Any] = json.loads(body)
            return ready
        assert status == 503, (status, body)
        assert json.loads(body)["not_ready"], body  # a 503 says what is missing
        if time.monotonic() > deadline:
            raise TimeoutError(f"never ready: {body}")
        time.sleep(0.5)


def spirals(run_id: str) -> bytes:
    data = {
        "run_id": run_id,
        "dataset": {"name": "spirals", "samples": 300, "classes": 3, "seed": 7},
        "ga": {"population": 3, "generations": 2, "tournament_size": 2, "elite": 1, "seed": 5},
        "training": {"epochs": 1, "batch_size": 32},
        "search_space": {"max_levels": 2, "max_units": 2, "max_neurons": 8},
        "budget": {"timeout_s": 300},
    }
    event = {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": "tests/operations",
        "type": "thunderhelm.run.requested",
        "subject": run_id,
        "datacontenttype": "application/json",
        "data": data,
    }
    return json.dumps(event).encode()


async def produce(topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all")
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, value=value, key=key)
    finally:
        await producer.stop()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a scrape, keyed by (sample name, labels without the OTel scope)."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = frozenset((k, v) for k, v in sample.labels.items() if not k.startswith("otel"))
            found[(sample.name, labels)] = sample.value
    return found


def value(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


RUNS: dict[str, str] = {}  # run id -> trace id, of the run the metrics test finished


def test_health_and_readiness(worker: WorkerProcess) -> None:
    ready = wait_ready(worker)
    assert ready["status"] == "ready"
    assert ready["checks"] == [
        "command_reader",
        "interpreter_pool",
        "kafka_consumer",
        "kafka_producer",
    ]
    status, content_type, body = get(worker, "/healthz")
    assert status == 200 and content_type.startswith("application/json")
    live = json.loads(body)
    assert live["status"] == "ok" and live["app"] == worker.settings.app_id


async def test_metrics_count_a_finished_run(worker: WorkerProcess) -> None:
    wait_ready(worker)
    s = worker.settings
    run_id = f"ops-{uuid.uuid4().hex[:6]}"
    await produce(s.run_requests, [(b"ops-bad", b"{broken"), (run_id.encode(), spirals(run_id))])

    def finished(seen: list[ConsumerRecord[bytes, bytes]]) -> bool:
        return any(r.topic == s.run_results and r.key == run_id.encode() for r in seen) and any(
            r.topic == s.dead_letters for r in seen
        )

    topics = [s.run_results, s.dead_letters]
    records = await collect(topics, finished, timeout_s=240, alive=worker.alive)
    record = next(r for r in records if r.topic == s.run_results and r.key == run_id.encode())
    result = decode_record(record.value, {}).data
    RUNS[run_id] = dict(record.headers)["traceparent"].decode().split("-")[1]
    assert result["status"] == "succeeded"

    status, content_type, text = get(worker, "/metrics")
    assert status == 200 and content_type.startswith("text/plain")
    found = samples(text)
    assert value(found, "thunderhelm_candidate_accuracy_count") == result["evaluations"] > 0
    assert value(found, "thunderhelm_candidate_loss_count") == result["evaluations"]
    assert value(found, "thunderhelm_runs_total", thunderhelm_run_outcome="succeeded") == 1
    assert value(found, "thunderhelm_runs_total", thunderhelm_run_outcome="failed") == 0
    assert value(found, "thunderhelm_generations_total") == result["generations"] == 2
    dead = {
        dict(labels)["error_type"]: n
        for (name, labels), n in found.items()
        if name == "thunderhelm_dead_letters_total" and ("dlq_stage", "decode") in labels
    }
    assert dead == {"DecodeError": 1}
    ok = value(
        found, "thunderhelm_candidate_training_duration_seconds_count", thunderhelm_status="ok"
    )
    assert ok == result["evaluations"]
    for gauge in (
        "thunderhelm_pool_queue_depth",
        "thunderhelm_pool_interpreters_busy",
        "thunderhelm_runs_active",
    ):
        assert (gauge, frozenset()) in found, gauge
    assert value(found, "thunderhelm_pool_interpreters_idle") == 2
    assert any(name == "messaging_kafka_consumer_lag" for name, _ in found)
    # Every metric the example alert rules use is in this live scrape.
    scraped = {name for name, _ in found}
    for rule in rules():
        for metric, _labels in selectors(rule["expr"]):
            assert metric in scraped | PROMETHEUS_OWN, (rule["alert"], metric)


def test_log_lines_are_json_with_the_runs_trace_id(worker: WorkerProcess) -> None:
    if not RUNS:
        pytest.skip("needs the run of test_metrics_count_a_finished_run")
    ((run_id, trace_id),) = RUNS.items()
    text = worker.log_path.read_text()
    text = text[: text.rfind("\n") + 1]  # the worker goes on logging: its last line may be torn
    # Faust's logging, set up by the worker, writes JSON; the supervisor and
    # the start-up banner are not Faust's logging and stay text.
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert len(lines) > 20
    for line in lines:
        assert {"time", "level", "logger", "process", "message"} <= line.keys()
    about_run = [line for line in lines if run_id in line["message"]]
    traced = [line for line in about_run if "trace_id" in line]
    # Lines about the run logged inside its spans carry its trace (launching, accepted, ...).
    assert len(traced) >= 3 and all(line["trace_id"] == trace_id for line in traced)
    assert all(len(line["span_id"]) == 16 for line in traced)
    assert any("trace_id" not in line for line in lines)  # outside any span: no ids
