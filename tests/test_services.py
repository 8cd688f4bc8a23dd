"""``thunderhelm services``: local Kafka and Jaeger without Docker.

The integration tests run a second, independent instance (own state dir, free
ports) so the main services other tests rely on are never touched; jars and
the Jaeger binary come from the shared cache. Tests in the lifecycle section
run in file order against one module-scoped instance.
"""

from __future__ import annotations

import base64
import json
import os
import random
import socket
import stat
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from thunderhelm.streams.devservices import commands, jaeger_service, kafka_service, processes
from thunderhelm.streams.devservices.commands import ServicesError, ServicesSettings
from thunderhelm.streams.devservices.processes import (
    port_in_use,
    require_go,
    require_java,
    require_mvn,
)

# --------------------------------------------------------------------------- unit


def test_settings_from_env() -> None:
    env = {
        "THUNDERHELM_CACHE_DIR": "/c",
        "THUNDERHELM_STATE_DIR": "/s",
        "THUNDERHELM_KAFKA_PORT": "19092",
        "THUNDERHELM_JAEGER_QUERY_PORT": "26686",
        "THUNDERHELM_KAFKA_AUTO_CREATE_TOPICS": "true",
    }
    s = ServicesSettings.from_env(env)
    assert (s.cache_dir, s.state_dir) == (Path("/c"), Path("/s"))
    assert s.bootstrap_servers == "127.0.0.1:19092"
    assert s.jaeger_query_url == "http://127.0.0.1:26686"
    assert s.kafka_auto_create_topics
    assert ServicesSettings.from_env({}).kafka_port == 9092
    with pytest.raises(ServicesError, match="THUNDERHELM_KAFKA_PORT: must be an integer"):
        ServicesSettings.from_env({"THUNDERHELM_KAFKA_PORT": "x"})
    with pytest.raises(ServicesError, match=r"THUNDERHELM_KAFKA_PORT: .* got '70000'"):
        ServicesSettings.from_env({"THUNDERHELM_KAFKA_PORT": "70000"})
    with pytest.raises(ServicesError, match="THUNDERHELM_SERVICES_START_TIMEOUT: must be a finite"):
        ServicesSettings.from_env({"THUNDERHELM_SERVICES_START_TIMEOUT": "soon"})
    assert ServicesSettings.from_env({"THUNDERHELM_KAFKA_HEAP": "1g"}).kafka_heap_max == "1g"
    assert (
        ServicesSettings.from_env({"THUNDERHELM_SERVICES_START_TIMEOUT": "5"}).start_timeout_s == 5
    )


def test_cluster_id_is_like_kafka_storage_random_uuid() -> None:
    for _ in range(200):
        cid = kafka_service.new_cluster_id()
        assert len(cid) == 22 and not cid.startswith("-")
        assert len(base64.urlsafe_b64decode(cid + "==")) == 16


def test_generated_configs_bind_loopback_only(tmp_path: Path) -> None:
    s = ServicesSettings(state_dir=tmp_path, kafka_port=19092, kafka_controller_port=19093)
    props = kafka_service.render_server_properties(s)
    assert "listeners=PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093" in props
    assert "offsets.topic.replication.factor=1" in props
    assert f"log.dirs={tmp_path}/kafka/data" in props
    config = jaeger_service.render_config(s)
    assert "0.0.0.0" not in config and "enable_tracing: false" in config
    for port in s.jaeger_ports():
        assert f"127.0.0.1:{port}" in config or f"port: {port}" in config


