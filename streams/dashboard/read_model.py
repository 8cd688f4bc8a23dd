"""The dashboard's view of every run, folded from run-events and run-results.

The run's state is the worker's own pure fold (`saga.evolve`), so the page
shows exactly what a replay of the log would; beside it the read model keeps
what the saga does not need but a reader does: each generation's candidates,
the trace id, when the run began and ended, and the published result.
Nothing here touches Kafka or the web: records go in, plain dicts come out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from thunderhelm.schemas import events as ev
from thunderhelm.schemas.codec import decode_record
from thunderhelm.schemas.event_data import GenerationCompleted, RunAccepted, RunContinued, RunEnded
from thunderhelm.schemas.results import validated_result
from thunderhelm.streams.domain import saga
from thunderhelm.streams.observability.telemetry import trace_id_of
from thunderhelm.streams.wire.events import to_domain
from thunderhelm.streams.wire.failures import InputRejected

# Candidate fields the table shows; anything else in an event stays out of the page.
CANDIDATE_FIELDS = (
    "index",
    "fitness",
    "val_accuracy",
    "val_r2",
    "val_rmse",
    "val_loss",
    "train_loss",
    "params",
    "epochs_run",
    "status",
    "error",
    "interpreter",
)


@dataclass
class RunView:
    state: saga.RunState
    candidates: list[list[dict[str, Any]]] = field(default_factory=list)
    trace_id: str | None = None
    first_time: str | None = None
    last_time: str | None = None
    result: Mapping[str, Any] | None = None

    def summary(self) -> dict[str, Any]:
        s = self.state
        best = (s.best or {}).get("fitness")
        if best is None and self.result:
            best = (self.result.get("best") or {}).get("fitness")
        return {
            "run_id": s.run_id,
            "status": s.status,
            "generation": s.generation,
            "generations": s.total_generations,
            "best_fitness": best,
            "evaluations": s.evaluations,
            "duration_s": self.duration_s(),
            "started_at": self.first_time,
        }

    def duration_s(self) -> float | None:
        if self.result and isinstance(self.result.get("duration_s"), int | float):
            return float(self.result["duration_s"])
        if self.first_time and self.last_time:
            return round(_seconds(self.last_time) - _seconds(self.first_time), 3)
        return None

    def detail(self) -> dict[str, Any]:
        s = self.state
        return {
            **self.summary(),
            "request": s.request,
            "history": list(s.history),
            "candidates": self.candidates,
            "best": s.best,
            "result": self.result,
            "trace_id": self.trace_id,
            "cancel_reason": s.cancel_reason,
            "reasons": list(s.reasons),
        }


def _seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _candidates(done: GenerationCompleted) -> list[dict[str, Any]]:
    rows = []
    for raw in done.candidates:
        if isinstance(raw, Mapping):
            rows.append({k: raw.get(k) for k in CANDIDATE_FIELDS})
    return rows


class ReadModel:
    """Every run seen so far; `apply_*` return the run id that changed, or None."""

    def __init__(self) -> None:
        self.runs: dict[str, RunView] = {}
        self.undecodable = 0

    def apply_event(self, value: bytes | None, headers: Mapping[str, bytes]) -> str | None:
        try:
            event = to_domain(decode_record(value, headers))
        except (ValueError, InputRejected):
            self.undecodable += 1
            return None
        view = self.runs.get(event.run_id)
        after = saga.evolve(None if view is None else view.state, event)
        if after is None or (view is not None and after is view.state):
            return None  # a duplicate, or nothing to fold onto: the saga ignored it
        if view is None:
            view = self.runs[event.run_id] = RunView(after)
        view.state = after
        if event.type == ev.CANDIDATE_COMPLETED:
            # Folded, but nothing the pages draw changes: no re-render per candidate.
            return None
        view.first_time = view.first_time or event.time
        view.last_time = event.time
        match event.data:
            case RunAccepted(traceparent=traceparent):
                view.trace_id = trace_id_of(traceparent or "") or None
            case GenerationCompleted() as done:
                view.candidates.append(_candidates(done))
            case RunEnded(result=result):
                view.result = validated_result(result)  # as on run-results
            case RunContinued():
                view.result = None  # running again: the next revision's result is to come
        return event.run_id

    def apply_result(self, value: bytes | None, headers: Mapping[str, bytes]) -> str | None:
        """A run-results record: the published result (the terminal event carries it too)."""
        try:
            record = decode_record(value, headers)
        except ValueError:
            self.undecodable += 1
            return None
        data = record.data if isinstance(record.data, dict) else {}
        view = self.runs.get(str(data.get("run_id", record.subject)))
        if view is None or view.result == data:
            return None
        if int(data.get("revision") or 1) < view.state.revision:
            return None  # a result the run has gone on from (read after its continue)
        view.result = data
        return view.state.run_id

    def summaries(self, status: str | None = None) -> list[dict[str, Any]]:
        rows = [v.summary() for v in self.runs.values()]
        if status:
            rows = [r for r in rows if r["status"] == status]
        return sorted(rows, key=lambda r: r["started_at"] or "", reverse=True)
