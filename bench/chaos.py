"""Chaos benchmark: runs in flight while their broker, Jaeger, artifact folder or a worker fail.

Every scenario has its own small runs on a private Kafka (its own ports and
state folder: the broker the tests and other benchmarks use is never
touched), and injects its fault once the first generation of a run is on
the log:

* broker: the broker is stopped for 30 s and started again;
* jaeger: a private Jaeger receives the worker's spans and is stopped for
  the rest of the runs; the worker's memory is sampled every half second,
  and its log must say so once;
* artifacts: the artifact folder is replaced by a file (this machine's tests
  run as root, which permission bits do not stop): a run that ends while it
  is there fails with an `ArtifactWriteError` reason; the folder is then put
  back and one more run must succeed;
* sigstop: one of two workers is paused with SIGSTOP for longer than the
  consumer session timeout, then resumed; its partitions move to the other.

For each scenario, counted on the private topics afterwards: one terminal
event and one result per run (none lost, none twice), the event-log
invariants (`streams/domain/invariants.py`), and how long recovery took:
from the end of the fault to the next event written for a run.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from bench.common import Options, digits_run
from bench.report import bar
from thunderhelm.schemas import events as ev
from thunderhelm.schemas.codec import decode_record, encode_event
from thunderhelm.streams.clients.client import command_event
from thunderhelm.streams.devservices import commands
from thunderhelm.streams.devservices.commands import ServicesSettings
from thunderhelm.streams.devservices.processes import port_in_use
from thunderhelm.streams.devservices.worker_process import WorkerProcess, collect, fresh_env
from thunderhelm.streams.domain.invariants import violations
from thunderhelm.streams.wire.events import to_domain

__all__ = ["run"]

SESSION_TIMEOUT_S = 6.0
BROKER_DOWN_S = 30.0
PAUSE_S = 2.5 * SESSION_TIMEOUT_S  # longer than the session timeout: the group moves on
RESULT_TIMEOUT_S = 900.0
OUTAGE_NOTICE = "cannot export telemetry to"

Records = list[Any]


def _free_ports(n: int) -> list[int]:
    rng = random.Random()
    ports: list[int] = []
    while len(ports) < n:
        port = rng.randrange(20000, 32000)
        if port not in ports and not port_in_use("127.0.0.1", port):
            ports.append(port)
    return ports


@contextmanager
def _private_services(state: Path, *, jaeger: bool) -> Iterator[ServicesSettings]:
    ports = _free_ports(7)
    settings = ServicesSettings(
        cache_dir=ServicesSettings.from_env().cache_dir,
        state_dir=state,
        kafka_port=ports[0],
        kafka_controller_port=ports[1],
        kafka_heap_max="384m",
        jaeger_otlp_grpc_port=ports[2],
        jaeger_otlp_http_port=ports[3],
        jaeger_query_port=ports[4],
        jaeger_query_grpc_port=ports[5],
        jaeger_metrics_port=ports[6],
    )
    commands.start(settings, jaeger=jaeger)
    try:
        yield settings
    finally:
        commands.stop(settings, jaeger=jaeger)


def _request(tag: str, index: int, quick: bool) -> dict[str, Any]:
    return digits_run(f"chaos-{tag}", index, quick, seed=300 + index, timeout_s=RESULT_TIMEOUT_S)


async def _submit(bootstrap: str, topic: str, requests: list[dict[str, Any]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for request in requests:
            value = encode_event(command_event("thunderhelm.run.requested", request, None))
            await producer.send_and_wait(topic, value=value, key=request["run_id"].encode())
    finally:
        await producer.stop()


class Cluster:
    """Workers of one scenario on its private broker, and the reads of its topics."""

    def __init__(self, root: Path, services: ServicesSettings, workers: int, **env: str) -> None:
        self.bootstrap = services.bootstrap_servers
        self.env = fresh_env(
            root,
            THUNDERHELM_BOOTSTRAP_SERVERS=self.bootstrap,
            THUNDERHELM_POOL_SIZE="1",
            THUNDERHELM_SESSION_TIMEOUT_S=str(SESSION_TIMEOUT_S),
            **{"OTEL_TRACES_EXPORTER": "none", **env},
        )
        self.workers = [WorkerProcess(self.env, root / f"worker-{i}.log") for i in range(workers)]
        self.settings = self.workers[0].settings

    def start(self) -> None:
        for worker in self.workers:
            worker.start()

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()

    def submit(self, requests: list[dict[str, Any]]) -> None:
        asyncio.run(_submit(self.bootstrap, self.settings.run_requests, requests))

    def read(self, until: Callable[[Records], bool], timeout_s: float) -> Records:
        topics = [self.settings.run_events, self.settings.run_results]
        return asyncio.run(collect(topics, until, timeout_s=timeout_s, bootstrap=self.bootstrap))

    def first_generation(self) -> Records:
        events = self.settings.run_events
        return self.read(
            lambda seen: any(
                r.topic == events and decode_record(r.value, {}).type == ev.GENERATION_COMPLETED
                for r in seen
            ),
            RESULT_TIMEOUT_S,
        )

    def results_of(self, run_ids: list[str]) -> Records:
        results, wanted = self.settings.run_results, {i.encode() for i in run_ids}
        return self.read(
            lambda seen: {r.key for r in seen if r.topic == results} >= wanted, RESULT_TIMEOUT_S
        )


def _outcome(cluster: Cluster, records: Records, run_ids: list[str]) -> dict[str, Any]:
    """One terminal event and one result per run, the invariants, the statuses."""
    s = cluster.settings
    results = Counter(r.key.decode() for r in records if r.topic == s.run_results and r.key)
    statuses = Counter(
        decode_record(r.value, {}).data["status"] for r in records if r.topic == s.run_results
    )
    terminals: Counter[str] = Counter()
    broken: dict[str, list[str]] = {}
    for run_id in run_ids:
        log = [
            to_domain(decode_record(r.value, {}))
            for r in records
            if r.topic == s.run_events and r.key == run_id.encode()
        ]
        terminals[run_id] = sum(1 for e in log if e.type in ev.TERMINAL_TYPES)
        if problems := violations(log):
            # Who wrote what, in log order: what a reader of the figures needs first.
            writes = [
                f"#{r.offset} {decode_record(r.value, {}).type.rsplit('.', 1)[-1]} "
                f"by {decode_record(r.value, {}).source.rsplit('/', 1)[-1]}"
                for r in records
                if r.topic == s.run_events and r.key == run_id.encode()
            ]
            broken[run_id] = [*problems, "log: " + ", ".join(writes)]
    once = sum(1 for i in run_ids if results[i] == 1 and terminals[i] == 1)
    return {
        "runs": len(run_ids),
        "ended_once": once,
        "lost": sum(1 for i in run_ids if results[i] == 0),
        "duplicates": sum(max(0, results[i] - 1) + max(0, terminals[i] - 1) for i in run_ids),
        "statuses": dict(statuses),
        "invariant_violations": broken,
    }


def _next_event_after(cluster: Cluster, records: Records, moment: float) -> float | None:
    """Seconds from `moment` to the first run-events record written after it."""
    stamps = [
        r.timestamp / 1000.0
        for r in records
        if r.topic == cluster.settings.run_events and r.timestamp / 1000.0 > moment
    ]
    return round(min(stamps) - moment, 2) if stamps else None


def _broker(root: Path, quick: bool) -> dict[str, Any]:
    with _private_services(root / "services", jaeger=False) as services:
        cluster = Cluster(root, services, workers=1)
        requests = [_request("broker", i, quick) for i in range(2 if quick else 4)]
        cluster.start()
        try:
            cluster.submit(requests)
            cluster.first_generation()
            commands.stop(services, jaeger=False)
            down = 5.0 if quick else BROKER_DOWN_S
            time.sleep(down)
            commands.start(services, jaeger=False)
            back = time.time()
            records = cluster.results_of([r["run_id"] for r in requests])
            alive = all(w.alive() for w in cluster.workers)
        finally:
            cluster.stop()
    out = _outcome(cluster, records, [r["run_id"] for r in requests])
    return {
        **out,
        "down_s": down,
        "recovery_s": _next_event_after(cluster, records, back),
        "worker_alive": alive,
    }


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class RssSampler:
    """The worker's resident memory every half second, from a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            rss = _rss_mb(self.pid)
            if rss is not None:
                self.samples.append((time.time(), rss))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _jaeger(root: Path, quick: bool) -> dict[str, Any]:
    with _private_services(root / "services", jaeger=True) as services:
        cluster = Cluster(
            root,
            services,
            workers=1,
            OTEL_TRACES_EXPORTER="otlp",
            OTEL_EXPORTER_OTLP_ENDPOINT=services.otlp_http_endpoint,
        )
        requests = [_request("jaeger", i, quick) for i in range(2 if quick else 6)]
        cluster.start()
        try:
            pid = cluster.workers[0].worker_pid
            with RssSampler(pid) as rss:
                cluster.submit(requests)
                cluster.first_generation()
                commands.stop(services, kafka=False, jaeger=True)
                stopped = time.time()
                records = cluster.results_of([r["run_id"] for r in requests])
                time.sleep(2.0)  # a last export attempt or two while it is still down
        finally:
            cluster.stop()
    log = cluster.workers[0].log_path.read_text(errors="replace")
    before = [mb for t, mb in rss.samples if t <= stopped]
    after = [mb for t, mb in rss.samples if t > stopped]
    at_stop = before[-1] if before else None
    return {
        **_outcome(cluster, records, [r["run_id"] for r in requests]),
        "outage_notices": log.count(OUTAGE_NOTICE),
        "rss_mb_at_stop": None if at_stop is None else round(at_stop, 1),
        "rss_mb_max_after": round(max(after), 1) if after else None,
        "rss_mb_last": round(after[-1], 1) if after else None,
        "down_for_s": round(time.time() - stopped, 1),
    }


