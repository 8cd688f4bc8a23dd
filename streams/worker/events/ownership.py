"""Which run-events partitions this worker owns now (its active assignment)."""

from __future__ import annotations

from typing import Any


class Ownership:
    def __init__(self, app: Any, topic: str) -> None:
        self.app = app
        self.topic = topic

    def active(self) -> set[int]:
        return {
            tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == self.topic
        }

    def owns(self, partition: int | None) -> bool:
        """Whether a run stored under `partition` is this worker's to drive (not a standby copy)."""
        return partition is not None and partition in self.active()
