"""Materialised wiring: the concrete edges of a genome, drawn per pair of unit ids.

The training kernel needs a graph while the GA evolves genes; this module picks
the edges, deterministically, so that a candidate recorded in the event log can
be rebuilt exactly on any worker. Every draw is a hash of the unit ids it
concerns (``genome.mix64``), not a step of one shared random stream: adding,
removing or moving a unit leaves every other unit's edges as they were, so a
structural mutation changes the network locally instead of re-drawing it whole.

Rules, with ``L`` hidden levels numbered 1..L:

* A unit of level ``k`` reads from each earlier level ``j`` in its window
  ``max(0, k - skip_depth) <= j < k``. From the input level it reads node 0 (the
  input is a single node, so ``affinity_first`` cannot change which node is read
  and is kept only as a recorded gene). From a hidden level of ``n`` units the
  rule is "``m = ceil(affinity * decay**(k - j) * n)`` draws with replacement":
  each source unit is read with the probability ``1 - (1 - 1/n)**m`` that such
  draws hit it, decided by the hash of (source id, reader id); when no source
  passes, the one with the smallest hash is read, so every window level feeds it.
* Lateral edges: unit ``u`` of a level reads each lower-index unit of its own
  level at distance ``d`` with probability ``p_lateral * 0.95**d``, nearest
  first, keeping at most ``max_lateral`` of them.
* Repair: a hidden unit that no later level reads is attached to a unit of a
  successor level within ``skip_depth`` levels (both picked by its own id's
  hash), or to the output when the pick is past the last hidden level. The
  output reads the whole last hidden level plus whatever repair attached to
  it, so every unit reaches the output.
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from thunderhelm.ga.core.genome import Genome, Unit, mix64, require

LATERAL_DECAY = 0.95
INPUT_NODE = 0

# ceil() of a product like 0.7**2 * 3 can land one ulp above an integer and add an
# edge; the slack keeps the count the same on every libm.
_CEIL_SLACK = 1e-9

# What a hash decides, so that the same pair of ids draws independently for each.
_EDGE, _LATERAL, _REPAIR_LEVEL, _REPAIR_UNIT = 1, 2, 3, 4


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
    require(set(data) == {"unit_inputs", "output_inputs"}, "bad wiring fields")
    return Wiring(
        unit_inputs=tuple(tuple(int(i) for i in ids) for ids in data["unit_inputs"]),
        output_inputs=tuple(int(i) for i in data["output_inputs"]),
    )


def _edge_count(expected: float) -> int:
    return max(1, math.ceil(expected - _CEIL_SLACK))


def _uniform(*parts: int) -> float:
    """A number in [0, 1) fixed by ``parts``: the hash's top 53 bits."""
    return (mix64(*parts) >> 11) / float(1 << 53)


def _uid(unit: Unit) -> int:
    assert unit.uid is not None  # Genome fills in every missing id
    return unit.uid


def level_node_ids(genome: Genome) -> list[list[int]]:
    """Node ids of each hidden level; ids count from 1 because node 0 is the input."""
    ids: list[list[int]] = []
    next_id = 1
    for level in genome.levels:
        ids.append(list(range(next_id, next_id + len(level))))
        next_id += len(level)
    return ids


def _sources(genome: Genome, reader: int, source: tuple[Unit, ...], distance: int) -> list[int]:
    """Positions in ``source`` that a unit with id ``reader`` reads, ``distance`` levels up."""
    n = len(source)
    draws = _edge_count(genome.affinity * genome.decay**distance * n)
    p_hit = 1.0 - (1.0 - 1.0 / n) ** draws
    scores = [_uniform(_EDGE, _uid(unit), reader) for unit in source]
    picked = [pos for pos, score in enumerate(scores) if score < p_hit]
    return picked or [min(range(n), key=scores.__getitem__)]


def materialise(genome: Genome) -> Wiring:
    """Pick the concrete edges of ``genome`` (see the module docstring for the rules)."""
    ids = level_node_ids(genome)
    n_hidden = len(ids)
    inputs: list[set[int]] = [set() for _ in genome.units]
    read_later: set[int] = set()

    for k in range(1, n_hidden + 1):
        level = genome.levels[k - 1]
        for pos, node in enumerate(ids[k - 1]):
            reader = _uid(level[pos])
            chosen = inputs[node - 1]
            for j in range(max(0, k - genome.skip_depth), k):
                if j == 0:
                    chosen.add(INPUT_NODE)
                    continue
                for picked in _sources(genome, reader, genome.levels[j - 1], k - j):
                    chosen.add(ids[j - 1][picked])
                    read_later.add(ids[j - 1][picked])
            accepted = 0
            for distance in range(1, pos + 1):
                if accepted >= genome.max_lateral:
                    break
                left = _uid(level[pos - distance])
                if _uniform(_LATERAL, left, reader) < genome.p_lateral * LATERAL_DECAY**distance:
                    chosen.add(ids[k - 1][pos - distance])
                    accepted += 1

    output = set(ids[-1])
    output_level = n_hidden + 1
    for j in range(1, n_hidden):
        for unit, node in zip(genome.levels[j - 1], ids[j - 1], strict=True):
            if node in read_later:
                continue
            reach = min(j + genome.skip_depth, output_level) - j
            target = j + 1 + int(_uniform(_REPAIR_LEVEL, _uid(unit)) * reach)
            if target == output_level:
                output.add(node)
            else:
                successors = ids[target - 1]
                at = int(_uniform(_REPAIR_UNIT, _uid(unit)) * len(successors))
                inputs[successors[at] - 1].add(node)

    return Wiring(tuple(tuple(sorted(s)) for s in inputs), tuple(sorted(output)))
