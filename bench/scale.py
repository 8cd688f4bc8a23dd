"""Scale benchmark: one run's candidates trained by more workers, and a worker killed mid-run.

Scale: the same run request (32 candidates, 3 generations) on one worker
process with a pool of one interpreter, then on two such processes in the
same consumer groups; each scenario has its own topic prefix, so its topics
are fresh. Wall time is from sending the request to the CreateTime of its
run-results record, with every worker ready and every consumer group stable
before the clock starts. Each worker's share is counted from the run's
`candidate-completed` events (their `worker` field). Training is
deterministic for a network, a seed and a dataset, and the seeds do not
depend on the run id, so both scenarios must find the same best genome and
fitness.

Kill: two workers with a pool of one each; while a generation is mid-way
(some, not all, of its dispatched candidates have an outcome on the log) one
worker is killed with SIGKILL: first the worker that does not own the run,
then, in a fresh scenario, the owner (the writer of `run.accepted`). The
killed worker is not restarted: the survivor finishes the run. Counted:
the generation's candidates with no outcome on the log at the kill, and the
trainings done again, i.e. `candidate.trained` commands on run-commands for
the run minus the distinct candidates they cover.

Both clocks are this machine's (the broker stamps CreateTime from the
producer's clock, a worker's), so the figures compare; the load average
before and after is in the result's environment.

With `--quick` the runs are tiny and there is one kill (of the non-owner), on
the two workers of the scale scenario: it checks the code paths in about half
a minute and measures nothing.

Run: `thunderhelm bench scale [--quick]`; results in bench/results/scale.json.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import ConsumerRecord

from bench.common import Options
from bench.report import bar, load_average
from thunderhelm.schemas import events as ev
from thunderhelm.schemas.codec import decode_record, encode_event
from thunderhelm.schemas.requests import RUN_REQUESTED
from thunderhelm.schemas.tasks import CANDIDATE_TRAINED
from thunderhelm.streams.clients.client import command_event
from thunderhelm.streams.config.settings import Settings
from thunderhelm.streams.devservices.worker_process import BOOTSTRAP, WorkerProcess, fresh_env
from thunderhelm.streams.domain.invariants import violations
from thunderhelm.streams.wire.events import to_domain

__all__ = ["run"]

type Record = ConsumerRecord[bytes, bytes]

# The broker's group.min.session.timeout.ms is 6 s by default: a shorter
# session is refused at join, so 6 s is the fastest a dead member is noticed.
SESSION_TIMEOUT_S = 6
PARTITIONS = 2  # candidate-tasks and run-events: one partition per worker of two
RUN_TIMEOUT_S = 900.0
READY_TIMEOUT_S = 90.0
SPEEDUP_BAR = 1.7
SHARE_BAR = 0.35
KILL_GENERATION = 1  # generation 0 ran on both workers; the kill lands in the next
ERROR_LINE = re.compile(r"\[(ERROR|CRITICAL)\]|Traceback")
# The reconciler's line when it drives a run nothing else drove for a while.
RESUME_LINE = re.compile(r"run \S+: driving resume")


# --- the workload ------------------------------------------------------------------------


def scale_request(run_id: str, quick: bool) -> dict[str, Any]:
    """The scale run: 12,000 spirals and up to 40 epochs train a candidate in about 0.8 s."""
    if quick:
        return _request(run_id, population=4, generations=2, samples=400, epochs=2, seed=11)
    return _request(run_id, population=32, generations=3, samples=12_000, epochs=40, seed=11)


def kill_request(run_id: str, quick: bool) -> dict[str, Any]:
    """The kill run: smaller, but each generation long enough for a kill to land mid-way."""
    if quick:
        return _request(run_id, population=6, generations=2, samples=3000, epochs=10, seed=12)
    return _request(run_id, population=16, generations=3, samples=12_000, epochs=40, seed=12)


def _request(
    run_id: str, *, population: int, generations: int, samples: int, epochs: int, seed: int
) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "dataset": {"name": "spirals", "samples": samples, "seed": 3},
        "ga": {
            "population": population,
            "generations": generations,
            "tournament_size": 3,
            "elite": 1,
            "seed": seed,
        },
        "training": {"epochs": epochs, "batch_size": 32},
        "search_space": {"max_levels": 2, "max_units": 3, "max_neurons": 64},
        "budget": {"timeout_s": RUN_TIMEOUT_S},
    }


# --- workers ------------------------------------------------------------------------------


def worker_env(folder: Path, pool: int) -> dict[str, str]:
    """A fresh topic prefix and app id: every scenario starts on empty topics and groups."""
    folder.mkdir(parents=True, exist_ok=True)
    return fresh_env(
        folder,
        THUNDERHELM_POOL_SIZE=str(pool),
        THUNDERHELM_PARTITIONS=str(PARTITIONS),
        THUNDERHELM_SESSION_TIMEOUT_S=str(SESSION_TIMEOUT_S),
        THUNDERHELM_FANOUT="1",
        OTEL_TRACES_EXPORTER="none",
    )


@dataclass
class Cluster:
    """Worker processes sharing one env (so one app id, topic prefix and set of groups)."""

    env: dict[str, str]
    workers: list[WorkerProcess]
    names: dict[str, str] = field(default_factory=dict)  # "host/pid" -> "worker-N"

    @property
    def settings(self) -> Settings:
        return Settings.from_env(self.env)

    def any_alive(self) -> bool:
        return any(w.alive() for w in self.workers)

    def name_of(self, worker: str) -> str:
        return self.names.get(worker, worker)

    def pid_name(self, pid: int) -> str | None:
        return next((n for w, n in self.names.items() if w.endswith(f"/{pid}")), None)

    def log_lines(self, pattern: re.Pattern[str], limit: int = 6) -> dict[str, list[str]]:
        """The first lines matching `pattern` in each worker's log."""
        out: dict[str, list[str]] = {}
        for n, w in enumerate(self.workers):
            text = w.log_path.read_text(errors="replace") if w.log_path.exists() else ""
            lines = [line[:300] for line in text.splitlines() if pattern.search(line)]
            if lines:
                out[f"worker-{n}"] = lines[:limit]
        return out

    def log_errors(self) -> dict[str, list[str]]:
        return self.log_lines(ERROR_LINE)

    def resumes(self) -> int:
        """Runs the reconciler drove after they sat idle: in a healthy run, none."""
        return sum(len(v) for v in self.log_lines(RESUME_LINE, 1000).values())


