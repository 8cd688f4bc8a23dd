"""Warm start: the best genomes of an earlier run as the first members of a new run's generation 0.

A request names the run (`warm_start.run_id`) and how many of its genomes to
take (`top`). They come from that run's own event log, folded (its leaders,
the GA state's fittest distinct candidates, and its best), never from a
file. Taken are the `top` fittest distinct genomes that fit the new
request's search space; the rest of generation 0 is drawn as usual under the
new run's seed (`engine.initial_state`). What was taken, the lineage, goes
into `run.accepted`, the result and the artifact.

The source must have solved the same shape of problem: as many inputs and
classes as the new request's dataset. Anything else is a reason to reject
the request, said in words.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from thunderhelm.ga.core.engine import Best
from thunderhelm.ga.core.genome import Genome, genome_from_dict, genome_key, genome_to_dict
from thunderhelm.ga.core.space import space_violations
from thunderhelm.streams.domain import saga
from thunderhelm.streams.execution import steps

type Shape = tuple[int, int]  # (inputs, classes)


def taken(
    request: Mapping[str, Any],
    source: saga.RunState | None,
    shape: Callable[[Mapping[str, Any]], Shape],
) -> dict[str, Any] | list[str]:
    """`lineage`, with both datasets' shapes measured by `shape` (loading them).

    A dataset that does not load is the request's reason, said in words.
    """
    shapes = None
    if source is not None and source.request is not None:
        try:
            shapes = (shape(source.request["dataset"]), shape(request["dataset"]))
        except Exception as exc:
            why = f"warm_start: cannot compare the datasets: {type(exc).__name__}: {exc}"
            return [why[:1000]]
    return lineage(request, source, shapes)


def lineage(
    request: Mapping[str, Any],
    source: saga.RunState | None,
    shapes: tuple[Shape, Shape] | None,
) -> dict[str, Any] | list[str]:
    """What the new run takes from `source`, or the reasons it cannot (as `run.rejected` says).

    `shapes` are the source's and the new request's (inputs, classes), None
    when `source` is missing.
    """
    asked = request["warm_start"]
    source_id, top = str(asked["run_id"]), int(asked.get("top", 5))
    where = "warm_start.run_id"
    if source_id == request["run_id"]:
        return [f"{where}: a run cannot start from itself"]
    if source is None or source.request is None:
        return [f"{where}: no run {source_id!r} (its log has no run.accepted)"]
    assert shapes is not None
    (inputs, classes), (want_inputs, want_classes) = shapes
    if (inputs, classes) != (want_inputs, want_classes):
        return [
            f"{where}: run {source_id!r} learned {inputs} inputs and {classes} classes; "
            f"this request's dataset has {want_inputs} inputs and {want_classes} classes"
        ]
    space = steps.ga_config(request).space
    ranked = ranked_genomes(source)
    fits = [(g, f) for g, f in ranked if not space_violations(g, space)][:top]
    if not fits:
        why = "no trained candidate" if not ranked else "no genome inside this request's space"
        return [f"{where}: run {source_id!r} has {why} to start from"]
    return {
        "run_id": source_id,
        "top": top,
        "genomes": [genome_to_dict(g) for g, _ in fits],
        "keys": [genome_key(g) for g, _ in fits],
        "fitnesses": [f for _, f in fits],
    }


def ranked_genomes(state: saga.RunState) -> list[tuple[Genome, float]]:
    """The run's distinct genomes with their fitness, fittest first (its leaders and its best)."""
    found: dict[str, tuple[Genome, float]] = {}
    leaders = list((state.ga_state or {}).get("leaders") or ())
    for raw in [*leaders, *([state.best] if state.best else [])]:
        best = Best.from_dict(raw)
        key = genome_key(best.genome)
        if key not in found or best.fitness > found[key][1]:
            found[key] = (best.genome, best.fitness)
    return sorted(found.values(), key=lambda pair: (-pair[1], genome_key(pair[0])))


def seeds_of(state: saga.RunState) -> list[Genome]:
    """The genomes a warm-started run's generation 0 begins with (none for a cold start)."""
    taken = state.warm_start.genomes if state.warm_start is not None else []
    return [genome_from_dict(g) for g in taken]


def summary(state: saga.RunState) -> dict[str, Any] | None:
    """The lineage as the result and the artifact tell it: the source run and the genomes' keys."""
    taken = state.warm_start
    if taken is None:
        return None
    return {"run_id": taken.run_id, "genomes": list(taken.keys)}
