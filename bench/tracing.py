"""Tracing overhead: run throughput of a worker exporting every span vs. exporting none.

The bar of the tracing issue: with tracing on (every record's process/send
spans, saga decisions, generations and candidate trainings exported over
OTLP to Jaeger) a worker finishes runs at most 5 % slower than with
`OTEL_TRACES_EXPORTER=none`. Both modes run the same workload in one
invocation: a fresh worker per round, one warm-up run, then a batch of small
NAS runs produced at once. Rounds go on, off, off, on, on, off so that a drift
of the machine's load weighs on both modes alike, and each mode's figure is
the median of its rounds, so one disturbed round does not decide it.

Two figures per round. Wall throughput = runs / (broker CreateTime of the
last result record - CreateTime of the first request record), so worker
start-up and the client's speed are not in it; on a shared machine it moves
with everyone else's load. CPU per run = the worker process's user+system
CPU time (all its threads and pool interpreters, from /proc) over the batch,
divided by the runs: the cost that bounds throughput once the worker is
CPU-bound, and far less disturbed by other processes. `overhead_pct` comes
from CPU per run; `wall_overhead_pct` from wall throughput.

Run: `thunderhelm bench tracing [--quick]` (or `.venv/bin/python -m bench tracing`);
results go to `bench/results/tracing.json` and `bench/RESULTS.md`.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from bench.common import Options
from bench.report import bar
from thunderhelm.streams.devservices.worker_process import (
    BOOTSTRAP,
    WorkerProcess,
    collect,
    fresh_env,
)

RUNS = 32
QUICK_RUNS = 3
ROUNDS = ("on", "off", "off", "on", "on", "off", "off", "on", "on", "off")
QUICK_ROUNDS = ("on", "off")
GOAL_PCT = 5.0
JAEGER = "http://127.0.0.1:16686"


def workload(run_id: str) -> dict[str, Any]:
    """A small run: three generations of four candidates, so the edge work shows."""
    return {
        "run_id": run_id,
        "dataset": {"name": "spirals", "samples": 300, "classes": 3, "seed": 7},
        "ga": {"population": 4, "generations": 3, "tournament_size": 2, "elite": 1, "seed": 42},
        "training": {"epochs": 2, "batch_size": 32},
        "search_space": {"max_levels": 2, "max_units": 2, "max_neurons": 16},
        "budget": {"timeout_s": 600},
    }


def _record(data: dict[str, Any]) -> bytes:
    return json.dumps(
        {
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "source": "bench/tracing",
            "type": "thunderhelm.run.requested",
            "subject": data["run_id"],
            "datacontenttype": "application/json",
            "data": data,
        }
    ).encode()


async def _produce(topic: str, run_ids: list[str]) -> int:
    """Produce one request per run id; return the first record's CreateTime (ms)."""
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value=_record(workload(r)), key=r.encode()) for r in run_ids
        ]
        metas = [await f for f in futures]
    finally:
        await producer.stop()
    return min(int(m.timestamp) for m in metas)


async def _batch(worker: WorkerProcess, n: int) -> tuple[float, list[str]]:
    """Throughput (runs/s) of `n` runs produced at once; the trace ids of their results."""
    s = worker.settings
    tag = uuid.uuid4().hex[:6]
    run_ids = [f"bench-{tag}-{i}" for i in range(n)]
    first_ms = await _produce(s.run_requests, run_ids)
    wanted = {r.encode() for r in run_ids}
    records = await collect(
        [s.run_results],
        lambda seen: wanted <= {r.key for r in seen},
        timeout_s=600,
        alive=worker.alive,
    )
    results = [r for r in records if r.key in wanted]
    if len(results) < n:
        raise RuntimeError(f"only {len(results)} of {n} runs finished: {worker.log_path}")
    last_ms = max(r.timestamp for r in results)
    trace_ids = []
    for r in results:
        tp = dict(r.headers).get("traceparent", b"").decode()
        if tp.count("-") == 3:
            trace_ids.append(tp.split("-")[1])
    return n / max(1e-3, (last_ms - first_ms) / 1000), trace_ids


