"""Multi-fidelity search: successive-halving rungs inside each candidate's training.

A candidate trains epoch by epoch and is measured on validation after each
(its learning curve). At a rung epoch (1, eta, eta², ... below its last
epoch) it goes on only if its figure there is among the best 1/eta of every
figure measured at that epoch by earlier generations of the run; otherwise
it stops, and its figure at the rung is its fitness. The promoted ones carry
on from their weights at the rung, within the same training, so no work is
done twice.

The bounds are a pure function of the run's folded state (`GAState.rungs`
holds the figures seen so far, per rung epoch), written into each network's
spec (`rungs`, docs/network-spec.md) before it is trained: a candidate
trained again after a killed worker meets the same bounds and stops at the
same epoch, so a resumed run ends with the same result. The first
generation has no figures yet and trains every candidate to its end.
"""

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from thunderhelm.ga.core import measures

# Figures kept per rung epoch: the most recent ones, so the bound follows the
# run as it improves and the checkpoint stays small.
RUNG_MEMORY = 256
METRICS = measures.MEASURES

type RungFigures = Mapping[int, tuple[float, ...]]


@dataclass(frozen=True, slots=True)
class Fidelity:
    """The rung rule of a run: `eta` > 1 keeps the best 1/eta at each rung.

    `min_figures` is how many earlier figures a rung needs before it stops
    anything: with fewer, the bound would be one lucky or unlucky training.
    """

    eta: float = 2.0
    min_figures: int = 6
    metric: str = "val_accuracy"  # the fitness's own measure (`measures.MEASURES`)

    def __post_init__(self) -> None:
        if not self.eta > 1.0:
            raise ValueError("fidelity eta must be > 1")
        if self.min_figures < 1:
            raise ValueError("fidelity min_figures must be >= 1")
        if self.metric not in METRICS:
            raise ValueError(f"fidelity metric must be one of {METRICS}")

    def to_dict(self) -> dict[str, Any]:
        return {"eta": self.eta, "min_figures": self.min_figures, "metric": self.metric}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Fidelity":
        return cls(float(data["eta"]), int(data["min_figures"]), str(data["metric"]))


def rung_epochs(epochs: int, eta: float) -> list[int]:
    """The rung epochs of a training of `epochs` epochs: 1, eta, eta², ... below `epochs`."""
    rungs: list[int] = []
    at = 1.0
    while round(at) < epochs:
        epoch = max(1, round(at))
        if not rungs or epoch > rungs[-1]:
            rungs.append(epoch)
        at *= eta
    return rungs


def bound(figures: Sequence[float], fidelity: Fidelity) -> float | None:
    """The figure a training must reach at a rung to go on (None: too few figures)."""
    if len(figures) < fidelity.min_figures:
        return None
    ordered = sorted(figures)
    keep = 1.0 / fidelity.eta
    if measures.higher_is_better(fidelity.metric):  # the best are the highest
        position = math.floor((1.0 - keep) * (len(ordered) - 1))
    else:  # the best are the lowest
        position = math.ceil(keep * (len(ordered) - 1))
    return ordered[position]


def rungs_for(epochs: int, figures: RungFigures, fidelity: Fidelity) -> list[dict[str, Any]]:
    """The spec's `rungs` for a network of `epochs` epochs (empty: train to the end)."""
    name = measures.rung_bound(fidelity.metric)
    out: list[dict[str, Any]] = []
    for epoch in rung_epochs(epochs, fidelity.eta):
        limit = bound(figures.get(epoch, ()), fidelity)
        if limit is not None:
            out.append({"epoch": epoch, name: limit})
    return out


def with_rungs(
    network: Mapping[str, Any], figures: RungFigures, fidelity: Fidelity | None
) -> dict[str, Any]:
    """`network` with the rungs its training must pass (unchanged without fidelity)."""
    out = dict(network)
    if fidelity is not None:
        rungs = rungs_for(int(network["epochs"]), figures, fidelity)
        if rungs:
            out["rungs"] = rungs
    return out


def recorded(
    figures: RungFigures, curves: Iterable[Sequence[Mapping[str, Any]]], fidelity: Fidelity
) -> dict[int, tuple[float, ...]]:
    """`figures` with each curve's figure at every rung epoch added, in the curves' order."""
    out = {epoch: list(values) for epoch, values in figures.items()}
    for curve in curves:
        by_epoch = {int(point["epoch"]): point.get(fidelity.metric) for point in curve}
        for epoch in rung_epochs(max(by_epoch, default=0) + 1, fidelity.eta):
            value = by_epoch.get(epoch)
            if isinstance(value, int | float) and math.isfinite(value):
                out.setdefault(epoch, []).append(float(value))
    return {epoch: tuple(values[-RUNG_MEMORY:]) for epoch, values in sorted(out.items())}


def figures_to_json(figures: RungFigures) -> dict[str, list[float]]:
    return {str(epoch): list(values) for epoch, values in sorted(figures.items())}


def figures_from_json(data: Mapping[str, Sequence[float]] | None) -> dict[int, tuple[float, ...]]:
    return {int(epoch): tuple(float(v) for v in values) for epoch, values in (data or {}).items()}
