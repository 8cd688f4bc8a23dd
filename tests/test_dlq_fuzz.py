"""Hostile input against a real worker: thousands of malformed records, none lost.

Hypothesis generates the records (random bytes, truncated JSON, wrong types,
huge numbers, deep nesting, invalid UTF-8, oversize values, bad CloudEvents
attributes in both modes, path traversal, names outside the registries,
unknown types); a few valid small requests are interleaved. Every record
whose bytes cannot be a command must be on dead-letters byte for byte; every
well-formed request with a run id but invalid fields must be `run.rejected`
with reasons; nothing bad is ever accepted; the valid runs succeed; the
worker stays alive throughout. The dead-letter span is checked in Jaeger.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from tests.kafka_helpers import BOOTSTRAP, WorkerProcess, collect, fresh_env
from tests.test_e2e_kafka import small_request, structured
from thunderhelm.schemas import events as ev
from thunderhelm.schemas.codec import decode_record
from thunderhelm.streams.wire.failures import original_headers as dlq_original_headers

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
JAEGER = os.environ.get("THUNDERHELM_JAEGER_UI", "http://127.0.0.1:16686")
LIMIT = 65_536
N_BAD = 2500
N_VALID = 3


@dataclass(frozen=True)
class Case:
    kind: str
    expect: str  # "dlq" | "rejected"
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    run_id: str | None = None  # set for "rejected" cases when materialised


RID = "RUNID-PLACEHOLDER"


def envelope(data: Any, kind: str = "thunderhelm.run.requested") -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": uuid.uuid4().hex,
        "source": "tests/fuzz",
        "type": kind,
        "datacontenttype": "application/json",
        "data": data,
    }


def dumps(obj: Any) -> bytes:
    return json.dumps(obj).encode()


keys = st.one_of(st.none(), st.binary(max_size=40), st.text(max_size=20).map(str.encode))
bad_run_ids = st.one_of(
    st.none(),
    st.integers(),
    st.floats(allow_nan=False),
    st.lists(st.text(max_size=3), max_size=2),
    st.sampled_from(["", "../x", "a b", "x" * 200, ".", "/etc/passwd"]),
)
junk_values = st.one_of(
    st.text(max_size=30),
    st.floats(allow_nan=False),
    st.booleans(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)


def base_data() -> dict[str, Any]:
    return small_request(RID, generations=1)


@st.composite
def random_bytes(draw: st.DrawFn) -> Case:
    return Case("random-bytes", "dlq", draw(keys), draw(st.binary(max_size=300)))


@st.composite
def truncated(draw: st.DrawFn) -> Case:
    full = dumps(envelope(base_data()))
    cut = draw(st.integers(1, len(full) - 1))
    return Case("truncated-json", "dlq", draw(keys), full[:cut])


@st.composite
def invalid_utf8(draw: st.DrawFn) -> Case:
    full = dumps(envelope(base_data()))
    at = draw(st.integers(0, len(full)))
    junk = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"]))
    return Case("invalid-utf8", "dlq", draw(keys), full[:at] + junk + full[at:])


@st.composite
def deep(draw: st.DrawFn) -> Case:
    depth = draw(st.integers(33, 5000))
    nested = b"[" * depth + b"]" * depth
    body = dumps(envelope("HOLE")).replace(b'"HOLE"', nested)
    return Case("deep-nesting", "dlq", draw(keys), body)


@st.composite
def bad_structured(draw: st.DrawFn) -> Case:
    env = envelope(base_data())
    which = draw(st.sampled_from(["specversion", "id", "source", "type", "extra", "missing"]))
    if which == "extra":
        env[draw(st.sampled_from(["x", "runid", "Data", "_"]))] = draw(junk_values)
    elif which == "missing":
        del env[draw(st.sampled_from(["specversion", "id", "source", "type"]))]
    else:
        bad = {
            "specversion": st.one_of(st.sampled_from(["0.3", "2.0", ""]), junk_values),
            "id": st.one_of(st.just(""), st.text(min_size=201, max_size=260), st.integers()),
            "source": st.one_of(st.just(""), st.integers(), st.just("s" * 501)),
            "type": st.one_of(st.just(""), st.integers(), st.none()),
        }[which]
        value = draw(bad)
        if which == "specversion" and value == "1.0":
            value = "1"
        env[which] = value
    ct = draw(st.sampled_from([(), (("content-type", b"application/cloudevents+json"),)]))
    return Case("bad-ce-structured", "dlq", draw(keys), dumps(env), ct)


@st.composite
def bad_binary(draw: st.DrawFn) -> Case:
    headers = {
        "ce_specversion": b"1.0",
        "ce_id": uuid.uuid4().hex.encode(),
        "ce_source": b"tests/fuzz-binary",
        "ce_type": b"thunderhelm.run.requested",
        "content-type": b"application/json",
    }
    which = draw(st.sampled_from(["version", "drop", "utf8", "ctype", "sampledrate", "body"]))
    body = dumps(base_data()).replace(RID.encode(), b"bin")
    match which:
        case "version":
            headers["ce_specversion"] = draw(st.sampled_from([b"0.3", b"", b"1.1"]))
        case "drop":
            del headers[draw(st.sampled_from(["ce_id", "ce_source", "ce_type"]))]
        case "utf8":
            headers[draw(st.sampled_from(["ce_id", "ce_type", "content-type"]))] = b"\xff\xfe"
        case "ctype":
            headers["content-type"] = draw(st.sampled_from([b"text/plain", b"application/xml"]))
        case "sampledrate":
            headers["ce_sampledrate"] = draw(st.sampled_from([b"abc", b"0", b"1.5", b"--1"]))
        case _:
            body = draw(st.binary(max_size=60)) + b"{"
    return Case("bad-ce-binary", "dlq", draw(keys), body, tuple(headers.items()))


@st.composite
def unknown_type(draw: st.DrawFn) -> Case:
    kind = draw(
        st.one_of(
            st.sampled_from([ev.RUN_ACCEPTED, ev.RUN_SUCCEEDED, "com.example.x", "os.system"]),
            st.text(min_size=1, max_size=40).filter(lambda t: not t.startswith("thunderhelm.run")),
        )
    )
    return Case("unknown-type", "dlq", draw(keys), dumps(envelope(base_data(), kind)))


@st.composite
def no_run_id(draw: st.DrawFn) -> Case:
    """Well-formed envelope, data unusable and without a valid run id: dead-lettered."""
    data = base_data()
    data["run_id"] = draw(bad_run_ids)
    data[draw(st.sampled_from(["ga", "dataset", "training"]))] = draw(junk_values)
    kind = draw(st.sampled_from(["thunderhelm.run.requested", "thunderhelm.run.cancel-requested"]))
    return Case("wrong-types-no-run-id", "dlq", draw(keys), dumps(envelope(data, kind)))


@st.composite
def rejected(draw: st.DrawFn) -> Case:
    """A request with a valid run id and a field that breaks the schema: run.rejected."""
    data = base_data()
    which = draw(
        st.sampled_from(
            ["type", "huge", "traversal", "registry", "fitness", "extra", "negative", "float"]
        )
    )
    match which:
        case "type":
            data["ga"]["population"] = draw(
                st.one_of(st.text(max_size=4), st.booleans(), st.lists(st.integers(), max_size=2))
            )
        case "huge":
            data["ga"]["generations"] = draw(st.integers(10**3 + 1, 10**40))
        case "traversal":
            data["dataset"] = {
                "name": draw(st.sampled_from(["csv", "npz"])),
                "path": draw(
                    st.sampled_from(
                        ["../../etc/passwd", "/etc/passwd", "a/../../b.csv", "./x.csv", "a//b"]
                    )
                ),
            }
        case "registry":
            data["dataset"] = {"name": draw(st.sampled_from(["os:system", "subprocess", "eval"]))}
        case "fitness":
            data["fitness"] = {"name": draw(st.sampled_from(["os:system", "builtins:exec"]))}
        case "extra":
            data[draw(st.sampled_from(["module", "function", "code", "file"]))] = "os:system"
        case "negative":
            data["training"]["epochs"] = draw(st.integers(max_value=0))
        case _:
            data["budget"]["timeout_s"] = draw(st.sampled_from([float("inf"), -1.0, 1e300]))
    return Case(f"rejected-{which}", "rejected", None, dumps(envelope(data)))


any_case = st.one_of(
    random_bytes(),
    truncated(),
    invalid_utf8(),
    deep(),
    bad_structured(),
    bad_binary(),
    unknown_type(),
    no_run_id(),
    rejected(),
)


def generate(n: int) -> list[Case]:
    """`n` cases from Hypothesis (generate phase only: every example is kept, none shrunk)."""
    found: list[Case] = []

    @seed(20261128)
    @settings(
        max_examples=n,
        phases=[Phase.generate],
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(any_case)
    def keep(case: Case) -> None:
        found.append(case)

    keep()
    # Oversize values: a handful is enough (each costs a network round of its size).
    cases = found + [
        Case("oversize", "dlq", b"big", dumps(envelope({"pad": "x" * (LIMIT + 997 * i)})))
        for i in range(8)
    ]
    out = []
    for i, case in enumerate(cases):
        if case.expect == "rejected":
            run_id = f"fz-{i}-{uuid.uuid4().hex[:4]}"
            value = (case.value or b"").replace(RID.encode(), run_id.encode())
            out.append(Case(case.kind, case.expect, run_id.encode(), value, (), run_id))
        else:
            out.append(case)
    return out


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    tmp = tmp_path_factory.mktemp("fuzz")
    env = fresh_env(tmp, THUNDERHELM_LIMIT_MAX_RECORD_BYTES=str(LIMIT))
    proc = WorkerProcess(env, tmp / "worker.log")
    proc.start()
    yield proc
    proc.stop()


async def produce_cases(topic: str, cases: list[tuple[bytes | None, bytes | None, Any]]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=BOOTSTRAP, acks="all", linger_ms=5, max_request_size=4 * 2**20
    )
    await producer.start()
    try:
        futures = [await producer.send(topic, value=v, key=k, headers=list(h)) for k, v, h in cases]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def original_headers(record: ConsumerRecord[bytes, bytes]) -> tuple[tuple[str, bytes], ...]:
    """The input's headers as the DLQ record keeps them (trace headers renamed back)."""
    return tuple(dlq_original_headers(record.headers))


