"""Responsiveness benchmark: request -> `run.accepted` latency while the pool is busy.

What it shows (issue 14's bar): a worker whose interpreter pool is saturated
by long runs still accepts new runs promptly. Small valid run requests are
offered at a fixed rate (20/s, then 100/s); each one's latency is the time
from its send to the CreateTime of its `run.accepted` on run-events. Beside
it, in the same run and on the same broker, a bare aiokafka consume->produce
relay (acks=all) gets the same offered rate; its latency is send to the
CreateTime of the relayed record. The bar: accept p99 <= 5x relay p99 at 20/s.

Both clocks are this machine's (the broker stamps CreateTime from the
producer's clock, which is the worker's or the relay's), so the figures are
comparable; the load average is in the result's environment.

Run: `thunderhelm bench stream [--quick]`; results in bench/results/stream.json.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.common import Options
from bench.dlq import create_topics
from bench.report import bar
from thunderhelm.schemas import events as ev
from thunderhelm.schemas.codec import encode_event
from thunderhelm.schemas.requests import RUN_REQUESTED
from thunderhelm.streams.clients.client import command_event
from thunderhelm.streams.devservices.worker_process import (
    BOOTSTRAP,
    WorkerProcess,
    collect,
    fresh_env,
)

RATES = (20, 100)
SECONDS = 10.0  # per rate
QUICK_SECONDS = 2.0
BUSY_RUNS = 3  # long runs that keep every interpreter busy throughout


def _command(data: dict[str, Any]) -> bytes:
    return encode_event(command_event(RUN_REQUESTED, data, None))


def busy_run(run_id: str, quick: bool) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "dataset": {"name": "spirals", "samples": 4000 if quick else 12000, "seed": 5},
        "ga": {"population": 8, "generations": 50, "seed": 1},
        "training": {"epochs": 20, "batch_size": 32},
        "search_space": {"max_levels": 2, "max_units": 3, "max_neurons": 32},
        "budget": {"timeout_s": 600},
    }


def probe_run(run_id: str) -> dict[str, Any]:
    """A request as a user sends it: the defaults on a bundled dataset.

    The held-out workload: nothing else keeps the pool busy, these requests
    saturate it themselves (each trains 8 candidates for 4 generations).
    """
    return {"run_id": run_id, "dataset": {"name": "digits", "seed": 1}}


def small_run(run_id: str) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "dataset": {"name": "spirals", "samples": 200, "seed": 1},
        "ga": {"population": 2, "generations": 1, "tournament_size": 2, "seed": 1},
        "training": {"epochs": 1, "batch_size": 32},
        "search_space": {"max_levels": 1, "max_units": 1, "max_neurons": 8},
        "budget": {"timeout_s": 600},
    }


async def offer(topic: str, values: list[tuple[str, bytes]], rate: float) -> dict[str, float]:
    """Produce `values` (key, value) at `rate` per second; return each key's send time."""
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", linger_ms=0)
    await producer.start()
    sent: dict[str, float] = {}
    try:
        began = time.time()
        acks = []
        for n, (key, value) in enumerate(values):
            delay = began + n / rate - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            sent[key] = time.time()
            acks.append(await producer.send(topic, value=value, key=key.encode()))
        await asyncio.gather(*acks)
    finally:
        await producer.stop()
    return sent


def percentiles(latencies_ms: list[float]) -> tuple[float, float]:
    if not latencies_ms:
        raise RuntimeError("no latency measured: nothing came through")
    if len(latencies_ms) < 2:
        return round(latencies_ms[0], 1), round(latencies_ms[0], 1)
    cuts = statistics.quantiles(latencies_ms, n=100, method="inclusive")
    return round(statistics.median(latencies_ms), 1), round(cuts[98], 1)


