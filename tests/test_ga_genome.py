"""Genome, search space, materialised wiring and the network JSON contract."""

import json
import random
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thunderhelm.ga.core.genome import (
    ACTIVATIONS,
    Genome,
    Unit,
    canonical_json,
    genome_from_dict,
    genome_key,
    genome_to_dict,
)
from thunderhelm.ga.core.network import candidate_record, network_problems, param_count, to_network
from thunderhelm.ga.core.space import SearchSpace, random_genome, space_violations
from thunderhelm.ga.core.wiring import level_node_ids, materialise, wiring_from_dict, wiring_to_dict

NETWORK_KEYS = {
    "n_inputs",
    "n_outputs",
    "units",
    "output_inputs",
    "learning_rate",
    "weight_decay",
    "epochs",
    "batch_size",
    "seed",
}


@st.composite
def spaces(draw: st.DrawFn) -> SearchSpace:
    min_levels = draw(st.integers(1, 3))
    min_units = draw(st.integers(1, 3))
    min_neurons = draw(st.integers(1, 8))
    lo_skip = draw(st.integers(1, 3))
    return SearchSpace(
        min_levels=min_levels,
        max_levels=min_levels + draw(st.integers(0, 4)),
        min_units=min_units,
        max_units=min_units + draw(st.integers(0, 5)),
        min_neurons=min_neurons,
        max_neurons=min_neurons + draw(st.integers(0, 40)),
        activations=tuple(draw(st.sets(st.sampled_from(ACTIVATIONS), min_size=1))),
        affinity_range=(0.05, draw(st.floats(0.05, 4.0))),
        p_lateral_range=(0.0, draw(st.floats(0.0, 1.0))),
        max_lateral=draw(st.integers(0, 5)),
        skip_depth_range=(lo_skip, lo_skip + draw(st.integers(0, 4))),
    )


def genome(**changes: Any) -> Genome:
    base = Genome(
        levels=((Unit(4, "relu"), Unit(3, "gelu")), (Unit(5, "tanh"),)),
        affinity=1.0,
        affinity_first=1.0,
        p_lateral=0.0,
        skip_depth=1,
        wiring_seed=7,
        learning_rate=0.01,
        epochs=2,
        batch_size=32,
        weight_decay=1e-4,
    )
    return replace(base, **changes)


@settings(max_examples=200, deadline=None)
@given(space=spaces(), seed=st.integers(0, 2**32), n_in=st.integers(1, 50))
def test_random_genome_gives_a_valid_network_within_bounds(
    space: SearchSpace, seed: int, n_in: int
) -> None:
    g = random_genome(random.Random(seed), space)
    assert space_violations(g, space) == []
    net = to_network(g, n_in, 3, training_seed=11)
    assert network_problems(net) == []
    assert set(net) == NETWORK_KEYS
    assert len(net["units"]) == len(g.units)
    for node, unit in enumerate(net["units"], start=1):
        assert set(unit) == {"inputs", "neurons", "activation"}
        assert unit["inputs"] == sorted(set(unit["inputs"]))
        assert all(0 <= i < node for i in unit["inputs"])
        assert space.min_neurons <= unit["neurons"] <= space.max_neurons
        assert unit["activation"] in space.activations
    ids = level_node_ids(g)
    assert all(net["units"][n - 1]["inputs"][0] == 0 for n in ids[0])
    assert set(ids[-1]) <= set(net["output_inputs"])
    assert json.loads(json.dumps(net)) == net


@settings(max_examples=100, deadline=None)
@given(space=spaces(), seed=st.integers(0, 2**32))
def test_wiring_respects_skip_window_and_lateral_cap(space: SearchSpace, seed: int) -> None:
    g = random_genome(random.Random(seed), space)
    wiring = materialise(g)
    ids = level_node_ids(g)
    level_of = {0: 0} | {node: k for k, level in enumerate(ids, start=1) for node in level}
    for k, level in enumerate(ids, start=1):
        for node in level:
            sources = wiring.unit_inputs[node - 1]
            # Drawn edges and repaired edges both stay inside the skip window.
            assert all(k - g.skip_depth <= level_of[s] <= k for s in sources)
            lateral = [s for s in sources if level_of[s] == k]
            assert len(lateral) <= g.max_lateral
            assert any(level_of[s] == k - 1 for s in sources)


