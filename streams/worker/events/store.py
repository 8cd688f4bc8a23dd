"""The runs table: each run's folded state and the run-events partition it came from.

The state is the saga's (`saga.RunState`, nothing else in it); the partition
is the worker's business (which worker owns the run), so the two are kept
side by side in the stored record and never mixed.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

from thunderhelm.streams.domain import saga


class RunStore:
    def __init__(self, table: MutableMapping[bytes, Any]) -> None:
        # A Faust table in the worker (its changelog partition follows the
        # key, so it takes writes from any task); a dict in unit tests.
        self.table = table
        # The state each stored record was made from: a record read back is
        # the same object until the table changes it (a put, a changelog
        # restore), and rebuilding a state validates every outcome it holds.
        self._states: dict[bytes, tuple[Mapping[str, Any], saga.RunState]] = {}

    def get(self, run_id: str) -> saga.RunState | None:
        key = run_id.encode()
        record = self.table.get(key)
        return None if record is None else self._state(key, record)

    def _state(self, key: bytes, record: Mapping[str, Any]) -> saga.RunState:
        known = self._states.get(key)
        if known is not None and known[0] is record:
            return known[1]
        state = saga.RunState.from_dict(_state_of(record))
        self._states[key] = (record, state)
        return state

    def partition(self, run_id: str) -> int | None:
        record = self.table.get(run_id.encode())
        return None if record is None else _partition_of(record)

    def put(self, state: saga.RunState, partition: int | None) -> None:
        """Store a run's state."""
        key = state.run_id.encode()
        record = {"state": state.to_dict(), "partition": partition}
        self.table[key] = record
        self._states[key] = (record, state)

    def replace_state(self, state: saga.RunState) -> None:
        """A new state for a stored run, under the partition it already has."""
        self.put(state, self.partition(state.run_id))

    def live(self) -> Iterator[tuple[saga.RunState, int | None]]:
        """Runs still in progress (accepted or running), with their partitions."""
        for key, record in list(self.table.items()):
            if record is None or _state_of(record).get("status") not in ("accepted", "running"):
                continue
            yield self._state(key, record), _partition_of(record)


def _state_of(record: Mapping[str, Any]) -> Mapping[str, Any]:
    state: Mapping[str, Any] = record["state"]
    return state


def _partition_of(record: Mapping[str, Any]) -> int | None:
    partition: int | None = record["partition"]
    return partition
