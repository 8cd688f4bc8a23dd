"""Selection, crossover, mutation, elitism and de-duplication over genomes."""

import math
import random
from collections import Counter
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thunderhelm.ga.core.engine import GAConfig
from thunderhelm.ga.core.genome import SCALAR_GENES, Genome, Unit, genome_key, genome_to_dict
from thunderhelm.ga.core.network import network_problems, to_network
from thunderhelm.ga.core.operators import (
    FAILED,
    MUTATION_ASPECTS,
    crossover,
    make_unique,
    mutate,
    sanitize_fitness,
    select_elites,
    tournament_probabilities,
    tournament_select,
)
from thunderhelm.ga.core.space import SearchSpace, random_genome, space_violations
from thunderhelm.ga.core.wiring import materialise

INF = math.inf
NAN = math.nan
SPACE = SearchSpace(max_levels=4, max_units=4, max_neurons=16)
fitness_values = st.floats(-1e6, 1e6, allow_nan=False)


def some_genome(seed: int, space: SearchSpace = SPACE) -> Genome:
    return random_genome(random.Random(seed), space)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0.5, 0.5), (-3.0, -3.0), (NAN, FAILED), (INF, FAILED), (-INF, FAILED)],
)
def test_sanitize_fitness(value: float, expected: float) -> None:
    assert sanitize_fitness(value) == expected


Z3 = 1 + math.exp(-2) + math.exp(-4)
Z_TIE = 2 + math.exp(-1.5)


@pytest.mark.parametrize(
    ("fitnesses", "temperature", "expected"),
    [
        ([1.0, 1.0, 1.0], 1.0, [1 / 3, 1 / 3, 1 / 3]),
        ([1.0, 2.0, 0.0], 0.0, [0.0, 1.0, 0.0]),
        ([2.0, 2.0, 0.0], 0.0, [0.5, 0.5, 0.0]),
        # Ranks, not values: one rank apart weighs e**-1 whatever the gap.
        ([0.0, 0.001], 1.0, [1 / (1 + math.e), math.e / (1 + math.e)]),
        ([0.0, 1000.0], 1.0, [1 / (1 + math.e), math.e / (1 + math.e)]),
        ([0.3, 0.5, 0.4], 0.5, [math.exp(-4) / Z3, 1 / Z3, math.exp(-2) / Z3]),
        ([0.5, 0.5, 0.1], 1.0, [1 / Z_TIE, 1 / Z_TIE, math.exp(-1.5) / Z_TIE]),
        ([1.0, -INF, NAN], 1.0, [1.0, 0.0, 0.0]),
        ([-INF, NAN], 1.0, [0.5, 0.5]),
    ],
)
def test_tournament_probabilities_table(
    fitnesses: list[float], temperature: float, expected: list[float]
) -> None:
    assert tournament_probabilities(fitnesses, temperature) == pytest.approx(expected)


def test_tournament_probabilities_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        tournament_probabilities([1.0], -1.0)
    with pytest.raises(ValueError):
        tournament_probabilities([], 1.0)


def test_high_temperature_approaches_uniform() -> None:
    probs = tournament_probabilities([0.1, 0.5, 0.9], 1e6)
    assert probs == pytest.approx([1 / 3] * 3, rel=1e-5)


@settings(max_examples=200)
@given(
    # Hundredths keep distinct fitnesses far apart compared with the temperature.
    fitnesses=st.lists(st.integers(-(10**6), 10**6), min_size=1, max_size=12, unique=True).map(
        lambda values: [v / 100 for v in values]
    ),
    size=st.integers(1, 12),
    seed=st.integers(0, 2**32),
    temperature=st.sampled_from([0.0, 1e-300]),
)
def test_cold_tournament_is_a_plain_tournament(
    fitnesses: list[float], size: int, seed: int, temperature: float
) -> None:
    size = min(size, len(fitnesses))
    plain_rng = random.Random(seed)
    contestants = plain_rng.sample(range(len(fitnesses)), size)
    plain_winner = max(contestants, key=lambda i: fitnesses[i])
    assert tournament_select(random.Random(seed), fitnesses, size, temperature) == plain_winner