@contextmanager
def cluster(folder: Path, count: int, pool: int) -> Iterator[Cluster]:
    """`count` workers started at once, each ready to train, every group stable."""
    env = worker_env(folder, pool)
    workers = [WorkerProcess(env, folder / f"worker-{n}.log") for n in range(count)]
    c = Cluster(env, workers)
    try:
        with ThreadPoolExecutor(count) as starting:
            for started in [starting.submit(w.start, READY_TIMEOUT_S) for w in workers]:
                started.result()
        for n, w in enumerate(workers):
            _wait_for_line(w, "candidate trainer reading")
            # The `worker` field of an outcome: "<hostname>/<pid>" of the worker process.
            c.names[f"{socket.gethostname()}/{w.worker_pid}"] = f"worker-{n}"
        asyncio.run(groups_stable(c.settings, count))
        for w in workers:
            _wait_until_ready(w)  # the command reader too: else the first run waits for it
        yield c
    finally:
        with ThreadPoolExecutor(count) as stopping:
            list(stopping.map(lambda w: w.stop(), workers))


def _wait_until_ready(worker: WorkerProcess) -> None:
    """Until the worker's `/readyz` answers 200 (every readiness check passes)."""
    url = f"http://127.0.0.1:{worker.web_port}/readyz"
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:
                if reply.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass  # 503 (not ready yet) or not answering yet
        if not worker.alive() or time.monotonic() > deadline:
            raise RuntimeError(f"worker never ready: {worker.log_path}")
        time.sleep(0.1)


