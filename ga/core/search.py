"""A whole search in one call, for tests, benchmarks and single-process use.

The saga drives the engine one generation per event instead; this loop is the
same protocol (``pending`` -> train -> ``merge_results`` -> ``complete_generation``)
run to the end. Training sits behind a map-shaped port, ``evaluate(networks) ->
results``, so the same loop runs with an in-process fake or the sub-interpreter pool.
"""

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from thunderhelm.ga.core import measures
from thunderhelm.ga.core.engine import (
    Evaluation,
    GAConfig,
    GAState,
    candidate_training_seed,
    complete_generation,
    initial_state,
    is_finished,
    merge_results,
    pending,
)
from thunderhelm.ga.core.fidelity import with_rungs
from thunderhelm.ga.core.network import to_network
from thunderhelm.ga.core.operators import FAILED, sanitize_fitness

# One training's result: at least ``fitness`` (-inf when training failed),
# ``val_accuracy``, ``val_loss``, ``params`` and ``status``.
Result = dict[str, object]
# Called with (position in `networks`, result) as each result comes in.
OnResult = Callable[[int, Result], None]


class Evaluate(Protocol):
    """Train each network spec (docs/network-spec.md) and return one result per spec,
    in order; `on_result` hears of each as it comes in. The one port training sits
    behind: the pool's and the in-process evaluators implement it, tests fake it."""

    def __call__(
        self, networks: Sequence[Mapping[str, object]], on_result: OnResult | None = None
    ) -> list[Result]: ...


FITNESS_KINDS = measures.MEASURES
# The status ga/training/candidate.py gives a run that produced usable metrics; any other
# status ("timeout", "cancelled", "error", "nan") is a failed candidate.
OK_STATUSES = frozenset({"ok"})


def fitness_from_metrics(
    metrics: Mapping[str, Any], kind: str = "val_accuracy", param_penalty: float = 0.0
) -> float:
    """Fitness to maximise from one training result.

    A measure where higher is better (``val_accuracy``, ``val_balanced_accuracy``,
    ``val_macro_f1``) scores as it is, ``val_loss`` negated; either minus
    ``param_penalty`` per parameter. A failed status, or a missing or
    non-finite metric, gives ``-inf``.
    """
    if kind not in FITNESS_KINDS:
        raise ValueError(f"unknown fitness kind {kind!r}; expected one of {FITNESS_KINDS}")
    status = metrics.get("status", "ok")
    value = metrics.get(kind)
    if status not in OK_STATUSES or not isinstance(value, int | float) or isinstance(value, bool):
        return FAILED
    score = float(value) if measures.higher_is_better(kind) else -float(value)
    if param_penalty:
        params = metrics.get("params")
        if not isinstance(params, int) or isinstance(params, bool):
            return FAILED
        score -= param_penalty * params
    return score if math.isfinite(score) else FAILED


def run_search(
    config: GAConfig,
    n_inputs: int,
    n_outputs: int,
    evaluate: Evaluate,
    *,
    start: GAState | None = None,
    on_generation: Callable[[GAState], None] | None = None,
) -> GAState:
    """Run generations until ``config.generations`` have been evaluated.

    ``start`` resumes from a checkpoint; ``on_generation`` sees the state after
    each generation (the checkpoint hook). Only candidates not already evaluated
    are passed to ``evaluate``.
    """
    state = initial_state(config) if start is None else start
    while not is_finished(state, config):
        todo = pending(state)
        networks = [
            with_rungs(
                to_network(
                    genome,
                    n_inputs,
                    n_outputs,
                    candidate_training_seed(config, state.generation, i),
                ),
                state.rungs,
                config.fidelity,
            )
            for i, genome in todo
        ]
        results = list(evaluate(networks)) if networks else []
        if len(results) != len(networks):
            raise ValueError(f"evaluate returned {len(results)} results for {len(networks)}")
        evaluated: dict[int, Evaluation] = {}
        for (index, _genome), result in zip(todo, results, strict=True):
            if "fitness" not in result:
                raise ValueError(f"result for candidate {index} has no 'fitness'")
            given = result["fitness"]
            if not isinstance(given, int | float):
                raise ValueError(f"result for candidate {index} has a fitness that is no number")
            fitness = sanitize_fitness(float(given))
            evaluated[index] = Evaluation(fitness, dict(result))
        fitnesses, metrics = merge_results(state, evaluated)
        state = complete_generation(state, config, fitnesses, metrics)
        if on_generation is not None:
            on_generation(state)
    return state
