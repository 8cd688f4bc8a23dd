"""Genetic operators over ``Genome``: selection, crossover, mutation, elitism, de-duplication.

Each function takes its randomness as an explicit ``random.Random`` (never the
module-level ``random``) and returns new values without touching its inputs, so
the engine can derive every random choice from the run seed and replay a run.

Failed candidates carry fitness ``-inf``. ``NaN`` and ``+inf`` are treated the
same way (see ``sanitize_fitness``) so that one broken training run cannot win a
tournament or an elite slot.
"""

import math
import random
from collections.abc import Callable, Collection, Sequence
from dataclasses import replace

from thunderhelm.ga.core.genome import SCALAR_GENES, Genome, Unit, genome_key
from thunderhelm.ga.core.space import SearchSpace, new_uid, random_level, random_unit

FAILED = -math.inf
DEFAULT_UNIQUE_ATTEMPTS = 8


def sanitize_fitness(value: float) -> float:
    """Map anything that is not a finite number to ``-inf`` (a failed candidate)."""
    return value if math.isfinite(value) else FAILED


# --- selection -------------------------------------------------------------------------


def tournament_probabilities(fitnesses: Sequence[float], temperature: float) -> list[float]:
    """Weights ``exp(-rank / temperature)`` over one tournament's contestants, normalised.

    Rank 0 is the best contestant; tied contestants share their mean rank. Ranks
    rather than raw fitness make the temperature mean the same on every task: an
    accuracy spread of 0.05 and a loss spread of 5 select alike. At the default
    0.5 the best of three distinct contestants wins with probability 0.87.
    Temperature 0 puts all the weight on the best (shared equally between ties),
    the limit as the temperature falls; a high one approaches a uniform pick.
    Failed contestants get weight 0; when every contestant failed the choice is uniform.
    """
    if temperature < 0 or math.isnan(temperature):
        raise ValueError("temperature must be >= 0")
    clean = [sanitize_fitness(f) for f in fitnesses]
    if not clean:
        raise ValueError("a tournament needs contestants")
    best = max(clean)
    if best == FAILED:
        return [1.0 / len(clean)] * len(clean)
    if temperature == 0:
        weights = [1.0 if f == best else 0.0 for f in clean]
    else:
        # Measured from the best's rank, so the best always weighs 1 (ties included).
        top = _mean_rank(best, clean)
        weights = [
            0.0 if f == FAILED else math.exp((top - _mean_rank(f, clean)) / temperature)
            for f in clean
        ]
    total = sum(weights)
    return [w / total for w in weights]


def _mean_rank(value: float, values: Sequence[float]) -> float:
    """0 for the best of ``values``; ties share the mean of the ranks they span."""
    better = sum(v > value for v in values)
    tied = sum(v == value for v in values)
    return better + (tied - 1) / 2


def tournament_select(
    rng: random.Random,
    fitnesses: Sequence[float],
    tournament_size: int,
    temperature: float,
) -> int:
    """Index of the winner of one tournament over ``fitnesses``.

    Contestants are drawn without replacement when the population allows it.
    The winner is drawn by ``tournament_probabilities`` with one ``rng.random()``.
    """
    n = len(fitnesses)
    if n == 0 or tournament_size < 1:
        raise ValueError("need a non-empty population and tournament_size >= 1")
    if tournament_size <= n:
        contestants = rng.sample(range(n), tournament_size)
    else:
        contestants = [rng.randrange(n) for _ in range(tournament_size)]
    probs = tournament_probabilities([fitnesses[i] for i in contestants], temperature)
    threshold = rng.random()
    cumulative = 0.0
    for index, p in zip(contestants, probs, strict=True):
        cumulative += p
        if threshold < cumulative:
            return index
    # Rounding can leave the cumulative sum a hair under 1.
    return next(i for i, p in zip(reversed(contestants), reversed(probs), strict=True) if p > 0)


def select_elites(
    population: Sequence[Genome], fitnesses: Sequence[float], count: int
) -> list[int]:
    """Indices of the ``count`` fittest distinct genomes; failed ones never qualify.

    Ties go to the lower index so the choice does not depend on sort stability.
    """
    order = sorted(range(len(population)), key=lambda i: (-sanitize_fitness(fitnesses[i]), i))
    chosen: list[int] = []
    seen: set[str] = set()
    for i in order:
        if len(chosen) >= count or sanitize_fitness(fitnesses[i]) == FAILED:
            break
        key = genome_key(population[i])
        if key not in seen:
            seen.add(key)
            chosen.append(i)
    return chosen


# --- crossover -------------------------------------------------------------------------


