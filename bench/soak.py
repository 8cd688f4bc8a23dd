"""Soak benchmark: thousands of tiny runs through one supervised worker.

A native crash in the pool, or memory that grows with every run, shows only
after many runs; a handful of test runs never finds either. This sends 5,000
runs (a few hundred with --quick) to one `thunderhelm worker` (the supervisor
and its pool-holding child, a pool of 2), in rounds of 32 that are each
awaited on run-results before the next is sent, and records:

- runs: results with status succeeded (and any other status, counted apart);
- crashes: deaths of the worker process the supervisor logged (restarted);
- restarts: worker processes started after the first;
- rss_start_mb / rss_end_mb: VmRSS of the pool-holding process after the
  first round (warm) and after the last, and rss_growth_pct between them,
  with samples along the way;
- wall time and throughput.

Trace export is off, so the figures are the worker's and the pool's alone.
"""

from __future__ import annotations

import asyncio
import re
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.common import Options
from bench.report import bar
from thunderhelm.schemas.codec import decode_record, encode_event
from thunderhelm.streams.clients.client import command_event
from thunderhelm.streams.config.settings import Settings
from thunderhelm.streams.devservices.worker_process import BOOTSTRAP, WorkerProcess, fresh_env
from thunderhelm.streams.worker.supervisor import started_pids

RUNS = 5_000
QUICK_RUNS = 320
ROUND = 32
POOL_SIZE = 2
ROUND_TIMEOUT_S = 600.0
SAMPLE_EVERY = 8  # rounds between RSS samples
MAX_RSS_GROWTH_PCT = 10.0
# A death the supervisor restarted (its stop-time line says "supervisor stopped").
_DEATH = re.compile(
    r"^.*worker process \d+ (?:killed by|exited with code) .*restarting in.*$", re.M
)
_CRASH_CONTEXT = re.compile(r"^(?:Fatal Python error.*|.*MemoryError.*)$", re.M)


def _request(index: int) -> dict[str, Any]:
    return {
        "run_id": f"soak-{index:05d}-{uuid.uuid4().hex[:6]}",
        "dataset": {"name": "spirals", "samples": 120, "classes": 2, "seed": index % 97},
        "ga": {
            "population": 2,
            "generations": 1,
            "tournament_size": 2,
            "elite": 1,
            "seed": index,
        },
        "training": {"epochs": 1, "batch_size": 32},
        "search_space": {"max_levels": 1, "max_units": 1, "max_neurons": 8},
        "budget": {"timeout_s": 300},
    }


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise OSError(f"VmRSS not found for process {pid}")


