"""The GA as a pure state machine: one call per generation, no I/O, no hidden randomness.

The saga stores a ``GAState`` in each ``generation-completed`` event, so the
state is plain data that survives ``json.dumps``/``json.loads`` exactly, and a
run resumed from any checkpoint continues exactly as an uninterrupted one.

Randomness: there is no RNG state to carry. Every random choice uses a fresh
``random.Random`` seeded by ``derive_seed(run seed, purpose, generation, index)``
(sha256, never the salted built-in ``hash``): purpose ``init`` for generation 0,
``breed`` for each child of a later generation, ``train`` for the training seed
of a candidate. So a run is the same whatever the pool size, the order in which
candidates finish, or where it was interrupted.

Evaluation protocol (a cache keeps elites and duplicates from being re-trained):

1. ``pending(state)`` lists ``(index, genome)`` of the current population that
   need training: genomes not evaluated in the previous generation, each
   distinct genome once.
2. The caller trains them (in any order, on any pool) and passes the results to
   ``merge_results(state, {index: Evaluation})``, which fills in the cached and
   duplicate members and returns fitnesses and metrics for the whole population.
3. ``complete_generation(state, config, fitnesses, metrics)`` records them,
   updates the best, and breeds the next population (elites first).

The cache holds the results of the last evaluated population only: that is all
the next generation can reuse (elites, and children equal to a parent), and it
keeps the checkpoint small.
"""

import hashlib
import math
import numbers
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from thunderhelm.ga.core.fidelity import (
    Fidelity,
    RungFigures,
    figures_from_json,
    figures_to_json,
    recorded,
)
from thunderhelm.ga.core.genome import Genome, genome_from_dict, genome_key, genome_to_dict
from thunderhelm.ga.core.operators import (
    DEFAULT_MUTATION_RATE,
    FAILED,
    crossover,
    make_unique,
    mutate,
    sanitize_fitness,
    select_elites,
    tournament_select,
)
from thunderhelm.ga.core.space import SearchSpace, random_genome
from thunderhelm.ga.core.wiring import Wiring, materialise, wiring_from_dict, wiring_to_dict

STATE_VERSION = 1
# Candidates the GA state keeps as the run's leaders (see `GAState.leaders`).
LEADERS_KEPT = 8
RNG_SCHEME = "sha256(thunderhelm.ga/v1|seed|purpose|generation|index)[:8]"
_TRAINING_SEED_MASK = 0x7FFF_FFFF  # fits a signed 32-bit int for any training backend


def derive_seed(seed: int, purpose: str, generation: int, index: int) -> int:
    """A 64-bit seed from the run seed and the coordinates of one random choice."""
    text = f"thunderhelm.ga/v1|{seed}|{purpose}|{generation}|{index}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def derive_rng(seed: int, purpose: str, generation: int, index: int) -> random.Random:
    return random.Random(derive_seed(seed, purpose, generation, index))


def json_safe(value: Any) -> Any:
    """A copy of ``value`` that ``json.dumps`` writes as strict JSON and loads back equal.

    Non-finite floats become ``None`` and tuples become lists; anything that is
    not plain data is rejected, because metrics end up in events.
    """
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    raise TypeError(f"not plain data: {type(value).__name__}")


def _fitness_to_json(value: float) -> float | None:
    return None if value == FAILED else value


def _fitness_from_json(value: float | None) -> float:
    return FAILED if value is None else sanitize_fitness(float(value))