def test_every_earlier_level_feeds_each_unit_when_the_window_covers_it() -> None:
    g = genome(
        levels=((Unit(3, "relu"),) * 3, (Unit(3, "elu"),) * 2, (Unit(2, "tanh"),) * 2),
        skip_depth=5,
    )
    wiring = materialise(g)
    ids = level_node_ids(g)
    for k, level in enumerate(ids, start=1):
        for node in level:
            sources = set(wiring.unit_inputs[node - 1])
            assert 0 in sources
            for earlier in ids[: k - 1]:
                assert sources & set(earlier)


@pytest.mark.parametrize(
    ("p_lateral", "max_lateral", "expect_lateral"),
    [(0.0, 3, False), (1.0, 0, False), (1.0, 3, True)],
)
def test_lateral_edges_follow_probability_and_cap(
    p_lateral: float, max_lateral: int, expect_lateral: bool
) -> None:
    g = genome(levels=((Unit(2, "relu"),) * 4,), p_lateral=p_lateral, max_lateral=max_lateral)
    wiring = materialise(g)
    lateral = [[s for s in ins if s >= 1] for ins in wiring.unit_inputs]
    assert any(lateral) is expect_lateral
    assert all(len(edges) <= max_lateral for edges in lateral)


def test_materialise_is_deterministic_and_depends_on_the_unit_ids() -> None:
    space = SearchSpace(max_levels=4, max_units=5, p_lateral_range=(0.3, 0.9))
    g = random_genome(random.Random(5), space)
    assert materialise(g) == materialise(genome_from_dict(genome_to_dict(g)))
    anonymous = tuple(tuple(Unit(u.neurons, u.activation) for u in level) for level in g.levels)
    wirings = {materialise(replace(g, levels=anonymous, wiring_seed=s)) for s in range(20)}
    assert len(wirings) > 1  # units without ids are named by the wiring seed


def test_units_without_ids_get_stable_derived_ids() -> None:
    g = genome()
    assert all(u.uid is not None for u in g.units)
    assert len({u.uid for u in g.units}) == len(g.units)
    assert genome() == g and genome(wiring_seed=8) != g
    # Old checkpoints wrote units without "uid": they still load, with the same ids.
    data = genome_to_dict(g)
    for level in data["levels"]:
        for unit in level:
            del unit["uid"]
    assert genome_from_dict(data) == g


def test_recorded_wiring_rebuilds_the_same_network() -> None:
    g = random_genome(random.Random(1), SearchSpace(max_levels=4))
    record = json.loads(json.dumps(candidate_record(g)))
    assert record["key"] == genome_key(g)
    rebuilt = to_network(
        genome_from_dict(record["genome"]), 8, 2, 3, wiring=wiring_from_dict(record["wiring"])
    )
    assert rebuilt == to_network(g, 8, 2, 3)
    assert wiring_from_dict(wiring_to_dict(materialise(g))) == materialise(g)


def test_to_network_rejects_a_wiring_of_another_genome() -> None:
    other = materialise(genome(levels=((Unit(1, "relu"),),)))
    with pytest.raises(ValueError, match="wiring"):
        to_network(genome(), 4, 2, 0, wiring=other)


def test_param_count_of_the_spec_example() -> None:
    net = {
        "n_inputs": 64,
        "n_outputs": 10,
        "units": [
            {"inputs": [0], "neurons": 16, "activation": "relu"},
            {"inputs": [0, 1], "neurons": 8, "activation": "gelu"},
        ],
        "output_inputs": [1, 2],
    }
    # unit 1: 64*16+16, unit 2: (64+16)*8+8, output: (16+8)*10+10
    assert param_count(net) == 1040 + 648 + 250


