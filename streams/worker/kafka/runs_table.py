"""The Faust table class of the runs table: its changelog partition is its key's.

Commands are decided, and their events folded into the table, outside
Faust's events, so the changelog partition cannot come from the event in
hand. Faust's `use_partitioner` asks the producer instead, and the producer
answers only once it has the changelog topic's metadata: a first write on a
new worker, before that metadata arrives, failed with "'NoneType' object is
not iterable" (the run's request and its `run.accepted` were dead-lettered).
So the partition is computed here, with the producer's own partitioner over
the table's partition count, the same as every run-id-keyed topic's.
"""

from __future__ import annotations

from typing import Any

import faust
from aiokafka.partitioner import DefaultPartitioner

_partitioner = DefaultPartitioner()


class RunsTable(faust.Table[bytes, Any]):
    def partition_for_key(self, key: Any) -> int:
        count = self.partitions or self.app.conf.topic_partitions
        every = list(range(count))
        return int(_partitioner(key, every, every))
