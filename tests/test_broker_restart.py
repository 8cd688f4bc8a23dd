"""A run survives its broker going away: a private Kafka is stopped and restarted mid-run.

The broker here is a second instance on its own ports and state dir, so the
shared one used by the rest of the suite is never touched.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import test_faults as faults
from tests.kafka_helpers import WorkerProcess, collect, fresh_env
from thunderhelm.schemas import events as ev
from thunderhelm.schemas.codec import decode_record
from thunderhelm.streams.devservices import commands
from thunderhelm.streams.devservices.commands import ServicesSettings
from thunderhelm.streams.devservices.processes import port_in_use
from thunderhelm.streams.domain.invariants import violations
from thunderhelm.streams.wire.events import to_domain

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def _free_ports(n: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < n:
        port = random.randrange(20000, 32000)
        if port not in ports and not port_in_use("127.0.0.1", port):
            ports.append(port)
    return ports


@pytest.fixture
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServicesSettings]:
    kafka_port, controller_port = _free_ports(2)
    settings = ServicesSettings(
        cache_dir=ServicesSettings.from_env().cache_dir,
        state_dir=tmp_path_factory.mktemp("private-broker"),
        kafka_port=kafka_port,
        kafka_controller_port=controller_port,
        kafka_heap_max="384m",
    )
    commands.start(settings, jaeger=False)
    try:
        yield settings
    finally:
        commands.stop(settings, jaeger=False)


def test_broker_stopped_and_restarted_mid_run(broker: ServicesSettings, tmp_path: Path) -> None:
    bootstrap = f"127.0.0.1:{broker.kafka_port}"
    env = fresh_env(
        tmp_path,
        THUNDERHELM_BOOTSTRAP_SERVERS=bootstrap,
        THUNDERHELM_POOL_SIZE="1",
        OTEL_TRACES_EXPORTER="none",
    )
    worker = WorkerProcess(env, tmp_path / "worker.log")
    worker.start()
    s = worker.settings
    run = faults.request(f"outage-{uuid.uuid4().hex[:6]}", generations=4, epochs=25)
    try:
        asyncio.run(
            faults.send(
                s.run_requests,
                run["run_id"],
                faults.command("thunderhelm.run.requested", run),
                bootstrap,
            )
        )

        def generation_done(seen: faults.Records) -> bool:
            return any(
                decode_record(r.value, {}).type == ev.GENERATION_COMPLETED
                for r in seen
                if r.topic == s.run_events
            )

        asyncio.run(collect([s.run_events], generation_done, timeout_s=120, bootstrap=bootstrap))
        commands.stop(broker, jaeger=False)  # the broker goes away mid-run
        time.sleep(5.0)
        commands.start(broker, jaeger=False)
        records = asyncio.run(
            collect(
                [s.run_events, s.run_results],
                lambda seen: any(r.topic == s.run_results for r in seen),
                timeout_s=300,
                bootstrap=bootstrap,
            )
        )
        assert worker.alive()
    finally:
        worker.stop()
    results = [decode_record(r.value, {}).data for r in records if r.topic == s.run_results]
    assert len(results) == 1 and results[0]["status"] == "succeeded", results
    log = [to_domain(decode_record(r.value, {})) for r in records if r.topic == s.run_events]
    assert violations(log) == []
    assert [e.data.generation for e in log if e.type == ev.GENERATION_COMPLETED] == [0, 1, 2, 3]
