"""Fault benchmark: concurrent runs on two workers while one is killed again and again.

20 small runs go to two workers in one consumer group; one worker is killed
with SIGKILL three times at random moments and restarted. Counted on the real
topics afterwards: results per run (exactly one expected), runs lost, the
event-log invariants, and whether each run's best genome and fitness equal
those of the same request run uninterrupted on the local pool. Recovery time
after a kill is the time from the kill to the next event written for a run
whose previous event came from the killed process.
"""

from __future__ import annotations

import asyncio
import random
import re
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from bench.common import Options, digits_run
from bench.report import bar
from thunderhelm.ga.core.engine import initial_state, is_finished
from thunderhelm.ga.pool.interpreter_pool import InterpreterPool
from thunderhelm.ga.training.datasets import load_dataset
from thunderhelm.ga.training.evaluators import PoolEvaluator
from thunderhelm.schemas.codec import decode_record
from thunderhelm.schemas.requests import RunRequest
from thunderhelm.streams.config.settings import Settings
from thunderhelm.streams.devservices.worker_process import (
    BOOTSTRAP,
    WorkerProcess,
    collect,
    fresh_env,
)
from thunderhelm.streams.domain.invariants import violations
from thunderhelm.streams.execution import steps
from thunderhelm.streams.wire.events import to_domain


def _request(index: int, quick: bool) -> dict[str, Any]:
    return digits_run("fault", index, quick, seed=100 + index, timeout_s=900)


def _uninterrupted(requests: list[dict[str, Any]], settings: Settings) -> dict[str, Any]:
    """Best genome and fitness of each request run without any fault, on the local pool."""
    out: dict[str, Any] = {}
    with InterpreterPool() as pool:
        for raw in requests:
            request = RunRequest.model_validate(raw).model_dump(mode="json")
            dataset = load_dataset(
                request["dataset"], data_root=settings.data_root, text_dir=settings.text_dir
            )
            config = steps.ga_config(request)
            state = initial_state(config)
            with PoolEvaluator(pool, dataset, deadline_s=600.0) as evaluate:
                while not is_finished(state, config):
                    state = steps.run_generation(
                        request, state, dataset.n_features, dataset.n_classes, evaluate
                    ).state
            assert state.best is not None
            best = state.best.to_dict()
            out[raw["run_id"]] = (best["genome"], best["fitness"])
    return out


async def _submit(topic: str, requests: list[dict[str, Any]]) -> None:
    from thunderhelm.schemas.codec import encode_event
    from thunderhelm.streams.clients.client import command_event

    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all")
    await producer.start()
    try:
        for request in requests:
            value = encode_event(command_event("thunderhelm.run.requested", request, None))
            await producer.send_and_wait(topic, value=value, key=request["run_id"].encode())
    finally:
        await producer.stop()


