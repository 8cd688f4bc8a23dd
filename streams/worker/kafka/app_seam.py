"""What the worker's parts use of the Faust app: a `faust.App`, or a fake in tests.

Typed as Protocols so mypy checks the test doubles against the same surface
the real app offers.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Protocol

from faust.types import TP


class AppProducer(Protocol):
    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None,
        timestamp: float | None,
        headers: Any,
        /,
    ) -> Awaitable[Any]: ...


class AppAssignor(Protocol):
    def assigned_actives(self) -> set[TP]: ...


class AppConsumer(Protocol):
    # `tp`: a Faust TP, which `records.Consumed` knows only as hashable.
    def highwater(self, tp: Any, /) -> int | None: ...


class WorkerApp(Protocol):
    @property
    def rebalancing(self) -> bool: ...

    @property
    def producer(self) -> AppProducer: ...

    @property
    def assignor(self) -> AppAssignor: ...

    @property
    def consumer(self) -> AppConsumer | None: ...
