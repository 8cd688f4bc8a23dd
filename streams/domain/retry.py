"""Retry policy as data, and the pure decision of whether to retry a failed step.

A step (train a generation, end a run, append an event) fails for one of two
reasons: something transient (the broker is unreachable, a pool interpreter
died) or something that will fail again (a bug, an impossible request). The
first is retried with exponential backoff; the second fails the run with its
error in the result. Which is which is decided here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass

# Exception class names that mean "try again later". Names, not classes, so
# this module stays free of Kafka and pool imports and is trivially testable.
RETRYABLE_NAMES = frozenset(
    {
        "ConnectionError",
        "ConnectionRefusedError",
        "ConnectionResetError",
        "TimeoutError",
        "KafkaConnectionError",
        "KafkaTimeoutError",
        "RequestTimedOutError",
        "NotLeaderForPartitionError",
        "LeaderNotAvailableError",
        "NodeNotReadyError",
        "ProducerClosed",
        "PoolBrokenError",
        "RemoteError",
        "ProducerFenced",
        "BrokerResponseError",
    }
)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8
    initial_backoff_s: float = 0.5
    multiplier: float = 2.0
    max_backoff_s: float = 15.0

    def backoff(self, attempt: int) -> float:
        """Delay before attempt `attempt + 1` (attempts count from 1)."""
        return min(self.max_backoff_s, self.initial_backoff_s * self.multiplier ** (attempt - 1))


def is_retryable(error: BaseException) -> bool:
    return any(cls.__name__ in RETRYABLE_NAMES for cls in type(error).__mro__)


def next_delay(error: BaseException, attempt: int, policy: RetryPolicy) -> float | None:
    """Seconds to wait before retrying, or None when the failure is final."""
    if not is_retryable(error) or attempt >= policy.max_attempts:
        return None
    return policy.backoff(attempt)
