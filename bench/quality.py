"""The quality benchmark: GA vs random search vs Optuna's TPE, side by side.

Three searches over the same search space (the one `steps.ga_config` derives
from the request), with the same number of candidate trainings, the same
training (the compiled kernel on the interpreter pool, the same epochs and
batch sizes the genome asks for) and the same seeded train / validation /
test splits. Each selects its winner on validation accuracy only; the winner
is then retrained with its own recorded seed (so the same weights) and
measured once on the held-out test split.

* GA: `thunderhelm run`'s search with the request's settings, its defaults
  otherwise (what a user gets); `evaluations` of its run sets the budget.
* random search: that many distinct genomes from the engine's own generator
  (`initial_state` with `population` = the budget, a seed no GA run uses).
* TPE: Optuna's `TPESampler(seed)`, each trial's parameters mapped onto a
  genome of the same space, asked in batches of the GA's population size so
  it trains as many candidates at once as the GA does. Optuna is a
  benchmark-only extra (`pip install .[bench]`).

Tasks: `shakespeare` (next character from a window) and `spirals6`, six
interleaved noisy spiral arms, where depth, width and wiring decide how far a
network gets (nowhere near saturated). Mean ± sd over seeds and wins per seed
are reported whatever they are.
"""

import dataclasses
import json
import math
import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from bench.common import Options, cores, load_named, run_request, warm_pool
from bench.report import bar
from thunderhelm.ga.core.engine import GAConfig, candidate_training_seed, initial_state
from thunderhelm.ga.core.genome import Genome, Unit
from thunderhelm.ga.core.network import to_network
from thunderhelm.ga.core.space import SearchSpace
from thunderhelm.ga.pool import warmup
from thunderhelm.ga.pool.interpreter_pool import InterpreterPool
from thunderhelm.ga.training.artifact import Model, decode_weights
from thunderhelm.ga.training.candidate import parse_spec
from thunderhelm.ga.training.datasets import PreparedDataset
from thunderhelm.ga.training.evaluators import TRAIN_FUNCTION, PoolEvaluator
from thunderhelm.streams.execution import steps

__all__ = ["run"]

SEEDS = tuple(range(10))  # ten seeds: the gaps between methods are a few hundredths
RANDOM_SEED_OFFSET = 1_000_003  # random search's genomes come from a seed no GA run uses
TPE_SEED_OFFSET = 2_000_003
METHODS = ("ga", "random", "tpe")

Network = dict[str, Any]
Scored = tuple[float, Network]  # validation fitness, the network as trained


def task_requests(quick: bool) -> dict[str, dict[str, Any]]:
    """The request of each task; `ga.seed` is replaced per seed."""
    if quick:
        return {
            "spirals6": {
                "dataset": {"name": "spirals", "samples": 300, "classes": 3, "seed": 0},
                "ga": {"population": 3, "generations": 2, "tournament_size": 2},
                "training": {"epochs": 1, "batch_size": 64},
                "search_space": {"max_levels": 1, "max_units": 2, "max_neurons": 8},
            },
            "shakespeare": {
                "dataset": {"name": "shakespeare", "samples": 400, "context": 2, "seed": 0},
                "ga": {"population": 3, "generations": 2, "tournament_size": 2},
                "training": {"epochs": 1, "batch_size": 64},
                "search_space": {"max_levels": 1, "max_units": 1, "max_neurons": 8},
            },
        }
    return {
        "spirals6": {
            "dataset": {"name": "spirals", "samples": 3000, "classes": 6, "noise": 0.4, "seed": 0},
            "ga": {"population": 8, "generations": 5},
            "training": {"epochs": 10, "batch_size": 32},
            "search_space": {"max_levels": 3, "max_units": 3, "max_neurons": 48},
        },
        "shakespeare": {
            "dataset": {"name": "shakespeare", "samples": 16000, "context": 6, "seed": 0},
            "ga": {"population": 8, "generations": 5},
            "training": {"epochs": 4, "batch_size": 64},
            "search_space": {"max_levels": 2, "max_units": 2, "max_neurons": 96},
        },
    }


def _with_seed(request: Mapping[str, Any], seed: int) -> dict[str, Any]:
    return {**request, "ga": {**request["ga"], "seed": seed}}


def _score(results: Sequence[Mapping[str, Any]], networks: Sequence[Network]) -> list[Scored]:
    out = []
    for result, network in zip(results, networks, strict=True):
        fitness = result["fitness"]
        assert isinstance(fitness, float)  # the evaluator's contract: -inf when it failed
        out.append((fitness, network))
    return out


def ga_search(
    request: Mapping[str, Any], dataset: PreparedDataset, evaluate: PoolEvaluator
) -> tuple[Scored, int, list[float]]:
    state = run_request(request, dataset, evaluate)
    assert state.best is not None
    network = steps.best_network(
        request, state.best.to_dict(), dataset.n_features, dataset.n_classes
    )
    curve = [round(max(g), 4) for g in state.history]
    return (state.best.fitness, network), state.evaluations, curve