def crossover(rng: random.Random, a: Genome, b: Genome) -> tuple[Genome, Genome]:
    """Uniform crossover: each scalar gene, and the level at each depth, from either parent.

    Every scalar gene (learning rate, epochs, affinity, ...) and every level
    position both parents have comes from ``b`` with probability 1/2. The first
    child has ``a``'s number of levels, the second ``b``'s and takes each
    choice the other way, so children of in-bounds parents stay in bounds.
    Units keep their ids, so an inherited unit keeps the edges it had wherever
    its sources came along too (see ``wiring``).
    """
    from_b_gene = {name: rng.random() < 0.5 for name in SCALAR_GENES}
    from_b_level = [rng.random() < 0.5 for _ in range(max(len(a.levels), len(b.levels)))]

    def child(head: Genome, other: Genome) -> Genome:
        # A drawn choice takes ``other``'s value: b's for the first child, a's for the mirror.
        levels = tuple(
            other.levels[k] if k < len(other.levels) and from_b_level[k] else level
            for k, level in enumerate(head.levels)
        )
        genes = {name: getattr(other if from_b_gene[name] else head, name) for name in SCALAR_GENES}
        return replace(head, levels=levels, **genes)

    return child(a, b), child(b, a)


# --- mutation --------------------------------------------------------------------------

# An aspect returns a changed genome, or None when it cannot change this one
# (for example removing a level from a genome at min_levels).
Aspect = Callable[[random.Random, Genome, SearchSpace], Genome | None]


def _clamp(value: float, lo: float, hi: float) -> float:
    return min(hi, max(lo, value))


def _changed_int(rng: random.Random, value: int, lo: int, hi: int, step: int) -> int | None:
    """A different int in ``[lo, hi]`` within ``step`` of ``value``, or None."""
    options = [v for v in range(max(lo, value - step), min(hi, value + step) + 1) if v != value]
    return rng.choice(options) if options else None


def _log_perturb(rng: random.Random, value: float, lo: float, hi: float, sigma: float) -> float:
    return _clamp(value * math.exp(rng.gauss(0.0, sigma)), lo, hi)


def _with_levels(genome: Genome, levels: list[tuple[Unit, ...]]) -> Genome:
    return replace(genome, levels=tuple(levels))


def _add_level(rng: random.Random, g: Genome, space: SearchSpace) -> Genome | None:
    if len(g.levels) >= space.max_levels:
        return None
    levels = list(g.levels)
    levels.insert(rng.randint(0, len(levels)), random_level(rng, space))
    return _with_levels(g, levels)


def _remove_level(rng: random.Random, g: Genome, space: SearchSpace) -> Genome | None:
    if len(g.levels) <= space.min_levels:
        return None
    levels = list(g.levels)
    del levels[rng.randrange(len(levels))]
    return _with_levels(g, levels)


def _add_unit(rng: random.Random, g: Genome, space: SearchSpace) -> Genome | None:
    open_levels = [k for k, level in enumerate(g.levels) if len(level) < space.max_units]
    if not open_levels:
        return None
    k = rng.choice(open_levels)
    units = list(g.levels[k])
    units.insert(rng.randint(0, len(units)), random_unit(rng, space))
    return _with_levels(g, [*g.levels[:k], tuple(units), *g.levels[k + 1 :]])


def _remove_unit(rng: random.Random, g: Genome, space: SearchSpace) -> Genome | None:
    full_levels = [k for k, level in enumerate(g.levels) if len(level) > space.min_units]
    if not full_levels:
        return None
    k = rng.choice(full_levels)
    units = list(g.levels[k])
    del units[rng.randrange(len(units))]
    return _with_levels(g, [*g.levels[:k], tuple(units), *g.levels[k + 1 :]])


def _edit_unit(rng: random.Random, g: Genome, edit: Callable[[Unit], Unit | None]) -> Genome | None:
    """Apply ``edit`` to one unit picked uniformly over all units."""
    flat = [(k, u) for k, level in enumerate(g.levels) for u in range(len(level))]
    k, u = rng.choice(flat)
    new_unit = edit(g.levels[k][u])
    if new_unit is None:
        return None
    level = (*g.levels[k][:u], new_unit, *g.levels[k][u + 1 :])
    return _with_levels(g, [*g.levels[:k], level, *g.levels[k + 1 :]])


