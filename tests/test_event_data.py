"""Typed event data: the plain form the run state is stored in, and the store's reading of it."""

from __future__ import annotations

from typing import Any

import pytest

from thunderhelm.schemas import events as ev
from thunderhelm.schemas.event_data import event_data, plain
from thunderhelm.streams.domain import saga
from thunderhelm.streams.worker.events.store import RunStore

OUTCOME: dict[str, Any] = {
    "run_id": "r1",
    "generation": 2,
    "index": 3,
    "genome_key": "g3",
    "fitness": None,
    "metrics": {
        "val_accuracy": 0.5,
        "status": "nan",
        "curve": [{"epoch": 1, "val_accuracy": 0.4, "at": 1.5}],
    },
    "seed": 7,
    "worker": "host/41",  # a field the model does not name
}
ENDED: dict[str, Any] = {
    "run_id": "r1",
    "result": {
        "run_id": "r1",
        "status": "failed",
        "best": None,
        "generations": 0,
        "evaluations": 0,
        "duration_s": 1.5,
        "artifact": None,
        "error": {"class": "TimeoutError", "message": "late"},  # a field under its alias
    },
}
ACCEPTED: dict[str, Any] = {
    "run_id": "r1",
    "request": {"run_id": "r1"},
    "warm_start": {"run_id": "r0", "top": 1, "genomes": [{"levels": []}], "keys": ["k"],
                   "fitnesses": [0.5]},
}  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "data"),
    [(ev.CANDIDATE_COMPLETED, OUTCOME), (ev.RUN_FAILED, ENDED), (ev.RUN_ACCEPTED, ACCEPTED)],
)
def test_the_plain_form_is_the_wire_form(kind: str, data: dict[str, Any]) -> None:
    model = event_data(kind, data)
    assert plain(model) == model.model_dump(mode="json", by_alias=True, exclude_unset=True)
    assert plain(model) == data  # nothing added, nothing lost


def test_the_store_reads_a_record_again_only_when_the_table_changed_it() -> None:
    table: dict[bytes, Any] = {}
    store = RunStore(table)
    state = saga.RunState("r1", "running", request={"run_id": "r1"}, generation=2)
    store.put(state, 0)
    assert store.get("r1") is state  # the record it was stored as: not rebuilt
    restored = {"state": {**table[b"r1"]["state"], "generation": 3}, "partition": 0}
    table[b"r1"] = restored  # as a changelog restore writes it
    again = store.get("r1")
    assert again is not None and again.generation == 3
    assert [s.generation for s, _ in store.live()] == [3]
