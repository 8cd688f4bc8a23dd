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

from thunderhelm.ga.core.genome import (
    Genome,
    SearchSpace,
    Unit,
    genome_key,
    random_level,
    random_unit,
)

FAILED = -math.inf
DEFAULT_UNIQUE_ATTEMPTS = 8


def sanitize_fitness(value: float) -> float:
    """Map anything that is not a finite number to ``-inf`` (a failed candidate)."""
    return value if math.isfinite(value) else FAILED


# --- selection -------------------------------------------------------------------------


def tournament_probabilities(fitnesses: Sequence[float], temperature: float) -> list[float]:
    """Softmax of ``fitness / temperature`` over one tournament's contestants.

    Temperature 0 puts all the weight on the best (shared equally between ties),
    which is the limit of the softmax as the temperature falls. Failed contestants
    get weight 0; when every contestant failed the choice is uniform.
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
        # Subtracting the best keeps exp() in range; the best always weighs 1.
        weights = [math.exp((f - best) / temperature) if f != FAILED else 0.0 for f in clean]
    total = sum(weights)
    return [w / total for w in weights]


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
    """Single-point crossover at a level boundary.

    The genome is read as ``levels..., scalar genes``; a cut ``c`` in
    ``1..max(len)`` gives ``a[:c] + b[c:]`` with ``b``'s scalar genes, and the
    mirror child. Each child keeps at least one level of its head parent and has
    no more levels than the longer parent, so children of in-bounds parents stay
    in bounds.
    """
    cut = rng.randint(1, max(len(a.levels), len(b.levels)))
    first = replace(b, levels=a.levels[:cut] + b.levels[cut:])
    second = replace(a, levels=b.levels[:cut] + a.levels[cut:])
    return first, second


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
        return None if neurons is None else Unit(neurons, unit.activation)

    return _edit_unit(rng, g, edit)


def _change_activation(rng: random.Random, g: Genome, space: SearchSpace) -> Genome | None:
    def edit(unit: Unit) -> Unit | None:
        options = [a for a in space.activations if a != unit.activation]
        return Unit(unit.neurons, rng.choice(options)) if options else None

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


def _reseed_wiring(rng: random.Random, g: Genome, space: SearchSpace) -> Genome | None:
    seed = rng.getrandbits(32)
    while seed == g.wiring_seed:
        seed = rng.getrandbits(32)
    return replace(g, wiring_seed=seed)


# The order is part of the replay contract: each aspect consumes rng in turn.
# ``affinity_first`` is absent on purpose: with a single input node it cannot
# change the wiring, so mutating it would only make look-alike duplicates.
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
    ("reseed_wiring", _reseed_wiring),
)


def mutate(
    rng: random.Random,
    genome: Genome,
    space: SearchSpace,
    rate: float,
    *,
    force: bool = False,
) -> Genome:
    """Apply each mutation aspect with probability ``rate``.

    With ``force`` the result is guaranteed to differ from ``genome``: if no
    aspect fired, aspects are tried in a random order until one applies (the
    wiring reseed always can).
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