async def accept_latencies(
    worker: WorkerProcess,
    rate: float,
    seconds: float,
    make: Callable[[str], dict[str, Any]] = small_run,
) -> dict[str, list[float]]:
    """Each request's latency to its `run.accepted`, whole and per hop.

    `intake`: send to the CreateTime of the command the intake forwarded to
    run-commands; `agent`: from there to the CreateTime of `run.accepted`
    (the share of the run's owner: command reader, lane and handler).
    """
    s = worker.settings
    tag = uuid.uuid4().hex[:6]
    runs = [f"small-{rate}-{tag}-{n}" for n in range(int(rate * seconds))]
    sent = await offer(s.run_requests, [(r, _command(make(r))) for r in runs], rate)
    wanted = set(runs)

    def accepted(seen: list[Any]) -> bool:
        if any(b"run.rejected" in (r.value or b"") for r in seen):
            raise RuntimeError("a benchmark request was rejected; fix small_run()")
        return wanted <= {r.key.decode() for r in seen if b"run.accepted" in (r.value or b"")}

    seen = await collect([s.run_events], accepted, timeout_s=120, alive=worker.alive)
    stamps = {
        r.key.decode(): r.timestamp / 1000.0
        for r in seen
        if r.key and r.key.decode() in wanted and json.loads(r.value)["type"] == ev.RUN_ACCEPTED
    }

    def forwarded_all(commands: list[Any]) -> bool:
        return wanted <= {r.key.decode() for r in commands if r.key}

    commands = await collect([s.run_commands], forwarded_all, timeout_s=60)
    forwarded: dict[str, float] = {}
    for r in commands:
        key = r.key.decode() if r.key else ""
        if key in wanted and RUN_REQUESTED.encode() in (r.value or b""):
            forwarded.setdefault(key, r.timestamp / 1000.0)
    hops: dict[str, list[float]] = {"accept": [], "intake": [], "agent": []}
    for key in runs:
        if key in stamps:
            hops["accept"].append(max(0.0, stamps[key] - sent[key]) * 1000.0)
        if key in stamps and key in forwarded:
            hops["intake"].append(max(0.0, forwarded[key] - sent[key]) * 1000.0)
            hops["agent"].append(max(0.0, stamps[key] - forwarded[key]) * 1000.0)
    return hops


async def relay_latencies(rate: float, seconds: float) -> list[float]:
    """The baseline: consume a record, produce it on with acks=all, as each arrives."""
    tag = uuid.uuid4().hex[:8]
    source, sink = f"bench-relay-{tag}.in", f"bench-relay-{tag}.out"
    await create_topics([source, sink], 2)
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=BOOTSTRAP,
        group_id=f"bench-relay-{tag}",
        auto_offset_reset="earliest",
    )
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", linger_ms=0)
    await consumer.start()
    await producer.start()
    n = int(rate * seconds)

    async def relay() -> None:
        moved = 0
        while moved < n:
            batch = await consumer.getmany(timeout_ms=100)
            acks = [
                await producer.send(sink, value=r.value, key=r.key)
                for part in batch.values()
                for r in part
            ]
            await asyncio.gather(*acks)
            moved += len(acks)

    try:
        await asyncio.sleep(1.0)  # let the consumer join before the clock starts
        task = asyncio.create_task(relay())
        keys = [f"relay-{n}" for n in range(n)]
        sent = await offer(source, [(k, b"x" * 200) for k in keys], rate)
        await asyncio.wait_for(task, timeout=60)
    finally:
        await consumer.stop()
        await producer.stop()
    out = await collect([sink], lambda seen: len(seen) >= n, timeout_s=60)
    return [max(0.0, r.timestamp / 1000.0 - sent[r.key.decode()]) * 1000.0 for r in out if r.key]


def _busy(worker: WorkerProcess, quick: bool) -> Callable[[], None]:
    async def submit() -> None:
        tag = uuid.uuid4().hex[:6]
        runs = [f"busy-{tag}-{n}" for n in range(BUSY_RUNS)]
        await offer(
            worker.settings.run_requests, [(r, _command(busy_run(r, quick))) for r in runs], 50
        )

        def started(seen: list[Any]) -> bool:
            return sum(b"run.started" in (r.value or b"") for r in seen) >= BUSY_RUNS

        await collect([worker.settings.run_events], started, timeout_s=120, alive=worker.alive)
        await asyncio.sleep(2.0)  # the first generations are training now

    return lambda: asyncio.run(submit())


def measure(
    pool: int,
    seconds: float,
    quick: bool,
    rates: tuple[int, ...] = RATES,
    *,
    probe: bool = False,
    **settings: str,
) -> dict[str, Any]:
    """Latencies at each of `rates` on one worker with `pool` interpreters kept busy.

    `probe`: the offered requests are `probe_run`s that saturate the pool
    themselves, with no long runs beforehand.
    """
    result: dict[str, Any] = {"pool_size": pool, **settings}
    with tempfile.TemporaryDirectory() as tmp:
        env = fresh_env(
            Path(tmp), THUNDERHELM_POOL_SIZE=str(pool), OTEL_TRACES_EXPORTER="none", **settings
        )
        worker = WorkerProcess(env, Path(tmp) / "worker.log")
        worker.start()
        try:
            if not probe:
                _busy(worker, quick)()
            for rate in rates:
                make = probe_run if probe else small_run
                hops = asyncio.run(accept_latencies(worker, rate, seconds, make))
                relay = asyncio.run(relay_latencies(rate, seconds))
                for name in ("accept", "intake", "agent"):
                    p50, p99 = percentiles(hops[name])
                    result[f"{name}_p50_ms_{rate}rps"] = p50
                    result[f"{name}_p99_ms_{rate}rps"] = p99
                r50, r99 = percentiles(relay)
                result[f"relay_p50_ms_{rate}rps"] = r50
                result[f"relay_p99_ms_{rate}rps"] = r99
                result[f"accepted_{rate}rps"] = len(hops["accept"])
            result["worker_alive"] = worker.alive()
        finally:
            worker.stop()
    a99, r99 = result["accept_p99_ms_20rps"], result["relay_p99_ms_20rps"]
    result["accept_over_relay_p99_20rps"] = round(a99 / r99 if r99 > 0 else float("inf"), 2)
    return result