@dataclass(frozen=True, slots=True)
class GAConfig:
    """Parameters of one run. ``generations`` counts evaluated generations."""

    population: int = 8
    generations: int = 4
    tournament_size: int = 3
    temperature: float = 0.5  # of rank-based selection: see tournament_probabilities
    crossover_rate: float = 0.9  # uniform crossover: see operators.crossover
    mutation_rate: float = DEFAULT_MUTATION_RATE
    elite: int = 1
    seed: int = 0
    space: SearchSpace = field(default_factory=SearchSpace)
    # Successive-halving rungs inside each training (ga/core/fidelity.py); None: off.
    fidelity: Fidelity | None = None

    def __post_init__(self) -> None:
        if self.population < 1 or self.generations < 0 or self.tournament_size < 1:
            raise ValueError("need population >= 1, generations >= 0, tournament_size >= 1")
        if not 0 <= self.elite <= self.population:
            raise ValueError("elite must be in [0, population]")
        if not self.temperature >= 0:
            raise ValueError("temperature must be >= 0")
        if not (0 <= self.crossover_rate <= 1 and 0 <= self.mutation_rate <= 1):
            raise ValueError("crossover_rate and mutation_rate must be in [0, 1]")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            name: getattr(self, name)
            for name in self.__dataclass_fields__
            if name not in ("space", "fidelity")
        }
        out["space"] = self.space.to_dict()
        out["fidelity"] = None if self.fidelity is None else self.fidelity.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "GAConfig":
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown GA config fields {sorted(unknown)}")
        values = dict(data)
        if "space" in values:
            values["space"] = SearchSpace.from_dict(values["space"])
        if values.get("fidelity") is not None:
            values["fidelity"] = Fidelity.from_dict(values["fidelity"])
        return cls(**values)


@dataclass(frozen=True, slots=True)
class Evaluation:
    """What training one candidate produced: its fitness and plain-data metrics."""

    fitness: float
    metrics: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"fitness": _fitness_to_json(self.fitness), "metrics": dict(self.metrics)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Evaluation":
        return cls(_fitness_from_json(data["fitness"]), dict(data["metrics"]))


@dataclass(frozen=True, slots=True)
class Best:
    """The fittest candidate so far, with the wiring it was trained with."""

    genome: Genome
    wiring: Wiring
    fitness: float
    metrics: Mapping[str, Any]
    generation: int
    index: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "genome": genome_to_dict(self.genome),
            "key": genome_key(self.genome),
            "wiring": wiring_to_dict(self.wiring),
            "fitness": self.fitness,
            "metrics": dict(self.metrics),
            "generation": self.generation,
            "index": self.index,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Best":
        return cls(
            genome=genome_from_dict(data["genome"]),
            wiring=wiring_from_dict(data["wiring"]),
            fitness=float(data["fitness"]),
            metrics=dict(data["metrics"]),
            generation=int(data["generation"]),
            index=int(data["index"]),
        )


@dataclass(frozen=True, slots=True)
class GAState:
    """Everything needed to continue a run.

    ``generation`` is the index of ``population``, the generation waiting to be
    evaluated; ``history[g]`` holds the fitnesses of evaluated generation ``g``.
    """

    seed: int
    generation: int
    population: tuple[Genome, ...]
    history: tuple[tuple[float, ...], ...] = ()
    best: Best | None = None
    evaluations: int = 0
    cache: Mapping[str, Evaluation] = field(default_factory=dict)
    # The fittest distinct candidates of the whole run, best first (at most
    # LEADERS_KEPT), each with where it was trained: the run's final model is
    # built from them (an ensemble, or the first alone).
    leaders: tuple[Best, ...] = ()
    # Validation figures measured at each rung epoch so far (ga/core/fidelity.py).
    rungs: RungFigures = field(default_factory=dict)
    # Training work so far, in epoch-equivalents: one pass over the training rows.
    work: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "rng": {"scheme": RNG_SCHEME, "seed": self.seed},
            "generation": self.generation,
            "population": [genome_to_dict(g) for g in self.population],
            "history": [[_fitness_to_json(f) for f in gen] for gen in self.history],
            "best": None if self.best is None else self.best.to_dict(),
            "evaluations": self.evaluations,
            "cache": {key: ev.to_dict() for key, ev in sorted(self.cache.items())},
            "leaders": [leader.to_dict() for leader in self.leaders],
            "rungs": figures_to_json(self.rungs),
            "work": self.work,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "GAState":
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported GA state version {data.get('version')!r}")
        rng = data["rng"]
        if rng.get("scheme") != RNG_SCHEME:
            # A different derivation would silently change the rest of the run.
            raise ValueError(f"unsupported RNG scheme {rng.get('scheme')!r}")
        return cls(
            seed=int(rng["seed"]),
            generation=int(data["generation"]),
            population=tuple(genome_from_dict(g) for g in data["population"]),
            history=tuple(tuple(_fitness_from_json(f) for f in gen) for gen in data["history"]),
            best=None if data["best"] is None else Best.from_dict(data["best"]),
            evaluations=int(data["evaluations"]),
            cache={key: Evaluation.from_dict(ev) for key, ev in data["cache"].items()},
            # States written before the archive existed start it empty.
            leaders=tuple(Best.from_dict(b) for b in data.get("leaders") or ()),
            rungs=figures_from_json(data.get("rungs")),
            work=float(data.get("work") or 0.0),
        )


