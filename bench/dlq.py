"""Dead-letter benchmark: hostile input through a running worker, next to a raw loop.

What it shows (the bar of the dead-letter issue): N varied malformed records
produced to run-requests of a running worker all arrive on dead-letters (none
lost), each with its original key, value and headers byte for byte; the worker
is alive afterwards and a valid run submitted after them succeeds. It also
puts a number on the cost of the DLQ path: records routed per second by the
worker next to a plain aiokafka loop on the same broker that does the least a
correct router must do (consume a batch, produce every record to another
topic with acks=all, await the acks, commit the batch's offsets).

Both rates come from the same clock: the broker's CreateTime of the first and
last output record, so neither includes start-up or the producer's speed. Both
drain the same backlog (records produced before the loop or worker starts),
in alternating rounds compared by their medians; the last worker then gets the
backlog a second time while it runs, and that live rate is reported beside
the bar.

Run: `thunderhelm bench dlq [--quick]` (or `.venv/bin/python -m bench dlq`); the
dispatcher writes `bench/results/dlq.json` and rebuilds `bench/RESULTS.md`.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import tempfile
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import ConsumerRecord

from bench.common import Options
from bench.report import bar
from thunderhelm.schemas.codec import decode_record
from thunderhelm.streams.devservices.worker_process import (
    BOOTSTRAP,
    WorkerProcess,
    collect,
    fresh_env,
)
from thunderhelm.streams.wire.failures import original_headers as dlq_original_headers
from thunderhelm.streams.worker.kafka.topics import ensure_topics

RECORDS = 5000
QUICK_RECORDS = 300
ROUNDS = 5
# Each backlog is the varied records this many times over: 5,000 records
# drain in a fifth of a second, too short a window on a shared machine.
BACKLOG_REPEAT = 4
SEED = 1
PARTITIONS = 2
RAW_LOOP = (
    "aiokafka, one consumer (consumer group, manual commit) and one producer (acks=all): "
    "getmany a batch -> send every record (key, value, headers) to another topic -> "
    "await all the batch's acks -> commit the batch's offsets"
)
RECORD_LIMIT = 65_536  # the worker's THUNDERHELM_LIMIT_MAX_RECORD_BYTES in this bench


@dataclass(frozen=True)
class Bad:
    """One malformed record as produced; the DLQ copy must match it exactly."""

    kind: str
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


def _envelope(
    rng: random.Random, data: Any, kind: str = "thunderhelm.run.requested"
) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": uuid.UUID(int=rng.getrandbits(128)).hex,
        "source": "bench/dlq",
        "type": kind,
        "datacontenttype": "application/json",
        "data": data,
    }


def _data(rng: random.Random, run_id: Any) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "dataset": {"name": "spirals", "samples": 300, "seed": rng.randrange(100)},
        "ga": {"population": 4, "generations": 1, "tournament_size": 2, "elite": 1},
    }


def _bad_run_id(rng: random.Random) -> Any:
    """A run id no request can carry, so the record is dead-lettered, never rejected."""
    return rng.choice([None, 123, 1.5, ["r"], {"id": "r"}, "", "../r", "r" * 200, "a b", "\u00e9"])


def malformed(n: int, seed: int = 1) -> list[Bad]:
    """`n` varied records that every worker must dead-letter (deterministic for a seed)."""
    rng = random.Random(seed)
    makers = [
        _random_bytes,
        _truncated,
        _invalid_utf8,
        _not_an_object,
        _no_specversion,
        _bad_structured,
        _bad_binary,
        _unknown_type,
        _deep,
        _wrong_types,
        _huge_number,
        _traversal_without_run_id,
        _tombstone,
    ]
    out = [makers[i % len(makers)](rng) for i in range(n)]
    # A few oversize records (more would only measure the network).
    for i in range(0, n, 1000):
        out[i] = Bad("oversize", b"big", b'{"pad":"' + b"x" * (RECORD_LIMIT + 10 * i) + b'"}')
    return out


def _key(rng: random.Random) -> bytes | None:
    return rng.choice([None, b"", rng.randbytes(8), f"k-{rng.randrange(10**6)}".encode()])


def _json(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def _random_bytes(rng: random.Random) -> Bad:
    return Bad("random-bytes", _key(rng), rng.randbytes(rng.randrange(1, 300)))


def _truncated(rng: random.Random) -> Bad:
    full = _json(_envelope(rng, _data(rng, f"t-{rng.randrange(10**6)}")))
    return Bad("truncated-json", _key(rng), full[: rng.randrange(1, len(full) - 1)])


def _invalid_utf8(rng: random.Random) -> Bad:
    full = _json(_envelope(rng, _data(rng, "u")))
    cut = rng.randrange(1, len(full) - 1)
    return Bad(
        "invalid-utf8",
        _key(rng),
        full[:cut] + rng.choice([b"\xff", b"\xc3(", b"\xed\xa0\x80"]) + full[cut:],
    )


def _not_an_object(rng: random.Random) -> Bad:
    return Bad(
        "not-an-object", _key(rng), rng.choice([b"[1,2]", b"42", b'"s"', b"null", b"true", b""])
    )


def _no_specversion(rng: random.Random) -> Bad:
    env = _envelope(rng, _data(rng, "n"))
    del env["specversion"]
    return Bad("no-specversion", _key(rng), _json(env))


def _bad_structured(rng: random.Random) -> Bad:
    env = _envelope(rng, _data(rng, f"s-{rng.randrange(10**6)}"))
    match rng.randrange(6):
        case 0:
            env["specversion"] = rng.choice(["0.3", 1.0, "2.0", None])
        case 1:
            del env["id"]
        case 2:
            env["id"] = rng.choice(["", 7, "i" * 300])
        case 3:
            env["unexpected"] = "attribute"
        case 4:
            env["type"] = rng.choice([5, None, ""])
        case _:
            env["source"] = "s" * 600
    headers = (("content-type", b"application/cloudevents+json"),) if rng.random() < 0.5 else ()
    return Bad("bad-ce-structured", _key(rng), _json(env), headers)


def _bad_binary(rng: random.Random) -> Bad:
    headers = {
        "ce_specversion": b"1.0",
        "ce_id": uuid.UUID(int=rng.getrandbits(128)).hex.encode(),
        "ce_source": b"bench/binary",
        "ce_type": b"thunderhelm.run.requested",
        "content-type": b"application/json",
    }
    match rng.randrange(5):
        case 0:
            headers["ce_specversion"] = b"0.3"
        case 1:
            del headers["ce_id"]
        case 2:
            headers["ce_type"] = b"\xff\xfe"
        case 3:
            headers["content-type"] = b"text/plain"
        case _:
            headers["ce_sampledrate"] = b"abc"
    value = _json(_data(rng, f"b-{rng.randrange(10**6)}"))
    return Bad("bad-ce-binary", _key(rng), value, tuple(headers.items()))


def _unknown_type(rng: random.Random) -> Bad:
    kind = rng.choice(["thunderhelm.run.deleted", "com.example.order", "thunderhelm.run.accepted"])
    return Bad("unknown-type", _key(rng), _json(_envelope(rng, _data(rng, "x"), kind)))


def _deep(rng: random.Random) -> Bad:
    depth = rng.randrange(40, 3000)
    data = b"[" * depth + b"]" * depth
    env = _json(_envelope(rng, None)).replace(b'"data": null', b'"data": ' + data)
    return Bad("deep-nesting", _key(rng), env)


def _wrong_types(rng: random.Random) -> Bad:
    data: Any = rng.choice(["a string", 5, [1, 2], _data(rng, _bad_run_id(rng))])
    return Bad("wrong-types", _key(rng), _json(_envelope(rng, data)))


def _huge_number(rng: random.Random) -> Bad:
    number = rng.choice([b"1" * 5000, b"1e999", b"-1e999", b"9" * 400])
    body = _json(_envelope(rng, {"run_id": "h", "ga": {"population": 0}}))
    return Bad(
        "huge-number",
        _key(rng),
        body.replace(b'"population": 0', b'"population": ' + number).replace(
            b'"run_id": "h"', b'"run_id": ' + number
        ),
    )


def _traversal_without_run_id(rng: random.Random) -> Bad:
    path = rng.choice(["../../etc/passwd", "/etc/passwd", "a/../../b.csv", "os:system"])
    data = {"dataset": {"name": rng.choice(["csv", "npz", "os:system"]), "path": path}}
    return Bad("traversal-no-run-id", _key(rng), _json(_envelope(rng, data)))


def _tombstone(rng: random.Random) -> Bad:
    return Bad("tombstone", f"tomb-{rng.randrange(10**6)}".encode(), None)


# --- measuring ------------------------------------------------------------------


async def produce_all(topic: str, records: list[Bad]) -> None:
    """Produce every record as fast as the client allows (acks=all, one flush at the end)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=BOOTSTRAP, acks="all", linger_ms=5, max_request_size=4 * 2**20
    )
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value=r.value, key=r.key, headers=list(r.headers))
            for r in records
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def create_topics(names: list[str], partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, partitions, 1) for n in names])
    finally:
        await admin.close()


