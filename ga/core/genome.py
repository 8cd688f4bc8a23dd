"""Genome of a Cerebros-style dense network: the genes the GA evolves, and their identity.

The GA evolves *genes* (levels of units, connectivity factors, training
hyper-parameters); ``wiring.materialise`` turns them into a concrete graph and
``network.to_network`` into the JSON the kernel trains. This module is the data
model only: validation, a plain-data form that round-trips exactly, and a
content key equal across processes. It is stdlib-only because it also runs
inside isolated sub-interpreters.

Shape of a genome: ``levels`` holds the *hidden* levels only. Level 0 (the input
feature vector, node 0 of the network) and the output level are implied by the
dataset, so they are not genes.

Each unit carries a ``uid``: a stable identity that travels with the unit
through mutation and crossover. Wiring is drawn per pair of unit ids, so
adding, removing or moving one unit leaves the other units' edges as they were.
A genome built without ids (an Optuna trial, an old checkpoint) gets ids
derived from its ``wiring_seed`` and each unit's position.
"""

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeIs

ACTIVATIONS: tuple[str, ...] = ("relu", "elu", "gelu", "tanh", "sigmoid")
DEFAULT_DECAY = 0.7
DEFAULT_MAX_LATERAL = 3
UID_BITS = 32

FLOAT_GENES = ("affinity", "affinity_first", "p_lateral", "learning_rate", "weight_decay", "decay")
INT_GENES = ("skip_depth", "wiring_seed", "epochs", "batch_size", "max_lateral")
SCALAR_GENES = (*FLOAT_GENES, *INT_GENES)

_MASK64 = (1 << 64) - 1


def require(condition: bool, message: str) -> None:
    """Raise ``ValueError(message)`` unless ``condition``: the one way genes are validated."""
    if not condition:
        raise ValueError(message)


def is_int(value: object) -> TypeIs[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def mix64(*parts: int) -> int:
    """A 64-bit hash of ``parts`` (splitmix64 finaliser, chained): cheap, stable, stdlib-only."""
    h = 0
    for part in parts:
        h = ((h ^ (part & _MASK64)) + 0x9E3779B97F4A7C15) & _MASK64
        h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & _MASK64
        h ^= h >> 31
    return h


@dataclass(frozen=True, slots=True)
class Unit:
    """One dense layer: ``neurons`` outputs through ``activation``; ``uid`` names it for wiring.

    ``uid=None`` asks the enclosing ``Genome`` to derive one from its position.
    """

    neurons: int
    activation: str
    uid: int | None = None

    def __post_init__(self) -> None:
        require(is_int(self.neurons) and self.neurons >= 1, f"bad neurons {self.neurons!r}")
        require(self.activation in ACTIVATIONS, f"unknown activation {self.activation!r}")
        require(
            self.uid is None or (is_int(self.uid) and 0 <= self.uid < 1 << UID_BITS),
            f"uid must be None or an int in [0, 2**{UID_BITS})",
        )


def derived_uid(wiring_seed: int, level: int, position: int) -> int:
    """The id of a unit given without one: fixed by the genome's wiring seed and its place."""
    return mix64(wiring_seed, level, position) >> (64 - UID_BITS)


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
        require(isinstance(self.levels, tuple) and len(self.levels) >= 1, "need >= 1 level")
        for level in self.levels:
            require(isinstance(level, tuple) and len(level) >= 1, "each level needs >= 1 unit")
            require(all(isinstance(u, Unit) for u in level), "levels must hold Unit values")
        for name in FLOAT_GENES:
            value = getattr(self, name)
            require(_is_number(value) and math.isfinite(value), f"{name} must be finite")
            # Coerce so that 1 and 1.0 give the same genome_key.
            object.__setattr__(self, name, float(value))
        for name in INT_GENES:
            require(is_int(getattr(self, name)), f"{name} must be an int")
        require(self.affinity > 0 and self.affinity_first > 0, "affinities must be > 0")
        require(0.0 <= self.p_lateral <= 1.0, "p_lateral must be in [0, 1]")
        require(0.0 < self.decay <= 1.0, "decay must be in (0, 1]")
        require(self.skip_depth >= 1, "skip_depth must be >= 1")
        require(self.wiring_seed >= 0, "wiring_seed must be >= 0")
        require(self.learning_rate > 0, "learning_rate must be > 0")
        require(self.epochs >= 1 and self.batch_size >= 1, "epochs and batch_size must be >= 1")
        require(self.weight_decay >= 0, "weight_decay must be >= 0")
        require(self.max_lateral >= 0, "max_lateral must be >= 0")
        if any(u.uid is None for level in self.levels for u in level):
            object.__setattr__(self, "levels", self._with_uids())

    def _with_uids(self) -> tuple[tuple[Unit, ...], ...]:
        return tuple(
            tuple(
                u
                if u.uid is not None
                else Unit(u.neurons, u.activation, derived_uid(self.wiring_seed, k, pos))
                for pos, u in enumerate(level)
            )
            for k, level in enumerate(self.levels)
        )

    @property
    def units(self) -> tuple[Unit, ...]:
        """Units in node order (node id = position + 1)."""
        return tuple(unit for level in self.levels for unit in level)


def genome_to_dict(genome: Genome) -> dict[str, Any]:
    """Plain JSON-serialisable form; ``genome_from_dict`` inverts it exactly."""
    out: dict[str, Any] = {
        "levels": [
            [{"neurons": u.neurons, "activation": u.activation, "uid": u.uid} for u in level]
            for level in genome.levels
        ]
    }
    for name in SCALAR_GENES:
        out[name] = getattr(genome, name)
    return out


def genome_from_dict(data: Mapping[str, Any]) -> Genome:
    """Parse a genome from plain data, rejecting unknown or missing fields.

    Units written before ids existed (no ``uid``) get derived ids.
    """
    expected = {"levels", *SCALAR_GENES}
    unknown = set(data) - expected
    require(not unknown, f"unknown genome fields {sorted(unknown)}")
    missing = expected - set(data) - {"decay", "max_lateral"}
    require(not missing, f"missing genome fields {sorted(missing)}")
    raw_levels = data["levels"]
    require(isinstance(raw_levels, list | tuple), "levels must be a list")
    levels = []
    for raw_level in raw_levels:
        require(isinstance(raw_level, list | tuple), "a level must be a list")
        units = []
        for raw in raw_level:
            require(
                isinstance(raw, Mapping)
                and {"neurons", "activation"} <= set(raw) <= {"neurons", "activation", "uid"},
                "bad unit",
            )
            units.append(Unit(raw["neurons"], raw["activation"], raw.get("uid")))
        levels.append(tuple(units))
    genes = {name: data[name] for name in SCALAR_GENES if name in data}
    return Genome(levels=tuple(levels), **genes)


def canonical_json(data: Any) -> str:
    """The one JSON spelling used for hashing: sorted keys, no spaces."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)


def genome_key(genome: Genome) -> str:
    """Stable identity of a genome (sha256 hex), equal across processes and interpreters."""
    return hashlib.sha256(canonical_json(genome_to_dict(genome)).encode()).hexdigest()