@settings(max_examples=200)
@given(
    fitnesses=st.lists(st.one_of(fitness_values, st.just(-INF), st.just(NAN)), min_size=1),
    size=st.integers(1, 8),
    temperature=st.floats(0.0, 100.0),
    seed=st.integers(0, 2**32),
)
def test_tournament_never_picks_a_failed_candidate_over_a_finite_one(
    fitnesses: list[float], size: int, temperature: float, seed: int
) -> None:
    winner = tournament_select(random.Random(seed), fitnesses, size, temperature)
    assert 0 <= winner < len(fitnesses)
    if all(math.isfinite(f) for f in fitnesses):
        return
    # Replaying the draw tells which contestants were in this tournament.
    rng = random.Random(seed)
    n = len(fitnesses)
    contestants = (
        rng.sample(range(n), size) if size <= n else [rng.randrange(n) for _ in range(size)]
    )
    if any(math.isfinite(fitnesses[i]) for i in contestants):
        assert math.isfinite(fitnesses[winner])


def test_tournament_frequencies_follow_the_rank_weights() -> None:
    fitnesses = [0.0, 0.01]
    rng = random.Random(4)
    wins = Counter(tournament_select(rng, fitnesses, 2, 1.0) for _ in range(20_000))
    assert wins[1] / 20_000 == pytest.approx(math.e / (1 + math.e), abs=0.02)


@pytest.mark.parametrize("spread", [0.01, 0.1, 10.0])
def test_default_temperature_picks_the_best_of_three_most_of_the_time(spread: float) -> None:
    # Accuracies a few hundredths apart, the typical spread of a population, must
    # still select: at the old softmax on raw values the best won only ~0.35.
    fitnesses = [0.70, 0.70 + spread / 2, 0.70 + spread]
    rng = random.Random(7)
    n = 20_000
    wins = Counter(tournament_select(rng, fitnesses, 3, GAConfig().temperature) for _ in range(n))
    assert wins[2] / n > 0.8
    assert wins[1] > wins[0] > 0  # still not a plain max: weaker ones win sometimes


def test_tournament_larger_than_population_draws_with_replacement() -> None:
    assert tournament_select(random.Random(0), [0.1, 0.9], 5, 0.0) in (0, 1)
    with pytest.raises(ValueError):
        tournament_select(random.Random(0), [], 2, 1.0)


@settings(max_examples=200, deadline=None)
@given(a_seed=st.integers(0, 2**32), b_seed=st.integers(0, 2**32), seed=st.integers(0, 2**32))
def test_crossover_children_are_valid_and_in_bounds(a_seed: int, b_seed: int, seed: int) -> None:
    a, b = some_genome(a_seed), some_genome(b_seed)
    before = (genome_to_dict(a), genome_to_dict(b))
    first, second = crossover(random.Random(seed), a, b)
    assert (genome_to_dict(a), genome_to_dict(b)) == before
    for child in (first, second):
        assert space_violations(child, SPACE) == []
        assert network_problems(to_network(child, 5, 3, 0)) == []
    # Uniform: each level of the first child is a's or b's at that depth, its
    # length a's; the second child takes every choice the other way.
    assert len(first.levels) == len(a.levels) and len(second.levels) == len(b.levels)
    for k, level in enumerate(first.levels):
        assert level == a.levels[k] or (k < len(b.levels) and level == b.levels[k])
        if k < len(b.levels) and a.levels[k] != b.levels[k]:
            assert (level == a.levels[k]) == (second.levels[k] == b.levels[k])
    for name in SCALAR_GENES:
        got = getattr(first, name), getattr(second, name)
        assert got in ((getattr(a, name), getattr(b, name)), (getattr(b, name), getattr(a, name)))


def test_crossover_mixes_scalar_genes_and_levels_from_both_parents() -> None:
    # The old single-point crossover gave a child all of one parent's scalar genes.
    base = some_genome(1)
    a = replace(base, levels=((Unit(1, "relu"),), (Unit(2, "relu"),), (Unit(3, "relu"),)))
    b = replace(
        base,
        levels=((Unit(7, "tanh"),), (Unit(8, "tanh"),)),
        learning_rate=0.002,
        weight_decay=0.005,
        epochs=base.epochs % 5 + 1,
        affinity=1.9,
        skip_depth=base.skip_depth % 3 + 1,
    )
    genes = ("learning_rate", "weight_decay", "epochs", "affinity", "skip_depth")
    mixed_genes = mixed_levels = 0
    for s in range(200):
        child = crossover(random.Random(s), a, b)[0]
        from_b = [getattr(child, g) == getattr(b, g) for g in genes]
        mixed_genes += 0 < sum(from_b) < len(genes)
        levels_from_b = [child.levels[k] == b.levels[k] for k in range(2)]
        mixed_levels += any(levels_from_b) and child.levels[0] != child.levels[1]
        assert child.levels[2] == a.levels[2]  # b has no third level
    assert mixed_genes > 150  # 1 - 2/32 of children mix the five genes
    assert mixed_levels > 100