async def test_thousands_of_malformed_records_none_lost_valid_runs_succeed(
    worker: WorkerProcess,
) -> None:
    s = worker.settings
    cases = generate(N_BAD)
    valid_ids = [f"fz-valid-{i}-{uuid.uuid4().hex[:4]}" for i in range(N_VALID)]
    stream: list[tuple[bytes | None, bytes | None, Any]] = [
        (c.key, c.value, c.headers) for c in cases
    ]
    step = len(stream) // (N_VALID + 1)
    for i, run_id in enumerate(valid_ids):  # interleaved with the bad ones
        stream.insert((i + 1) * step, (run_id.encode(), structured(small_request(run_id, 1)), ()))
    dlq_cases = [c for c in cases if c.expect == "dlq"]
    rejected_ids = {c.run_id for c in cases if c.expect == "rejected"}
    assert len(dlq_cases) > 1500 and len(rejected_ids) > 150, Counter(c.kind for c in cases)

    alive_samples: list[bool] = []

    async def watch() -> None:
        while True:
            alive_samples.append(worker.alive())
            await asyncio.sleep(0.2)

    watcher = asyncio.create_task(watch())
    try:
        await produce_cases(s.run_requests, stream)

        def done(seen: list[ConsumerRecord[bytes, bytes]]) -> bool:
            dead = sum(1 for r in seen if r.topic == s.dead_letters)
            results = {r.key for r in seen if r.topic == s.run_results}
            logged = {r.key for r in seen if r.topic == s.run_events}
            return (
                dead >= len(dlq_cases)
                and all(v.encode() in results for v in valid_ids)
                and all(r.encode() in logged for r in rejected_ids if r)
            )

        records = await collect([s.dead_letters, s.run_results, s.run_events], done, timeout_s=300)
    finally:
        watcher.cancel()
    log = worker.log_path.read_text(errors="replace")[-3000:]
    assert alive_samples and all(alive_samples) and worker.alive(), log

    dead = [r for r in records if r.topic == s.dead_letters]
    want = Counter((c.key, c.value, c.headers) for c in dlq_cases)
    got = Counter((r.key, r.value, original_headers(r)) for r in dead)
    missing = want - got
    assert not missing, [k for k in list(missing)[:5]]
    assert got == want  # nothing else was dead-lettered, nothing twice

    events = [r for r in records if r.topic == s.run_events]
    by_type: dict[str, set[str]] = {}
    for r in events:
        e = decode_record(r.value, {})
        by_type.setdefault(e.type, set()).add(str(e.subject))
        if e.type == ev.RUN_REJECTED:
            assert e.data["reasons"], e.data
    assert rejected_ids <= by_type.get(ev.RUN_REJECTED, set())
    assert by_type.get(ev.RUN_ACCEPTED, set()) == set(valid_ids)  # nothing bad was accepted
    results = {
        r.key.decode(): decode_record(r.value, {}).data for r in records if r.topic == s.run_results
    }
    assert {k: v["status"] for k, v in results.items()} == dict.fromkeys(valid_ids, "succeeded")

    stages = Counter(dict(r.headers)["dlq.stage"] for r in dead)
    assert set(stages) <= {b"decode", b"validate"}, stages


