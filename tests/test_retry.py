"""Retry: the pure policy (seeded jitter), the aiokafka-based classifier, and the retry loop."""

from __future__ import annotations

import random

import pytest
from aiokafka import errors as kafka_errors

from thunderhelm.ga.pool.interpreter_pool import PoolBrokenError
from thunderhelm.streams.domain.retry import RetryPolicy, next_delay
from thunderhelm.streams.execution.retrying import with_retries
from thunderhelm.streams.wire.failures import is_retryable


def always(error: BaseException) -> bool:
    return True


def never(error: BaseException) -> bool:
    return False


def test_the_ceiling_grows_exponentially_up_to_the_cap() -> None:
    policy = RetryPolicy(max_attempts=9, initial_backoff_s=1.0, multiplier=3.0, max_backoff_s=5.0)
    assert [policy.ceiling(a) for a in (1, 2, 3, 4)] == [1.0, 3.0, 5.0, 5.0]
    assert RetryPolicy().ceiling(10_000) == RetryPolicy().max_backoff_s  # no overflow


def test_full_jitter_scales_the_ceiling_by_the_draw() -> None:
    policy = RetryPolicy()
    assert policy.backoff(3, lambda: 0.0) == 0.0
    assert policy.backoff(3, lambda: 0.5) == 1.0  # ceiling 2.0
    assert policy.backoff(7, lambda: 0.999) == pytest.approx(0.999 * 15.0)


def test_the_same_seed_gives_the_same_delays() -> None:
    def delays(seed: int) -> list[float | None]:
        draw = random.Random(seed).random
        return [
            next_delay(OSError(), a, RetryPolicy(), retryable=always, draw=draw)
            for a in range(1, 9)
        ]

    first = delays(7)
    assert first == delays(7) and first != delays(8)
    assert first[-1] is None  # the 8th attempt was the last
    for attempt, delay in enumerate(first[:-1], start=1):
        assert delay is not None and 0.0 <= delay < RetryPolicy().ceiling(attempt)


def test_a_final_error_is_not_retried() -> None:
    assert next_delay(ValueError(), 1, RetryPolicy(), retryable=never, draw=lambda: 0.5) is None


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (kafka_errors.KafkaConnectionError(), True),
        (kafka_errors.KafkaTimeoutError(), True),  # unflagged by aiokafka, a timeout all the same
        (kafka_errors.NotLeaderForPartitionError(), True),  # retriable = True
        (kafka_errors.RequestTimedOutError(), True),
        (kafka_errors.NodeNotReadyError(), True),
        (kafka_errors.MessageSizeTooLargeError(), False),  # retriable = False
        (kafka_errors.TopicAuthorizationFailedError(), False),
        (kafka_errors.ProducerClosed(), False),
        (kafka_errors.UnknownError(), False),
        (ConnectionResetError(), True),
        (TimeoutError(), True),
        (PoolBrokenError("gone"), True),
        (ValueError("bad request"), False),
        (KeyError("bug"), False),
    ],
)
def test_the_classifier_follows_aiokafkas_flags(error: BaseException, retryable: bool) -> None:
    assert is_retryable(error) is retryable


def test_the_classifier_looks_through_explicit_causes() -> None:
    try:
        try:
            raise kafka_errors.LeaderNotAvailableError()
        except kafka_errors.KafkaError as inner:
            raise RuntimeError("append failed") from inner
    except RuntimeError as outer:
        assert is_retryable(outer)
    assert not is_retryable(RuntimeError("plain"))


class Flaky:
    """Fails with the given errors in turn, then returns 'done'."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


FAST = RetryPolicy(max_attempts=4, initial_backoff_s=0.001, max_backoff_s=0.002)


async def test_with_retries_retries_a_retriable_kafka_error() -> None:
    flaky = Flaky(kafka_errors.NotLeaderForPartitionError(), kafka_errors.KafkaConnectionError())
    assert await with_retries(flaky, "r", FAST, draw=random.Random(1).random) == "done"
    assert flaky.calls == 3


async def test_with_retries_gives_up_at_once_on_a_final_error() -> None:
    flaky = Flaky(kafka_errors.MessageSizeTooLargeError())
    with pytest.raises(kafka_errors.MessageSizeTooLargeError):
        await with_retries(flaky, "r", FAST, draw=random.Random(1).random)
    assert flaky.calls == 1


async def test_with_retries_stops_when_attempts_run_out() -> None:
    flaky = Flaky(*[TimeoutError()] * 10)
    with pytest.raises(TimeoutError):
        await with_retries(flaky, "r", FAST, draw=random.Random(1).random)
    assert flaky.calls == FAST.max_attempts