def _wait_for_line(worker: WorkerProcess, text: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while text not in worker.log_path.read_text(errors="replace"):
        if not worker.alive() or time.monotonic() > deadline:
            raise RuntimeError(f"no {text!r} in {worker.log_path}")
        time.sleep(0.2)


async def groups_stable(settings: Settings, members: int, timeout_s: float = 60.0) -> None:
    """Wait until Faust's group, the intake's and the trainers' each have `members`, assigned.

    A run sent before then could move to another owner mid-way, and a worker
    not yet in the trainers' group would get no share of the first generation.
    """
    groups = [settings.app_id, settings.intake_group, settings.trainer_group]
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            states: dict[str, tuple[str, int]] = {}
            # One group per request: aiokafka 0.14 fails to decode a
            # DescribeGroups response that describes several groups.
            for name in groups:
                for response in await admin.describe_consumer_groups([name]):
                    # (error_code, group, state, protocol_type, protocol, members)
                    for group in response.groups:
                        states[group[1]] = (group[2], len(group[5]))
            if all(states.get(g) == ("Stable", members) for g in groups):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"consumer groups not stable with {members} members: {states}")
            await asyncio.sleep(0.5)
    finally:
        await admin.close()


# --- records ------------------------------------------------------------------------------


async def submit(settings: Settings, request: dict[str, Any]) -> float:
    """Send a run request; the wall-clock time just before the send."""
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", linger_ms=0)
    await producer.start()
    try:
        value = encode_event(command_event(RUN_REQUESTED, request, None))
        sent = time.time()
        await producer.send_and_wait(
            settings.run_requests, value=value, key=request["run_id"].encode()
        )
        return sent
    finally:
        await producer.stop()


async def _assigned_from_start(consumer: AIOKafkaConsumer, topics: list[str]) -> None:
    deadline = time.monotonic() + 60.0
    parts: list[TopicPartition] = []
    for topic in topics:
        while not consumer.partitions_for_topic(topic):
            if time.monotonic() > deadline:
                raise TimeoutError(f"topic {topic} never appeared")
            # `topics()` fetches metadata without updating the consumer's own view.
            await consumer._client.force_metadata_update()
            await asyncio.sleep(0.2)
        parts += [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
    consumer.assign(parts)
    await consumer.seek_to_beginning(*parts)


async def read_to_end(topics: list[str]) -> list[Record]:
    """Every record now on `topics`, from the start to each partition's end offset."""
    consumer = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP, enable_auto_commit=False)
    await consumer.start()
    try:
        await _assigned_from_start(consumer, topics)
        parts = list(consumer.assignment())
        ends = await consumer.end_offsets(parts)
        seen: list[Record] = []
        deadline = time.monotonic() + 60.0
        while any([await consumer.position(tp) < ends[tp] for tp in parts]):
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topics} to their end")
            for records in (await consumer.getmany(timeout_ms=300)).values():
                seen.extend(records)
        return seen
    finally:
        await consumer.stop()


async def await_result(
    settings: Settings, run_id: str, alive: Callable[[], bool], timeout_s: float = RUN_TIMEOUT_S
) -> tuple[dict[str, Any], float]:
    """The run's run-results data and the record's CreateTime (seconds)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP, enable_auto_commit=False)
    await consumer.start()
    try:
        await _assigned_from_start(consumer, [settings.run_results])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for r in records:
                    if r.key == run_id.encode() and r.value is not None:
                        return json.loads(r.value)["data"], r.timestamp / 1000.0
            if not alive():
                raise RuntimeError(f"every worker died before run {run_id} had a result")
        raise TimeoutError(f"run {run_id} has no result after {timeout_s:.0f} s")
    finally:
        await consumer.stop()


@dataclass(frozen=True)
class Event:
    """One structured-mode CloudEvent of the run, with its record's CreateTime."""

    type: str
    data: dict[str, Any]
    source: str
    at: float  # CreateTime, seconds


def run_events(records: list[Record], topic: str, run_id: str) -> list[Event]:
    out = []
    for r in records:
        if r.topic == topic and r.key == run_id.encode() and r.value is not None:
            raw = json.loads(r.value)
            out.append(Event(raw["type"], raw.get("data") or {}, raw["source"], r.timestamp / 1e3))
    return out


