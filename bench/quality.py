"""The quality benchmark: does the search find better networks than the obvious baselines?

On `digits`, the GA's best validation accuracy is compared with random search
given the same number of trainings and the same training, and with
scikit-learn's `MLPClassifier` at its defaults on the same train/validation
split. Random search is the GA's own generation 0 made as large as the GA's
whole budget (`initial_state` with `population` = the GA's evaluations): the
same search space, the same seeds for the genomes both share, nothing but
breeding taken away. On `shakespeare` (next character from a context window),
the GA's best is compared with the bigram-count baseline on the same
validation windows.

Both searches select on the validation split they report, which flatters
them equally; the MLP does no selection. The summary says so.
"""

import dataclasses
import os
import statistics
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from bench import _warm
from bench.common import Options, cores, load_named, run_request, warm_pool
from bench.report import bar
from ga.datasets import PreparedDataset, bigram_baseline_accuracy
from ga.engine import candidate_training_seed, initial_state
from ga.evaluator import TRAIN_FUNCTION, PoolEvaluator
from ga.genome import to_network
from ga.pool import InterpreterPool
from streams import nas

__all__ = ["run"]

MLP_SEEDS = (0, 1, 2, 3, 4)


def digits_request(quick: bool) -> dict[str, Any]:
    if quick:
        return {
            "dataset": {"name": "digits", "seed": 0},
            "ga": {"population": 3, "generations": 2, "tournament_size": 2, "seed": 0},
            "training": {"epochs": 1, "batch_size": 64},
            "search_space": {"max_levels": 1, "max_units": 2, "max_neurons": 8},
        }
    return {
        "dataset": {"name": "digits", "seed": 0},
        "ga": {"population": 12, "generations": 8, "tournament_size": 3, "elite": 2, "seed": 0},
        "training": {"epochs": 24, "batch_size": 32},
        "search_space": {"max_levels": 3, "max_units": 3, "max_neurons": 128},
    }


def shakespeare_request(quick: bool) -> dict[str, Any]:
    if quick:
        return {
            "dataset": {"name": "shakespeare", "samples": 400, "context": 2, "seed": 0},
            "ga": {"population": 2, "generations": 1, "tournament_size": 2, "seed": 0},
            "training": {"epochs": 1, "batch_size": 64},
            "search_space": {"max_levels": 1, "max_units": 1, "max_neurons": 8},
        }
    return {
        "dataset": {"name": "shakespeare", "samples": 30000, "context": 8, "seed": 0},
        "ga": {"population": 8, "generations": 4, "tournament_size": 3, "elite": 1, "seed": 0},
        "training": {"epochs": 6, "batch_size": 64},
        "search_space": {"max_levels": 2, "max_units": 3, "max_neurons": 192},
    }


def random_search(
    request: Mapping[str, Any], dataset: PreparedDataset, evaluate: PoolEvaluator, n: int
) -> list[float]:
    """Validation accuracies of `n` distinct random genomes from the request's search space."""
    config = dataclasses.replace(nas.ga_config(request), population=n, elite=0)
    genomes = initial_state(config).population
    networks = [
        to_network(g, dataset.n_features, dataset.n_classes, candidate_training_seed(config, 0, i))
        for i, g in enumerate(genomes)
    ]
    scores = []
    for result in evaluate(networks):
        fitness = result["fitness"]
        assert isinstance(fitness, float)  # the evaluator's contract: -inf when it failed
        scores.append(fitness)
    return scores