def rate(records: list[ConsumerRecord[bytes, bytes]]) -> float:
    """Records per second between the first and last CreateTime of `records`."""
    stamps = sorted(r.timestamp for r in records)
    span_s = max((stamps[-1] - stamps[0]) / 1000.0, 1e-3)
    return float((len(stamps) - 1) / span_s)


async def raw_loop_rate(records: list[Bad], partitions: int) -> float:
    """The baseline: consume a batch, produce each record with acks=all, await, commit."""
    tag = uuid.uuid4().hex[:8]
    source, sink = f"bench-raw-{tag}.in", f"bench-raw-{tag}.out"
    await create_topics([source, sink], partitions)
    await produce_all(source, records)
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=BOOTSTRAP,
        group_id=f"bench-raw-{tag}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", max_request_size=4 * 2**20)
    await consumer.start()
    await producer.start()
    moved = 0
    try:
        while moved < len(records):
            batch = await consumer.getmany(timeout_ms=200)
            futures = [
                await producer.send(sink, value=r.value, key=r.key, headers=list(r.headers))
                for part in batch.values()
                for r in part
            ]
            await asyncio.gather(*futures)
            await consumer.commit()
            moved += len(futures)
    finally:
        await consumer.stop()
        await producer.stop()
    out = await collect([sink], lambda seen: len(seen) >= len(records), timeout_s=120)
    return rate(out)