def _artifacts(root: Path, quick: bool) -> dict[str, Any]:
    with _private_services(root / "services", jaeger=False) as services:
        cluster = Cluster(root, services, workers=1)
        folder = Path(cluster.env["THUNDERHELM_ARTIFACT_DIR"])
        requests = [_request("artifacts", i, quick) for i in range(2 if quick else 4)]
        cluster.start()
        try:
            cluster.submit(requests)
            cluster.first_generation()
            folder.mkdir(parents=True, exist_ok=True)
            aside = folder.with_name(folder.name + ".aside")
            folder.rename(aside)
            folder.write_text("not a folder\n")  # every write under it fails
            records = cluster.results_of([r["run_id"] for r in requests])
            folder.unlink()
            aside.rename(folder)
            restored = time.time()
            after = _request("artifacts-after", 99, quick)
            cluster.submit([after])
            records = cluster.results_of([r["run_id"] for r in [*requests, after]])
        finally:
            cluster.stop()
    ids = [r["run_id"] for r in requests]
    s = cluster.settings
    reasons = Counter(
        (decode_record(r.value, {}).data.get("error") or {}).get("class")
        for r in records
        if r.topic == s.run_results and r.key and r.key.decode() in ids
    )
    final = {
        r.key.decode(): decode_record(r.value, {}).data for r in records if r.topic == s.run_results
    }
    return {
        **_outcome(cluster, records, [*ids, after["run_id"]]),
        "failed_with_artifact_error": reasons.get("ArtifactWriteError", 0),
        "run_after_restore": final.get(after["run_id"], {}).get("status"),
        "recovery_s": _next_event_after(cluster, records, restored),
    }


