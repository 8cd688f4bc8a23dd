"""`thunderhelm dlq list | show | redrive`: look into the dead-letter topic and re-drive.

A dead letter is only useful if someone can find it, read it and, once the
cause is fixed (or was transient), put it back. `list` filters records by
stage, error class, original topic and time; `show` decodes one record
(headers as text, or base64 when they are binary; the value likewise); and
`redrive` produces selected records to their original topic with their
original key, value and headers (an original `traceparent`/`tracestate` is
restored from `dlq.original.*`), keeping `dlq.attempt` and
`dlq.first.failure.time`, so a second failure is dead-lettered with the
attempt count incremented. Re-driving the same record twice is harmless: the
saga ignores a command id it has seen and a start for a run that exists.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from thunderhelm.streams.config.settings import Settings
from thunderhelm.streams.wire.failures import original_headers

PREVIEW_BYTES = 400
# Headers a re-driven record carries over from the dead letter besides the original ones.
KEPT_DLQ_HEADERS = ("dlq.attempt", "dlq.first.failure.time")


@dataclass(frozen=True)
class DeadLetter:
    """One record of the dead-letter topic with its `dlq.*` headers at hand."""

    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    def header(self, name: str) -> str | None:
        for key, raw in self.headers:
            if key == name:
                return raw.decode("utf-8", "replace")
        return None

    @property
    def stage(self) -> str:
        return self.header("dlq.stage") or "?"

    @property
    def error_class(self) -> str:
        return self.header("dlq.error.class") or "?"

    @property
    def original_topic(self) -> str | None:
        return self.header("dlq.original.topic")

    @property
    def dead_lettered_ms(self) -> int:
        stamp = self.header("dlq.time")
        return int(stamp) if stamp and stamp.isdigit() else self.timestamp_ms

    def original_headers(self) -> list[tuple[str, bytes]]:
        """The input's headers as they were: no `dlq.*`, trace headers restored."""
        return original_headers(self.headers)

    def redrive_headers(self) -> list[tuple[str, bytes]]:
        kept = [(n, v) for n, v in self.headers if n in KEPT_DLQ_HEADERS]
        return [*self.original_headers(), *kept]


@dataclass(frozen=True)
class Filter:
    stage: str | None = None
    error: str | None = None
    topic: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None
    partition: int | None = None
    records: frozenset[tuple[int, int]] = frozenset()

    def matches(self, dl: DeadLetter) -> bool:
        if self.records and (dl.partition, dl.offset) not in self.records:
            return False
        if self.partition is not None and dl.partition != self.partition:
            return False
        if self.stage and dl.stage != self.stage:
            return False
        if self.error and self.error.lower() not in dl.error_class.lower():
            return False
        if self.topic and dl.original_topic != self.topic:
            return False
        if self.since_ms is not None and dl.dead_lettered_ms < self.since_ms:
            return False
        return self.until_ms is None or dl.dead_lettered_ms <= self.until_ms

    @property
    def selects_something(self) -> bool:
        return any(
            v is not None
            for v in (self.stage, self.error, self.topic, self.since_ms, self.until_ms)
        ) or bool(self.records or self.partition is not None)


# --- reading ----------------------------------------------------------------------