def test_crossover_keeps_unit_ids_so_inherited_units_keep_their_edges() -> None:
    a, b = some_genome(11), some_genome(12)
    child = crossover(random.Random(3), a, b)[0]
    parent_uids = {u.uid for u in (*a.units, *b.units)}
    assert {u.uid for u in child.units} <= parent_uids


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32), rate=st.floats(0.0, 1.0), force=st.booleans())
def test_mutation_stays_in_bounds_and_leaves_the_parent_alone(
    seed: int, rate: float, force: bool
) -> None:
    parent = some_genome(seed)
    before = genome_to_dict(parent)
    child = mutate(random.Random(seed + 1), parent, SPACE, rate, force=force)
    assert genome_to_dict(parent) == before
    assert space_violations(child, SPACE) == []
    assert network_problems(to_network(child, 5, 3, 0)) == []
    if force:
        assert genome_key(child) != genome_key(parent)


def test_mutation_rate_zero_is_identity_and_one_changes() -> None:
    parent = some_genome(3)
    assert mutate(random.Random(0), parent, SPACE, 0.0) == parent
    assert mutate(random.Random(0), parent, SPACE, 1.0) != parent
    with pytest.raises(ValueError):
        mutate(random.Random(0), parent, SPACE, 1.5)


def test_mutation_is_reproducible_from_the_rng() -> None:
    parent = some_genome(9)
    assert mutate(random.Random(5), parent, SPACE, 0.5) == mutate(
        random.Random(5), parent, SPACE, 0.5
    )


ASPECTS = dict(MUTATION_ASPECTS)
SMALL = SearchSpace(min_levels=1, max_levels=2, min_units=1, max_units=2, max_neurons=8)


def edge_genome(levels: int, units: int) -> Genome:
    base = some_genome(0, SMALL)
    return replace(base, levels=tuple((Unit(4, "relu"),) * units for _ in range(levels)))


EDGE = edge_genome(1, 1)


@pytest.mark.parametrize(
    ("aspect", "genome", "check"),
    [
        ("add_level", edge_genome(1, 1), lambda g: len(g.levels) == 2),
        ("add_level", edge_genome(2, 1), None),
        ("remove_level", edge_genome(2, 1), lambda g: len(g.levels) == 1),
        ("remove_level", edge_genome(1, 1), None),
        ("add_unit", edge_genome(1, 1), lambda g: len(g.units) == 2),
        ("add_unit", edge_genome(1, 2), None),
        ("remove_unit", edge_genome(1, 2), lambda g: len(g.units) == 1),
        ("remove_unit", edge_genome(2, 1), None),
        ("resize_unit", edge_genome(1, 1), lambda g: g.units[0].neurons != 4),
        ("change_activation", edge_genome(1, 1), lambda g: g.units[0].activation != "relu"),
        ("perturb_affinity", EDGE, lambda g: g.affinity != EDGE.affinity),
        ("change_skip_depth", EDGE, lambda g: abs(g.skip_depth - EDGE.skip_depth) == 1),
        ("change_batch_size", EDGE, lambda g: g.batch_size != EDGE.batch_size),
        ("rewire_unit", EDGE, lambda g: g.units[0].uid != EDGE.units[0].uid),
    ],
)
def test_mutation_aspects_change_what_they_say_or_decline_at_bounds(
    aspect: str, genome: Genome, check: object
) -> None:
    result = ASPECTS[aspect](random.Random(1), genome, SMALL)
    if check is None:
        assert result is None
        return
    assert result is not None and result != genome
    assert callable(check) and check(result)
    assert space_violations(result, SMALL) == []


@pytest.mark.parametrize(
    ("aspect", "field"),
    [
        ("perturb_lateral", "p_lateral"),
        ("change_skip_depth", "skip_depth"),
        ("change_learning_rate", "learning_rate"),
        ("change_weight_decay", "weight_decay"),
        ("change_epochs", "epochs"),
        ("change_batch_size", "batch_size"),
    ],
)
def test_scalar_aspects_change_only_their_gene(aspect: str, field: str) -> None:
    genome = some_genome(2)
    for seed in range(20):
        result = ASPECTS[aspect](random.Random(seed), genome, SPACE)
        if result is None:
            continue
        changed = {k for k, v in genome_to_dict(result).items() if genome_to_dict(genome)[k] != v}
        assert changed == {field}
        return
    pytest.fail(f"{aspect} never applied")