def trained_commands(records: list[Record], topic: str, run_id: str) -> list[Event]:
    """The `candidate.trained` commands workers sent for the run (each one a training)."""
    return [
        e
        for e in run_events(records, topic, run_id)
        if e.type == CANDIDATE_TRAINED and e.data.get("run_id") == run_id
    ]


def invariant_problems(records: list[Record], topic: str, run_id: str) -> list[str]:
    log = [
        to_domain(decode_record(r.value, {}))
        for r in records
        if r.topic == topic and r.key == run_id.encode()
    ]
    return violations(log)


def completed(events: list[Event]) -> list[Event]:
    return [e for e in events if e.type == ev.CANDIDATE_COMPLETED]


def best_of(result: dict[str, Any]) -> tuple[Any, Any]:
    best = result.get("best") or {}
    return best.get("genome"), best.get("fitness")


def pid_of(source: str) -> int:
    """The pid in a worker's CloudEvent source, `thunderhelm/worker/<host>/<pid>`."""
    return int(source.rsplit("/", 1)[1])


# --- scale --------------------------------------------------------------------------------


def scale_scenario(c: Cluster, quick: bool) -> dict[str, Any]:
    """The scale run on the cluster's workers; its figures."""
    s = c.settings
    workers, pool = len(c.workers), s.pool_size
    run_id = f"scale-{workers}x{pool}-{uuid.uuid4().hex[:6]}"
    load_before = load_average()
    sent = asyncio.run(submit(s, scale_request(run_id, quick)))
    result, finished = asyncio.run(await_result(s, run_id, c.any_alive))
    records = asyncio.run(read_to_end([s.run_events]))
    errors = c.log_errors()
    resumes = c.resumes()
    events = run_events(records, s.run_events, run_id)
    outcomes = completed(events)
    shares = Counter(c.name_of(str(e.data.get("worker"))) for e in outcomes)
    busy: dict[tuple[int, str], float] = {}
    for e in outcomes:
        key = (int(e.data["generation"]), c.name_of(str(e.data.get("worker"))))
        busy[key] = busy.get(key, 0.0) + float(e.data.get("duration_s") or 0.0)
    total_busy = sum(busy.values())
    # A worker trains only its own partitions' tasks, so each generation lasts
    # as long as its busiest worker: this bound is the speed-up the split allows.
    critical = sum(max(v for (g, _), v in busy.items() if g == gen) for gen in {g for g, _ in busy})
    genome, fitness = best_of(result)
    return {
        "run_id": run_id,
        "workers": workers,
        "pool_size": pool,
        "wall_s": round(finished - sent, 3),
        "status": result.get("status"),
        "evaluations": result.get("evaluations"),
        "trainings": len(outcomes),
        "shares": dict(sorted(shares.items())),
        "training_s": round(total_busy, 2),
        "training_s_by_worker": {
            name: round(sum(v for (_, n), v in busy.items() if n == name), 2)
            for name in sorted(shares)
        },
        "split_bound_speedup": round(total_busy / critical, 3) if critical else None,
        **phases(events, sent, finished),
        "best_genome": genome,
        "best_fitness": fitness,
        "invariant_violations": invariant_problems(records, s.run_events, run_id),
        "reconciler_resumes": resumes,
        "load_before": load_before,
        "worker_log_errors": errors,
    }


