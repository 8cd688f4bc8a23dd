"""Candidate fan-out on the real broker: every worker trains a share of one run.

Workers are real `thunderhelm worker` processes (pool of one each) in one
consumer group; the run's result must be the one the same request gives
without Kafka, whoever trained which candidate.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.kafka_helpers import WorkerProcess, collect
from tests.test_faults import events, request, results, send, start, wait_for
from thunderhelm.ga.core.engine import initial_state
from thunderhelm.schemas import events as ev
from thunderhelm.schemas.codec import encode_event
from thunderhelm.schemas.tasks import CANDIDATE_TASK
from thunderhelm.streams.clients.client import command_event
from thunderhelm.streams.config.settings import Settings
from thunderhelm.streams.devservices.worker_process import fresh_env
from thunderhelm.streams.domain.invariants import violations
from thunderhelm.streams.execution import candidates, steps
from thunderhelm.streams.execution.local_run import run_local

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def wide(run_id: str) -> dict[str, Any]:
    run = request(run_id, generations=2, epochs=6)
    return {**run, "ga": {**run["ga"], "population": 8}}


def test_two_workers_share_a_run_and_find_what_one_process_finds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = fresh_env(
        tmp_path,
        THUNDERHELM_POOL_SIZE="1",
        THUNDERHELM_SESSION_TIMEOUT_S="6",
        OTEL_TRACES_EXPORTER="none",
    )
    first = WorkerProcess(env, tmp_path / "first.log")
    second = WorkerProcess(env, tmp_path / "second.log")
    first.start()
    second.start()
    run = wide(f"fan-{uuid.uuid4().hex[:6]}")
    try:
        asyncio.run(asyncio.sleep(3.0))  # both members in the trainers' group
        start(first, run)
        records = wait_for(first, [run["run_id"]], timeout_s=300)
    finally:
        first.stop()
        second.stop()
    log = events(records, first, run["run_id"])
    assert violations(log) == []
    (result,) = results(records, first, run["run_id"])
    assert result["status"] == "succeeded", result
    trained_by = Counter(
        e.data.worker.split("/")[-1] for e in log if e.type == ev.CANDIDATE_COMPLETED
    )
    pids = {str(first.worker_pid), str(second.worker_pid)}
    assert set(trained_by) == pids, (trained_by, pids)
    assert sum(trained_by.values()) == result["evaluations"]
    assert ev.CANDIDATES_DISPATCHED in [e.type for e in log]

    settings = Settings.from_env({**env, "THUNDERHELM_FANOUT": "0"})
    local = {**run, "run_id": f"{run['run_id']}-local"}
    assert run_local(settings, local, 1, as_json=True, logs=tmp_path / "local") == 0
    alone = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert alone["best"]["genome"] == result["best"]["genome"]
    assert alone["best"]["metrics"]["val_accuracy"] == result["best"]["metrics"]["val_accuracy"]


def test_a_malformed_task_is_dead_lettered_and_the_trainer_goes_on(tmp_path: Path) -> None:
    env = fresh_env(tmp_path, THUNDERHELM_POOL_SIZE="1", OTEL_TRACES_EXPORTER="none")
    worker = WorkerProcess(env, tmp_path / "worker.log")
    worker.start()
    s = worker.settings
    bad = json.dumps(
        {
            "specversion": "1.0",
            "id": "bad-task",
            "source": "tests",
            "type": "thunderhelm.candidate.task",
            "data": {"run_id": "x", "network": "import os"},
        }
    ).encode()
    # Well-formed, but its file is not under this worker's data root.
    (untrainable,) = candidates.generation_tasks(
        {**request("x", epochs=2), "ga": {"population": 1, "generations": 1, "seed": 1}},
        initial_state(steps.ga_config({"ga": {"population": 1, "generations": 1, "seed": 1}})),
        4,
        2,
        run_id="x",
        deadline=time.time() + 600,
        traceparent=None,
        known={},
    )
    missing = encode_event(
        command_event(
            CANDIDATE_TASK, {**untrainable, "dataset": {"name": "csv", "path": "no.csv"}}, None
        )
    )
    run = request(f"after-{uuid.uuid4().hex[:6]}", generations=1, epochs=2)
    try:
        asyncio.run(send(s.candidate_tasks, "x/0/0", bad))
        asyncio.run(send(s.candidate_tasks, "x/0/1", missing))
        start(worker, run)
        records = asyncio.run(
            collect(
                [s.dead_letters, s.run_results],
                lambda seen: (
                    len([r for r in seen if r.topic == s.dead_letters]) == 2
                    and any(r.topic == s.run_results for r in seen)
                ),
                timeout_s=120,
            )
        )
    finally:
        worker.stop()
    letters = {r.value: r for r in records if r.topic == s.dead_letters}
    letter, unloadable = letters[bad], letters[missing]
    headers = {k: v.decode() for k, v in letter.headers}
    assert letter.value == bad
    assert headers["dlq.original.topic"] == s.candidate_tasks
    assert headers["dlq.stage"] == "validate" and "network" in headers["dlq.error.message"]
    why = {k: v.decode() for k, v in unloadable.headers}
    assert unloadable.value == missing and why["dlq.stage"] == "execute", why
    assert why["dlq.error.class"] == "DatasetError", why
    (result,) = [json.loads(r.value)["data"] for r in records if r.topic == s.run_results]
    assert result["status"] == "succeeded"
