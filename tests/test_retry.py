from __future__ import annotations

import pytest

from thunderhelm.streams.domain.retry import RetryPolicy, is_retryable, next_delay


class KafkaConnectionError(Exception):
    """Stands in for aiokafka's error of the same name."""


class Subclassed(ConnectionError):
    pass


@pytest.mark.parametrize(
    ("error", "attempt", "expected"),
    [
        (ConnectionError("down"), 1, 0.5),
        (Subclassed(), 3, 2.0),
        (KafkaConnectionError(), 2, 1.0),
        (TimeoutError(), 7, 15.0),  # capped
        (TimeoutError(), 8, None),  # out of attempts
        (ValueError("bad request"), 1, None),
        (KeyError("bug"), 1, None),
    ],
)
def test_next_delay(error: BaseException, attempt: int, expected: float | None) -> None:
    assert next_delay(error, attempt, RetryPolicy()) == expected


def test_policy_is_data() -> None:
    policy = RetryPolicy(max_attempts=2, initial_backoff_s=1.0, multiplier=3.0, max_backoff_s=5.0)
    assert [policy.backoff(a) for a in (1, 2, 3)] == [1.0, 3.0, 5.0]
    assert is_retryable(ConnectionResetError()) and not is_retryable(RuntimeError())
