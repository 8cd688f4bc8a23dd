"""The network JSON of docs/network-spec.md: built from a genome, checked, and sized.

This is the contract between the GA and the training kernel: ``to_network``
writes it from a genome and its wiring, ``network_problems`` says how a given
network breaks it, ``param_count`` sizes it. ``candidate_record`` is what an
event records per candidate so any worker can rebuild it exactly.
"""

from collections.abc import Mapping, Sequence
from typing import Any

from thunderhelm.ga.core.genome import (
    ACTIVATIONS,
    Genome,
    genome_key,
    genome_to_dict,
    is_int,
    require,
)
from thunderhelm.ga.core.wiring import Wiring, materialise, wiring_to_dict


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
    require(n_inputs >= 1 and n_outputs >= 1, "n_inputs and n_outputs must be >= 1")
    edges = materialise(genome) if wiring is None else wiring
    units = genome.units
    require(len(edges.unit_inputs) == len(units), "wiring does not match the genome")
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
        if unit.get("activation") not in ACTIVATIONS or not (is_int(neurons) and neurons >= 1):
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
        if not is_int(network.get(name)) or network[name] < 1:
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
