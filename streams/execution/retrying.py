"""Retrying a step's transient failures by the domain's retry policy (worker and local run)."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable

from thunderhelm.streams.domain.retry import Classifier, Draw, RetryPolicy, next_delay
from thunderhelm.streams.wire.failures import is_retryable

log = logging.getLogger(__name__)


async def with_retries[T](
    attempt: Callable[[], Awaitable[T]],
    run_id: str,
    policy: RetryPolicy,
    *,
    retryable: Classifier = is_retryable,
    draw: Draw | None = None,
) -> T:
    """Run `attempt`, retrying transient failures per the retry policy.

    `draw` is the jitter's randomness (a fresh unseeded RNG by default: the
    delays of two workers should differ).
    """
    jitter = draw if draw is not None else random.Random().random
    tries = 0
    while True:
        tries += 1
        try:
            return await attempt()
        except Exception as exc:
            delay = next_delay(exc, tries, policy, retryable=retryable, draw=jitter)
            if delay is None:
                raise
            log.warning(
                "run %s: transient %s (%s); retry %d in %.1fs",
                run_id,
                type(exc).__name__,
                exc,
                tries,
                delay,
            )
            await asyncio.sleep(delay)
