"""A generation spread over workers: its candidates as tasks, and one task trained.

The run's owner turns a generation's untrained candidates into task data
(`generation_tasks`); any worker trains one task (`train_task`) and returns
the candidate's outcome in the same shape the in-process step reports. The
network and its seed are fixed by the owner, so who trains a candidate does
not change what it scores: training is deterministic for a network, a seed
and a dataset.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry.context import Context

from thunderhelm.ga.core.engine import GAState, candidate_training_seed, pending
from thunderhelm.ga.core.fidelity import with_rungs
from thunderhelm.ga.core.genome import genome_key
from thunderhelm.ga.core.network import param_count, to_network
from thunderhelm.ga.core.operators import FAILED, sanitize_fitness
from thunderhelm.schemas.event_data import CandidateCompleted
from thunderhelm.streams.execution import outcomes, steps

# Trains a list of networks on the pool: one result per network, in order.
Train = Callable[[list[dict[str, Any]]], Sequence[Mapping[str, Any]]]


def generation_tasks(
    request: Mapping[str, Any],
    ga_state: GAState,
    n_features: int,
    n_classes: int,
    *,
    run_id: str,
    deadline: float,
    traceparent: str | None,
    known: Mapping[int, CandidateCompleted],
) -> list[dict[str, Any]]:
    """`candidate.task` data for each candidate of the generation with no outcome in `known`."""
    config = steps.ga_config(request)
    generation = ga_state.generation
    tasks = []
    for index, genome in pending(ga_state):
        if index in known:
            continue
        seed = candidate_training_seed(config, generation, index)
        task: dict[str, Any] = {
            "run_id": run_id,
            "generation": generation,
            "index": index,
            "genome_key": genome_key(genome),
            "seed": seed,
            "network": with_rungs(
                to_network(genome, n_features, n_classes, seed), ga_state.rungs, config.fidelity
            ),
            "dataset": dict(request["dataset"]),
            "fitness": dict(request.get("fitness") or {}),
            "deadline": deadline,
        }
        if traceparent:
            task["traceparent"] = traceparent
        if (class_weight := steps.class_weight_of(request)) is not None:
            task["class_weight"] = class_weight
        tasks.append(task)
    return tasks


def train_task(
    task: Mapping[str, Any], train: Train, context: Context | None, worker: str
) -> dict[str, Any]:
    """Train one task's network; its `candidate.trained` data (a span records the training)."""
    (result,) = train([dict(task["network"])])
    metrics = outcomes.candidate_metrics(result)
    score = sanitize_fitness(float(result.get("fitness", FAILED)))
    generation, index = int(task["generation"]), int(task["index"])
    outcome = outcomes.candidate_data(
        generation, index, str(task["genome_key"]), int(task["seed"]), score, metrics
    )
    if context is not None:
        outcomes.candidate_span(context, generation, index, task["network"], metrics)
    return {"run_id": task["run_id"], **outcome, "worker": worker}


def task_cost(task: Mapping[str, Any]) -> int:
    """How long a task trains, roughly: its network's weights times its epochs."""
    network = task["network"]
    return param_count(network) * int(network["epochs"])


def spread(costs: Sequence[int], partitions: int) -> list[int]:
    """A partition per task, so that every partition gets about the same training time.

    Workers hold partitions, not tasks, and a generation ends with its slowest
    worker: the costliest task goes first to the least loaded partition
    (longest processing time first), not by index.
    """
    load = [0] * partitions
    chosen = [0] * len(costs)
    for position in sorted(range(len(costs)), key=lambda p: (-costs[p], p)):
        target = min(range(partitions), key=lambda p: (load[p], p))
        chosen[position] = target
        load[target] += costs[position]
    return chosen