def run(opts: Options) -> dict[str, Any]:
    runs = 4 if opts.quick else 20
    kills = 1 if opts.quick else 3
    requests = [_request(i, opts.quick) for i in range(runs)]
    with tempfile.TemporaryDirectory() as tmp:
        env = fresh_env(
            Path(tmp),
            THUNDERHELM_POOL_SIZE="1",
            THUNDERHELM_SESSION_TIMEOUT_S="6",
            OTEL_TRACES_EXPORTER="none",
        )
        settings = Settings.from_env(env)
        steady = WorkerProcess(env, Path(tmp) / "steady.log")
        victim = WorkerProcess(env, Path(tmp) / "victim.log")
        steady.start()
        victim.start()
        began = time.time()
        asyncio.run(_submit(settings.run_requests, requests))
        kill_times: list[tuple[float, int]] = []
        rng = random.Random(7)
        try:
            for _ in range(kills):
                time.sleep(rng.uniform(2.0, 6.0))
                assert victim.proc is not None
                kill_times.append((time.time(), victim.worker_pid))
                victim.stop(kill=True)
                victim.start()
            ids = [r["run_id"] for r in requests]
            records = asyncio.run(
                collect(
                    [settings.run_events, settings.run_results],
                    lambda seen: (
                        {r.key for r in seen if r.topic == settings.run_results}
                        >= {i.encode() for i in ids}
                    ),
                    timeout_s=900,
                )
            )
        finally:
            victim.stop()
            steady.stop()
        elapsed = time.time() - began
        logs = [p.read_text(errors="replace") for p in (steady.log_path, victim.log_path)]
    results = Counter(r.key.decode() for r in records if r.topic == settings.run_results and r.key)
    finals = {
        r.key.decode(): decode_record(r.value, {}).data
        for r in records
        if r.topic == settings.run_results and r.key
    }
    broken = {}
    for run_id in (r["run_id"] for r in requests):
        log = [
            to_domain(decode_record(r.value, {}))
            for r in records
            if r.topic == settings.run_events and r.key == run_id.encode()
        ]
        if problems := violations(log):
            broken[run_id] = problems
    twins = _uninterrupted(requests, settings)
    equal = sum(
        1
        for run_id, (genome, fitness) in twins.items()
        if run_id in finals
        and finals[run_id]["best"]
        and finals[run_id]["best"]["fitness"] == fitness
        and {k: v for k, v in finals[run_id]["best"]["genome"].items() if k != "wiring"} == genome
    )
    recovery = _recovery_times(records, settings, kill_times)
    relaunch = _relaunch_times(logs, records, settings, kill_times)
    writers: dict[str, set[str]] = {}
    for record in records:
        if record.topic == settings.run_events and record.key:
            source = decode_record(record.value, {}).source
            writers.setdefault(record.key.decode(), set()).add(source)
    resumed = sorted(run_id for run_id, pids in writers.items() if len(pids) > 1)
    duplicates = sum(n - 1 for n in results.values() if n > 1)
    lost = runs - len(results)
    return {
        "runs": runs,
        "kills": len(kill_times),
        "results": sum(results.values()),
        "duplicates": duplicates,
        "lost": lost,
        "invariant_violations": broken,
        "equal_to_uninterrupted": equal,
        "resumed_runs": len(resumed),
        "resumed_equal_to_twin": sum(
            1
            for run_id in resumed
            if run_id in finals
            and finals[run_id]["best"]
            and finals[run_id]["best"]["fitness"] == twins[run_id][1]
        ),
        "recovery_s": recovery,
        "relaunch_s": relaunch,
        "elapsed_s": round(elapsed, 1),
        "bars": [
            bar(
                f"{runs} results, 0 duplicates, 0 lost",
                f"{sum(results.values())} results, {duplicates} duplicates, {lost} lost",
                duplicates == 0 and lost == 0,
            ),
            bar("every run equal to its uninterrupted twin", f"{equal}/{runs}", equal == runs),
            bar(
                "event logs pass the invariant checker", f"{runs - len(broken)}/{runs}", not broken
            ),
            bar(
                "time from each kill until its runs' lost step is launched again",
                ", ".join(f"{t:.1f}s" for t in relaunch),
                None,
            ),
            bar(
                "time from each kill until its runs' next event (includes redoing the step)",
                ", ".join(f"{t:.1f}s" for t in recovery),
                None,
            ),
        ],
    }


def _recovery_times(
    records: list[Any], settings: Settings, kills: list[tuple[float, int]]
) -> list[float]:
    """Per kill: seconds until a run last touched by the killed pid gets its next event."""
    timeline = []
    for record in records:
        if record.topic != settings.run_events:
            continue
        event = decode_record(record.value, {})
        writer_pid = event.source.rsplit("/", 1)[-1]
        timeline.append((record.timestamp / 1000.0, record.key, writer_pid))
    timeline.sort()
    out = []
    for kill_time, killed in kills:
        orphans = {}
        for ts, key, writer in timeline:
            if ts <= kill_time:
                orphans[key] = writer
        victims = {k for k, w in orphans.items() if w == str(killed)}
        later = [ts for ts, key, _ in timeline if ts > kill_time and key in victims]
        if later:
            out.append(round(min(later) - kill_time, 2))
    return out


_LAUNCH = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\] .* run (\S+): launching ", re.M)


def _relaunch_times(
    logs: list[str], records: list[Any], settings: Settings, kills: list[tuple[float, int]]
) -> list[float]:
    """Per kill: seconds until a step of a run the kill orphaned is launched again."""
    launches = sorted(
        (datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S,%f").replace(tzinfo=UTC).timestamp(), m[2])
        for text in logs
        for m in _LAUNCH.finditer(text)
    )
    writes: list[tuple[float, str, str]] = []
    for record in records:
        if record.topic == settings.run_events and record.key:
            source = decode_record(record.value, {}).source
            writes.append((record.timestamp / 1000.0, record.key.decode(), source))
    writes.sort()
    out = []
    for kill_time, killed in kills:
        owner: dict[str, str] = {}
        for ts, run_id, source in writes:
            if ts <= kill_time:
                owner[run_id] = source.rsplit("/", 1)[-1]
        done = {
            r.key.decode()
            for r in records
            if r.topic == settings.run_results and r.key and r.timestamp / 1000.0 <= kill_time
        }
        orphans = {r for r, pid in owner.items() if pid == str(killed)} - done
        later = [ts for ts, run_id in launches if ts > kill_time and run_id in orphans]
        if later:
            out.append(round(min(later) - kill_time, 2))
    return out
