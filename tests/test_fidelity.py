"""Successive-halving rungs: the rule (ga/core/fidelity.py) and how the GA state carries it."""

import json
import math
from typing import Any

import pytest

from thunderhelm.ga.core.engine import GAConfig, GAState, initial_state
from thunderhelm.ga.core.fidelity import (
    Fidelity,
    bound,
    recorded,
    rung_epochs,
    rungs_for,
    with_rungs,
)
from thunderhelm.ga.core.network import param_count
from thunderhelm.ga.core.search import run_search
from thunderhelm.ga.core.space import SearchSpace

FIDELITY = Fidelity(eta=2.0, min_figures=4)
SPACE = SearchSpace(epochs_range=(3, 6))
CONFIG = GAConfig(population=8, generations=5, seed=9, space=SPACE, fidelity=FIDELITY)


def curved_train(network: dict[str, Any]) -> dict[str, Any]:
    """A deterministic stand-in for training with a learning curve, honouring the rungs."""
    quality = 1.0 / (1.0 + abs(math.log(param_count(network) / 600.0)))
    rungs = {r["epoch"]: r["min_val_accuracy"] for r in network.get("rungs", [])}
    curve = []
    pruned = None
    for epoch in range(1, network["epochs"] + 1):
        accuracy = quality * (1.0 - 0.5**epoch) + (network["seed"] % 89) * 1e-5
        curve.append({"epoch": epoch, "val_accuracy": accuracy, "val_loss": 1.0 - accuracy})
        if epoch in rungs and accuracy < rungs[epoch]:
            pruned = epoch
            break
    last = curve[-1]["val_accuracy"]
    return {
        "fitness": last,
        "val_accuracy": last,
        "val_loss": 1.0 - last,
        "params": param_count(network),
        "status": "ok",
        "epochs_run": len(curve),
        "curve": curve,
        "pruned_at": pruned,
    }


class Recording:
    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.results: list[dict[str, Any]] = []

    def __call__(self, networks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.seen += networks
        results = [curved_train(n) for n in networks]
        self.results += results
        return results


def test_rung_epochs_are_powers_of_eta_below_the_last_epoch() -> None:
    assert rung_epochs(1, 2.0) == []
    assert rung_epochs(3, 2.0) == [1, 2]
    assert rung_epochs(10, 2.0) == [1, 2, 4, 8]
    assert rung_epochs(10, 3.0) == [1, 3, 9]
    assert rung_epochs(4, 1.5) == [1, 2, 3]  # rounded, each once


def test_the_bound_keeps_the_best_share_of_the_figures() -> None:
    figures = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    assert bound(figures[:3], FIDELITY) is None  # too few to judge by
    assert bound(figures, FIDELITY) == 0.5  # the median: the better half goes on
    assert bound(figures, Fidelity(eta=3.0, min_figures=4)) == 0.6
    losses = Fidelity(eta=2.0, min_figures=4, metric="val_loss")
    assert bound(figures, losses) == 0.5  # lower is better: at most the median
    assert bound(figures, Fidelity(eta=4.0, min_figures=4, metric="val_loss")) == 0.3


def test_a_network_gets_only_the_rungs_below_its_epochs_that_have_figures() -> None:
    figures = {1: (0.1, 0.2, 0.3, 0.4), 2: (0.5,), 4: (0.6, 0.7, 0.8, 0.9)}
    network = {"epochs": 5, "seed": 1}
    assert rungs_for(5, figures, FIDELITY) == [
        {"epoch": 1, "min_val_accuracy": 0.2},
        {"epoch": 4, "min_val_accuracy": 0.7},
    ]
    assert with_rungs(network, figures, FIDELITY)["rungs"][0]["epoch"] == 1
    assert "rungs" not in with_rungs(network, figures, None)
    assert "rungs" not in with_rungs({"epochs": 1}, figures, FIDELITY)


def test_curves_add_their_figures_at_the_rung_epochs_only() -> None:
    curve = [{"epoch": e, "val_accuracy": e / 10} for e in range(1, 6)]
    figures = recorded({1: (0.05,)}, [curve, curve[:1]], FIDELITY)
    assert figures == {1: (0.05, 0.1, 0.1), 2: (0.2,), 4: (0.4,)}


def test_the_first_generation_trains_every_candidate_to_its_end() -> None:
    evaluate = Recording()
    run_search(GAConfig(**{**_fields(CONFIG), "generations": 1}), 4, 3, evaluate)
    assert evaluate.seen and all("rungs" not in n for n in evaluate.seen)


def test_later_generations_stop_candidates_below_the_rungs_and_save_work() -> None:
    evaluate = Recording()
    state = run_search(CONFIG, 4, 3, evaluate)
    with_bounds = [n for n in evaluate.seen if "rungs" in n]
    assert with_bounds, "later generations carry rungs"
    pruned = [r for r in evaluate.results if r["pruned_at"] is not None]
    assert pruned, "some candidates stop at a rung"
    full = sum(n["epochs"] for n in evaluate.seen)
    assert state.work == sum(r["epochs_run"] for r in evaluate.results) < full
    assert set(state.rungs) == {1, 2, 4}
    plain = run_search(GAConfig(**{**_fields(CONFIG), "fidelity": None}), 4, 3, Recording())
    assert plain.rungs == {} and plain.work > 0


@pytest.mark.parametrize("k", range(1, CONFIG.generations))
def test_a_run_resumed_between_rungs_ends_as_the_uninterrupted_one(k: int) -> None:
    checkpoints: list[str] = []

    def keep(state: GAState) -> None:
        checkpoints.append(json.dumps(state.to_dict(), sort_keys=True))

    full = run_search(CONFIG, 4, 3, Recording(), on_generation=keep)
    start = GAState.from_dict(json.loads(checkpoints[k - 1]))
    assert start.rungs and start.work > 0  # the rung figures travel with the checkpoint
    assert run_search(CONFIG, 4, 3, Recording(), start=start) == full


def test_the_config_and_state_round_trip_with_the_rungs() -> None:
    assert GAConfig.from_dict(CONFIG.to_dict()) == CONFIG
    state = run_search(CONFIG, 4, 3, Recording())
    assert GAState.from_dict(json.loads(json.dumps(state.to_dict()))) == state
    old = initial_state(CONFIG).to_dict()
    del old["rungs"], old["work"]  # a checkpoint from before the rungs
    assert GAState.from_dict(old).rungs == {} and GAState.from_dict(old).work == 0.0


def _fields(config: GAConfig) -> dict[str, Any]:
    return {name: getattr(config, name) for name in config.__dataclass_fields__}
