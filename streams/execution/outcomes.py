"""One trained candidate's outcome: its `candidate-completed` data, metrics and span.

The in-process generation step (`steps.run_generation`) and a worker training
a task from candidate-tasks (`candidates.train_task`) both build a candidate's
outcome here, so the log reads the same whoever trained it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from opentelemetry.context import Context

from thunderhelm.ga.core import measures
from thunderhelm.ga.core.engine import Evaluation
from thunderhelm.ga.core.operators import FAILED, sanitize_fitness
from thunderhelm.schemas.event_data import CandidateCompleted
from thunderhelm.streams.observability import metrics as meters
from thunderhelm.streams.observability import telemetry

# A candidate's outcome goes on the log only when its training ran to its end:
# a timed-out or cancelled one depends on when the clock or the cancel struck,
# so a resumed step trains it again instead of folding a chance result.
SETTLED_STATUSES = frozenset({"ok", "nan"})
# A task's outcome must always reach its run's owner, which waits for it: all
# but those the clock or a cancel decided go on the log.
UNSETTLED_STATUSES = frozenset({"timeout", "cancelled"})


def settled(outcome: Mapping[str, Any]) -> bool:
    """Whether an outcome is the candidate's own, not the clock's or a cancel's.

    Only those go on the log: a timed-out training says when the clock struck,
    and the run's deadline ends such a run anyway.
    """
    return (outcome.get("metrics") or {}).get("status") not in UNSETTLED_STATUSES


def candidate_data(
    generation: int, index: int, key: str, seed: int, score: float, metrics: Mapping[str, Any]
) -> dict[str, Any]:
    """The `candidate-completed` data of one trained candidate (the caller adds run_id)."""
    started, ended = metrics.get("started_at"), metrics.get("ended_at")
    duration = (
        round(max(0.0, ended - started), 4)
        if isinstance(started, float) and isinstance(ended, float)
        else None
    )
    return {
        "generation": generation,
        "index": index,
        "genome_key": key,
        "fitness": finite(score),
        "metrics": dict(metrics),
        "seed": seed,
        "duration_s": duration,
    }


def evaluation_of(outcome: CandidateCompleted) -> Evaluation:
    """The GA's view of a folded `candidate-completed` outcome (null fitness: failed)."""
    fitness = outcome.fitness
    score = FAILED if fitness is None else sanitize_fitness(fitness)
    return Evaluation(score, _metrics(outcome))


def candidate_summary(outcome: CandidateCompleted | Mapping[str, Any]) -> dict[str, Any]:
    """A candidate's entry in `generation-completed`'s `candidates`, as it always was."""
    if isinstance(outcome, CandidateCompleted):
        return {"index": outcome.index, "fitness": outcome.fitness, **_metrics(outcome)}
    return {"index": int(outcome["index"]), "fitness": outcome.get("fitness"), **outcome["metrics"]}


def _metrics(outcome: CandidateCompleted) -> dict[str, Any]:
    """The metrics an outcome came with: those it had, not the model's defaults."""
    return outcome.metrics.model_dump(exclude_unset=True)


def candidate_metrics(result: Mapping[str, Any]) -> dict[str, Any]:
    keep = (
        "status",
        "val_accuracy",
        "val_loss",
        "val_balanced_accuracy",
        "val_macro_f1",
        "val_roc_auc",  # when the run's fitness is it
        "val_rmse",  # these three: regression trainings only
        "val_mae",
        "val_r2",
        "train_loss",
        "params",
        "epochs_run",
        "started_at",
        "ended_at",
        "error",
        "interpreter",
        "curve",
        "pruned_at",
    )
    return {k: result.get(k) for k in keep if k in result}


def finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def candidate_span(
    context: Context,
    generation: int,
    index: int,
    network: Mapping[str, Any],
    metrics: Mapping[str, Any],
) -> None:
    started, ended = metrics.get("started_at"), metrics.get("ended_at")
    if not isinstance(started, float) or not isinstance(ended, float):
        return
    attributes = {
        "thunderhelm.generation": generation,
        "thunderhelm.candidate": index,
        "thunderhelm.status": str(metrics.get("status")),
        "thunderhelm.epochs": int(metrics.get("epochs_run") or 0),
        "thunderhelm.params": int(metrics.get("params") or 0),
        "thunderhelm.units": len(network.get("units", ())),
    }
    for key in ("val_accuracy", "val_loss", "train_loss"):
        value = metrics.get(key)
        if isinstance(value, float):
            attributes[f"thunderhelm.{key}"] = value
    if metrics.get("interpreter") is not None:
        attributes["thunderhelm.interpreter"] = str(metrics["interpreter"])
    error = (
        None
        if metrics.get("status") == "ok"
        else f"{metrics.get('status')}: {metrics.get('error')}"
    )
    if metrics.get("pruned_at") is not None:
        attributes["thunderhelm.pruned_at"] = int(metrics["pruned_at"])
    meters.candidate_trained(ended - started, str(metrics.get("status")), metrics)
    training = telemetry.record_span(
        telemetry.CANDIDATE_SPAN.format(generation=generation, index=index),
        context=context,
        start_ns=int(started * 1e9),
        end_ns=int(ended * 1e9),
        attributes=attributes,
        error=error,
    )
    rung_spans(training, network, metrics)


def rung_spans(context: Context, network: Mapping[str, Any], metrics: Mapping[str, Any]) -> None:
    """One span per rung the training reached, at the moment it was measured: its decision."""
    curve = {int(p["epoch"]): p for p in metrics.get("curve") or () if isinstance(p, Mapping)}
    for rung in network.get("rungs") or ():
        point = curve.get(int(rung["epoch"]))
        if point is None or not isinstance(point.get("at"), float):
            continue  # stopped before it (clock, cancel)
        (name,) = set(rung) - {"epoch"}
        figure = point.get(measures.bounded_measure(name))
        stopped = metrics.get("pruned_at") == rung["epoch"]
        at = int(point["at"] * 1e9)
        attributes: dict[str, Any] = {
            "thunderhelm.rung.epoch": int(rung["epoch"]),
            "thunderhelm.rung.bound": f"{name} {rung[name]}",
            "thunderhelm.rung.decision": "stopped" if stopped else "promoted",
        }
        if isinstance(figure, int | float):
            attributes["thunderhelm.rung.figure"] = float(figure)
        telemetry.record_span(
            telemetry.RUNG_SPAN.format(epoch=rung["epoch"]),
            context=context,
            start_ns=at,
            end_ns=at,
            attributes=attributes,
        )