def _resize_unit(rng: random.Random, g: Genome, space: SearchSpace) -> Genome | None:
    def edit(unit: Unit) -> Unit | None:
        # Multiplicative steps: a 4-neuron unit moves by ones, a 32-neuron one by eights.
        step = max(1, unit.neurons // 2)
        neurons = _changed_int(rng, unit.neurons, space.min_neurons, space.max_neurons, step)
        return None if neurons is None else Unit(neurons, unit.activation, unit.uid)

    return _edit_unit(rng, g, edit)


def _change_activation(rng: random.Random, g: Genome, space: SearchSpace) -> Genome | None:
    def edit(unit: Unit) -> Unit | None:
        options = [a for a in space.activations if a != unit.activation]
        return Unit(unit.neurons, rng.choice(options), unit.uid) if options else None

    return _edit_unit(rng, g, edit)


def _perturb_affinity(rng: random.Random, g: Genome, space: SearchSpace) -> Genome | None:
    value = _log_perturb(rng, g.affinity, *space.affinity_range, sigma=0.3)
    return None if value == g.affinity else replace(g, affinity=value)


def _perturb_lateral(rng: random.Random, g: Genome, space: SearchSpace) -> Genome | None:
    value = _clamp(g.p_lateral + rng.gauss(0.0, 0.1), *space.p_lateral_range)
    return None if value == g.p_lateral else replace(g, p_lateral=value)


def _change_skip_depth(rng: random.Random, g: Genome, space: SearchSpace) -> Genome | None:
    value = _changed_int(rng, g.skip_depth, *space.skip_depth_range, step=1)
    return None if value is None else replace(g, skip_depth=value)


def _change_learning_rate(rng: random.Random, g: Genome, space: SearchSpace) -> Genome | None:
    value = _log_perturb(rng, g.learning_rate, *space.learning_rate_range, sigma=0.5)
    return None if value == g.learning_rate else replace(g, learning_rate=value)


def _change_weight_decay(rng: random.Random, g: Genome, space: SearchSpace) -> Genome | None:
    value = _log_perturb(rng, g.weight_decay, *space.weight_decay_range, sigma=0.5)
    return None if value == g.weight_decay else replace(g, weight_decay=value)


def _change_epochs(rng: random.Random, g: Genome, space: SearchSpace) -> Genome | None:
    lo, hi = space.epochs_range
    value = _changed_int(rng, g.epochs, lo, hi, step=max(1, (hi - lo) // 4))
    return None if value is None else replace(g, epochs=value)


def _change_batch_size(rng: random.Random, g: Genome, space: SearchSpace) -> Genome | None:
    options = [b for b in space.batch_sizes if b != g.batch_size]
    return replace(g, batch_size=rng.choice(options)) if options else None


def _rewire_unit(rng: random.Random, g: Genome, space: SearchSpace) -> Genome | None:
    """A new id for one unit: re-draws its own edges and nobody else's."""

    def edit(unit: Unit) -> Unit:
        uid = new_uid(rng)
        while uid == unit.uid:
            uid = new_uid(rng)
        return Unit(unit.neurons, unit.activation, uid)

    return _edit_unit(rng, g, edit)


# The order is part of the replay contract: each aspect consumes rng in turn.
# ``affinity_first`` is absent on purpose: with a single input node it cannot
# change the wiring, so mutating it would only make look-alike duplicates; so is
# ``wiring_seed``, which only names units built without ids (``rewire_unit``
# re-draws one unit's edges instead of every edge at once).
MUTATION_ASPECTS: tuple[tuple[str, Aspect], ...] = (
    ("add_level", _add_level),
    ("remove_level", _remove_level),
    ("add_unit", _add_unit),
    ("remove_unit", _remove_unit),
    ("resize_unit", _resize_unit),
    ("change_activation", _change_activation),
    ("perturb_affinity", _perturb_affinity),
    ("perturb_lateral", _perturb_lateral),
    ("change_skip_depth", _change_skip_depth),
    ("change_learning_rate", _change_learning_rate),
    ("change_weight_decay", _change_weight_decay),
    ("change_epochs", _change_epochs),
    ("change_batch_size", _change_batch_size),
    ("rewire_unit", _rewire_unit),
)


# Per aspect: the classic one-over-the-number-of-genes rate.
DEFAULT_MUTATION_RATE = round(1 / len(MUTATION_ASPECTS), 2)


def mutate(
    rng: random.Random,
    genome: Genome,
    space: SearchSpace,
    rate: float,
    *,
    force: bool = False,
) -> Genome:
    """Apply each mutation aspect with probability ``rate``.

    At the default rate (``DEFAULT_MUTATION_RATE``, about one over the number
    of aspects) a child that changes at all usually changes in one aspect: a
    small step from a good parent, not a jump to a random neighbour.
    With ``force`` the result is guaranteed to differ from ``genome``: if no
    aspect fired, aspects are tried in a random order until one applies
    (``rewire_unit`` always can).
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError("mutation rate must be in [0, 1]")
    result = genome
    for _name, aspect in MUTATION_ASPECTS:
        if rng.random() < rate:
            result = aspect(rng, result, space) or result
    if force and result == genome:
        for _name, aspect in rng.sample(MUTATION_ASPECTS, len(MUTATION_ASPECTS)):
            changed = aspect(rng, genome, space)
            if changed is not None and changed != genome:
                return changed
    return result


def make_unique(
    rng: random.Random,
    child: Genome,
    taken: Collection[str],
    space: SearchSpace,
    rate: float,
    attempts: int = DEFAULT_UNIQUE_ATTEMPTS,
) -> Genome:
    """Mutate ``child`` again (forced) while its key is in ``taken``, at most ``attempts`` times.

    Bounded so that a tiny search space cannot loop forever; the last try is kept.
    """
    for _ in range(attempts):
        if genome_key(child) not in taken:
            break
        child = mutate(rng, child, space, rate, force=True)
    return child