def candidate_training_seed(config: GAConfig, generation: int, index: int) -> int:
    """The ``seed`` of candidate ``index``'s network in ``generation``."""
    return derive_seed(config.seed, "train", generation, index) & _TRAINING_SEED_MASK


def reevaluation_seed(config: GAConfig, generation: int, index: int) -> int:
    """A fresh training seed for re-evaluating candidate ``index`` of ``generation`` at the end."""
    return derive_seed(config.seed, "final", generation, index) & _TRAINING_SEED_MASK


def is_finished(state: GAState, config: GAConfig) -> bool:
    return state.generation >= config.generations


def initial_state(config: GAConfig, seeds: Sequence[Genome] = ()) -> GAState:
    """Generation 0: ``config.population`` distinct genomes, ``seeds`` first, the rest random.

    The random ones are drawn as without seeds, position by position (a warm
    start changes only the places its seeds take).
    """
    population: list[Genome] = []
    taken: set[str] = set()
    for genome in seeds[: config.population]:
        if genome_key(genome) not in taken:
            taken.add(genome_key(genome))
            population.append(genome)
    for index in range(len(population), config.population):
        rng = derive_rng(config.seed, "init", 0, index)
        genome = random_genome(rng, config.space)
        genome = make_unique(rng, genome, taken, config.space, config.mutation_rate)
        taken.add(genome_key(genome))
        population.append(genome)
    return GAState(seed=config.seed, generation=0, population=tuple(population))


def pending(state: GAState) -> list[tuple[int, Genome]]:
    """Members of the current population that need training, each distinct genome once."""
    seen = set(state.cache)
    todo: list[tuple[int, Genome]] = []
    for index, genome in enumerate(state.population):
        key = genome_key(genome)
        if key not in seen:
            seen.add(key)
            todo.append((index, genome))
    return todo


def merge_results(
    state: GAState, evaluated: Mapping[int, Evaluation]
) -> tuple[list[float], list[dict[str, Any]]]:
    """Fitnesses and metrics of the whole population from fresh results plus the cache.

    ``evaluated`` maps population index to result and must cover ``pending(state)``.
    """
    by_key: dict[str, Evaluation] = {}
    for index, result in evaluated.items():
        if not 0 <= index < len(state.population):
            raise ValueError(f"no candidate {index} in generation {state.generation}")
        by_key.setdefault(genome_key(state.population[index]), result)
    fitnesses: list[float] = []
    metrics: list[dict[str, Any]] = []
    for index, genome in enumerate(state.population):
        key = genome_key(genome)
        found = evaluated.get(index) or by_key.get(key) or state.cache.get(key)
        if found is None:
            raise ValueError(f"candidate {index} of generation {state.generation} has no result")
        fitnesses.append(found.fitness)
        metrics.append(dict(found.metrics))
    return fitnesses, metrics


