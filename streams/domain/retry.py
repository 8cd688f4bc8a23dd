"""Retry policy as data, and the pure decision of whether (and when) to retry a failed step.

A step (train a generation, end a run, append an event) fails for one of two
reasons: something transient (the broker is unreachable, a pool interpreter
died) or something that will fail again (a bug, an impossible request). The
first is retried after a jittered exponential backoff; the second fails the
run with its error in the result.

Which errors are transient is not known here: the domain imports no Kafka
client, so the caller passes a classifier (the worker's, built on aiokafka's
own `retriable` flags, is `thunderhelm.streams.wire.failures`). The
jitter's randomness is passed in too, so a test with a seeded RNG sees the
same delays every time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

# Whether an error is worth another attempt.
Classifier = Callable[[BaseException], bool]
# A uniform draw from [0, 1), e.g. `random.Random(seed).random`.
Draw = Callable[[], float]

# 2**64 already dwarfs any cap; a larger exponent would overflow the float.
_MAX_EXPONENT = 64


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8
    initial_backoff_s: float = 0.5
    multiplier: float = 2.0
    max_backoff_s: float = 15.0

    def ceiling(self, attempt: int) -> float:
        """The longest delay before attempt `attempt + 1` (attempts count from 1)."""
        exponent = min(max(attempt - 1, 0), _MAX_EXPONENT)
        return min(self.max_backoff_s, self.initial_backoff_s * self.multiplier**exponent)

    def backoff(self, attempt: int, draw: Draw) -> float:
        """Full jitter: uniform in [0, ceiling), so workers retrying together spread out."""
        return draw() * self.ceiling(attempt)


def next_delay(
    error: BaseException,
    attempt: int,
    policy: RetryPolicy,
    *,
    retryable: Classifier,
    draw: Draw,
) -> float | None:
    """Seconds to wait before retrying, or None when the failure is final."""
    if attempt >= policy.max_attempts or not retryable(error):
        return None
    return policy.backoff(attempt, draw)
