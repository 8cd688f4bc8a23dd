"""User-side Kafka helpers: submit a command, follow a run's events and result.

These use plain aiokafka (no Faust): they are what any user could write, and
the CLI's `submit`, `cancel` and `watch` are thin shells around them.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from thunderhelm.schemas import events as ev
from thunderhelm.schemas.codec import decode_record, encode_event
from thunderhelm.schemas.envelope import JSON_CONTENT_TYPE, CloudEvent, utc_now_iso
from thunderhelm.schemas.requests import CANCEL_REQUESTED, CONTINUE_REQUESTED, RUN_REQUESTED
from thunderhelm.streams.clients.errors import TopicMissing
from thunderhelm.streams.config.settings import Settings
from thunderhelm.streams.observability import telemetry

CLIENT_SOURCE = "thunderhelm/cli"


def command_event(kind: str, data: Mapping[str, Any], traceparent: str | None) -> CloudEvent:
    return CloudEvent(
        specversion="1.0",
        id=str(uuid.uuid4()),
        source=CLIENT_SOURCE,
        type=kind,
        subject=str(data["run_id"]),
        time=utc_now_iso(),
        datacontenttype=JSON_CONTENT_TYPE,
        data=dict(data),
        traceparent=traceparent,
    )


async def send_command(settings: Settings, kind: str, data: Mapping[str, Any]) -> str:
    """Produce one command (structured mode) in a PRODUCER span; return its trace id."""
    run_id = str(data["run_id"])
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    try:
        await producer.start()  # inside: a failed start must still be stopped
        # Without this, a send to a missing topic waits out the request timeout.
        await producer.client.force_metadata_update()
        if settings.run_requests not in producer.client.cluster.topics():
            raise TopicMissing(
                f"topic {settings.run_requests} does not exist; a worker creates it on start"
            )
        with telemetry.produce_span(settings.run_requests, run_id) as span:
            headers = telemetry.inject_headers()
            traceparent = telemetry.traceparent_of(span)
            value = encode_event(command_event(kind, data, traceparent))
            await producer.send_and_wait(
                settings.run_requests,
                value=value,
                key=run_id.encode(),
                headers=[*headers.items(), ("content-type", b"application/cloudevents+json")],
            )
    finally:
        await producer.stop()
    return telemetry.trace_id_of(traceparent) or ""


async def submit(settings: Settings, request: Mapping[str, Any]) -> str:
    return await send_command(settings, RUN_REQUESTED, request)


async def cancel(settings: Settings, run_id: str, reason: str) -> str:
    return await send_command(settings, CANCEL_REQUESTED, {"run_id": run_id, "reason": reason})


async def continue_run(
    settings: Settings, run_id: str, generations: int, budget: Mapping[str, Any] | None
) -> str:
    data: dict[str, Any] = {"run_id": run_id, "generations": generations}
    if budget:
        data["budget"] = dict(budget)
    return await send_command(settings, CONTINUE_REQUESTED, data)


async def run_events(settings: Settings, run_id: str) -> list[CloudEvent]:
    """The run's records on run-events that decode, start of log to its end."""
    found = []
    for key, value in await read_topic(settings, settings.run_events):
        if key == run_id.encode() and value is not None:
            with contextlib.suppress(ValueError):
                found.append(decode_record(value, {}))
    return found


async def run_record(settings: Settings, run_id: str) -> tuple[dict[str, Any] | None, Any]:
    """The run's request (from its `run.accepted`) and its latest result, each None if absent."""
    request: dict[str, Any] | None = None
    for event in await run_events(settings, run_id):
        data = event.data if isinstance(event.data, dict) else {}
        if event.type == ev.RUN_ACCEPTED and isinstance(data.get("request"), dict):
            request = dict(data["request"])
            break
    result = None
    for key, value in await read_topic(settings, settings.run_results):
        if key == run_id.encode() and value is not None:
            with contextlib.suppress(ValueError):
                found = decode_record(value, {}).data
                result = found if isinstance(found, dict) else result
    return request, result


def same_outcome(first: Mapping[str, Any], second: Mapping[str, Any]) -> bool:
    """Whether two runs of one request found the same best network with the same fitness."""

    def best(result: Mapping[str, Any]) -> tuple[Any, Any]:
        found = result.get("best") or {}
        return found.get("genome"), found.get("fitness")

    return first.get("status") == second.get("status") and best(first) == best(second)


