"""Genome of a Cerebros-style dense network, its materialised wiring, and the network JSON.

The GA evolves *genes* (levels of units, connectivity factors, training
hyper-parameters) while the training kernel needs a concrete graph. This module
is the one place that turns one into the other, deterministically, so that a
candidate recorded in the event log can be rebuilt exactly on any worker. It is
stdlib-only because it also runs inside isolated sub-interpreters.

Shape of a genome: ``levels`` holds the *hidden* levels only. Level 0 (the input
feature vector, node 0 of the network) and the output level are implied by the
dataset, so they are not genes.

Wiring (see ``materialise``), with ``L`` hidden levels numbered 1..L:

* A unit of level ``k`` reads from each earlier level ``j`` in its window
  ``max(0, k - skip_depth) <= j < k``. From the input level it reads node 0 (the
  input is a single node, so ``affinity_first`` cannot change which node is read
  and is kept only as a recorded gene). From a hidden level it draws
  ``ceil(affinity * decay**(k - j) * units_in_level_j)`` units with replacement;
  the distinct ones become edges.
* Lateral edges: unit ``u`` of a level tries every lower-index unit of its own
  level at distance ``d`` with probability ``p_lateral * 0.95**d``, keeping at most
  ``max_lateral`` of them.
* Repair: a hidden unit that no later level reads is attached to a random unit
  of a random successor level within ``skip_depth`` levels, or to the output when
  the window reaches past the last hidden level. The output reads the whole last
  hidden level plus whatever repair attached to it, so every unit reaches the output.

All draws come from ``random.Random(genome.wiring_seed)`` in a fixed order.
"""

import hashlib
import json
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeIs

ACTIVATIONS: tuple[str, ...] = ("relu", "elu", "gelu", "tanh", "sigmoid")
DEFAULT_DECAY = 0.7
DEFAULT_MAX_LATERAL = 3
LATERAL_DECAY = 0.95
INPUT_NODE = 0

# ceil() of a product like 0.7**2 * 3 can land one ulp above an integer and add an
# edge; the slack keeps the count the same on every libm.
_CEIL_SLACK = 1e-9