def random_search(
    request: Mapping[str, Any], dataset: PreparedDataset, evaluate: PoolEvaluator, n: int
) -> Scored:
    base = steps.ga_config(request)
    config = dataclasses.replace(base, population=n, elite=0, seed=base.seed + RANDOM_SEED_OFFSET)
    networks = [
        to_network(g, dataset.n_features, dataset.n_classes, candidate_training_seed(config, 0, i))
        for i, g in enumerate(initial_state(config).population)
    ]
    return max(_score(evaluate(networks), networks), key=lambda s: s[0])


def tpe_genome(trial: Any, space: SearchSpace) -> Genome:
    """One Optuna trial's parameters as a genome of `space` (the GA's own ranges)."""
    n_levels = trial.suggest_int("levels", space.min_levels, space.max_levels)
    levels = []
    for level in range(n_levels):
        n_units = trial.suggest_int(f"l{level}_units", space.min_units, space.max_units)
        levels.append(
            tuple(
                Unit(
                    trial.suggest_int(
                        f"l{level}_u{u}_neurons", space.min_neurons, space.max_neurons
                    ),
                    trial.suggest_categorical(f"l{level}_u{u}_activation", space.activations),
                )
                for u in range(n_units)
            )
        )
    return Genome(
        levels=tuple(levels),
        affinity=trial.suggest_float("affinity", *space.affinity_range),
        affinity_first=trial.suggest_float("affinity_first", *space.affinity_first_range),
        p_lateral=trial.suggest_float("p_lateral", *space.p_lateral_range),
        skip_depth=trial.suggest_int("skip_depth", *space.skip_depth_range),
        wiring_seed=trial.suggest_int("wiring_seed", 0, 2**32 - 1),
        learning_rate=trial.suggest_float("learning_rate", *space.learning_rate_range, log=True),
        epochs=trial.suggest_int("epochs", *space.epochs_range),
        batch_size=trial.suggest_categorical("batch_size", space.batch_sizes),
        weight_decay=trial.suggest_float("weight_decay", *space.weight_decay_range, log=True),
        decay=space.decay,
        max_lateral=space.max_lateral,
    )


def tpe_search(
    request: Mapping[str, Any], dataset: PreparedDataset, evaluate: PoolEvaluator, n: int
) -> Scored:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    base: GAConfig = steps.ga_config(request)
    config = dataclasses.replace(base, seed=base.seed + TPE_SEED_OFFSET)
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=config.seed)
    )
    scored: list[Scored] = []
    batch = 0
    while len(scored) < n:
        trials = [study.ask() for _ in range(min(config.population, n - len(scored)))]
        networks = [
            to_network(
                tpe_genome(t, config.space),
                dataset.n_features,
                dataset.n_classes,
                candidate_training_seed(config, batch, i),
            )
            for i, t in enumerate(trials)
        ]
        results = _score(evaluate(networks), networks)
        for trial, (fitness, _) in zip(trials, results, strict=True):
            study.tell(trial, fitness if math.isfinite(fitness) else 0.0)
        scored += results
        batch += 1
    return max(scored, key=lambda s: s[0])


def test_accuracy(network: Network, dataset: PreparedDataset, exporter: PoolEvaluator) -> float:
    """Retrain the winner (same seed, same weights) and measure it once on the test split."""
    (trained,) = exporter([network])
    if trained.get("status") != "ok":
        return 0.0
    weights = trained["weights"]
    assert isinstance(weights, list)
    model = Model(
        parse_spec(json.dumps(network)),
        decode_weights(weights),
        dataset.mean,
        dataset.scale,
        dataset.labels,
    )
    return float(model.evaluate(dataset.x_test, dataset.y_test, standardized=True)["accuracy"])


def _task(
    name: str,
    request: Mapping[str, Any],
    dataset: PreparedDataset,
    pool: InterpreterPool,
    seeds: Sequence[int],
) -> dict[str, Any]:
    per_seed = []
    with (
        PoolEvaluator(pool, dataset, deadline_s=3600.0) as evaluate,
        PoolEvaluator(pool, dataset, deadline_s=3600.0, export_weights=True) as exporter,
    ):
        for seed in seeds:
            req = _with_seed(request, seed)
            began = time.perf_counter()
            ga_best, n, curve = ga_search(req, dataset, evaluate)
            timings = {"ga": time.perf_counter() - began}
            searches: dict[str, Callable[..., Scored]] = {
                "random": random_search,
                "tpe": tpe_search,
            }
            best = {"ga": ga_best}
            for method, search in searches.items():
                began = time.perf_counter()
                best[method] = search(req, dataset, evaluate, n)
                timings[method] = time.perf_counter() - began
            row: dict[str, Any] = {"seed": seed, "trainings": n, "ga_best_per_generation": curve}
            for method in METHODS:
                row[f"{method}_val"] = round(best[method][0], 4)
                row[f"{method}_test"] = round(test_accuracy(best[method][1], dataset, exporter), 4)
                row[f"{method}_s"] = round(timings[method], 2)
            per_seed.append(row)
            print(f"quality {name} seed {seed}: {row}", flush=True)
    out: dict[str, Any] = {
        "trainings_per_search": per_seed[0]["trainings"],
        "rows": {
            "train": len(dataset.y_train),
            "validation": len(dataset.y_val),
            "test": len(dataset.y_test),
        },
        "seeds": list(seeds),
        "by_seed": per_seed,
        "request": dict(request),
        # The GA's operator settings: the request names none, so these are its defaults.
        "ga_config": {
            k: v
            for k, v in steps.ga_config(request).to_dict().items()
            if k not in ("seed", "space")
        },
    }
    for method in METHODS:
        for split in ("val", "test"):
            values = [r[f"{method}_{split}"] for r in per_seed]
            out[f"{method}_{split}_mean"] = round(statistics.mean(values), 4)
            out[f"{method}_{split}_sd"] = (
                round(statistics.stdev(values), 4) if len(values) > 1 else 0.0
            )
    for rival in ("random", "tpe"):
        wins = sum(r["ga_test"] > r[f"{rival}_test"] for r in per_seed)
        ties = sum(r["ga_test"] == r[f"{rival}_test"] for r in per_seed)
        out[f"ga_vs_{rival}_test_wins_ties_losses"] = [wins, ties, len(per_seed) - wins - ties]
    return out