@dataclass(frozen=True)
class Observed:
    topic: str
    event: CloudEvent
    traceparent: str | None


async def follow(
    settings: Settings, run_id: str, *, timeout_s: float | None = None
) -> AsyncIterator[Observed]:
    """Every event of a run from the start of the log, then its current result; then stop.

    A continued run has a result per revision: the one that counts is the
    one after the run's last `run.continued` (or its first, never continued).
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False
    )
    try:
        await consumer.start()  # inside: a failed start must still be stopped
        parts: list[TopicPartition] = []
        for topic in (settings.run_events, settings.run_results):
            for p in sorted(
                consumer.partitions_for_topic(topic) or await _partitions(consumer, topic)
            ):
                parts.append(TopicPartition(topic, p))
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        events = [tp for tp in parts if tp.topic == settings.run_events]
        # The result may be fetched before the run's events (another topic): hold
        # it until run-events has been read to its end as of that moment.
        result: Observed | None = None
        ends: dict[TopicPartition, int] = {}
        continued = 0  # `run.continued` events seen: the current result is revision continued+1
        while deadline is None or time.monotonic() < deadline:
            caught_up = result is not None and all(
                [await consumer.position(tp) >= ends[tp] for tp in events]
            )
            if result is not None and caught_up:
                if _revision(result) > continued:
                    yield result
                    return
                result = None  # the run went on after this result: wait for its next
            batch = await consumer.getmany(*(events if result else ()), timeout_ms=500)
            for records in batch.values():
                for record in records:
                    if record.key != run_id.encode():
                        continue
                    headers = {k: bytes(v) for k, v in record.headers}
                    try:
                        event = decode_record(record.value, headers)
                    except ValueError:
                        continue
                    tp = headers.get("traceparent")
                    seen = Observed(record.topic, event, tp.decode() if tp else None)
                    if record.topic != settings.run_results:
                        continued += event.type == ev.RUN_CONTINUED
                        yield seen
                    elif result is None or _revision(seen) > _revision(result):
                        result = seen
                        ends = await consumer.end_offsets(events)
        raise TimeoutError(f"run {run_id} did not finish within {timeout_s} s")
    finally:
        await consumer.stop()


def _revision(result: Observed) -> int:
    data = result.event.data
    return int(data.get("revision", 1)) if isinstance(data, dict) else 1


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    await consumer._client.force_metadata_update()  # aiokafka has no public refresh
    parts = consumer.partitions_for_topic(topic)
    if not parts:
        raise TopicMissing(f"topic {topic} does not exist; has a worker ever run?")
    return set(parts)


def describe(observed: Observed) -> str:
    """One human line per event for `thunderhelm watch`."""
    e = observed.event
    data: dict[str, Any] = e.data if isinstance(e.data, dict) else {}
    short = e.type.removeprefix("thunderhelm.")
    if e.type == ev.GENERATION_COMPLETED:
        return (
            f"generation {data['generation'] + 1}: "
            f"best {data.get('best_fitness') or float('nan'):.4f}"
            f"  mean {data.get('mean_fitness') or float('nan'):.4f}"
            f"  evaluations {data.get('evaluations')}  ({data.get('duration_s', 0):.1f}s)"
        )
    if e.type == ev.CANDIDATE_COMPLETED:
        fitness = data.get("fitness")
        shown = "failed" if fitness is None else f"{fitness:.4f}"
        where = f"  on {data['worker']}" if data.get("worker") else ""
        return (
            f"generation {data['generation'] + 1}: candidate {data['index']}"
            f"  fitness {shown}  ({data.get('duration_s') or 0:.1f}s){where}"
        )
    if e.type == ev.CANDIDATES_DISPATCHED:
        count = len(data.get("candidates") or ())
        return f"generation {data['generation'] + 1}: {count} candidates out to every worker"
    if e.type == ev.RUN_REJECTED:
        return f"rejected: {'; '.join(data.get('reasons', []))}"
    if e.type == ev.CONTINUE_REJECTED:
        return f"continue refused: {'; '.join(data.get('reasons', []))}"
    if e.type == ev.RUN_CONTINUED:
        total = (data.get("request") or {}).get("ga", {}).get("generations")
        return f"continued: {data.get('generations')} more generation(s), {total} in all"
    if e.type in ev.TERMINAL_TYPES:
        result = data.get("result", {})
        best = (result.get("best") or {}).get("metrics", {})
        key = "val_r2" if best.get("val_r2") is not None else "val_accuracy"
        line = f"{short}: {key}={best.get(key)}"
        if model := result.get("model"):
            line += f" model={model_summary(model)}"
        if result.get("stopped_by") not in (None, "generations"):
            line += f" (stopped by {result['stopped_by']})"
        return f"{line} artifact={result.get('artifact')}"
    return short


def model_summary(model: Mapping[str, Any]) -> str:
    """The delivered model in a few words: its kind, members and test accuracy."""
    members = model.get("members") or []
    # Generations counted from 1, as `watch` prints them.
    where = ", ".join(
        f"gen {int(m['generation']) + 1} #{m.get('index')}"
        if isinstance(m.get("generation"), int)
        else "?"
        for m in members
    )
    scores = model.get("test") or {}
    name = "r2" if scores.get("r2") is not None else "accuracy"  # a regression model: R^2
    test = scores.get(name)
    shown = f"{test:.4f}" if isinstance(test, float) else "-"
    kind = f"ensemble of {len(members)}" if model.get("kind") == "ensemble" else "single"
    return f"{kind} [{where}] test_{name} {shown}"


def _best_scores(metrics: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The best network's headline figures: R^2 and RMSE for regression, else accuracy."""
    if metrics.get("val_r2") is not None:
        return [("best val_r2", metrics["val_r2"]), ("best val_rmse", metrics.get("val_rmse"))]
    return [("best val_accuracy", metrics.get("val_accuracy"))]