def test_single_valued_genes_cannot_mutate() -> None:
    space = SearchSpace(activations=("relu",), batch_sizes=(64,), epochs_range=(3, 3))
    genome = some_genome(4, space)
    for aspect in ("change_activation", "change_batch_size", "change_epochs"):
        assert ASPECTS[aspect](random.Random(0), genome, space) is None


@pytest.mark.parametrize(
    ("fitnesses", "count", "expected"),
    [
        ([0.1, 0.9, 0.5], 1, [1]),
        ([0.1, 0.9, 0.5], 2, [1, 2]),
        ([0.5, 0.5, 0.1], 2, [0, 1]),
        ([-INF, 0.2, NAN], 3, [1]),
        ([0.3, 0.2], 0, []),
    ],
)
def test_select_elites_table(fitnesses: list[float], count: int, expected: list[int]) -> None:
    population = [some_genome(i) for i in range(len(fitnesses))]
    assert select_elites(population, fitnesses, count) == expected


def test_select_elites_skips_duplicate_genomes() -> None:
    a, b = some_genome(1), some_genome(2)
    assert select_elites([a, a, b], [0.9, 0.9, 0.1], 2) == [0, 2]


def test_make_unique_escapes_taken_keys_within_its_attempts() -> None:
    child = some_genome(6)
    taken = {genome_key(child)}
    unique = make_unique(random.Random(0), child, taken, SPACE, 0.2)
    assert genome_key(unique) not in taken
    assert space_violations(unique, SPACE) == []
    assert make_unique(random.Random(0), child, taken, SPACE, 0.2, attempts=0) == child
    assert make_unique(random.Random(0), child, set(), SPACE, 0.2) == child


def inputs_by_uid(genome: Genome) -> dict[int | None, frozenset[int | None]]:
    """Each unit's inputs named by unit id (the input node as None), whatever their node ids."""
    units = genome.units
    uid_of = {0: None, **{node: u.uid for node, u in enumerate(units, start=1)}}
    wiring = materialise(genome)
    return {
        u.uid: frozenset(uid_of[i] for i in ids)
        for u, ids in zip(units, wiring.unit_inputs, strict=True)
    }


@pytest.mark.parametrize("aspect", ["add_unit", "remove_unit", "rewire_unit"])
def test_a_structural_mutation_leaves_most_other_units_wiring_alone(aspect: str) -> None:
    # With one wiring stream, every edge drawn after the change moved: 68-74% of
    # the surviving units kept their inputs after adding or removing a unit.
    # Drawn per pair of unit ids, 93-99% do: only readers of the changed unit move.
    space = SearchSpace(max_levels=3, max_units=4, p_lateral_range=(0.0, 0.5))
    kept = total = 0
    for seed in range(300):
        parent = random_genome(random.Random(seed), space)
        child = ASPECTS[aspect](random.Random(seed + 1), parent, space)
        if child is None:
            continue
        before, after = inputs_by_uid(parent), inputs_by_uid(child)
        survivors = set(before) & set(after)
        # Edges among surviving units (and the input): a new unit must get wired.
        kept += sum(
            before[u] & (survivors | {None}) == after[u] & (survivors | {None}) for u in survivors
        )
        total += len(survivors)
    assert total > 200
    assert kept / total > 0.88


def test_rewire_unit_changes_one_units_id_and_nothing_else() -> None:
    parent = some_genome(4)
    child = ASPECTS["rewire_unit"](random.Random(0), parent, SPACE)
    assert child is not None
    changed = [(a, b) for a, b in zip(parent.units, child.units, strict=True) if a != b]
    assert len(changed) == 1
    ((old, new),) = changed
    assert (old.neurons, old.activation) == (new.neurons, new.activation) and old.uid != new.uid


def test_mutation_at_the_default_rate_usually_changes_one_aspect() -> None:
    # The old default (0.2 per aspect) changed about 2.8 of 14 aspects per child.
    rate = GAConfig().mutation_rate
    fired = []
    for seed in range(2000):
        rng = random.Random(seed)
        fired.append(sum(rng.random() < rate for _ in MUTATION_ASPECTS))
    assert 0.8 < sum(fired) / len(fired) < 1.2
    changed = [f for f in fired if f]
    assert Counter(changed)[1] / len(changed) > 0.5  # 0.16 at the old rate