def run(opts: Options) -> dict[str, Any]:
    load_before = os.getloadavg()
    size = opts.pool_size or cores()
    seeds = SEEDS[:2] if opts.quick else SEEDS
    requests = task_requests(opts.quick)
    tasks: dict[str, dict[str, Any]] = {}
    began = time.perf_counter()
    with InterpreterPool(size, allowed=(TRAIN_FUNCTION, warmup.FUNCTION)) as pool:
        warm_pool(pool)
        for name, request in requests.items():
            tasks[name] = _task(name, request, load_named(request["dataset"]), pool, seeds)
    result: dict[str, Any] = {
        "quick": opts.quick,
        "evaluations": tasks["shakespeare"]["trainings_per_search"],
        "tasks": tasks,
        "aggregate": "mean ± sd over seeds of the test accuracy of each search's winner "
        "(selected on validation only)",
        "workers": size,
        "wall_s": round(time.perf_counter() - began, 1),
        "environment": {"load_before": [round(x, 2) for x in load_before]},
    }
    for name, task in tasks.items():
        for method in METHODS:
            result[f"{name}_{method}_test_mean"] = task[f"{method}_test_mean"]
    bars = []
    for name, t in tasks.items():
        figures = (
            f"GA {t['ga_test_mean']:.4f} ± {t['ga_test_sd']:.4f}, TPE {t['tpe_test_mean']:.4f} "
            f"± {t['tpe_test_sd']:.4f}, random {t['random_test_mean']:.4f} ± "
            f"{t['random_test_sd']:.4f} ({len(t['seeds'])} seeds, "
            f"{t['trainings_per_search']} trainings each)"
        )
        bars.append(
            bar(f"{name}: GA test mean >= TPE's", figures, t["ga_test_mean"] >= t["tpe_test_mean"])
        )
        bars.append(
            bar(
                f"{name}: GA test mean > random search's",
                f"wins/ties/losses vs random {t['ga_vs_random_test_wins_ties_losses']}, "
                f"vs TPE {t['ga_vs_tpe_test_wins_ties_losses']}",
                t["ga_test_mean"] > t["random_test_mean"],
            )
        )
    result["bars"] = bars
    result["summary"] = _summary(tasks)
    return result


def _summary(tasks: Mapping[str, Mapping[str, Any]]) -> str:
    lines = [
        "Each search selects on validation only; each winner is retrained with its own seed "
        "and measured once on the held-out test split. Equal trainings per search.",
        "",
        "| task | rows train/val/test | trainings | GA val | random val | TPE val "
        "| GA test | random test | TPE test | GA vs random (w/t/l) | GA vs TPE (w/t/l) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, t in tasks.items():
        rows = t["rows"]

        def cell(method: str, split: str, t: Mapping[str, Any] = t) -> str:
            return f"{t[f'{method}_{split}_mean']:.4f} ± {t[f'{method}_{split}_sd']:.4f}"

        lines.append(
            f"| {name} | {rows['train']}/{rows['validation']}/{rows['test']} "
            f"| {t['trainings_per_search']} | {cell('ga', 'val')} | {cell('random', 'val')} "
            f"| {cell('tpe', 'val')} | {cell('ga', 'test')} | {cell('random', 'test')} "
            f"| {cell('tpe', 'test')} | {t['ga_vs_random_test_wins_ties_losses']} "
            f"| {t['ga_vs_tpe_test_wins_ties_losses']} |"
        )
    lines += ["", "How much of a gap is a finding: the standard error of a test mean is sd/√seeds."]
    for name, t in tasks.items():
        n = len(t["seeds"])
        se = {m: t[f"{m}_test_sd"] / math.sqrt(n) for m in METHODS}
        gaps = ", ".join(
            f"GA minus {rival} {t['ga_test_mean'] - t[f'{rival}_test_mean']:+.4f} "
            f"(standard error of the gap {math.hypot(se['ga'], se[rival]):.4f})"
            for rival in ("random", "tpe")
        )
        lines.append(f"- {name}: {gaps}.")
    return "\n".join(lines)