async def read_dead_letters(
    settings: Settings, wanted: Filter, *, timeout_s: float = 30.0
) -> list[DeadLetter]:
    """Every matching record from the start of the topic to its end as of now."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        enable_auto_commit=False,
        max_partition_fetch_bytes=8 * 2**20,
    )
    try:
        await consumer.start()  # inside: a failed start must still be stopped
        topic = settings.dead_letters
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        parts = [TopicPartition(topic, p) for p in sorted(partitions)]
        if wanted.partition is not None:
            parts = [tp for tp in parts if tp.partition == wanted.partition]
        if wanted.records:
            parts = [tp for tp in parts if any(p == tp.partition for p, _ in wanted.records)]
        if not parts:
            return []
        consumer.assign(parts)
        ends = await consumer.end_offsets(parts)
        starts = await consumer.beginning_offsets(parts)
        todo = {tp for tp in parts if ends[tp] > starts[tp]}
        for tp in parts:
            # With explicit records, start at the lowest one wanted on the partition.
            lowest = min((o for p, o in wanted.records if p == tp.partition), default=0)
            consumer.seek(tp, max(lowest, starts[tp]))
        found: list[DeadLetter] = []
        deadline = time.monotonic() + timeout_s
        while todo and time.monotonic() < deadline:
            batch = await consumer.getmany(*todo, timeout_ms=500)
            for tp, records in batch.items():
                for r in records:
                    if r.offset >= ends[tp]:
                        continue
                    dl = DeadLetter(
                        r.partition, r.offset, r.timestamp, r.key, r.value, tuple(r.headers)
                    )
                    if wanted.matches(dl):
                        found.append(dl)
            for tp in list(todo):
                if await consumer.position(tp) >= ends[tp]:
                    todo.discard(tp)
        if todo:
            raise TimeoutError(f"could not read {settings.dead_letters} to its end")
        return sorted(found, key=lambda d: (d.dead_lettered_ms, d.partition, d.offset))
    finally:
        await consumer.stop()


async def redrive(settings: Settings, letters: Sequence[DeadLetter]) -> list[tuple[str, int, int]]:
    """Produce each record to its original topic; returns (topic, partition, offset) written."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        acks="all",
        enable_idempotence=True,
        max_request_size=8 * 2**20,
    )
    try:
        await producer.start()  # inside: a failed start must still be stopped
        futures = []
        for dl in letters:
            topic = dl.original_topic
            if not topic:
                raise ValueError(f"record {dl.partition}:{dl.offset} has no dlq.original.topic")
            headers = [*dl.redrive_headers(), ("dlq.redrive.time", _now_ms().encode())]
            futures.append(
                (topic, await producer.send(topic, value=dl.value, key=dl.key, headers=headers))
            )
        written = []
        for topic, future in futures:
            meta = await future
            written.append((topic, meta.partition, meta.offset))
        return written
    finally:
        await producer.stop()


# --- presenting -------------------------------------------------------------------


def _now_ms() -> str:
    return str(int(time.time() * 1000))


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def _text_or_base64(raw: bytes | None, limit: int | None = None) -> dict[str, Any]:
    if raw is None:
        return {"null": True}
    part = raw if limit is None else raw[:limit]
    try:
        text = part.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(part).decode(), "bytes": len(raw)}
    if any(ord(c) < 32 and c not in "\t\n\r" for c in text):
        return {"base64": base64.b64encode(part).decode(), "bytes": len(raw)}
    return {"text": text, "bytes": len(raw)}


def summary(dl: DeadLetter) -> dict[str, Any]:
    return {
        "partition": dl.partition,
        "offset": dl.offset,
        "dead_lettered_at": _iso(dl.dead_lettered_ms),
        "stage": dl.stage,
        "error_class": dl.error_class,
        "error_message": (dl.header("dlq.error.message") or "")[:160],
        "original": (
            f"{dl.original_topic}[{dl.header('dlq.original.partition')}]"
            f"@{dl.header('dlq.original.offset')}"
        ),
        "attempt": dl.header("dlq.attempt"),
        "retryable": dl.header("dlq.retryable") == "true",
        "key": _text_or_base64(dl.key, 80),
        "bytes": len(dl.value or b""),
    }


def detail(dl: DeadLetter, preview: int = PREVIEW_BYTES) -> dict[str, Any]:
    return {
        **summary(dl),
        "error_message": dl.header("dlq.error.message"),
        "headers": [{"name": n, **_text_or_base64(v)} for n, v in dl.headers],
        "value": _text_or_base64(dl.value, preview),
    }


def _print_table(rows: Iterable[dict[str, Any]], out: TextIO) -> None:
    for row in rows:
        key = row["key"].get("text", row["key"].get("base64", "-"))
        out.write(
            f"{row['partition']}:{row['offset']}  {row['dead_lettered_at']}  "
            f"{row['stage']:<8} {row['error_class']:<22} {row['original']}  "
            f"attempt={row['attempt']} key={key!r} {row['bytes']}B  {row['error_message']}\n"
        )


# --- command line -----------------------------------------------------------------


def parse_when(text: str) -> int:
    """Epoch milliseconds from digits, or from an ISO 8601 time (UTC when no zone)."""
    if text.isdigit():
        return int(text)
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _record(text: str) -> tuple[int, int]:
    """(partition, offset) from PARTITION:OFFSET."""
    partition, _, offset = text.partition(":")
    if not (partition.isdigit() and offset.isdigit()):
        raise ValueError(f"expected PARTITION:OFFSET, got {text!r}")
    return int(partition), int(offset)