async def test_nothing_in_a_request_is_executed(worker: WorkerProcess, tmp_path: Path) -> None:
    s = worker.settings
    marker = tmp_path / f"executed-{uuid.uuid4().hex}"
    hostile = [
        {"dataset": {"name": "os:system", "path": f"touch {marker}"}},
        {"dataset": {"name": "csv", "path": "../../etc/passwd"}},
        {"dataset": {"name": "npz", "path": str(marker)}},
        {"fitness": {"name": f"os:system('touch {marker}')"}},
        {"search_space": {"module": "os", "function": "system", "args": [f"touch {marker}"]}},
        {"dataset": {"name": "__import__('os').system('touch " + str(marker) + "')"}},
    ]
    ids = []
    batch: list[tuple[bytes | None, bytes | None, Any]] = []
    for i, override in enumerate(hostile):
        run_id = f"exec-{i}-{uuid.uuid4().hex[:4]}"
        ids.append(run_id)
        batch.append((run_id.encode(), structured({**small_request(run_id, 1), **override}), ()))
    await produce_cases(s.run_requests, batch)
    records = await collect(
        [s.run_events],
        lambda seen: {r.key for r in seen} >= {i.encode() for i in ids},
        timeout_s=60,
    )
    for run_id in ids:
        kinds = [decode_record(r.value, {}).type for r in records if r.key == run_id.encode()]
        assert kinds == [ev.RUN_REJECTED], (run_id, kinds)
    assert not marker.exists()
    assert worker.alive()