def run(opts: Options) -> dict[str, Any]:
    seconds = QUICK_SECONDS if opts.quick else SECONDS
    cores = os.cpu_count() or 1
    pool = opts.pool_size or cores  # the worker's default: one interpreter per core
    result: dict[str, Any] = {"rates": list(RATES), "seconds_per_rate": seconds}
    result.update(measure(pool, seconds, opts.quick))
    # Side by side in the same run, at 20/s: the same worker that never holds
    # an interpreter back from training (streams/worker/commands/control_pressure.py),
    # and one whose pool threads are only niced, not SCHED_IDLE.
    plain = measure(pool, seconds, opts.quick, (20,), THUNDERHELM_CONTROL_LAG_MS="0")
    result["without_holdback"] = plain
    niced = measure(pool, seconds, opts.quick, (20,), THUNDERHELM_POOL_PRIORITY="low")
    result["pool_priority_low"] = niced
    # The held-out workload: default requests that saturate the pool themselves.
    probe = measure(pool, seconds, opts.quick, (20,), probe=True)
    result["probe"] = probe
    result["probe_accept_over_relay_p99_20rps"] = probe["accept_over_relay_p99_20rps"]
    a99, r99 = result["accept_p99_ms_20rps"], result["relay_p99_ms_20rps"]
    ratio = result["accept_over_relay_p99_20rps"]
    result["summary"] = (
        f"One worker, pool of {pool} (threads under SCHED_IDLE, the default "
        f"THUNDERHELM_POOL_PRIORITY=idle), saturated by "
        f"{BUSY_RUNS} long runs; small valid runs offered at each rate for {seconds:.0f} s, "
        "each of which the worker also trains. Latency: send time to the CreateTime of the "
        "run's `run.accepted`, split at the CreateTime of the command the intake forwarded "
        "(intake: request to run-commands; agent: run-commands to run.accepted, the command "
        "reader and handler on the run's owner); the relay's: "
        "send time to the CreateTime of the relayed record (aiokafka consume -> produce with "
        "acks=all, in this process, same broker, same rate). `without_holdback`: the same "
        "worker with THUNDERHELM_CONTROL_LAG_MS=0 (every interpreter trains whatever the "
        "readers' lag), and `pool_priority_low`: the same worker with "
        "THUNDERHELM_POOL_PRIORITY=low (pool threads at nice +10, not SCHED_IDLE), "
        "both at 20/s in the same run. `probe`: the held-out workload, requests with every "
        "setting at its default on digits, offered at 20/s to a worker with nothing else to do, "
        "so that they saturate its pool themselves."
    )
    q99, qr99 = probe["accept_p99_ms_20rps"], probe["relay_p99_ms_20rps"]
    result["bars"] = [
        bar(
            "accepted p99 <= 5x the bare relay's p99 at 20 requests/s, pool saturated",
            f"{a99} ms vs {r99} ms ({ratio:.1f}x)",
            ratio <= 5.0,
        ),
        bar(
            "held-out probe: default requests (digits, every setting at its default) at "
            "20/s that saturate the pool themselves: accepted p99 <= 5x the relay's",
            f"{q99} ms vs {qr99} ms ({probe['accept_over_relay_p99_20rps']:.1f}x)",
            probe["accept_over_relay_p99_20rps"] <= 5.0,
        ),
        bar(
            "where the tail is at 20 requests/s (informational)",
            f"intake p99 {result['intake_p99_ms_20rps']} ms, "
            f"run's owner (command reader and handler) p99 {result['agent_p99_ms_20rps']} ms",
            None,
        ),
        bar(
            "the same at 100 requests/s (informational)",
            f"{result['accept_p99_ms_100rps']} ms vs {result['relay_p99_ms_100rps']} ms",
            None,
        ),
    ]
    p99, pr99 = plain["accept_p99_ms_20rps"], plain["relay_p99_ms_20rps"]
    result["bars"].append(
        bar(
            "the same without holding an interpreter back (informational)",
            f"{p99} ms vs {pr99} ms ({plain['accept_over_relay_p99_20rps']:.1f}x)",
            None,
        )
    )
    n99, nr99 = niced["accept_p99_ms_20rps"], niced["relay_p99_ms_20rps"]
    result["bars"].append(
        bar(
            "the same with the pool only niced, not SCHED_IDLE (informational)",
            f"{n99} ms vs {nr99} ms ({niced['accept_over_relay_p99_20rps']:.1f}x)",
            None,
        )
    )
    return result