_FLOAT_GENES = ("affinity", "affinity_first", "p_lateral", "learning_rate", "weight_decay", "decay")
_INT_GENES = ("skip_depth", "wiring_seed", "epochs", "batch_size", "max_lateral")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _is_int(value: object) -> TypeIs[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class Unit:
    """One dense layer: ``neurons`` outputs through ``activation``."""

    neurons: int
    activation: str

    def __post_init__(self) -> None:
        _require(_is_int(self.neurons) and self.neurons >= 1, f"bad neurons {self.neurons!r}")
        _require(self.activation in ACTIVATIONS, f"unknown activation {self.activation!r}")


@dataclass(frozen=True, slots=True)
class Genome:
    """Genes of one candidate. Immutable: operators always build a new genome."""

    levels: tuple[tuple[Unit, ...], ...]
    affinity: float
    affinity_first: float
    p_lateral: float
    skip_depth: int
    wiring_seed: int
    learning_rate: float
    epochs: int
    batch_size: int
    weight_decay: float
    decay: float = DEFAULT_DECAY
    max_lateral: int = DEFAULT_MAX_LATERAL

    def __post_init__(self) -> None:
        _require(isinstance(self.levels, tuple) and len(self.levels) >= 1, "need >= 1 level")
        for level in self.levels:
            _require(isinstance(level, tuple) and len(level) >= 1, "each level needs >= 1 unit")
            _require(all(isinstance(u, Unit) for u in level), "levels must hold Unit values")
        for name in _FLOAT_GENES:
            value = getattr(self, name)
            _require(_is_number(value) and math.isfinite(value), f"{name} must be finite")
            # Coerce so that 1 and 1.0 give the same genome_key.
            object.__setattr__(self, name, float(value))
        for name in _INT_GENES:
            _require(_is_int(getattr(self, name)), f"{name} must be an int")
        _require(self.affinity > 0 and self.affinity_first > 0, "affinities must be > 0")
        _require(0.0 <= self.p_lateral <= 1.0, "p_lateral must be in [0, 1]")
        _require(0.0 < self.decay <= 1.0, "decay must be in (0, 1]")
        _require(self.skip_depth >= 1, "skip_depth must be >= 1")
        _require(self.wiring_seed >= 0, "wiring_seed must be >= 0")
        _require(self.learning_rate > 0, "learning_rate must be > 0")
        _require(self.epochs >= 1 and self.batch_size >= 1, "epochs and batch_size must be >= 1")
        _require(self.weight_decay >= 0, "weight_decay must be >= 0")
        _require(self.max_lateral >= 0, "max_lateral must be >= 0")

    @property
    def units(self) -> tuple[Unit, ...]:
        """Units in node order (node id = position + 1)."""
        return tuple(unit for level in self.levels for unit in level)


def genome_to_dict(genome: Genome) -> dict[str, Any]:
    """Plain JSON-serialisable form; ``genome_from_dict`` inverts it exactly."""
    out: dict[str, Any] = {
        "levels": [
            [{"neurons": u.neurons, "activation": u.activation} for u in level]
            for level in genome.levels
        ]
    }
    for name in (*_FLOAT_GENES, *_INT_GENES):
        out[name] = getattr(genome, name)
    return out


def genome_from_dict(data: Mapping[str, Any]) -> Genome:
    """Parse a genome from plain data, rejecting unknown or missing fields."""
    expected = {"levels", *_FLOAT_GENES, *_INT_GENES}
    unknown = set(data) - expected
    _require(not unknown, f"unknown genome fields {sorted(unknown)}")
    missing = expected - set(data) - {"decay", "max_lateral"}
    _require(not missing, f"missing genome fields {sorted(missing)}")
    raw_levels = data["levels"]
    _require(isinstance(raw_levels, list | tuple), "levels must be a list")
    levels = []
    for raw_level in raw_levels:
        _require(isinstance(raw_level, list | tuple), "a level must be a list")
        units = []
        for raw in raw_level:
            _require(isinstance(raw, Mapping) and set(raw) == {"neurons", "activation"}, "bad unit")
            units.append(Unit(raw["neurons"], raw["activation"]))
        levels.append(tuple(units))
    genes = {name: data[name] for name in (*_FLOAT_GENES, *_INT_GENES) if name in data}
    return Genome(levels=tuple(levels), **genes)


def canonical_json(data: Any) -> str:
    """The one JSON spelling used for hashing: sorted keys, no spaces."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)


def genome_key(genome: Genome) -> str:
    """Stable identity of a genome (sha256 hex), equal across processes and interpreters."""
    return hashlib.sha256(canonical_json(genome_to_dict(genome)).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class SearchSpace:
    """Bounds of the search. ``*_levels`` count hidden levels only."""

    min_levels: int = 1
    max_levels: int = 3
    min_units: int = 1
    max_units: int = 4
    min_neurons: int = 2
    max_neurons: int = 32
    activations: tuple[str, ...] = ACTIVATIONS
    affinity_range: tuple[float, float] = (0.3, 2.0)
    affinity_first_range: tuple[float, float] = (0.3, 2.0)
    p_lateral_range: tuple[float, float] = (0.0, 0.5)
    max_lateral: int = DEFAULT_MAX_LATERAL
    skip_depth_range: tuple[int, int] = (1, 3)
    learning_rate_range: tuple[float, float] = (1e-4, 3e-2)
    epochs_range: tuple[int, int] = (1, 5)
    batch_sizes: tuple[int, ...] = (32, 64, 128)
    weight_decay_range: tuple[float, float] = (1e-5, 1e-2)
    decay: float = DEFAULT_DECAY

    def __post_init__(self) -> None:
        _require(1 <= self.min_levels <= self.max_levels, "need 1 <= min_levels <= max_levels")
        _require(1 <= self.min_units <= self.max_units, "need 1 <= min_units <= max_units")
        _require(1 <= self.min_neurons <= self.max_neurons, "need 1 <= min_neurons <= max_neurons")
        _require(len(self.activations) >= 1, "need at least one activation")
        _require(set(self.activations) <= set(ACTIVATIONS), "unknown activation in space")
        _require(len(self.batch_sizes) >= 1 and min(self.batch_sizes) >= 1, "bad batch_sizes")
        for name in ("affinity_range", "affinity_first_range", "learning_rate_range"):
            lo, hi = getattr(self, name)
            _require(0 < lo <= hi, f"{name} must satisfy 0 < lo <= hi")
        lo, hi = self.weight_decay_range
        _require(0 < lo <= hi, "weight_decay_range must satisfy 0 < lo <= hi (log scale)")
        lo, hi = self.p_lateral_range
        _require(0 <= lo <= hi <= 1, "p_lateral_range must lie in [0, 1]")
        _require(1 <= self.skip_depth_range[0] <= self.skip_depth_range[1], "bad skip_depth_range")
        _require(1 <= self.epochs_range[0] <= self.epochs_range[1], "bad epochs_range")
        _require(self.max_lateral >= 0 and 0 < self.decay <= 1, "bad max_lateral or decay")

    def to_dict(self) -> dict[str, Any]:
        return {
            name: list(value) if isinstance(value, tuple) else value
            for name, value in ((n, getattr(self, n)) for n in self.__dataclass_fields__)
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SearchSpace":
        unknown = set(data) - set(cls.__dataclass_fields__)
        _require(not unknown, f"unknown search space fields {sorted(unknown)}")
        values: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list | tuple) else v for k, v in data.items()
        }
        return cls(**values)


def space_violations(genome: Genome, space: SearchSpace) -> list[str]:
    """Every way ``genome`` lies outside ``space`` (empty when it fits)."""
    problems = []
    if not space.min_levels <= len(genome.levels) <= space.max_levels:
        problems.append(f"{len(genome.levels)} levels")
    for k, level in enumerate(genome.levels, start=1):
        if not space.min_units <= len(level) <= space.max_units:
            problems.append(f"level {k} has {len(level)} units")
        for unit in level:
            if not space.min_neurons <= unit.neurons <= space.max_neurons:
                problems.append(f"level {k} unit of {unit.neurons} neurons")
            if unit.activation not in space.activations:
                problems.append(f"activation {unit.activation}")
    ranges: tuple[tuple[str, tuple[float, float]], ...] = (
        ("affinity", space.affinity_range),
        ("affinity_first", space.affinity_first_range),
        ("p_lateral", space.p_lateral_range),
        ("skip_depth", space.skip_depth_range),
        ("learning_rate", space.learning_rate_range),
        ("epochs", space.epochs_range),
        ("weight_decay", space.weight_decay_range),
    )
    for name, (lo, hi) in ranges:
        if not lo <= getattr(genome, name) <= hi:
            problems.append(f"{name}={getattr(genome, name)}")
    if genome.batch_size not in space.batch_sizes:
        problems.append(f"batch_size={genome.batch_size}")
    if genome.max_lateral > space.max_lateral:
        problems.append(f"max_lateral={genome.max_lateral}")
    return problems


def log_uniform(rng: random.Random, lo: float, hi: float) -> float:
    """Uniform on a log scale: learning rates and weight decays span decades."""
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


def random_unit(rng: random.Random, space: SearchSpace) -> Unit:
    return Unit(rng.randint(space.min_neurons, space.max_neurons), rng.choice(space.activations))


def random_level(rng: random.Random, space: SearchSpace) -> tuple[Unit, ...]:
    count = rng.randint(space.min_units, space.max_units)
    return tuple(random_unit(rng, space) for _ in range(count))


def random_genome(rng: random.Random, space: SearchSpace) -> Genome:
    """A genome drawn uniformly (log-uniformly for rates) from ``space``."""
    count = rng.randint(space.min_levels, space.max_levels)
    levels = tuple(random_level(rng, space) for _ in range(count))
    return Genome(
        levels=levels,
        affinity=rng.uniform(*space.affinity_range),
        affinity_first=rng.uniform(*space.affinity_first_range),
        p_lateral=rng.uniform(*space.p_lateral_range),
        skip_depth=rng.randint(*space.skip_depth_range),
        wiring_seed=rng.getrandbits(32),
        learning_rate=log_uniform(rng, *space.learning_rate_range),
        epochs=rng.randint(*space.epochs_range),
        batch_size=rng.choice(space.batch_sizes),
        weight_decay=log_uniform(rng, *space.weight_decay_range),
        decay=space.decay,
        max_lateral=space.max_lateral,
    )


@dataclass(frozen=True, slots=True)
class Wiring:
    """Concrete edges of a genome: sorted input node ids per unit, and of the output."""

    unit_inputs: tuple[tuple[int, ...], ...]
    output_inputs: tuple[int, ...]


def wiring_to_dict(wiring: Wiring) -> dict[str, Any]:
    return {
        "unit_inputs": [list(ids) for ids in wiring.unit_inputs],
        "output_inputs": list(wiring.output_inputs),
    }


def wiring_from_dict(data: Mapping[str, Any]) -> Wiring:
    _require(set(data) == {"unit_inputs", "output_inputs"}, "bad wiring fields")
    return Wiring(
        unit_inputs=tuple(tuple(int(i) for i in ids) for ids in data["unit_inputs"]),
        output_inputs=tuple(int(i) for i in data["output_inputs"]),
    )


def _edge_count(expected: float) -> int:
    return max(1, math.ceil(expected - _CEIL_SLACK))


def level_node_ids(genome: Genome) -> list[list[int]]:
    """Node ids of each hidden level; ids count from 1 because node 0 is the input."""
    ids: list[list[int]] = []
    next_id = 1
    for level in genome.levels:
        ids.append(list(range(next_id, next_id + len(level))))
        next_id += len(level)
    return ids


def materialise(genome: Genome) -> Wiring:
    """Pick the concrete edges of ``genome`` (see the module docstring for the rules)."""
    rng = random.Random(genome.wiring_seed)
    ids = level_node_ids(genome)
    n_hidden = len(ids)
    inputs: list[set[int]] = [set() for _ in genome.units]
    read_later: set[int] = set()

    for k in range(1, n_hidden + 1):
        level = ids[k - 1]
        for pos, node in enumerate(level):
            chosen = inputs[node - 1]
            for j in range(max(0, k - genome.skip_depth), k):
                if j == 0:
                    chosen.add(INPUT_NODE)
                    continue
                source = ids[j - 1]
                draws = _edge_count(genome.affinity * genome.decay ** (k - j) * len(source))
                for _ in range(draws):
                    picked = source[rng.randrange(len(source))]
                    chosen.add(picked)
                    read_later.add(picked)
            accepted = 0
            for distance in range(1, pos + 1):
                if accepted >= genome.max_lateral:
                    break
                if rng.random() < genome.p_lateral * LATERAL_DECAY**distance:
                    chosen.add(level[pos - distance])
                    accepted += 1

    output = set(ids[-1])
    output_level = n_hidden + 1
    for j in range(1, n_hidden):
        for node in ids[j - 1]:
            if node in read_later:
                continue
            target = rng.randint(j + 1, min(j + genome.skip_depth, output_level))
            if target == output_level:
                output.add(node)
            else:
                successors = ids[target - 1]
                inputs[successors[rng.randrange(len(successors))] - 1].add(node)

    return Wiring(tuple(tuple(sorted(s)) for s in inputs), tuple(sorted(output)))


def to_network(
    genome: Genome,
    n_inputs: int,
    n_outputs: int,
    training_seed: int,
    wiring: Wiring | None = None,
) -> dict[str, Any]:
    """The network JSON of docs/network-spec.md.

    Pass a recorded ``wiring`` to rebuild a candidate exactly from its event;
    otherwise it is materialised from the genome.
    """
    _require(n_inputs >= 1 and n_outputs >= 1, "n_inputs and n_outputs must be >= 1")
    edges = materialise(genome) if wiring is None else wiring
    units = genome.units
    _require(len(edges.unit_inputs) == len(units), "wiring does not match the genome")
    return {
        "n_inputs": n_inputs,
        "n_outputs": n_outputs,
        "units": [
            {"inputs": list(ids), "neurons": unit.neurons, "activation": unit.activation}
            for ids, unit in zip(edges.unit_inputs, units, strict=True)
        ],
        "output_inputs": list(edges.output_inputs),
        "learning_rate": genome.learning_rate,
        "weight_decay": genome.weight_decay,
        "epochs": genome.epochs,
        "batch_size": genome.batch_size,
        "seed": training_seed,
    }


def candidate_record(genome: Genome) -> dict[str, Any]:
    """What an event records per candidate: identity, genes and the concrete wiring."""
    return {
        "key": genome_key(genome),
        "genome": genome_to_dict(genome),
        "wiring": wiring_to_dict(materialise(genome)),
    }


def network_problems(network: Mapping[str, Any]) -> list[str]:
    """Every way ``network`` breaks docs/network-spec.md (empty when valid)."""
    problems: list[str] = []
    units: Sequence[Mapping[str, Any]] = network.get("units", [])
    n_nodes = len(units) + 1
    readers: list[set[int]] = [set() for _ in range(n_nodes)]
    for node, unit in enumerate(units, start=1):
        ids = list(unit.get("inputs", []))
        if not ids or ids != sorted(set(ids)):
            problems.append(f"unit {node}: inputs must be non-empty, distinct and sorted")
        if any(not 0 <= i < node for i in ids):
            problems.append(f"unit {node}: reads a node that is not earlier")
        neurons = unit.get("neurons")
        if unit.get("activation") not in ACTIVATIONS or not (_is_int(neurons) and neurons >= 1):
            problems.append(f"unit {node}: bad activation or neurons")
        for i in ids:
            if 0 <= i < node:
                readers[i].add(node)
    out_ids = list(network.get("output_inputs", []))
    if not out_ids or out_ids != sorted(set(out_ids)) or any(not 0 <= i < n_nodes for i in out_ids):
        problems.append("output_inputs must be non-empty, distinct, sorted node ids")
        return problems
    # Walk backwards from the output: a node reaches it if it feeds it or a reaching node.
    reaches = [False] * n_nodes
    for i in out_ids:
        reaches[i] = True
    for node in range(n_nodes - 1, -1, -1):
        if any(reaches[r] for r in readers[node]):
            reaches[node] = True
    problems.extend(f"node {n} does not reach the output" for n in range(n_nodes) if not reaches[n])
    for name in ("n_inputs", "n_outputs", "epochs", "batch_size"):
        if not _is_int(network.get(name)) or network[name] < 1:
            problems.append(f"{name} must be a positive int")
    return problems


def param_count(network: Mapping[str, Any]) -> int:
    """Weights plus biases of every unit and of the output layer."""
    widths = [int(network["n_inputs"])]
    total = 0
    for unit in network["units"]:
        fan_in = sum(widths[i] for i in unit["inputs"])
        neurons = int(unit["neurons"])
        total += fan_in * neurons + neurons
        widths.append(neurons)
    fan_in = sum(widths[i] for i in network["output_inputs"])
    n_outputs = int(network["n_outputs"])
    return int(total + fan_in * n_outputs + n_outputs)