def mlp_accuracies(dataset: PreparedDataset, seeds: Sequence[int]) -> list[float]:
    """`MLPClassifier()` at its defaults (only the seed fixed) on the same split."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    scores = []
    for seed in seeds:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model = MLPClassifier(random_state=seed).fit(dataset.x_train, dataset.y_train)
        scores.append(float(model.score(dataset.x_val, dataset.y_val)))
    return scores


def _ga(request: Mapping[str, Any], dataset: PreparedDataset, evaluate: PoolEvaluator) -> Any:
    began = time.perf_counter()
    state = run_request(request, dataset, evaluate)
    assert state.best is not None
    return state, time.perf_counter() - began


def run(opts: Options) -> dict[str, Any]:
    load_before = os.getloadavg()
    size = opts.pool_size or cores()
    digits_req = digits_request(opts.quick)
    shakes_req = shakespeare_request(opts.quick)
    digits = load_named(digits_req["dataset"])
    shakes = load_named(shakes_req["dataset"])
    with InterpreterPool(size, allowed=(TRAIN_FUNCTION, _warm.FUNCTION)) as pool:
        warm_pool(pool)
        with PoolEvaluator(pool, digits, deadline_s=900.0) as evaluate:
            ga_state, ga_s = _ga(digits_req, digits, evaluate)
            evaluations = ga_state.evaluations
            began = time.perf_counter()
            random_acc = random_search(digits_req, digits, evaluate, evaluations)
            random_s = time.perf_counter() - began
        with PoolEvaluator(pool, shakes, deadline_s=900.0) as evaluate:
            shakes_state, shakes_s = _ga(shakes_req, shakes, evaluate)
    began = time.perf_counter()
    mlp_seeds = MLP_SEEDS[:1] if opts.quick else MLP_SEEDS
    mlp = mlp_accuracies(digits, mlp_seeds)
    mlp_s = time.perf_counter() - began
    bigram = bigram_baseline_accuracy(shakes)

    ga_acc = float(ga_state.best.fitness)
    best_random = max(random_acc)
    shakes_acc = float(shakes_state.best.fitness)
    result: dict[str, Any] = {
        "quick": opts.quick,
        "ga_val_acc": round(ga_acc, 4),
        "random_val_acc": round(best_random, 4),
        "mlp_val_acc": round(mlp[0], 4),
        "evaluations": evaluations,
        "shakespeare_val_acc": round(shakes_acc, 4),
        "bigram_val_acc": round(bigram, 4),
        "val_rows": {"digits": len(digits.y_val), "shakespeare": len(shakes.y_val)},
        "mlp_val_acc_by_seed": dict(zip(map(str, mlp_seeds), mlp, strict=True)),
        "mlp_val_acc_mean": round(statistics.mean(mlp), 4),
        "random_val_acc_all": [round(a, 4) for a in random_acc],
        "ga_best_per_generation": [round(max(g), 4) for g in ga_state.history],
        "ga_best": ga_state.best.to_dict(),
        "shakespeare_evaluations": shakes_state.evaluations,
        "shakespeare_best_per_generation": [round(max(g), 4) for g in shakes_state.history],
        "shakespeare_best": shakes_state.best.to_dict(),
        "timings_s": {
            "ga_digits": round(ga_s, 2),
            "random_digits": round(random_s, 2),
            "mlp_digits_all_seeds": round(mlp_s, 2),
            "ga_shakespeare": round(shakes_s, 2),
        },
        "requests": {"digits": digits_req, "shakespeare": shakes_req},
        "workers": size,
        "environment": {"load_before": [round(x, 2) for x in load_before]},
    }
    result["bars"] = [
        bar(
            "GA on digits >= random search at equal evaluations",
            f"{ga_acc:.4f} vs {best_random:.4f} ({evaluations} trainings each)",
            ga_acc >= best_random,
        ),
        bar(
            "GA on digits >= MLPClassifier defaults",
            f"{ga_acc:.4f} vs {mlp[0]:.4f} (random_state 0; mean of "
            f"{len(mlp)} seeds {statistics.mean(mlp):.4f})",
            ga_acc >= mlp[0],
        ),
        bar(
            "shakespeare GA beats the bigram-count baseline",
            f"{shakes_acc:.4f} vs {bigram:.4f}",
            shakes_acc > bigram,
        ),
    ]
    d, s = digits_req, shakes_req
    result["summary"] = "\n".join(
        [
            f"digits: {len(digits.y_train)} train / {len(digits.y_val)} validation rows; GA "
            f"population {d['ga']['population']}, {d['ga']['generations']} generations, up to "
            f"{d['training']['epochs']} epochs, {evaluations} trainings ({ga_s:.0f}s); random "
            f"search {evaluations} trainings ({random_s:.0f}s). shakespeare: context "
            f"{s['dataset']['context']}, {len(shakes.y_train)} train / {len(shakes.y_val)} "
            f"validation windows; GA population {s['ga']['population']}, "
            f"{s['ga']['generations']} generations, {shakes_state.evaluations} trainings "
            f"({shakes_s:.0f}s).",
            "",
            "GA and random search both pick their best on the validation split they report "
            f"(one step is 1/{len(digits.y_val)} = {1 / len(digits.y_val):.4f}); the MLP "
            "baseline does no selection, so the GA-vs-MLP margin is optimistic by that "
            "selection effect.",
        ]
    )
    return result