def original_headers(record: ConsumerRecord[bytes, bytes]) -> tuple[tuple[str, bytes], ...]:
    """The input's headers as the DLQ record keeps them (trace headers renamed back)."""
    return tuple(dlq_original_headers(record.headers))


def identical(sent: list[Bad], dead: list[ConsumerRecord[bytes, bytes]]) -> bool:
    """Same multiset of (key, value, original headers) on both sides."""
    want = Counter((b.key, b.value, b.headers) for b in sent)
    got = Counter((r.key, r.value, original_headers(r)) for r in dead)
    return want == got


async def _valid_run(worker: WorkerProcess) -> bool:
    s = worker.settings
    run_id = f"bench-after-{uuid.uuid4().hex[:6]}"
    data = _data(random.Random(0), run_id)
    data["training"] = {"epochs": 1, "batch_size": 32}
    data["search_space"] = {"max_levels": 1, "max_units": 2, "max_neurons": 8}
    env = _envelope(random.Random(1), data)
    env["id"] = uuid.uuid4().hex
    await produce_all(s.run_requests, [Bad("valid", run_id.encode(), _json(env))])
    seen = await collect(
        [s.run_results],
        lambda got: any(r.key == run_id.encode() for r in got),
        timeout_s=180,
    )
    for record in seen:
        if record.key == run_id.encode():
            result = decode_record(record.value, {}).data
            return isinstance(result, dict) and result.get("status") == "succeeded"
    return False


async def worker_run(records: list[Bad], tmp: Path, *, live: bool) -> dict[str, Any]:
    """One fresh worker drains `records` as a backlog; with `live`, then gets them again.

    Backlog: the records are on run-requests before the worker starts, as the
    raw loop's input is on its topic before the loop starts, so both rates
    measure draining the same backlog on the same broker. Live: the same
    records again while the worker runs, so the producer (another process on
    the same cores) competes with the worker; a figure, not the bar. A valid
    run is submitted last.
    """
    env = fresh_env(tmp, THUNDERHELM_LIMIT_MAX_RECORD_BYTES=str(RECORD_LIMIT))
    worker = WorkerProcess(env, tmp / f"worker-{uuid.uuid4().hex[:6]}.log")
    s = worker.settings
    await ensure_topics(s)
    await produce_all(s.run_requests, records)
    await asyncio.to_thread(worker.start)
    try:
        backlog = await collect(
            [s.dead_letters],
            lambda seen: len(seen) >= len(records),
            timeout_s=300,
            alive=worker.alive,
        )
        sent = list(records)
        out: dict[str, Any] = {"backlog_records_per_s": rate(backlog)}
        everything = backlog
        if live:
            await produce_all(s.run_requests, records)
            sent += records
            everything = await collect(
                [s.dead_letters],
                lambda seen: len(seen) >= len(sent),
                timeout_s=300,
                alive=worker.alive,
            )
            drained = {(r.partition, r.offset) for r in backlog}
            out["live_records_per_s"] = rate(
                [r for r in everything if (r.partition, r.offset) not in drained]
            )
        out["sent"] = len(sent)
        out["dead_lettered"] = len(everything)
        out["bytes_identical"] = identical(sent, everything)
        out["stages"] = Counter(dict(r.headers).get("dlq.stage", b"?").decode() for r in everything)
        out["worker_alive"] = worker.alive()
        if live:
            out["valid_after_ok"] = out["worker_alive"] and await _valid_run(worker)
            out["worker_alive"] = out["worker_alive"] and worker.alive()
        return out
    finally:
        worker.stop()


