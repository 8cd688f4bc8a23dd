"""The search space: bounds of every gene, checks against them, and uniform draws from them.

Kept apart from the genome data model because the space is the GA's (and its
rivals') notion of what may be tried, while a genome is just one candidate:
random search and the Optuna benchmark draw from the same ``SearchSpace``.
"""

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from thunderhelm.ga.core.genome import (
    ACTIVATIONS,
    DEFAULT_DECAY,
    DEFAULT_MAX_LATERAL,
    UID_BITS,
    Genome,
    Unit,
    require,
)


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
        require(1 <= self.min_levels <= self.max_levels, "need 1 <= min_levels <= max_levels")
        require(1 <= self.min_units <= self.max_units, "need 1 <= min_units <= max_units")
        require(1 <= self.min_neurons <= self.max_neurons, "need 1 <= min_neurons <= max_neurons")
        require(len(self.activations) >= 1, "need at least one activation")
        require(set(self.activations) <= set(ACTIVATIONS), "unknown activation in space")
        require(len(self.batch_sizes) >= 1 and min(self.batch_sizes) >= 1, "bad batch_sizes")
        for name in ("affinity_range", "affinity_first_range", "learning_rate_range"):
            lo, hi = getattr(self, name)
            require(0 < lo <= hi, f"{name} must satisfy 0 < lo <= hi")
        lo, hi = self.weight_decay_range
        require(0 < lo <= hi, "weight_decay_range must satisfy 0 < lo <= hi (log scale)")
        lo, hi = self.p_lateral_range
        require(0 <= lo <= hi <= 1, "p_lateral_range must lie in [0, 1]")
        require(1 <= self.skip_depth_range[0] <= self.skip_depth_range[1], "bad skip_depth_range")
        require(1 <= self.epochs_range[0] <= self.epochs_range[1], "bad epochs_range")
        require(self.max_lateral >= 0 and 0 < self.decay <= 1, "bad max_lateral or decay")

    def to_dict(self) -> dict[str, Any]:
        return {
            name: list(value) if isinstance(value, tuple) else value
            for name, value in ((n, getattr(self, n)) for n in self.__dataclass_fields__)
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SearchSpace":
        unknown = set(data) - set(cls.__dataclass_fields__)
        require(not unknown, f"unknown search space fields {sorted(unknown)}")
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


def new_uid(rng: random.Random) -> int:
    """A fresh unit id: a new unit gets its own wiring draws."""
    return rng.getrandbits(UID_BITS)


def random_unit(rng: random.Random, space: SearchSpace) -> Unit:
    neurons = rng.randint(space.min_neurons, space.max_neurons)
    return Unit(neurons, rng.choice(space.activations), new_uid(rng))


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