def phases(events: list[Event], sent: float, finished: float) -> dict[str, Any]:
    """Where a run's wall time goes, from its events' CreateTimes.

    `settle_s`: per generation, from its last outcome to its generation-completed
    (breeding the next one, plus any wait before the owner acts on the outcome).
    """
    first = {e.type: e.at for e in reversed(events)}
    last_outcome: dict[int, float] = {}
    ends: dict[int, float] = {}
    for e in events:
        if e.type == ev.CANDIDATE_COMPLETED:
            last_outcome[int(e.data["generation"])] = e.at
        elif e.type == ev.GENERATION_COMPLETED:
            ends.setdefault(int(e.data["generation"]), e.at)
    begin = first.get(ev.RUN_STARTED, sent)
    generation_s, settle_s = [], []
    for g in sorted(ends):
        generation_s.append(round(ends[g] - begin, 2))
        settle_s.append(round(ends[g] - last_outcome[g], 2) if g in last_outcome else None)
        begin = ends[g]
    terminal = min((e.at for e in events if e.type in ev.TERMINAL_TYPES), default=finished)
    return {
        "accept_s": round(first.get(ev.RUN_ACCEPTED, sent) - sent, 2),
        "generation_s": generation_s,
        "settle_s": settle_s,
        "finish_s": round(terminal - begin, 2),
        "result_s": round(finished - terminal, 2),
    }


# --- kill ---------------------------------------------------------------------------------


@dataclass
class Kill:
    """What the watcher saw when it killed, and whom."""

    victim: str  # "worker-N"
    role: str  # "owner" or "other"
    pid: int
    at: float  # wall clock just before SIGKILL
    generation: int
    dispatched: list[int]
    completed_seen: list[int]  # outcomes the watcher had read at the kill


