"""The GA engine and search loop: determinism, resumption, caching and the state's JSON form."""

import hashlib
import json
import math
import random
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from thunderhelm.ga.core.engine import (
    LEADERS_KEPT,
    RNG_SCHEME,
    Evaluation,
    GAConfig,
    GAState,
    candidate_training_seed,
    complete_generation,
    derive_seed,
    initial_state,
    is_finished,
    json_safe,
    merge_results,
    pending,
)
from thunderhelm.ga.core.genome import genome_key
from thunderhelm.ga.core.network import network_problems, param_count
from thunderhelm.ga.core.search import fitness_from_metrics, run_search
from thunderhelm.ga.core.space import SearchSpace, space_violations
from thunderhelm.ga.core.wiring import materialise

CONFIG = GAConfig(population=8, generations=5, tournament_size=3, elite=2, seed=42)


def fake_train(network: dict[str, Any]) -> dict[str, Any]:
    """A deterministic stand-in for training: prefers ~600 parameters, fails some specs."""
    assert network_problems(network) == []
    params = param_count(network)
    if network["batch_size"] == 128 and network["epochs"] == 5:
        return {
            "fitness": -math.inf,
            "val_accuracy": None,
            "val_loss": None,
            "params": params,
            "status": "error",
        }
    accuracy = 1.0 / (1.0 + abs(math.log(params / 600.0))) + (network["seed"] % 97) * 1e-5
    return {
        "fitness": accuracy,
        "val_accuracy": accuracy,
        "val_loss": 1.0 - accuracy,
        "params": params,
        "status": "ok",
    }


class CountingEvaluate:
    """Records every network it is asked to train."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    def __call__(self, networks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.seen.extend(networks)
        return [fake_train(n) for n in networks]


def pooled_evaluate(networks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Trains in a shuffled order on threads, as a pool finishing out of order would."""
    order = list(range(len(networks)))
    random.Random(len(networks)).shuffle(order)
    with ThreadPoolExecutor(max_workers=3) as pool:
        done = dict(zip(order, pool.map(lambda i: fake_train(networks[i]), order), strict=True))
    return [done[i] for i in range(len(networks))]


def as_json(state: GAState) -> str:
    return json.dumps(state.to_dict(), sort_keys=True, allow_nan=False)


def test_derive_seed_is_stable_and_separates_coordinates() -> None:
    # Pinned: changing the derivation changes every run, so it must be deliberate.
    assert derive_seed(42, "breed", 3, 1) == 0xF5ED8B2FC4484E80
    digest = hashlib.sha256(b"thunderhelm.ga/v1|42|breed|3|1").digest()
    assert derive_seed(42, "breed", 3, 1) == int.from_bytes(digest[:8], "big")
    coords = {
        derive_seed(*c) for c in [(42, "breed", 3, 1), (43, "breed", 3, 1), (42, "init", 3, 1)]
    } | {derive_seed(42, "breed", 4, 1), derive_seed(42, "breed", 3, 2)}
    assert len(coords) == 5


def test_candidate_training_seed_is_deterministic_and_bounded() -> None:
    seeds = {candidate_training_seed(CONFIG, g, i) for g in range(5) for i in range(8)}
    assert len(seeds) == 40
    assert all(0 <= s < 2**31 for s in seeds)
    assert candidate_training_seed(CONFIG, 2, 3) == candidate_training_seed(CONFIG, 2, 3)


def test_initial_population_is_distinct_in_bounds_and_seeded() -> None:
    state = initial_state(CONFIG)
    assert state.generation == 0 and len(state.population) == CONFIG.population
    assert len({genome_key(g) for g in state.population}) == CONFIG.population
    assert all(space_violations(g, CONFIG.space) == [] for g in state.population)
    assert initial_state(CONFIG) == state
    other = initial_state(GAConfig(population=8, seed=43))
    assert other.population != state.population