def trace_url(settings: Settings, trace_id: str) -> str:
    return f"{settings.jaeger_ui}/trace/{trace_id}"


def trace_api_url(settings: Settings, trace_id: str) -> str:
    return f"{settings.jaeger_ui}/api/traces/{trace_id}"


def summary(result: Mapping[str, Any]) -> str:
    """The result as a short table (the full JSON comes with `--json`)."""
    best = result.get("best") or {}
    metrics = best.get("metrics") or {}
    genome = best.get("genome") or {}
    levels = genome.get("levels") or []
    shape = " | ".join(
        ",".join(f"{u.get('neurons')}{str(u.get('activation', ''))[:4]}" for u in level)
        for level in levels
    )
    error = result.get("error") or {}
    rows: list[tuple[str, Any]] = [
        ("run", result.get("run_id")),
        ("status", result.get("status")),
        *_best_scores(metrics),
        ("best val_loss", metrics.get("val_loss")),
        ("params", metrics.get("params")),
        ("hidden levels", shape or "-"),
        ("generations", result.get("generations")),
        ("evaluations", result.get("evaluations")),
        ("duration", f"{float(result.get('duration_s') or 0):.1f}s"),
        ("artifact", result.get("artifact")),
    ]
    if model := result.get("model"):
        rows.insert(-1, ("model", model_summary(model)))
    if result.get("stopped_by"):
        rows.insert(-1, ("stopped by", result["stopped_by"]))
    if error:
        rows.append(("error", f"{error.get('class')}: {error.get('message')}"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(
        f"  {k:<{width}}  {round(v, 4) if isinstance(v, float) else v}" for k, v in rows
    )


async def read_topic(settings: Settings, topic: str) -> list[tuple[bytes | None, bytes | None]]:
    """(key, value) of every record of `topic`, from the start to its current end."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False
    )
    try:
        await consumer.start()  # inside: a failed start must still be stopped
        await consumer._client.force_metadata_update()  # no public refresh
        partitions = consumer.partitions_for_topic(topic) or set()
        parts = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not parts:
            return []
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        out: list[tuple[bytes | None, bytes | None]] = []
        while [tp for tp in parts if await consumer.position(tp) < ends[tp]]:
            batch = await consumer.getmany(timeout_ms=1000)
            for records in batch.values():
                out.extend((r.key, r.value) for r in records)
        return out
    finally:
        await consumer.stop()