async def kill_mid_generation(
    c: Cluster, run_id: str, role: str, generation: int, timeout_s: float = RUN_TIMEOUT_S
) -> Kill:
    """Follow run-events; SIGKILL the `role` worker once `generation` is part done.

    Part done: at least a quarter (one at least) of its dispatched candidates
    have an outcome on the log and at least one has none.
    """
    s = c.settings
    consumer = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP, enable_auto_commit=False)
    await consumer.start()
    owner: int | None = None
    dispatched: list[int] = []
    done: set[int] = set()
    try:
        await _assigned_from_start(consumer, [s.run_events])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=50)).values():
                for e in run_events(records, s.run_events, run_id):
                    if e.type == ev.RUN_ACCEPTED:
                        owner = pid_of(e.source)
                    elif e.type in ev.TERMINAL_TYPES:
                        raise RuntimeError(f"run {run_id} ended before a kill could land")
                    elif int(e.data.get("generation", -1)) != generation:
                        continue
                    elif e.type == ev.CANDIDATES_DISPATCHED:
                        dispatched = [int(i) for i in e.data["candidates"]]
                    elif e.type == ev.CANDIDATE_COMPLETED:
                        done.add(int(e.data["index"]))
            if owner is not None and dispatched and max(1, len(dispatched) // 4) <= len(done):
                if len(done) >= len(dispatched):
                    raise RuntimeError(f"generation {generation} finished before the kill")
                return _kill(c, owner, role, generation, dispatched, done)
        raise TimeoutError(f"generation {generation} of {run_id} never got under way")
    finally:
        await consumer.stop()


def _kill(
    c: Cluster, owner: int, role: str, generation: int, dispatched: list[int], done: set[int]
) -> Kill:
    pids = [w.worker_pid for w in c.workers]
    if owner not in pids:
        raise RuntimeError(f"run.accepted came from pid {owner}, none of {pids}")
    index = pids.index(owner) if role == "owner" else 1 - pids.index(owner)
    victim = c.workers[index]
    at = time.time()
    victim.stop(kill=True)  # SIGKILL to the supervisor and its worker at once
    return Kill(f"worker-{index}", role, pids[index], at, generation, dispatched, sorted(done))


def kill_scenario(c: Cluster, role: str, quick: bool, reference: bool) -> dict[str, Any]:
    """A run on two live workers, one killed mid-generation; the survivor finishes it alone."""
    s = c.settings
    tag = uuid.uuid4().hex[:6]
    run_id = f"kill-{role}-{tag}"
    load_before = load_average()
    sent = asyncio.run(submit(s, kill_request(run_id, quick)))
    kill = asyncio.run(kill_mid_generation(c, run_id, role, KILL_GENERATION))
    survivor = next(w for w in c.workers if w.alive())
    result, finished = asyncio.run(await_result(s, run_id, survivor.alive))
    twin: dict[str, Any] = {}
    if reference:
        # The same request on the survivor alone, never interrupted.
        twin_id = f"kill-twin-{tag}"
        twin_sent = asyncio.run(submit(s, kill_request(twin_id, quick)))
        twin, twin_done = asyncio.run(await_result(s, twin_id, survivor.alive))
        twin["wall_s"] = round(twin_done - twin_sent, 3)
    records = asyncio.run(read_to_end([s.run_events, s.run_commands]))
    errors = c.log_errors()
    resumes = c.resumes()
    events = run_events(records, s.run_events, run_id)
    outcomes = completed(events)
    this_generation = [e for e in outcomes if int(e.data["generation"]) == kill.generation]
    before = {int(e.data["index"]) for e in this_generation if e.at <= kill.at}
    no_outcome = sorted(set(kill.dispatched) - before)
    commands = trained_commands(records, s.run_commands, run_id)
    sent_before = {
        int(e.data["index"])
        for e in commands
        if e.at <= kill.at and int(e.data["generation"]) == kill.generation
    }
    trained = Counter((int(e.data["generation"]), int(e.data["index"])) for e in commands)
    twice = {f"{g}/{i}": n for (g, i), n in sorted(trained.items()) if n > 1}
    redone = len(commands) - len(trained)
    after = [e.at for e in outcomes if e.at > kill.at]
    genome, fitness = best_of(result)
    twin_genome, twin_fitness = best_of(twin)
    return {
        "run_id": run_id,
        "killed": kill.victim,
        "killed_role": kill.role,
        "killed_pid": kill.pid,
        "restarted": False,
        "kill_generation": kill.generation,
        "dispatched": kill.dispatched,
        "completed_on_log_at_kill": sorted(before),
        "completed_seen_by_watcher": kill.completed_seen,
        "no_outcome_at_kill": len(no_outcome),
        # Stricter: candidates whose outcome was not even sent to the owner yet.
        "no_outcome_sent_at_kill": len(set(kill.dispatched) - sent_before),
        "trained_commands": len(commands),
        "distinct_trained": len(trained),
        "redone": redone,
        "trained_twice": twice,
        "duplicate_outcomes_on_log": len(outcomes)
        - len({(e.data["generation"], e.data["index"]) for e in outcomes}),
        "first_outcome_after_kill_s": round(min(after) - kill.at, 2) if after else None,
        "wall_s": round(finished - sent, 3),
        **phases(events, sent, finished),
        "status": result.get("status"),
        "evaluations": result.get("evaluations"),
        "shares": dict(
            sorted(Counter(c.name_of(str(e.data.get("worker"))) for e in outcomes).items())
        ),
        "owner_after": sorted(
            {c.pid_name(pid_of(e.source)) or e.source for e in events if e.at > kill.at}
        ),
        "best_genome": genome,
        "best_fitness": fitness,
        "twin_status": twin.get("status"),
        "twin_wall_s": twin.get("wall_s"),
        "twin_best_fitness": twin_fitness,
        "equal_to_twin": (genome, fitness) == (twin_genome, twin_fitness) if twin else None,
        "invariant_violations": invariant_problems(records, s.run_events, run_id),
        "reconciler_resumes": resumes,
        "load_before": load_before,
        "worker_log_errors": errors,
    }


# --- the benchmark -----------------------------------------------------------------------


def run(opts: Options) -> dict[str, Any]:
    quick = opts.quick
    pooled = None
    kills = []
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        root = Path(tmp)
        with cluster(root / "one", 1, 1) as c:
            one = scale_scenario(c, quick)
        with cluster(root / "two", 2, 1) as c:
            two = scale_scenario(c, quick)
            if quick:  # one kill on these workers spares starting two more
                kills.append(kill_scenario(c, "other", quick, reference=False))
        if not quick:
            with cluster(root / "pool2", 1, 2) as c:
                pooled = scale_scenario(c, quick)
            # Fresh workers and topics for each kill; the last also runs the reference.
            for role, reference in (("other", False), ("owner", True)):
                with cluster(root / f"kill-{role}", 2, 1) as c:
                    kills.append(kill_scenario(c, role, quick, reference))
    return summarise(one, two, pooled, kills, quick)


def summarise(
    one: dict[str, Any],
    two: dict[str, Any],
    pooled: dict[str, Any] | None,
    kills: list[dict[str, Any]],
    quick: bool,
) -> dict[str, Any]:
    speedup = one["wall_s"] / two["wall_s"] if two["wall_s"] > 0 else 0.0
    total = max(1, two["trainings"])
    fractions = {name: n / total for name, n in two["shares"].items()}
    min_share = min(fractions.values()) if len(fractions) == 2 else 0.0
    identical = (one["best_genome"], one["best_fitness"]) == (
        two["best_genome"],
        two["best_fitness"],
    )
    twins = [k["equal_to_twin"] for k in kills if k["equal_to_twin"] is not None]
    equal_kill = all(
        (k["best_genome"], k["best_fitness"]) == (kills[0]["best_genome"], kills[0]["best_fitness"])
        for k in kills
    )
    # The time between a generation's last outcome and its generation-completed
    # is breeding (tens of ms) or the owner waiting for the reconciler: the
    # speed-up without it shows the fan-out alone.
    waits = (sum(s or 0.0 for s in one["settle_s"]), sum(s or 0.0 for s in two["settle_s"]))
    net = (
        (one["wall_s"] - waits[0]) / (two["wall_s"] - waits[1]) if two["wall_s"] > waits[1] else 0.0
    )
    result: dict[str, Any] = {
        "quick": quick,
        "scale_speedup": round(speedup, 3),
        "scale_speedup_without_settle": round(net, 3),
        "wall_s_one_worker": one["wall_s"],
        "wall_s_two_workers": two["wall_s"],
        "min_share_two_workers": round(min_share, 3),
        "identical_best": identical,
        "best_fitness": two["best_fitness"],
        "split_bound_speedup": two["split_bound_speedup"],
        "redone_total": sum(k["redone"] for k in kills),
        "no_outcome_total": sum(k["no_outcome_at_kill"] for k in kills),
        "scenarios": {"one_worker": one, "two_workers": two},
        "kills": kills,
        "environment": {"load_before": one["load_before"]},
    }
    if pooled is not None:
        result["scenarios"]["one_worker_pool2"] = pooled
        result["wall_s_one_worker_pool2"] = pooled["wall_s"]
    share_text = ", ".join(f"{n} {f:.0%} ({two['shares'][n]})" for n, f in fractions.items())
    bars = [
        bar(
            f"scale_speedup = wall(1 worker) / wall(2 workers) >= {SPEEDUP_BAR}",
            f"{one['wall_s']:.1f} s / {two['wall_s']:.1f} s = {speedup:.2f}x "
            f"(split of the trainings allows {two['split_bound_speedup']}x)",
            None if quick else speedup >= SPEEDUP_BAR,
        ),
        bar(
            f"each of the 2 workers trains >= {SHARE_BAR:.0%} of the candidates",
            share_text or "no trainings",
            None if quick else min_share >= SHARE_BAR,
        ),
        bar(
            "best genome and fitness identical on 1 and 2 workers",
            f"{identical} (fitness {one['best_fitness']} vs {two['best_fitness']})",
            identical,
        ),
    ]
    for k in kills:
        bars.append(
            bar(
                f"killed the {'owner' if k['killed_role'] == 'owner' else 'non-owner'} "
                f"mid-generation {k['kill_generation']}: trainings redone <= candidates "
                "without an outcome at the kill",
                f"{k['redone']} redone <= {k['no_outcome_at_kill']} without an outcome "
                f"({k['no_outcome_sent_at_kill']} not yet sent); run {k['status']}",
                k["redone"] <= k["no_outcome_at_kill"] and k["status"] == "succeeded",
            )
        )
    bars.append(
        bar(
            "wall times without the last-outcome-to-generation-completed gaps (informational)",
            f"({one['wall_s']:.1f} - {waits[0]:.2f}) / ({two['wall_s']:.1f} - {waits[1]:.2f}) "
            f"= {net:.2f}x; reconciler resumes: {one['reconciler_resumes']} on 1 worker, "
            f"{two['reconciler_resumes']} on 2",
            None,
        )
    )
    log_text = "; ".join(
        f"{k['killed_role']}: {k['duplicate_outcomes_on_log']} duplicate outcome(s), "
        f"violations {k['invariant_violations'] or 'none'}"
        for k in kills
    )
    bars.append(
        bar(
            "killed runs' logs: one candidate-completed per candidate (informational)",
            log_text,
            None,
        )
    )
    if twins:
        bars.append(
            bar(
                "killed runs' best equals an uninterrupted run's with the same request",
                f"{all(twins) and equal_kill} (fitness "
                f"{[k['best_fitness'] for k in kills]} vs {kills[-1]['twin_best_fitness']})",
                all(twins) and equal_kill,
            )
        )
    if pooled is not None:
        bars.append(
            bar(
                "reference: one worker with a pool of 2 (informational)",
                f"{pooled['wall_s']:.1f} s, {one['wall_s'] / pooled['wall_s']:.2f}x one worker",
                None,
            )
        )
    result["bars"] = bars
    result["summary"] = _summary(one, two, pooled, kills, quick)
    return result


def _summary(
    one: dict[str, Any],
    two: dict[str, Any],
    pooled: dict[str, Any] | None,
    kills: list[dict[str, Any]],
    quick: bool,
) -> str:
    rows = [
        "| scenario | wall s | trainings | shares | training s by worker | accept s "
        "| per generation s | last outcome to generation-completed s | finish s "
        "| reconciler resumes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, sc in [
        ("1 worker, pool 1", one),
        ("2 workers, pool 1 each", two),
        *([("1 worker, pool 2", pooled)] if pooled else []),
    ]:
        rows.append(
            f"| {label} | {sc['wall_s']:.1f} | {sc['trainings']} | {sc['shares']} | "
            f"{sc['training_s_by_worker']} | {sc['accept_s']} | {sc['generation_s']} | "
            f"{sc['settle_s']} | {sc['finish_s']} | {sc['reconciler_resumes']} |"
        )
    kill_rows = [
        "| killed | generation | dispatched | without outcome at kill | trainings sent | "
        "distinct | redone | first outcome after kill s | last outcome to generation-completed s "
        "| reconciler resumes | duplicate outcomes | wall s | status |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for k in kills:
        kill_rows.append(
            f"| {k['killed']} ({k['killed_role']}) | {k['kill_generation']} | "
            f"{len(k['dispatched'])} | {k['no_outcome_at_kill']} | {k['trained_commands']} | "
            f"{k['distinct_trained']} | {k['redone']} | {k['first_outcome_after_kill_s']} | "
            f"{k['settle_s']} | {k['reconciler_resumes']} | {k['duplicate_outcomes_on_log']} | "
            f"{k['wall_s']:.1f} | {k['status']} |"
        )
    return "\n".join(
        [
            f"Same run request on each scenario ({_describe(scale_request('-', quick))}); "
            f"{PARTITIONS} partitions per topic, session "
            f"timeout {SESSION_TIMEOUT_S} s. Wall time: request sent to the CreateTime of its "
            "run-results record, every consumer group stable before the clock starts. "
            "`split bound`: total training seconds over the sum, per generation, of the "
            "busiest worker's training seconds (the owner chooses each task's partition, "
            "and a worker trains only the tasks on the partitions it holds).",
            "",
            *rows,
            "",
            f"Kill: two workers with a pool of one each ({_describe(kill_request('-', quick))}); "
            "SIGKILL "
            "mid-generation, the killed worker is not restarted. Redone: `candidate.trained` "
            "commands for the run minus the distinct candidates they cover.",
            "",
            *kill_rows,
        ]
    )


def _describe(request: dict[str, Any]) -> str:
    data, ga = request["dataset"], request["ga"]
    return (
        f"{data['name']}, {data['samples']} samples, up to {request['training']['epochs']} "
        f"epochs, population {ga['population']}, {ga['generations']} generations"
    )
