"""The quality benchmark: does the search find better networks than the obvious baselines?

On `digits`, the GA's best validation accuracy is compared with random search
given the same number of trainings and the same training, and with
scikit-learn's `MLPClassifier` at its defaults on the same train/validation
split. Random search draws distinct genomes from the same search space with
the engine's own generator (`initial_state` with `population` = the GA's
evaluations, under a seed of its own, so it shares no genome by construction)
and trains them exactly as the GA trains its candidates. Validation accuracy
on digits moves in steps of 1/359 and sits near its ceiling, so one run decides
little: both searches run for several seeds and the headline figures are the
means of their best accuracies (the MLP's likewise, over its seeds). On
`shakespeare` (next character from a context window), the GA's best is
compared with the bigram-count baseline on the same validation windows.

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

from bench.common import Options, cores, load_named, run_request, warm_pool
from bench.report import bar
from thunderhelm.ga.core.engine import GAState, candidate_training_seed, initial_state
from thunderhelm.ga.core.genome import to_network
from thunderhelm.ga.pool import warmup
from thunderhelm.ga.pool.interpreter_pool import InterpreterPool
from thunderhelm.ga.training.datasets import PreparedDataset, bigram_baseline_accuracy
from thunderhelm.ga.training.evaluators import TRAIN_FUNCTION, PoolEvaluator
from thunderhelm.streams.execution import steps

__all__ = ["run"]

SEEDS = (0, 1, 2)
MLP_SEEDS = (0, 1, 2, 3, 4)
RANDOM_SEED_OFFSET = 1_000_003  # random search's genomes come from a seed no GA run uses


def digits_request(quick: bool, seed: int) -> dict[str, Any]:
    if quick:
        return {
            "dataset": {"name": "digits", "seed": 0},
            "ga": {"population": 3, "generations": 2, "tournament_size": 2, "seed": seed},
            "training": {"epochs": 1, "batch_size": 64},
            "search_space": {"max_levels": 1, "max_units": 2, "max_neurons": 8},
        }
    return {
        "dataset": {"name": "digits", "seed": 0},
        "ga": {"population": 10, "generations": 6, "tournament_size": 3, "elite": 2, "seed": seed},
        "training": {"epochs": 16, "batch_size": 32},
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
        "ga": {"population": 6, "generations": 3, "tournament_size": 3, "elite": 1, "seed": 0},
        "training": {"epochs": 6, "batch_size": 64},
        "search_space": {"max_levels": 2, "max_units": 3, "max_neurons": 160},
    }


def random_search(
    request: Mapping[str, Any], dataset: PreparedDataset, evaluate: PoolEvaluator, n: int
) -> list[float]:
    """Validation accuracies of `n` distinct random genomes from the request's search space."""
    ga_config = steps.ga_config(request)
    config = dataclasses.replace(
        ga_config, population=n, elite=0, seed=ga_config.seed + RANDOM_SEED_OFFSET
    )
    networks = [
        to_network(g, dataset.n_features, dataset.n_classes, candidate_training_seed(config, 0, i))
        for i, g in enumerate(initial_state(config).population)
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


def _best(state: GAState) -> float:
    assert state.best is not None
    return float(state.best.fitness)


def _digits_seed(
    quick: bool, seed: int, dataset: PreparedDataset, evaluate: PoolEvaluator
) -> dict[str, Any]:
    request = digits_request(quick, seed)
    began = time.perf_counter()
    state = run_request(request, dataset, evaluate)
    ga_s = time.perf_counter() - began
    began = time.perf_counter()
    scores = random_search(request, dataset, evaluate, state.evaluations)
    random_s = time.perf_counter() - began
    assert state.best is not None
    return {
        "seed": seed,
        "ga_val_acc": _best(state),
        "random_val_acc": max(scores),
        "evaluations": state.evaluations,
        "ga_best_per_generation": [round(max(g), 4) for g in state.history],
        "random_val_acc_all": [round(a, 4) for a in scores],
        "ga_best": state.best.to_dict(),
        "ga_s": round(ga_s, 2),
        "random_s": round(random_s, 2),
    }


def run(opts: Options) -> dict[str, Any]:
    load_before = os.getloadavg()
    size = opts.pool_size or cores()
    seeds = SEEDS[:1] if opts.quick else SEEDS
    mlp_seeds = MLP_SEEDS[:1] if opts.quick else MLP_SEEDS
    shakes_req = shakespeare_request(opts.quick)
    digits = load_named(digits_request(opts.quick, 0)["dataset"])
    shakes = load_named(shakes_req["dataset"])
    with InterpreterPool(size, allowed=(TRAIN_FUNCTION, warmup.FUNCTION)) as pool:
        warm_pool(pool)
        with PoolEvaluator(pool, digits, deadline_s=900.0) as evaluate:
            per_seed = [_digits_seed(opts.quick, s, digits, evaluate) for s in seeds]
        with PoolEvaluator(pool, shakes, deadline_s=900.0) as evaluate:
            began = time.perf_counter()
            shakes_state = run_request(shakes_req, shakes, evaluate)
            shakes_s = time.perf_counter() - began
    began = time.perf_counter()
    mlp = mlp_accuracies(digits, mlp_seeds)
    mlp_s = time.perf_counter() - began
    bigram = bigram_baseline_accuracy(shakes)

    ga_acc = statistics.mean(r["ga_val_acc"] for r in per_seed)
    random_acc = statistics.mean(r["random_val_acc"] for r in per_seed)
    mlp_acc = statistics.mean(mlp)
    evaluations = per_seed[0]["evaluations"]
    shakes_acc = _best(shakes_state)
    wins = sum(r["ga_val_acc"] > r["random_val_acc"] for r in per_seed)
    ties = sum(r["ga_val_acc"] == r["random_val_acc"] for r in per_seed)
    result: dict[str, Any] = {
        "quick": opts.quick,
        "ga_val_acc": round(ga_acc, 4),
        "random_val_acc": round(random_acc, 4),
        "mlp_val_acc": round(mlp_acc, 4),
        "evaluations": evaluations,
        "shakespeare_val_acc": round(shakes_acc, 4),
        "bigram_val_acc": round(bigram, 4),
        "aggregate": "mean over seeds of each search's best validation accuracy",
        "seeds": list(seeds),
        "ga_wins_ties_losses": [wins, ties, len(per_seed) - wins - ties],
        "val_rows": {"digits": len(digits.y_val), "shakespeare": len(shakes.y_val)},
        "mlp_val_acc_by_seed": dict(zip(map(str, mlp_seeds), mlp, strict=True)),
        "digits_by_seed": per_seed,
        "shakespeare_evaluations": shakes_state.evaluations,
        "shakespeare_best_per_generation": [round(max(g), 4) for g in shakes_state.history],
        "shakespeare_best": None if shakes_state.best is None else shakes_state.best.to_dict(),
        "timings_s": {
            "digits_ga_all_seeds": round(sum(r["ga_s"] for r in per_seed), 2),
            "digits_random_all_seeds": round(sum(r["random_s"] for r in per_seed), 2),
            "mlp_all_seeds": round(mlp_s, 2),
            "shakespeare_ga": round(shakes_s, 2),
        },
        "requests": {
            "digits": digits_request(opts.quick, seeds[0]),
            "shakespeare": shakes_req,
        },
        "workers": size,
        "environment": {"load_before": [round(x, 2) for x in load_before]},
    }
    by_seed = ", ".join(f"{r['ga_val_acc']:.4f}/{r['random_val_acc']:.4f}" for r in per_seed)
    result["bars"] = [
        bar(
            "GA on digits >= random search at equal evaluations",
            f"{ga_acc:.4f} vs {random_acc:.4f}, mean of {len(per_seed)} seeds "
            f"({evaluations} trainings each; per seed GA/random {by_seed})",
            ga_acc >= random_acc,
        ),
        bar(
            "GA on digits >= MLPClassifier defaults",
            f"{ga_acc:.4f} vs {mlp_acc:.4f} (MLP mean of {len(mlp)} seeds, "
            f"{min(mlp):.4f}..{max(mlp):.4f})",
            ga_acc >= mlp_acc,
        ),
        bar(
            "shakespeare GA beats the bigram-count baseline",
            f"{shakes_acc:.4f} vs {bigram:.4f}",
            shakes_acc > bigram,
        ),
    ]
    result["summary"] = _summary(result, digits, shakes)
    return result


def _summary(result: Mapping[str, Any], digits: PreparedDataset, shakes: PreparedDataset) -> str:
    d, s = result["requests"]["digits"], result["requests"]["shakespeare"]
    t = result["timings_s"]
    step = 1 / len(digits.y_val)
    return "\n".join(
        [
            f"digits: {len(digits.y_train)} train / {len(digits.y_val)} validation rows. GA "
            f"population {d['ga']['population']}, {d['ga']['generations']} generations, "
            f"up to {d['training']['epochs']} epochs per candidate, {result['evaluations']} "
            f"trainings per seed ({t['digits_ga_all_seeds']:.0f}s for all seeds); random "
            f"search the same number ({t['digits_random_all_seeds']:.0f}s). GA vs random "
            f"per seed, wins/ties/losses: {result['ga_wins_ties_losses']}.",
            "",
            f"shakespeare: context {s['dataset']['context']}, {len(shakes.y_train)} train / "
            f"{len(shakes.y_val)} validation windows, {len(shakes.vocabulary)} symbols. GA "
            f"population {s['ga']['population']}, {s['ga']['generations']} generations, "
            f"{result['shakespeare_evaluations']} trainings ({t['shakespeare_ga']:.0f}s).",
            "",
            "GA and random search both pick their best on the validation split they report "
            f"(one validation row is {step:.4f} of accuracy); the MLP baseline does no "
            "selection, so the GA-vs-MLP margin includes that selection effect.",
        ]
    )