def _sigstop(root: Path, quick: bool) -> dict[str, Any]:
    with _private_services(root / "services", jaeger=False) as services:
        cluster = Cluster(root, services, workers=2)
        requests = [_request("sigstop", i, quick) for i in range(4 if quick else 6)]
        cluster.start()
        try:
            cluster.submit(requests)
            first = cluster.first_generation()
            victim = _busiest_writer(cluster, first)
            os.kill(victim, signal.SIGSTOP)
            paused = time.time()
            time.sleep(PAUSE_S)
            os.kill(victim, signal.SIGCONT)
            resumed = time.time()
            records = cluster.results_of([r["run_id"] for r in requests])
        finally:
            cluster.stop()
    orphans = _runs_last_written_by(cluster, records, victim, paused)
    taken_over = [
        r.timestamp / 1000.0
        for r in records
        if r.topic == cluster.settings.run_events
        and r.key
        and r.key.decode() in orphans
        and paused < r.timestamp / 1000.0
        and not decode_record(r.value, {}).source.endswith(f"/{victim}")
    ]
    return {
        **_outcome(cluster, records, [r["run_id"] for r in requests]),
        "paused_s": round(resumed - paused, 1),
        "runs_of_the_paused_worker": len(orphans),
        "taken_over_after_s": round(min(taken_over) - paused, 2) if taken_over else None,
    }