async def test_the_dead_letter_span_is_an_error_span_in_the_inputs_trace(
    worker: WorkerProcess,
) -> None:
    s = worker.settings
    trace_id = secrets.token_hex(16)
    traceparent = f"00-{trace_id}-{secrets.token_hex(8)}-01".encode()
    value = b"{ not json " + uuid.uuid4().hex.encode()
    await produce_cases(s.run_requests, [(b"traced", value, [("traceparent", traceparent)])])
    records = await collect(
        [s.dead_letters], lambda seen: any(r.value == value for r in seen), timeout_s=60
    )
    record = next(r for r in records if r.value == value)
    headers = dict(record.headers)
    assert headers["dlq.original.traceparent"] == traceparent
    assert headers["traceparent"].decode().split("-")[1] == trace_id

    deadline = time.monotonic() + 30
    spans: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{JAEGER}/api/traces/{trace_id}", timeout=5) as resp:
                body = json.load(resp)
            spans = [sp for tr in body.get("data", []) for sp in tr["spans"]]
            if any(sp["operationName"] == ev.EVENT_DEAD_LETTERED for sp in spans):
                break
        except OSError:  # 404 until the worker's batch processor exports the spans
            pass
        await asyncio.sleep(0.5)
    dead_span = next(sp for sp in spans if sp["operationName"] == ev.EVENT_DEAD_LETTERED)
    tags = {t["key"]: t["value"] for t in dead_span["tags"]}
    assert tags.get("otel.status_code") == "ERROR" and tags.get("error") is True, tags
    assert tags.get("dlq.stage") == "decode" and tags.get("error.type") == "DecodeError"
    assert dead_span["traceID"] == trace_id
    dlq_span_id = headers["traceparent"].decode().split("-")[2]
    assert any(sp["spanID"] == dlq_span_id for sp in spans)  # the record points at it