def test_tiny_space_still_yields_distinct_genomes() -> None:
    space = SearchSpace(max_levels=1, max_units=1, min_neurons=1, max_neurons=1)
    state = initial_state(GAConfig(population=6, space=space, seed=1))
    assert len({genome_key(g) for g in state.population}) == 6


def test_same_seed_same_run_and_different_seed_different_run() -> None:
    first = run_search(CONFIG, 4, 3, CountingEvaluate())
    second = run_search(CONFIG, 4, 3, CountingEvaluate())
    assert as_json(first) == as_json(second)
    other = run_search(GAConfig(population=8, generations=5, elite=2, seed=7), 4, 3, fake_eval)
    assert as_json(other) != as_json(first)


def fake_eval(networks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [fake_train(n) for n in networks]


def test_run_is_independent_of_evaluation_order_and_pool() -> None:
    assert as_json(run_search(CONFIG, 4, 3, pooled_evaluate)) == as_json(
        run_search(CONFIG, 4, 3, fake_eval)
    )


@pytest.mark.parametrize("k", range(CONFIG.generations + 1))
def test_resume_from_any_checkpoint_equals_uninterrupted(k: int) -> None:
    checkpoints: list[str] = []
    full = run_search(
        CONFIG, 4, 3, fake_eval, on_generation=lambda s: checkpoints.append(as_json(s))
    )
    assert len(checkpoints) == CONFIG.generations
    start = initial_state(CONFIG) if k == 0 else GAState.from_dict(json.loads(checkpoints[k - 1]))
    resumed = run_search(CONFIG, 4, 3, fake_eval, start=start)
    assert resumed == full
    assert as_json(resumed) == as_json(full)


def test_state_round_trips_through_json_exactly() -> None:
    state = run_search(CONFIG, 4, 3, fake_eval)
    assert any(f == -math.inf for gen in state.history for f in gen), "fake should fail some"
    text = as_json(state)  # allow_nan=False: the checkpoint is strict JSON
    assert GAState.from_dict(json.loads(text)) == state
    assert state.to_dict()["rng"] == {"scheme": RNG_SCHEME, "seed": CONFIG.seed}


def test_state_from_dict_rejects_unknown_versions() -> None:
    data = initial_state(CONFIG).to_dict()
    with pytest.raises(ValueError, match="version"):
        GAState.from_dict(data | {"version": 99})
    with pytest.raises(ValueError, match="RNG"):
        GAState.from_dict(data | {"rng": {"scheme": "other", "seed": 42}})


def test_cache_keeps_elites_and_duplicates_from_being_retrained() -> None:
    counter = CountingEvaluate()
    final = run_search(CONFIG, 4, 3, counter)
    assert final.evaluations == len(counter.seen)
    assert len(counter.seen) < CONFIG.population * CONFIG.generations
    # Generation 1 onwards starts with the elites of the previous generation.
    state = initial_state(CONFIG)
    todo = pending(state)
    assert [i for i, _ in todo] == list(range(CONFIG.population))
    fitnesses = [fake_train(n)["fitness"] for n in counter.seen[: CONFIG.population]]
    state = complete_generation(state, CONFIG, fitnesses)
    assert all(i >= CONFIG.elite for i, _ in pending(state))


def test_elites_carry_over_and_best_never_gets_worse() -> None:
    history: list[GAState] = []
    run_search(CONFIG, 4, 3, fake_eval, on_generation=history.append)
    bests = [s.best.fitness for s in history if s.best is not None]
    assert bests == sorted(bests)
    maxima = [max(gen) for gen in history[-1].history]
    assert maxima == sorted(maxima)
    for state in history:
        assert state.best is not None
        assert state.population[0] == state.best.genome
        assert state.best.wiring == materialise(state.best.genome)


def test_leaders_are_the_runs_fittest_distinct_networks_with_where_they_were_trained() -> None:
    history: list[GAState] = []
    trained: dict[tuple[int, int], float] = {}  # (generation, index) -> fitness, as trained

    def evaluate(networks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        state = history[-1] if history else initial_state(CONFIG)
        results = [fake_train(n) for n in networks]
        for (index, _), result in zip(pending(state), results, strict=True):
            trained[(state.generation, index)] = result["fitness"]
        return results

    run_search(CONFIG, 4, 3, evaluate, on_generation=history.append)
    for state in history:
        leaders = state.leaders
        assert 0 < len(leaders) <= LEADERS_KEPT
        assert len({genome_key(b.genome) for b in leaders}) == len(leaders)
        assert [b.fitness for b in leaders] == sorted((b.fitness for b in leaders), reverse=True)
        assert state.best is not None and genome_key(leaders[0].genome) == genome_key(
            state.best.genome
        )
        for leader in leaders:
            assert trained[(leader.generation, leader.index)] == leader.fitness
            assert leader.wiring == materialise(leader.genome)
    finished = [f for f in trained.values() if f > -math.inf]
    top = sorted(finished, reverse=True)[:LEADERS_KEPT]
    assert [b.fitness for b in history[-1].leaders] == top
    again = GAState.from_dict(json.loads(as_json(history[-1])))
    assert again.leaders == history[-1].leaders
    older = {k: v for k, v in history[-1].to_dict().items() if k != "leaders"}
    assert GAState.from_dict(older).leaders == ()  # a state from before the archive


def test_complete_generation_records_history_and_failures() -> None:
    state = initial_state(GAConfig(population=4, seed=1))
    config = GAConfig(population=4, seed=1)
    after = complete_generation(state, config, [math.nan, -math.inf, 0.3, math.inf])
    assert after.generation == 1
    assert after.history == ((-math.inf, -math.inf, 0.3, -math.inf),)
    assert after.best is not None and after.best.index == 2
    assert after.evaluations == 4
    assert len(after.population) == 4
    all_failed = complete_generation(state, config, [-math.inf] * 4)
    assert all_failed.best is None
    assert len(all_failed.population) == 4


def test_complete_generation_validates_its_inputs() -> None:
    config = GAConfig(population=3, seed=5)
    state = initial_state(config)
    with pytest.raises(ValueError, match="one fitness"):
        complete_generation(state, config, [0.1, 0.2])
    with pytest.raises(ValueError, match="one fitness"):
        complete_generation(state, config, [0.1, 0.2, 0.3], [{}])
    with pytest.raises(ValueError, match="seed"):
        complete_generation(state, GAConfig(population=3, seed=6), [0.1, 0.2, 0.3])


def test_merge_results_fills_cached_and_twin_candidates() -> None:
    config = GAConfig(population=3, seed=2)
    state = initial_state(config)
    twin = GAState(seed=2, generation=0, population=(state.population[0],) * 2)
    assert [i for i, _ in pending(twin)] == [0]
    fitnesses, metrics = merge_results(twin, {0: Evaluation(0.7, {"a": 1})})
    assert fitnesses == [0.7, 0.7] and metrics == [{"a": 1}, {"a": 1}]
    with pytest.raises(ValueError, match="no result"):
        merge_results(state, {0: Evaluation(0.1, {})})
    with pytest.raises(ValueError, match="no candidate"):
        merge_results(state, {9: Evaluation(0.1, {})})


def test_metrics_are_stored_as_strict_json() -> None:
    config = GAConfig(population=2, seed=3)
    state = initial_state(config)
    metrics = [{"val_loss": math.nan, "hist": (1, 2.5)}, {"val_loss": 0.2, "hist": ()}]
    after = complete_generation(state, config, [0.1, 0.2], metrics)
    assert after.best is not None and after.best.metrics == {"val_loss": 0.2, "hist": []}
    json.dumps(after.to_dict(), allow_nan=False)
    assert json_safe({"x": math.inf, "y": [True, None]}) == {"x": None, "y": [True, None]}
    with pytest.raises(TypeError):
        json_safe({"f": object()})


def test_config_round_trips_and_validates() -> None:
    config = GAConfig(population=5, seed=9, space=SearchSpace(max_levels=2))
    assert GAConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    for bad in ({"elite": 9}, {"temperature": -1.0}, {"mutation_rate": 2.0}, {"population": 0}):
        with pytest.raises(ValueError):
            GAConfig(**bad)
    with pytest.raises(ValueError):
        GAConfig.from_dict({"bogus": 1})


def test_run_search_checks_the_evaluate_port() -> None:
    with pytest.raises(ValueError, match="results"):
        run_search(CONFIG, 4, 3, lambda networks: [])
    with pytest.raises(ValueError, match="fitness"):
        run_search(CONFIG, 4, 3, lambda networks: [{"status": "ok"} for _ in networks])


def test_run_search_with_zero_generations_evaluates_nothing() -> None:
    config = GAConfig(population=3, generations=0)
    state = run_search(config, 4, 3, CountingEvaluate())
    assert state.generation == 0 and is_finished(state, config)


def test_networks_carry_the_candidate_training_seed() -> None:
    counter = CountingEvaluate()
    run_search(GAConfig(population=3, generations=1, seed=4), 4, 3, counter)
    config = GAConfig(population=3, generations=1, seed=4)
    assert [n["seed"] for n in counter.seen] == [
        candidate_training_seed(config, 0, i) for i in range(3)
    ]


@pytest.mark.parametrize(
    ("metrics", "kind", "penalty", "expected"),
    [
        ({"val_accuracy": 0.8, "status": "ok"}, "val_accuracy", 0.0, 0.8),
        ({"val_loss": 0.5, "status": "ok"}, "val_loss", 0.0, -0.5),
        ({"val_accuracy": 0.8, "params": 1000, "status": "ok"}, "val_accuracy", 1e-4, 0.7),
        ({"val_accuracy": 0.8, "status": "timeout"}, "val_accuracy", 0.0, -math.inf),
        ({"val_accuracy": None, "status": "ok"}, "val_accuracy", 0.0, -math.inf),
        ({"val_loss": math.nan, "status": "ok"}, "val_loss", 0.0, -math.inf),
        ({"val_accuracy": 0.8, "params": None, "status": "ok"}, "val_accuracy", 1e-4, -math.inf),
        ({"val_accuracy": 0.9}, "val_accuracy", 0.0, 0.9),
    ],
)
def test_fitness_from_metrics_table(
    metrics: dict[str, Any], kind: str, penalty: float, expected: float
) -> None:
    assert fitness_from_metrics(metrics, kind, penalty) == pytest.approx(expected)


def test_fitness_from_metrics_rejects_unknown_kinds() -> None:
    with pytest.raises(ValueError):
        fitness_from_metrics({"val_accuracy": 1.0}, "accuracy")


def test_search_runs_inside_an_isolated_subinterpreter() -> None:
    interpreters = pytest.importorskip("_interpreters")
    root = str(Path(__file__).resolve().parents[1])
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {root!r})
        from thunderhelm.ga.core.engine import GAConfig
        from thunderhelm.ga.core.network import param_count
        from thunderhelm.ga.core.search import run_search

        def evaluate(networks):
            return [{{"fitness": -abs(param_count(n) - 500.0), "status": "ok"}} for n in networks]

        state = run_search(GAConfig(population=4, generations=2, seed=1), 3, 2, evaluate)
        assert state.generation == 2 and state.best is not None
        """
    )
    interp = interpreters.create("isolated")
    try:
        error = interpreters.exec(interp, script)
        assert error is None, getattr(error, "formatted", error)
    finally:
        interpreters.destroy(interp)


def test_a_request_without_ga_settings_gets_the_engine_defaults() -> None:
    from thunderhelm.schemas.requests import GASettings
    from thunderhelm.streams.execution.steps import ga_config

    settings = GASettings()
    engine = GAConfig()
    for name in ("population", "tournament_size", "temperature", "crossover_rate", "elite"):
        assert getattr(settings, name) == getattr(engine, name), name
        assert getattr(ga_config({}), name) == getattr(engine, name), name
    assert settings.mutation_rate == engine.mutation_rate == ga_config({}).mutation_rate
