"""One NAS generation and the end of a run, shared by the worker and `thunderhelm run`.

This is the main-interpreter side of a run: it turns a validated request into
a `GAConfig`, trains the pending candidates on the interpreter pool through
the map-shaped `evaluate` port, records a span per candidate from the timings
measured inside the interpreters, and saves the best model as an artifact.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context

from thunderhelm.ga.core import measures
from thunderhelm.ga.core.engine import (
    Evaluation,
    GAConfig,
    GAState,
    candidate_training_seed,
    complete_generation,
    merge_results,
    pending,
)
from thunderhelm.ga.core.fidelity import Fidelity, with_rungs
from thunderhelm.ga.core.genome import genome_from_dict, genome_key
from thunderhelm.ga.core.network import to_network
from thunderhelm.ga.core.operators import FAILED, sanitize_fitness
from thunderhelm.ga.core.space import SearchSpace
from thunderhelm.ga.core.wiring import wiring_from_dict
from thunderhelm.ga.training.evaluators import Evaluate, Fitness
from thunderhelm.schemas.event_data import CandidateCompleted
from thunderhelm.streams.execution import outcomes
from thunderhelm.streams.observability import metrics as meters
from thunderhelm.streams.observability import telemetry

# Gets each newly trained candidate's `candidate-completed` data.
Report = Callable[[dict[str, Any]], None]


# The operator defaults a request that names none gets: the engine's own.
DEFAULT_GA = GAConfig()


def ga_config(request: Mapping[str, Any]) -> GAConfig:
    """The GA's configuration from a validated run request (plain data)."""
    ga = request.get("ga", {})
    training = request.get("training", {})
    space = request.get("search_space", {})
    max_epochs = int(training.get("epochs", 3))
    batch = int(training.get("batch_size", 64))
    batches = tuple(sorted({max(1, batch // 2), batch, batch * 2}))
    search_space = SearchSpace(
        max_levels=int(space.get("max_levels", 3)),
        max_units=int(space.get("max_units", 3)),
        max_neurons=int(space.get("max_neurons", 64)),
        min_neurons=min(4, int(space.get("max_neurons", 64))),
        epochs_range=(max(1, min(max_epochs, (max_epochs + 1) // 2)), max_epochs),
        batch_sizes=batches,
    )
    return GAConfig(
        population=int(ga.get("population", 8)),
        generations=int(ga.get("generations", 4)),
        tournament_size=int(ga.get("tournament_size", 3)),
        temperature=float(ga.get("temperature", DEFAULT_GA.temperature)),
        crossover_rate=float(ga.get("crossover_rate", DEFAULT_GA.crossover_rate)),
        mutation_rate=float(ga.get("mutation_rate", DEFAULT_GA.mutation_rate)),
        elite=int(ga.get("elite", 1)),
        seed=int(ga.get("seed", 0)),
        space=search_space,
        fidelity=fidelity_of(request),
    )


def fidelity_of(request: Mapping[str, Any]) -> Fidelity | None:
    """The request's rung rule (None: every candidate trains to its last epoch)."""
    settings = request.get("fidelity", {})
    if not settings.get("rungs", True):
        return None
    return Fidelity(
        eta=float(settings.get("eta", 2.0)),
        min_figures=int(settings.get("min_figures", 6)),
        metric=fitness_name(request),
    )


def task_of(request: Mapping[str, Any]) -> str:
    """Whether a request (or a candidate task, which carries its dataset) is regression."""
    dataset = request.get("dataset") or {}
    if dataset.get("name") == "friedman1" or dataset.get("task") == "regression":
        return "regression"
    return "classification"


def fitness_name(request: Mapping[str, Any]) -> str:
    """The measure a run's fitness is: the request's, or its task's default when it names none."""
    name = (request.get("fitness") or {}).get("name")
    return measures.measure_for_task(None if name is None else str(name), task_of(request))


def class_weight_of(request: Mapping[str, Any]) -> str | None:
    """The request's `training.class_weight` (None: every training row alike)."""
    value = (request.get("training") or {}).get("class_weight")
    return None if value is None else str(value)


def fitness_of(request: Mapping[str, Any]) -> Fitness:
    """The request's fitness settings, for the evaluator that scores every candidate."""
    fitness = request.get("fitness", {})
    return Fitness(
        kind=fitness_name(request),
        param_penalty=float(fitness.get("param_penalty", 0.0)) / 1e6,
    )


def final_fitness(request: Mapping[str, Any]) -> Fitness:
    """How the final model's retrainings are scored in their records.

    Classification keeps the evaluator's default, as its artifacts always
    had; a regression run scores them by its own measure (accuracy is none).
    """
    return fitness_of(request) if task_of(request) == "regression" else Fitness()


@dataclass(frozen=True)
class GenerationOutcome:
    state: GAState
    data: dict[str, Any]


def run_generation(
    request: Mapping[str, Any],
    ga_state: GAState,
    n_features: int,
    n_classes: int,
    evaluate: Evaluate,
    *,
    context: Context | None = None,
    known: Mapping[int, CandidateCompleted] | None = None,
    report: Report | None = None,
) -> GenerationOutcome:
    """Train generation `ga_state.generation` and breed the next; return the checkpoint.

    `evaluate` scores each candidate (`result["fitness"]`, built with
    `fitness_of(request)`); this step records that score and never rescores.
    `known` holds outcomes the log already has (`candidate-completed` by
    index): those candidates are not trained again. `report` gets each newly
    trained candidate's `candidate-completed` data as soon as it is scored.
    """
    config = ga_config(request)
    generation = ga_state.generation
    known = known or {}
    todo = [(i, g) for i, g in pending(ga_state) if i not in known]
    seeds = [candidate_training_seed(config, generation, i) for i, _ in todo]
    networks = [
        with_rungs(to_network(g, n_features, n_classes, seed), ga_state.rungs, config.fidelity)
        for (_, g), seed in zip(todo, seeds, strict=True)
    ]
    began = time.time()
    # Every outcome already in (the generation was spread over workers, whose
    # trainings have their own generation span): only breed, under no span.
    only_breeding = not networks and bool(known)
    with (
        contextlib.nullcontext(trace.INVALID_SPAN)
        if only_breeding
        else telemetry.internal_span(
            telemetry.GENERATION_SPAN.format(generation=generation),
            context,
            {"thunderhelm.generation": generation, "thunderhelm.candidates": len(networks)},
        )
    ) as span:
        gen_context = trace.set_span_in_context(span)
        evaluated: dict[int, Evaluation] = {}
        candidates: dict[int, dict[str, Any]] = {}
        for key, outcome in known.items():
            evaluated[key] = outcomes.evaluation_of(outcome)
            candidates[key] = outcomes.candidate_summary(outcome)

        def scored(position: int, result: Mapping[str, Any]) -> None:
            index, genome = todo[position]
            metrics = outcomes.candidate_metrics(result)
            score = sanitize_fitness(float(result.get("fitness", FAILED)))
            evaluated[index] = Evaluation(score, metrics)
            key, seed = genome_key(genome), seeds[position]
            outcome = outcomes.candidate_data(generation, index, key, seed, score, metrics)
            candidates[index] = outcomes.candidate_summary(outcome)
            outcomes.candidate_span(gen_context, generation, index, networks[position], metrics)
            if report is not None and metrics.get("status") in outcomes.SETTLED_STATUSES:
                report(outcome)

        if networks:
            results = list(evaluate(networks, scored) if report else evaluate(networks))
            for position, result in enumerate(results):
                if todo[position][0] not in evaluated:  # an evaluator that reports nothing
                    scored(position, result)
        fitnesses, all_metrics = merge_results(ga_state, evaluated)
        finite = [f for f in fitnesses if math.isfinite(f)]
        best_fitness = max(finite) if finite else None
        span.set_attribute("thunderhelm.best_fitness", best_fitness if best_fitness else 0.0)
    new_state = complete_generation(ga_state, config, fitnesses, all_metrics)
    best = new_state.best
    listed = [candidates[i] for i in sorted(candidates)]
    data = {
        "generation": generation,
        "fitnesses": [outcomes.finite(f) for f in fitnesses],
        "candidates": listed,
        "evaluations": new_state.evaluations,
        "best_fitness": best_fitness,
        "mean_fitness": (sum(finite) / len(finite)) if finite else None,
        "duration_s": round(time.time() - began, 3),
        "training": training_summary(listed, time.time() - began),
        "best": None if best is None else best.to_dict(),
        "ga_state": new_state.to_dict(),
    }
    meters.generation_completed(time.time() - began)
    return GenerationOutcome(new_state, data)


def training_summary(candidates: Sequence[Mapping[str, Any]], wall_s: float) -> dict[str, Any]:
    """Training metrics of one generation, from the timings taken inside the interpreters.

    `parallelism` is total training time over the generation's wall time: how
    many interpreters were busy on average.
    """
    times = [
        float(c["ended_at"]) - float(c["started_at"])
        for c in candidates
        if isinstance(c.get("started_at"), float) and isinstance(c.get("ended_at"), float)
    ]
    params = [int(c["params"]) for c in candidates if isinstance(c.get("params"), int)]
    total = sum(times)
    return {
        "candidates_trained": len(candidates),
        "failed": sum(1 for c in candidates if c.get("status") != "ok"),
        "epochs_total": sum(int(c.get("epochs_run") or 0) for c in candidates),
        "train_time_total_s": round(total, 4),
        "train_time_mean_s": round(total / len(times), 4) if times else None,
        "train_time_max_s": round(max(times), 4) if times else None,
        "params_mean": round(sum(params) / len(params), 1) if params else None,
        "interpreters": sorted(
            {str(c["interpreter"]) for c in candidates if c.get("interpreter") is not None}
        ),
        "parallelism": round(total / wall_s, 3) if wall_s > 0 else None,
    }


def best_network(
    request: Mapping[str, Any], best: Mapping[str, Any], n_features: int, n_classes: int
) -> dict[str, Any]:
    """The best candidate's network exactly as it was trained (recorded wiring and seed)."""
    config = ga_config(request)
    seed = candidate_training_seed(config, int(best["generation"]), int(best["index"]))
    return to_network(
        genome_from_dict(best["genome"]),
        n_features,
        n_classes,
        seed,
        wiring=wiring_from_dict(best["wiring"]),
    )


def _present(metrics: Mapping[str, Any], name: str) -> dict[str, Any]:
    """`{name: value}` when the training measured it (val_roc_auc: only when asked)."""
    return {name: metrics[name]} if metrics.get(name) is not None else {}


def _regression_metrics(
    metrics: Mapping[str, Any], test_metrics: Mapping[str, Any] | None
) -> dict[str, Any]:
    """A regression best's figures in the target's units (none for classification)."""
    if "val_r2" not in metrics:
        return {}
    test = test_metrics or {}
    return {
        **{name: metrics.get(name) for name in ("val_r2", "val_rmse", "val_mae")},
        **{f"test_{name}": test.get(name) for name in ("r2", "rmse", "mae")},
    }


def result_data(
    run_id: str,
    status: str,
    *,
    best: Mapping[str, Any] | None,
    generations: int,
    evaluations: int,
    started_at: str | None,
    artifact: str | None,
    error: tuple[str, str] | None = None,
    test_metrics: Mapping[str, Any] | None = None,
    model: Mapping[str, Any] | None = None,
    stopped_by: str | None = None,
    work: float | None = None,
    revision: int = 1,
    warm_start: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The contract's result `data`.

    `test_metrics` are the search's best network's figures on the held-out
    test split, `model` the delivered model's (absent when no model was
    saved); the search never saw the test split. `stopped_by` is what ended a
    run that ran its course: its generations or one of its budgets.
    """
    duration = 0.0
    if started_at:
        began = datetime.fromisoformat(started_at.replace("Z", "+00:00")).timestamp()
        duration = max(0.0, time.time() - began)
    best_out = None
    if best is not None:
        best_out = {
            "genome": {**best["genome"], "wiring": best.get("wiring")},
            "fitness": best["fitness"],
            "metrics": {
                "val_accuracy": best["metrics"].get("val_accuracy"),
                "val_loss": best["metrics"].get("val_loss"),
                "val_balanced_accuracy": best["metrics"].get("val_balanced_accuracy"),
                "val_macro_f1": best["metrics"].get("val_macro_f1"),
                **_present(best["metrics"], "val_roc_auc"),
                "params": best["metrics"].get("params"),
                "train_loss": best["metrics"].get("train_loss"),
                "epochs_run": best["metrics"].get("epochs_run"),
                "generation": best.get("generation"),
                "test_accuracy": None if test_metrics is None else test_metrics.get("accuracy"),
                "test_loss": None if test_metrics is None else test_metrics.get("loss"),
                **_regression_metrics(best["metrics"], test_metrics),
            },
        }
    return {
        "run_id": run_id,
        "status": status,
        "best": best_out,
        "generations": generations,
        "evaluations": evaluations,
        "duration_s": round(duration, 3),
        "artifact": artifact,
        "model": None if model is None else dict(model),
        "stopped_by": stopped_by,
        "work": work,
        "error": None if error is None else {"class": error[0], "message": error[1]},
        "revision": revision,
        "warm_start": None if warm_start is None else dict(warm_start),
    }