def _spans_in_jaeger(trace_id: str, timeout_s: float = 20.0) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{JAEGER}/api/traces/{trace_id}", timeout=5) as resp:
                body = json.load(resp)
            spans = [sp for tr in body.get("data") or [] for sp in tr["spans"]]
            if any(sp["operationName"].startswith("send ") for sp in spans):
                return len(spans)
        except OSError:
            pass
        time.sleep(0.5)
    return 0


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, all threads (Linux /proc)."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _round(mode: str, runs: int, tmp: Path) -> dict[str, Any]:
    env = fresh_env(
        tmp,
        OTEL_TRACES_EXPORTER="otlp" if mode == "on" else "none",
        OTEL_METRICS_EXPORTER="none",
    )
    worker = WorkerProcess(env, tmp / f"worker-{mode}.log")
    await asyncio.to_thread(worker.start)
    try:
        await _batch(worker, 1)  # warm: pool interpreters, kernel import, first fetches
        assert worker.proc is not None
        cpu_before = _cpu_s(worker.worker_pid)
        rate, trace_ids = await _batch(worker, runs)
        cpu = _cpu_s(worker.worker_pid) - cpu_before
    finally:
        worker.stop()
    log = worker.log_path.read_text(errors="replace")
    spans = 0
    if mode == "on" and trace_ids:
        spans = await asyncio.to_thread(_spans_in_jaeger, trace_ids[-1])
    return {
        "mode": mode,
        "runs_per_s": round(rate, 3),
        "cpu_ms_per_run": round(cpu * 1000 / runs, 2),
        "spans_of_one_run": spans,
        "resumes_by_reconciler": log.count("driving resume"),
    }


def run(opts: Options) -> dict[str, Any]:
    """The whole benchmark, for the `thunderhelm bench` dispatcher (which writes the files)."""
    runs = QUICK_RUNS if opts.quick else RUNS
    rounds = QUICK_ROUNDS if opts.quick else ROUNDS
    measured = []
    with tempfile.TemporaryDirectory(prefix="thunderhelm-bench-tracing-") as tmp:
        for index, mode in enumerate(rounds):
            folder = Path(tmp) / f"round-{index}"
            folder.mkdir()
            measured.append(asyncio.run(_round(mode, runs, folder)))
            print(
                f"  round {index} tracing {mode}: {measured[-1]['runs_per_s']} runs/s", flush=True
            )
    on = [m["runs_per_s"] for m in measured if m["mode"] == "on"]
    off = [m["runs_per_s"] for m in measured if m["mode"] == "off"]
    rate_on, rate_off = statistics.median(on), statistics.median(off)
    wall_overhead = round((rate_off / rate_on - 1.0) * 100.0, 2)
    cpu_on = statistics.median(m["cpu_ms_per_run"] for m in measured if m["mode"] == "on")
    cpu_off = statistics.median(m["cpu_ms_per_run"] for m in measured if m["mode"] == "off")
    overhead = round((cpu_on / cpu_off - 1.0) * 100.0, 2)
    spans = max((m["spans_of_one_run"] for m in measured), default=0)
    result: dict[str, Any] = {
        "quick": opts.quick,
        "overhead_pct": overhead,
        "overhead_basis": "worker CPU time per run (median of rounds), on vs off",
        "cpu_ms_per_run_tracing_on": cpu_on,
        "cpu_ms_per_run_tracing_off": cpu_off,
        "wall_overhead_pct": wall_overhead,
        "runs_per_s_tracing_on": round(rate_on, 3),
        "runs_per_s_tracing_off": round(rate_off, 3),
        "runs_per_round": runs,
        "rounds": measured,
        "spans_per_run_exported": spans,
        "workload": "spirals 300 samples, population 4, 3 generations, 2 epochs",
        "off_means": "OTEL_TRACES_EXPORTER=none (spans created, none exported)",
        "rate_clock": "broker CreateTime of the first request and the last result",
    }
    result["bars"] = [
        bar(
            f"tracing on <= {GOAL_PCT:g} % slower than exporting disabled (CPU per run)",
            f"{overhead:+.2f} % ({cpu_on:.1f} vs {cpu_off:.1f} CPU ms per run)",
            overhead <= GOAL_PCT,
        ),
        bar(
            "same, wall-clock throughput (informational: shared machine)",
            f"{wall_overhead:+.2f} % ({rate_on:.2f} vs {rate_off:.2f} runs/s)",
            None,
        ),
        bar("every span of a run reaches Jaeger", f"{spans} spans in one run's trace", spans > 0),
    ]
    result["summary"] = (
        f"Rounds (fresh worker each, order {', '.join(rounds)}): "
        + ", ".join(
            f"{m['mode']} {m['runs_per_s']} runs/s {m['cpu_ms_per_run']} CPU ms/run"
            for m in measured
        )
        + f". Each round: one warm-up run, then {runs} runs produced at once "
        f"({result['workload']}); throughput from the broker CreateTime of the first "
        "request to the last result. `overhead_pct` = median CPU per run on / off - 1; "
        "`wall_overhead_pct` = median rate off / median rate on - 1."
    )
    return result