def run(opts: Options) -> dict[str, Any]:
    """The whole benchmark, for the `thunderhelm bench` dispatcher (which writes the files).

    Rounds alternate the raw loop and a fresh worker on the same backlog; the
    bar compares the medians: a backlog drains in a second or two, and a
    shared machine's hiccups are of that order.
    """
    records = malformed(QUICK_RECORDS if opts.quick else RECORDS, SEED)
    rounds = 1 if opts.quick else ROUNDS
    backlog = records * (1 if opts.quick else BACKLOG_REPEAT)
    raw_rates: list[float] = []
    rounds_out: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="thunderhelm-bench-dlq-") as tmp:
        for i in range(rounds):
            raw_rates.append(asyncio.run(raw_loop_rate(backlog, partitions=PARTITIONS)))
            rounds_out.append(asyncio.run(worker_run(backlog, Path(tmp), live=i == rounds - 1)))
    last = rounds_out[-1]
    backlog_rates = [r["backlog_records_per_s"] for r in rounds_out]
    raw = statistics.median(raw_rates)
    routed = statistics.median(backlog_rates)
    ratio = round(routed / raw, 3)
    sent = sum(r["sent"] for r in rounds_out)
    dead = sum(r["dead_lettered"] for r in rounds_out)
    lost = sent - dead
    stages: Counter[str] = Counter()
    for r in rounds_out:
        stages.update(r["stages"])
    kinds = dict(sorted(Counter(r.kind for r in records).items()))
    live_rate = last["live_records_per_s"]
    result: dict[str, Any] = {
        "quick": opts.quick,
        "sent": sent,
        "dead_lettered": dead,
        "lost": lost,
        "bytes_identical": all(r["bytes_identical"] for r in rounds_out),
        "worker_alive": all(r["worker_alive"] for r in rounds_out),
        "valid_after_ok": last["valid_after_ok"],
        "dlq_records_per_s": round(routed, 1),
        "raw_loop_records_per_s": round(raw, 1),
        "throughput_ratio_vs_raw": ratio,
        "rounds": rounds,
        "round_dlq_records_per_s": [round(x, 1) for x in backlog_rates],
        "round_raw_loop_records_per_s": [round(x, 1) for x in raw_rates],
        "round_ratios": [round(w / r, 3) for w, r in zip(backlog_rates, raw_rates, strict=True)],
        "live_dlq_records_per_s": round(live_rate, 1),
        "live_ratio_vs_raw": round(live_rate / raw, 3),
        "kinds": kinds,
        "stages": dict(sorted(stages.items())),
        "raw_loop": RAW_LOOP,
        "rate_clock": "broker CreateTime of the first and last output record",
        "partitions": PARTITIONS,
        "record_limit_bytes": RECORD_LIMIT,
        "seed": SEED,
    }
    result["bars"] = [
        bar(
            f"{len(records):,} varied malformed records, {len(backlog) // len(records)}x over, "
            f"through {rounds} fresh workers (a backlog each, then once live) -> as many "
            "dead-letter records, 0 lost",
            f"{sent:,} sent, {dead:,} dead-lettered, {lost} lost",
            lost == 0,
        ),
        bar(
            "original key, value, headers identical",
            str(result["bytes_identical"]),
            result["bytes_identical"],
        ),
        bar("worker alive afterwards", str(result["worker_alive"]), result["worker_alive"]),
        bar(
            "a valid run submitted afterwards succeeds",
            str(result["valid_after_ok"]),
            result["valid_after_ok"],
        ),
        bar(
            "DLQ routing >= 0.5x a raw aiokafka consume->produce loop (medians, both drain "
            "a backlog)",
            f"{ratio}x ({routed:,.0f} vs {raw:,.0f} records/s)",
            ratio >= 0.5,
        ),
    ]
    result["summary"] = (
        f"Kinds of malformed record: {', '.join(f'{k} {v}' for k, v in kinds.items())}. "
        f"Dead-letter stages: {', '.join(f'{k} {v}' for k, v in result['stages'].items())}."
        f"\n\nRaw loop: {RAW_LOOP}. Both rates: records between the broker CreateTime of "
        f"the first and the last output record; {PARTITIONS} partitions per topic, one "
        f"worker process with tracing on (a traced input gets its own dead-letter span; "
        f"untraced ones, like all of these, share one span per intake batch with an event "
        f"per record). {rounds} rounds, each the raw loop then a fresh worker draining the "
        f"same backlog of {len(backlog):,} records (the {len(records):,} varied ones "
        f"{len(backlog) // len(records)}x over; the worker starts reading once its "
        f"interpreter pool is warm); per-round ratios {result['round_ratios']}. While the "
        f"producer is "
        f"still writing (live: another process on the same two cores) the worker routed "
        f"{live_rate:,.0f} records/s ({result['live_ratio_vs_raw']}x the raw loop's "
        f"median)."
    )
    return result
