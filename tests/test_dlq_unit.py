"""The dead-letter record and the ordered acks, without a broker.

Faust's message refcount and ack are replaced by a small fake that records the
order of final acks, which is what decides the committed offset.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Hashable
from dataclasses import dataclass, field
from typing import Any

import pytest

from thunderhelm.streams.clients.dead_letters import DeadLetter, Filter, _text_or_base64
from thunderhelm.streams.wire.failures import Failure, Origin, classify, dead_letter_headers
from thunderhelm.streams.worker.dead_letters.acks import OrderedAcks

DLQ_NAMES = [
    "dlq.error.class",
    "dlq.error.message",
    "dlq.stage",
    "dlq.retryable",
    "dlq.original.topic",
    "dlq.original.partition",
    "dlq.original.offset",
    "dlq.original.timestamp",
    "dlq.attempt",
    "dlq.first.failure.time",
    "dlq.time",
]


def test_headers_keep_the_originals_in_order_then_explain_then_trace() -> None:
    original = [
        ("x-a", b"1"),
        ("x-a", b"2"),
        ("traceparent", b"00-" + b"a" * 32 + b"-" + b"b" * 16 + b"-01"),
        ("ce_id", b"\xff"),
    ]
    failure = Failure("decode", "DecodeError", "value is not JSON", retryable=False)
    got = dead_letter_headers(
        original,
        failure,
        Origin("t.run-requests", 3, 41, 1_700_000_000_000),
        {"traceparent": b"00-" + b"c" * 32 + b"-" + b"d" * 16 + b"-01"},
        now=1_800_000_000.0,
    )
    names = [n for n, _ in got]
    assert names[:4] == ["x-a", "x-a", "dlq.original.traceparent", "ce_id"]
    assert names[4:-1] == DLQ_NAMES and names[-1] == "traceparent"
    values = dict(got)
    assert values["ce_id"] == b"\xff"  # binary header values pass through untouched
    assert values["dlq.stage"] == b"decode" and values["dlq.retryable"] == b"false"
    assert values["dlq.original.partition"] == b"3" and values["dlq.original.offset"] == b"41"
    assert values["dlq.original.timestamp"] == b"1700000000000"
    assert values["dlq.attempt"] == b"1"
    assert values["dlq.first.failure.time"] == values["dlq.time"] == b"1800000000000"


def test_a_redriven_record_that_fails_again_counts_the_attempt_and_keeps_first_failure() -> None:
    again = [("x", b"1"), ("dlq.attempt", b"2"), ("dlq.first.failure.time", b"123")]
    got = dict(
        dead_letter_headers(
            again, classify(ValueError("no"), "validate"), Origin("t", 0, 0, None), {}
        )
    )
    assert got["dlq.attempt"] == b"3" and got["dlq.first.failure.time"] == b"123"
    assert got["dlq.error.class"] == b"ValueError"


def test_classify_marks_transient_errors_retryable() -> None:
    from aiokafka import errors as kafka_errors

    from thunderhelm.streams.wire.failures import is_retryable

    assert classify(TimeoutError("slow"), "produce").retryable
    assert not classify(ValueError("bad"), "validate").retryable
    # One answer for steps and dead letters: a step retries what a dead letter calls retryable.
    for error in (
        kafka_errors.KafkaTimeoutError(),  # aiokafka leaves it unflagged; it is transient
        kafka_errors.NotLeaderForPartitionError(),  # flagged retriable by aiokafka
        kafka_errors.MessageSizeTooLargeError(),  # never goes through as it is
        ConnectionResetError(),
        RuntimeError("a bug"),
    ):
        assert classify(error, "produce").retryable is is_retryable(error), error
    assert classify(kafka_errors.KafkaTimeoutError(), "produce").retryable
    assert not classify(kafka_errors.MessageSizeTooLargeError(), "produce").retryable


# --- OrderedAcks ----------------------------------------------------------------


@dataclass
class FakeMessage:
    tp: Hashable
    offset: int
    log: list[int]
    refcount: int = 1  # the stream's own reference
    acked: bool = False

    def incref(self, n: int = 1) -> None:
        self.refcount += n


@dataclass
class FakeEvent:
    message: FakeMessage
    acks: int = field(default=0)

    def ack(self) -> bool:
        m = self.message
        m.refcount -= 1
        assert m.refcount >= 0
        if m.refcount == 0 and not m.acked:
            m.acked = True
            m.log.append(m.offset)
            return True
        return False


class Broker:
    """Hands out ack futures the test resolves in any order it likes."""

    def __init__(self) -> None:
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.fail_first: set[int] = set()
        self.sent: list[int] = []

    def send(self, offset: int) -> Any:
        async def start() -> Awaitable[Any]:
            self.sent.append(offset)
            fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            if offset in self.fail_first:
                self.fail_first.discard(offset)
                fut.set_exception(ConnectionError("broker away"))
            else:
                self.pending[offset] = fut
            return fut

        return start


async def handle(acks: OrderedAcks, event: FakeEvent, broker: Broker | None) -> None:
    """What the service does per record: hold, maybe dead-letter, then the stream acks."""
    acks.hold(event)
    if broker is not None:
        await acks.write(event, broker.send(event.message.offset))
    event.ack()


async def test_acks_reach_faust_in_offset_order_whatever_order_writes_finish() -> None:
    log: list[int] = []
    acks, broker = OrderedAcks(), Broker()
    events = [FakeEvent(FakeMessage("p0", i, log)) for i in range(6)]
    bad = {0, 2, 3}
    for e in events:
        await handle(acks, e, broker if e.message.offset in bad else None)
    assert log == []  # offset 0's write is not acknowledged: nothing may be committed
    broker.pending[3].set_result("ok")
    broker.pending[2].set_result("ok")
    await asyncio.sleep(0)
    assert log == []
    broker.pending[0].set_result("ok")
    await asyncio.sleep(0)
    assert log == [0, 1, 2, 3, 4, 5]
    assert acks.in_flight == 0
    later = FakeEvent(FakeMessage("p0", 6, log))
    await handle(acks, later, None)
    assert log[-1] == 6  # nothing in flight: acked by the stream as usual


async def test_partitions_do_not_wait_for_each_other() -> None:
    log: list[int] = []
    acks, broker = OrderedAcks(), Broker()
    await handle(acks, FakeEvent(FakeMessage("p0", 10, log)), broker)
    await handle(acks, FakeEvent(FakeMessage("p1", 20, log)), None)
    assert log == [20]
    broker.pending[10].set_result("ok")
    await asyncio.sleep(0)
    assert log == [20, 10]


async def test_a_failed_write_is_retried_and_holds_the_partition_until_it_lands() -> None:
    log: list[int] = []
    acks, broker = OrderedAcks(retry_delay_s=0.01), Broker()
    broker.fail_first = {0}
    await handle(acks, FakeEvent(FakeMessage("p0", 0, log)), broker)
    await handle(acks, FakeEvent(FakeMessage("p0", 1, log)), None)
    await asyncio.sleep(0.05)
    assert broker.sent == [0, 0] and log == []
    broker.pending[0].set_result("ok")
    assert await acks.drain(1.0)
    assert log == [0, 1]


async def test_in_flight_writes_are_bounded() -> None:
    log: list[int] = []
    acks, broker = OrderedAcks(max_in_flight=2), Broker()
    await handle(acks, FakeEvent(FakeMessage("p0", 0, log)), broker)
    await handle(acks, FakeEvent(FakeMessage("p0", 1, log)), broker)
    third = asyncio.ensure_future(handle(acks, FakeEvent(FakeMessage("p0", 2, log)), broker))
    await asyncio.sleep(0.01)
    assert not third.done() and broker.sent == [0, 1]
    broker.pending[0].set_result("ok")
    await asyncio.wait_for(third, 1.0)
    broker.pending[1].set_result("ok")
    broker.pending[2].set_result("ok")
    assert await acks.drain(1.0)
    assert log == [0, 1, 2]


# --- the CLI's view of a record ----------------------------------------------------


def letter(**over: Any) -> DeadLetter:
    headers = (
        ("x-a", b"1"),
        ("dlq.original.traceparent", b"00-aa-bb-01"),
        ("dlq.stage", b"validate"),
        ("dlq.error.class", b"EnvelopeError"),
        ("dlq.original.topic", b"t.run-requests"),
        ("dlq.attempt", b"1"),
        ("dlq.first.failure.time", b"1000"),
        ("dlq.time", b"2000"),
        ("traceparent", b"00-cc-dd-01"),
    )
    base: dict[str, Any] = {
        "partition": 0,
        "offset": 5,
        "timestamp_ms": 2001,
        "key": b"k",
        "value": b"v",
        "headers": headers,
    }
    base.update(over)
    return DeadLetter(**base)


def test_redrive_headers_are_the_originals_plus_the_attempt_bookkeeping() -> None:
    dl = letter()
    assert dl.original_headers() == [("x-a", b"1"), ("traceparent", b"00-aa-bb-01")]
    assert dl.redrive_headers()[-2:] == [
        ("dlq.attempt", b"1"),
        ("dlq.first.failure.time", b"1000"),
    ]


@pytest.mark.parametrize(
    ("wanted", "hit"),
    [
        (Filter(stage="validate"), True),
        (Filter(stage="decode"), False),
        (Filter(error="envelope"), True),
        (Filter(topic="t.run-requests"), True),
        (Filter(topic="other"), False),
        (Filter(since_ms=2000, until_ms=2000), True),
        (Filter(since_ms=2001), False),
        (Filter(records=frozenset({(0, 5)})), True),
        (Filter(records=frozenset({(0, 6)})), False),
    ],
)
def test_filters(wanted: Filter, hit: bool) -> None:
    assert wanted.matches(letter()) is hit


def test_binary_is_shown_as_base64() -> None:
    assert _text_or_base64(b"plain") == {"text": "plain", "bytes": 5}
    assert _text_or_base64(b"\xff\x00") == {"base64": "/wA=", "bytes": 2}
    assert _text_or_base64(b"a\x00b")["base64"] == "YQBi"
    assert _text_or_base64(None) == {"null": True}


def test_the_cli_takes_the_stages_the_wire_has_and_refuses_others() -> None:
    from typing import get_args

    from typer.testing import CliRunner

    from thunderhelm.schemas.event_data import DeadLetterStage
    from thunderhelm.streams.cli.main import app

    stages = get_args(DeadLetterStage.__value__)
    shown = CliRunner().invoke(app, ["dlq", "list", "--help"], env={"COLUMNS": "200"})
    assert "[" + "|".join(stages) + "]" in shown.output
    refused = CliRunner().invoke(app, ["dlq", "list", "--stage", "train"], env={"COLUMNS": "200"})
    assert refused.exit_code == 2
    assert all(f"'{stage}'" in refused.output for stage in stages)