@pytest.mark.parametrize(
    ("units", "output_inputs", "problem"),
    [
        ([{"inputs": [0], "neurons": 2, "activation": "relu"}], [1], None),
        ([{"inputs": [1], "neurons": 2, "activation": "relu"}], [1], "not earlier"),
        ([{"inputs": [], "neurons": 2, "activation": "relu"}], [1], "non-empty"),
        (
            [
                {"inputs": [0], "neurons": 2, "activation": "relu"},
                {"inputs": [0], "neurons": 2, "activation": "relu"},
            ],
            [2],
            "node 1 does not reach",
        ),
        ([{"inputs": [0], "neurons": 2, "activation": "swish"}], [1], "activation"),
        ([{"inputs": [0], "neurons": 2, "activation": "relu"}], [2], "output_inputs"),
    ],
)
def test_network_problems_table(
    units: list[dict[str, Any]], output_inputs: list[int], problem: str | None
) -> None:
    net = {"n_inputs": 3, "n_outputs": 2, "units": units, "output_inputs": output_inputs}
    net |= {"epochs": 1, "batch_size": 8}
    found = network_problems(net)
    if problem is None:
        assert found == []
    else:
        assert any(problem in p for p in found), found


@settings(max_examples=100, deadline=None)
@given(space=spaces(), seed=st.integers(0, 2**32))
def test_genome_dict_round_trips_through_json(space: SearchSpace, seed: int) -> None:
    g = random_genome(random.Random(seed), space)
    restored = genome_from_dict(json.loads(json.dumps(genome_to_dict(g))))
    assert restored == g
    assert genome_key(restored) == genome_key(g)


def test_genome_key_is_content_based() -> None:
    g = genome()
    assert genome_key(g) == genome_key(genome())
    assert genome_key(g) != genome_key(replace(g, wiring_seed=8))
    # An int gene value is coerced, so it does not create a second identity.
    assert genome_key(replace(g, affinity=1)) == genome_key(g)
    assert len(genome_key(g)) == 64
    assert canonical_json({"b": 1, "a": [1.5]}) == '{"a":[1.5],"b":1}'


@pytest.mark.parametrize(
    "changes",
    [
        {"levels": ()},
        {"levels": ((),)},
        {"levels": [(Unit(2, "relu"),)]},
        {"affinity": 0.0},
        {"affinity": float("nan")},
        {"p_lateral": 1.5},
        {"skip_depth": 0},
        {"wiring_seed": -1},
        {"learning_rate": 0.0},
        {"epochs": 0},
        {"batch_size": 2.0},
        {"weight_decay": -1.0},
        {"decay": 0.0},
    ],
)
def test_invalid_genomes_are_rejected(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        genome(**changes)


@pytest.mark.parametrize("neurons, activation", [(0, "relu"), (3, "swish"), (True, "relu")])
def test_invalid_units_are_rejected(neurons: int, activation: str) -> None:
    with pytest.raises(ValueError):
        Unit(neurons, activation)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda d: d | {"extra": 1},
        lambda d: {k: v for k, v in d.items() if k != "epochs"},
        lambda d: d | {"levels": [[{"neurons": 2}]]},
        lambda d: d | {"levels": "abc"},
    ],
)
def test_genome_from_dict_rejects_malformed_data(mangle: Any) -> None:
    with pytest.raises(ValueError):
        genome_from_dict(mangle(genome_to_dict(genome())))


def test_search_space_round_trips_and_validates() -> None:
    space = SearchSpace(max_levels=5, activations=("relu", "tanh"), batch_sizes=(16, 64))
    assert SearchSpace.from_dict(json.loads(json.dumps(space.to_dict()))) == space
    with pytest.raises(ValueError):
        SearchSpace(min_levels=3, max_levels=2)
    with pytest.raises(ValueError):
        SearchSpace(activations=("swish",))
    with pytest.raises(ValueError):
        SearchSpace.from_dict({"bogus": 1})


def test_space_violations_names_what_is_out_of_bounds() -> None:
    space = SearchSpace(max_levels=1, max_neurons=4, batch_sizes=(64,))
    problems = space_violations(genome(), space)
    assert any("levels" in p for p in problems)
    assert any("neurons" in p for p in problems)
    assert any("batch_size" in p for p in problems)