def _writer_pid(record: Any) -> int:
    return int(decode_record(record.value, {}).source.rsplit("/", 1)[-1])


def _busiest_writer(cluster: Cluster, records: Records) -> int:
    """The worker process that wrote most of the run events so far (it holds runs)."""
    writers = Counter(_writer_pid(r) for r in records if r.topic == cluster.settings.run_events)
    pids = {w.worker_pid for w in cluster.workers}
    ranked = [pid for pid, _ in writers.most_common() if pid in pids]
    return ranked[0] if ranked else cluster.workers[0].worker_pid


def _runs_last_written_by(cluster: Cluster, records: Records, pid: int, moment: float) -> set[str]:
    last: dict[str, int] = {}
    ended: set[str] = set()
    for r in sorted(records, key=lambda r: r.timestamp):
        if r.timestamp / 1000.0 > moment or not r.key:
            continue
        if r.topic == cluster.settings.run_results:
            ended.add(r.key.decode())
        elif r.topic == cluster.settings.run_events:
            last[r.key.decode()] = _writer_pid(r)
    return {run_id for run_id, writer in last.items() if writer == pid} - ended


SCENARIOS: dict[str, Callable[[Path, bool], dict[str, Any]]] = {
    "broker": _broker,
    "jaeger": _jaeger,
    "artifacts": _artifacts,
    "sigstop": _sigstop,
}


def _clean(out: dict[str, Any]) -> bool:
    return (
        out["ended_once"] == out["runs"]
        and out["lost"] == 0
        and out["duplicates"] == 0
        and not out["invariant_violations"]
    )


def run(opts: Options) -> dict[str, Any]:
    began = time.perf_counter()
    scenarios: dict[str, dict[str, Any]] = {}
    for name, scenario in SCENARIOS.items():
        root = Path(tempfile.mkdtemp(prefix=f"thunderhelm-chaos-{name}-"))
        try:
            started = time.perf_counter()
            scenarios[name] = scenario(root, opts.quick)
            scenarios[name]["elapsed_s"] = round(time.perf_counter() - started, 1)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        print(f"chaos {name}: {scenarios[name]}", flush=True)
    b, j, a, p = (scenarios[n] for n in SCENARIOS)
    result: dict[str, Any] = {
        "quick": opts.quick,
        "scenarios": scenarios,
        "all_ended_once": all(_clean(s) for s in scenarios.values()),
        "broker_recovery_s": b["recovery_s"],
        "sigstop_takeover_s": p["taken_over_after_s"],
        "wall_s": round(time.perf_counter() - began, 1),
    }
    bars = [
        bar(
            f"{name}: every run ends exactly once, 0 lost, 0 invariant violations",
            f"{s['ended_once']}/{s['runs']} once, {s['lost']} lost, {s['duplicates']} twice, "
            f"{len(s['invariant_violations'])} runs with violations; statuses {s['statuses']}",
            _clean(s),
        )
        for name, s in scenarios.items()
    ]
    bars += [
        bar(
            f"broker down {b['down_s']:.0f} s: time from its restart to the next event",
            f"{b['recovery_s']} s; worker alive {b['worker_alive']}",
            None,
        ),
        bar(
            "jaeger stopped for the rest of the runs: said once in the log, memory bounded",
            f"{j['outage_notices']} notice(s); RSS {j['rss_mb_at_stop']} MB at the stop, "
            f"{j['rss_mb_max_after']} MB at most after, {j['rss_mb_last']} MB last",
            j["outage_notices"] == 1
            and j["rss_mb_at_stop"] is not None
            and j["rss_mb_max_after"] is not None
            and j["rss_mb_max_after"] <= 1.5 * j["rss_mb_at_stop"],
        ),
        bar(
            "artifact folder unwritable: runs ending then fail with its reason; "
            "a run after it is back succeeds",
            f"{a['failed_with_artifact_error']} ArtifactWriteError, statuses {a['statuses']}, "
            f"the run after: {a['run_after_restore']}",
            a["run_after_restore"] == "succeeded",
        ),
        bar(
            f"worker paused {p['paused_s']} s (session timeout {SESSION_TIMEOUT_S:.0f} s): "
            "its runs taken over",
            f"{p['runs_of_the_paused_worker']} runs, the first event by the other worker "
            f"{p['taken_over_after_s']} s after the pause",
            None,
        ),
    ]
    result["bars"] = bars
    return result