def breed(
    config: GAConfig, generation: int, parents: Sequence[Genome], fitnesses: Sequence[float]
) -> tuple[Genome, ...]:
    """Population ``generation`` from the evaluated ``parents``: elites, then children.

    Child ``i`` uses its own RNG ``(seed, "breed", generation, i)``; it is
    re-mutated while it equals a parent or an earlier child.
    """
    clean = [sanitize_fitness(f) for f in fitnesses]
    children = [parents[i] for i in select_elites(parents, clean, config.elite)]
    taken = {genome_key(g) for g in parents}
    for index in range(len(children), config.population):
        rng = derive_rng(config.seed, "breed", generation, index)
        first = parents[tournament_select(rng, clean, config.tournament_size, config.temperature)]
        child = first
        if rng.random() < config.crossover_rate:
            second_index = tournament_select(rng, clean, config.tournament_size, config.temperature)
            child = crossover(rng, first, parents[second_index])[0]
        child = mutate(rng, child, config.space, config.mutation_rate)
        child = make_unique(rng, child, taken, config.space, config.mutation_rate)
        taken.add(genome_key(child))
        children.append(child)
    return tuple(children)


def complete_generation(
    state: GAState,
    config: GAConfig,
    fitnesses: Sequence[float],
    metrics: Sequence[Mapping[str, Any]] | None = None,
) -> GAState:
    """Record the fitness of the current population and breed the next one.

    ``fitnesses[i]`` (and ``metrics[i]``) belong to ``state.population[i]``;
    non-finite fitnesses count as failed (``-inf``). Pure: same inputs, same state.
    """
    if config.seed != state.seed:
        raise ValueError("config seed does not match the state's run seed")
    n = len(state.population)
    if len(fitnesses) != n or (metrics is not None and len(metrics) != n):
        raise ValueError(f"need one fitness (and metrics) per candidate, {n} in all")
    clean = tuple(sanitize_fitness(float(f)) for f in fitnesses)
    stored: list[dict[str, Any]] = [
        json_safe(m) for m in (metrics if metrics is not None else [{}] * n)
    ]
    fresh = len(pending(state))

    cache: dict[str, Evaluation] = {}
    best = state.best
    trained: list[Best] = []
    fresh_keys = {genome_key(g) for _, g in pending(state)}
    for index, genome in enumerate(state.population):
        key = genome_key(genome)
        cache.setdefault(key, Evaluation(clean[index], stored[index]))
        candidate = Best(
            genome=genome,
            wiring=materialise(genome),
            fitness=clean[index],
            metrics=stored[index],
            generation=state.generation,
            index=index,
        )
        if key in fresh_keys:
            fresh_keys.discard(key)  # a twin later in the population was not trained
            trained.append(candidate)
        if clean[index] > (FAILED if best is None else best.fitness):
            best = candidate

    return GAState(
        seed=state.seed,
        generation=state.generation + 1,
        population=breed(config, state.generation + 1, state.population, clean),
        history=(*state.history, clean),
        best=best,
        evaluations=state.evaluations + fresh,
        cache=cache,
        leaders=update_leaders(state.leaders, trained),
        rungs=state.rungs
        if config.fidelity is None
        else recorded(state.rungs, (curve_of(b.metrics) for b in trained), config.fidelity),
        work=state.work + sum(work_of(b.metrics) for b in trained),
    )


def curve_of(metrics: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    curve = metrics.get("curve")
    return list(curve) if isinstance(curve, list) else []


def work_of(metrics: Mapping[str, Any]) -> float:
    """A training's work in epoch-equivalents: the epochs it ran over the training rows."""
    epochs = metrics.get("epochs_run")
    return (
        float(epochs) if isinstance(epochs, int | float) and not isinstance(epochs, bool) else 0.0
    )


def update_leaders(leaders: Sequence[Best], trained: Sequence[Best]) -> tuple[Best, ...]:
    """The `LEADERS_KEPT` fittest distinct genomes of `leaders` and the newly `trained`.

    Failed candidates never lead; ties keep the earlier-trained candidate
    first (a stable sort), so every replay of a run ranks them alike.
    """
    kept = {genome_key(b.genome) for b in leaders}
    merged = list(leaders)
    for candidate in trained:
        key = genome_key(candidate.genome)
        if candidate.fitness > FAILED and key not in kept:
            kept.add(key)
            merged.append(candidate)
    merged.sort(key=lambda b: -b.fitness)
    return tuple(merged[:LEADERS_KEPT])