def _fake_tool(bin_dir: Path, name: str, output: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\necho '{output}' >&2\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_missing_or_old_tools_say_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    for check in (require_java, require_mvn):
        with pytest.raises(ServicesError, match=r"not on PATH.*Install"):
            check()
    with pytest.raises(ServicesError, match=r"not on PATH.*Go 1\.24"):
        require_go("1.24")
    _fake_tool(tmp_path / "bin", "java", 'openjdk version "11.0.2" 2019-01-15')
    _fake_tool(tmp_path / "bin", "go", "go version go1.22.1 linux/amd64")
    with pytest.raises(ServicesError, match=r"Java 17 or newer.*Java 11.*openjdk-17"):
        require_java()
    with pytest.raises(ServicesError, match=r"Go 1\.22\.1 is too old"):
        require_go("1.24.6")
    _fake_tool(tmp_path / "bin", "java", 'java version "1.8.0_392"')
    with pytest.raises(ServicesError, match="Java 8"):
        require_java()


def test_foreign_process_on_port_is_reported(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        s = ServicesSettings(state_dir=tmp_path, kafka_port=port, kafka_controller_port=port + 1)
        with pytest.raises(
            ServicesError, match=rf"in use.*127\.0\.0\.1:{port} held by pid {os.getpid()}"
        ):
            commands.start(s, jaeger=False)


def test_stop_never_kills_a_process_it_did_not_start(tmp_path: Path) -> None:
    s = ServicesSettings(state_dir=tmp_path, kafka_port=1, jaeger_query_port=2)
    for pid_file in (kafka_service.pid_file(s), jaeger_service.pid_file(s)):
        pid_file.parent.mkdir(parents=True, exist_ok=True)
        pid_file.write_text(f"{os.getpid()}\n")  # a recycled pid: this very test process
    assert commands.status(s).none_running
    result = commands.stop(s)
    assert [x.message for x in result.services] == ["was not running", "was not running"]
    assert not kafka_service.pid_file(s).exists()


# --------------------------------------------------------------------------- lifecycle


def _free_ports(n: int) -> list[int]:
    """Free ports below the ephemeral range, so no client socket grabs one meanwhile."""
    rng = random.Random()
    ports: list[int] = []
    while len(ports) < n:
        port = rng.randrange(20000, 32000)
        if port not in ports and not port_in_use("127.0.0.1", port):
            ports.append(port)
    return ports


def _skip_without_tools(settings: ServicesSettings) -> None:
    try:
        require_java()
        if not kafka_service.libs_dir(settings).exists():
            require_mvn()
        if not jaeger_service.binary(settings).exists():
            require_go(jaeger_service.go_minimum(settings))
    except ServicesError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def instance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServicesSettings]:
    ports = _free_ports(7)
    settings = ServicesSettings(
        cache_dir=ServicesSettings.from_env().cache_dir,
        state_dir=tmp_path_factory.mktemp("services"),
        kafka_port=ports[0],
        kafka_controller_port=ports[1],
        jaeger_otlp_grpc_port=ports[2],
        jaeger_otlp_http_port=ports[3],
        jaeger_query_port=ports[4],
        jaeger_query_grpc_port=ports[5],
        jaeger_metrics_port=ports[6],
        kafka_heap_max="384m",
    )
    _skip_without_tools(settings)
    commands.start(settings)
    try:
        yield settings
    finally:
        commands.stop(settings)


@pytest.mark.kafka
@pytest.mark.jaeger
def test_second_start_is_harmless(instance: ServicesSettings) -> None:
    before = commands.status(instance)
    again = commands.start(instance)
    assert [x.message for x in again.services] == ["already running", "already running"]
    assert [x.pid for x in again.services] == [x.pid for x in before.services]


@pytest.mark.kafka
@pytest.mark.jaeger
def test_status_reports_running_with_logs(instance: ServicesSettings) -> None:
    result = commands.status(instance)
    assert result.all_running
    for state in result.services:
        assert state.pid is not None and state.log_file.is_file()
        assert state.log_file.is_relative_to(instance.state_dir)
    assert result.kafka is not None and instance.bootstrap_servers in result.kafka.address
    assert "Kafka Server started" in result.kafka.log_file.read_text()


@pytest.mark.kafka
async def test_kafka_round_trip(instance: ServicesSettings) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    topic = f"services-test-{uuid.uuid4().hex}"
    admin = AIOKafkaAdminClient(bootstrap_servers=instance.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=instance.bootstrap_servers, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"hello", key=b"k", headers=[("h", b"v")])
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=instance.bootstrap_servers,
        group_id=f"g-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        record = await consumer.getone()
        await consumer.commit()
    finally:
        await consumer.stop()
    assert (record.key, record.value, list(record.headers)) == (b"k", b"hello", [("h", b"v")])
    (instance.state_dir / "round-trip-topic").write_text(topic)


def _get_json(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        assert resp.status == 200
        data: dict[str, object] = json.load(resp)
        return data


@pytest.mark.jaeger
def test_jaeger_stores_an_otlp_span(instance: ServicesSettings) -> None:
    assert "data" in _get_json(f"{instance.jaeger_query_url}/api/services")
    service, trace_id, now = f"svc-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex, time.time_ns()
    span = {
        "traceId": trace_id,
        "spanId": uuid.uuid4().hex[:16],
        "name": "probe",
        "kind": 1,
        "startTimeUnixNano": str(now),
        "endTimeUnixNano": str(now + 1_000_000),
    }
    body = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": service}}]
                },
                "scopeSpans": [{"scope": {"name": "test"}, "spans": [span]}],
            }
        ]
    }
    request = urllib.request.Request(
        f"{instance.otlp_http_endpoint}/v1/traces",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as resp:
        assert resp.status == 200
    deadline = time.monotonic() + 15
    while True:
        traces = _get_json(f"{instance.jaeger_query_url}/api/traces?service={service}")["data"]
        if traces:
            break
        assert time.monotonic() < deadline, "span never showed up in Jaeger"
        time.sleep(0.3)
    assert isinstance(traces, list) and traces[0]["traceID"] == trace_id


@pytest.mark.kafka
@pytest.mark.jaeger
def test_cli_status_and_exit_codes(
    instance: ServicesSettings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("THUNDERHELM_STATE_DIR", str(instance.state_dir))
    monkeypatch.setenv("THUNDERHELM_KAFKA_PORT", str(instance.kafka_port))
    monkeypatch.setenv("THUNDERHELM_KAFKA_CONTROLLER_PORT", str(instance.kafka_controller_port))
    monkeypatch.setenv("THUNDERHELM_JAEGER_QUERY_PORT", str(instance.jaeger_query_port))
    assert commands.main(["status", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["kafka"]["running"] and report["jaeger"]["running"]
    assert report["kafka"]["log_file"].endswith("kafka/kafka.log")


@pytest.mark.kafka
@pytest.mark.jaeger
def test_stop_leaves_nothing_running(instance: ServicesSettings) -> None:
    pids = [x.pid for x in commands.status(instance).services]
    result = commands.stop(instance)
    assert result.none_running
    for pid in pids:
        # A zombie still has /proc/<pid> until its parent (this test) reaps it.
        assert pid is not None and not processes.is_alive(pid)
    for port in (*instance.kafka_ports(), *instance.jaeger_ports()):
        assert not port_in_use("127.0.0.1", port), port
    assert [x.message for x in commands.stop(instance).services] == ["was not running"] * 2
    assert not commands.status(instance).all_running


async def _topics(bootstrap: str) -> set[str]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


@pytest.mark.kafka
@pytest.mark.slow
async def test_restart_keeps_data_and_fresh_wipes_it(instance: ServicesSettings) -> None:
    marker = instance.state_dir / "round-trip-topic"
    if not marker.exists():
        pytest.skip("needs the round-trip test's topic")
    topic = marker.read_text()
    assert commands.start(instance, jaeger=False).all_running
    assert topic in await _topics(instance.bootstrap_servers)
    assert commands.start(instance, jaeger=False, fresh=True).all_running
    assert topic not in await _topics(instance.bootstrap_servers)