class _Soak:
    """The rounds, a results consumer kept open across them, and the samples."""

    def __init__(self, worker: WorkerProcess, total: int) -> None:
        self.worker = worker
        self.settings: Settings = worker.settings
        self.total = total
        self.statuses: dict[str, str] = {}
        self.submitted = 0
        self.samples: list[dict[str, Any]] = []
        self.aborted: str | None = None
        self.began = time.monotonic()
        self.drive_s = 0.0

    def pool_pid(self) -> int:
        return self.worker.worker_pid

    def sample(self) -> dict[str, Any]:
        pid = self.pool_pid()
        point = {
            "runs": len(self.statuses),
            "pid": pid,
            "rss_mb": round(_rss_mb(pid), 1),
            "t_s": round(time.monotonic() - self.began, 1),
        }
        self.samples.append(point)
        return point

    async def drive(self) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", linger_ms=5)
        consumer = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP, enable_auto_commit=False)
        await producer.start()
        await consumer.start()
        self.began = time.monotonic()
        try:
            topic = self.settings.run_results
            while not consumer.partitions_for_topic(topic):
                await consumer._client.force_metadata_update()
                await asyncio.sleep(0.2)
            parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
            rounds = -(-self.total // ROUND)
            for number in range(rounds):
                size = min(ROUND, self.total - self.submitted)
                ids = await self._submit(producer, size)
                if not await self._await_results(consumer, ids):
                    return
                if number == 0 or (number + 1) % SAMPLE_EVERY == 0 or number == rounds - 1:
                    point = self.sample()
                    print(
                        f"  soak: {point['runs']} results, worker {point['pid']} "
                        f"rss {point['rss_mb']} MiB, {point['t_s']} s",
                        flush=True,
                    )
        finally:
            self.drive_s = time.monotonic() - self.began
            await consumer.stop()
            await producer.stop()

    async def _submit(self, producer: AIOKafkaProducer, size: int) -> set[str]:
        requests = [_request(self.submitted + i) for i in range(size)]
        self.submitted += size
        sent = [
            await producer.send(
                self.settings.run_requests,
                value=encode_event(command_event("thunderhelm.run.requested", r, None)),
                key=r["run_id"].encode(),
            )
            for r in requests
        ]
        await asyncio.gather(*sent)
        return {r["run_id"] for r in requests}

    async def _await_results(self, consumer: AIOKafkaConsumer, ids: set[str]) -> bool:
        pending = set(ids)
        deadline = time.monotonic() + ROUND_TIMEOUT_S
        while pending:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    if record.key is None:
                        continue
                    run_id = record.key.decode()
                    data = decode_record(record.value, {}).data
                    status = data.get("status") if isinstance(data, dict) else None
                    self.statuses.setdefault(run_id, str(status))
                    pending.discard(run_id)
            if not self.worker.alive():
                self.aborted = "the supervisor exited"
                return False
            if time.monotonic() > deadline:
                self.aborted = (
                    f"{len(pending)} runs of a round had no result in {ROUND_TIMEOUT_S} s"
                )
                return False
        return True


def run(opts: Options) -> dict[str, Any]:
    total = QUICK_RUNS if opts.quick else RUNS
    pool_size = opts.pool_size or POOL_SIZE
    with tempfile.TemporaryDirectory() as tmp:
        env = fresh_env(
            Path(tmp),
            THUNDERHELM_POOL_SIZE=str(pool_size),
            THUNDERHELM_SESSION_TIMEOUT_S="6",
            OTEL_TRACES_EXPORTER="none",
            OTEL_METRICS_EXPORTER="none",
        )
        worker = WorkerProcess(env, Path(tmp) / "worker.log")
        began = time.perf_counter()
        worker.start()
        soak = _Soak(worker, total)
        try:
            asyncio.run(soak.drive())
            log = worker.log_path.read_text(errors="replace")
        finally:
            worker.stop()
        wall = time.perf_counter() - began
    return _result(soak, log, total, pool_size, wall, opts.quick)


def _result(
    soak: _Soak, log: str, total: int, pool_size: int, wall: float, quick: bool
) -> dict[str, Any]:
    statuses = Counter(soak.statuses.values())
    runs = statuses.get("succeeded", 0)
    deaths = _DEATH.findall(log)
    pids = started_pids(log)
    first = soak.samples[0] if soak.samples else None
    last = soak.samples[-1] if soak.samples else None
    rss_start = first["rss_mb"] if first else 0.0
    rss_end = last["rss_mb"] if last else 0.0
    growth = round(100.0 * (rss_end - rss_start) / rss_start, 2) if rss_start else 0.0
    same_process = bool(first and last and first["pid"] == last["pid"])
    return {
        "quick": quick,
        "runs": runs,
        "submitted": soak.submitted,
        "results": len(soak.statuses),
        "other_statuses": {k: v for k, v in statuses.items() if k != "succeeded"},
        "lost": soak.submitted - len(soak.statuses),
        "crashes": len(deaths),
        "restarts": max(len(pids) - 1, 0),
        "rss_start_mb": rss_start,
        "rss_end_mb": rss_end,
        "rss_growth_pct": growth,
        "rss_same_process": same_process,
        "wall_s": round(wall, 1),
        "soak_s": round(soak.drive_s, 1),  # the rounds alone, without the worker's start
        "runs_per_s": round(len(soak.statuses) / soak.drive_s, 2) if soak.drive_s else 0.0,
        "python": sys.version.split()[0],
        "pool_size": pool_size,
        "round_size": ROUND,
        "aborted": soak.aborted or "",
        "worker_pids": pids,
        "rss_samples": soak.samples,
        "crash_log": (deaths + _CRASH_CONTEXT.findall(log))[:40],
        "bars": [
            bar(f"runs succeeded >= {total}", str(runs), runs >= total),
            bar("worker crashes == 0", str(len(deaths)), not deaths),
            bar(
                f"RSS growth of the pool process <= {MAX_RSS_GROWTH_PCT:g} %",
                f"{growth} % ({rss_start} -> {rss_end} MiB"
                + ("" if same_process else ", across a restart")
                + ")",
                growth <= MAX_RSS_GROWTH_PCT,
            ),
            bar(
                "wall time, throughput",
                f"{wall:.0f} s, {len(soak.statuses) / soak.drive_s:.1f} runs/s"
                if soak.drive_s
                else "-",
                None,
            ),
        ],
    }
