"""The quality benchmark: the product's final model against the samplers users would pick.

Every method searches the same space (the one `steps.ga_config` derives from
the request) with the same training work, in epoch-equivalents (one pass
over the training rows; a training stopped at a rung counts the epochs it
ran), the same kernel on the interpreter pool and the same seeded train /
validation / test splits. The plain GA's work at its request's generations
is the budget: every other search goes on in batches of the GA's population
until its own work reaches it (the product's `budget.max_work` also stops at
a generation's end). Each selects on validation only; what it delivers is
retrained with its members' own recorded seeds (so the same weights) and
measured once on the held-out test split.

* default: what `thunderhelm run` delivers with its defaults: the GA's search
  with its successive-halving rungs (ga/core/fidelity.py), then the final
  model (`streams/execution/final_model.py`): its top 5 distinct networks
  averaged, unless the best alone is better on validation.
* ga_ensemble: the GA without rungs, then the same final model: what the
  rungs add at equal work.
* ga: the GA without rungs, its best network alone (the product before its
  final model).
* random: distinct genomes from the engine's own generator, the best alone.
* random_sh: the same random genomes under the product's rung rule (an
  asynchronous successive halving, as ASHA), the best that ran every epoch.
* tpe_hyperband: Optuna's `TPESampler(multivariate=True, group=True)` with
  its `HyperbandPruner` fed each epoch's validation accuracy; each trial's
  parameters are mapped onto a genome of the same space, asked in batches of
  the GA's population size. A trial is trained to its end and its curve is
  reported epoch by epoch, so the pruner's decisions are the ones it would
  take live (the kernel is deterministic: the epochs before a prune are the
  same either way); a pruned trial counts only the epochs before its prune.
  The best completed trial alone.
* tpe_hyperband_ensemble: the do-it-yourself rival: the same trials, their
  top 5 completed ones averaged by the product's own rule.

`work_to_match_plain_ga` is the default's share of the plain GA's work at
which its deliverable (the final model built from the leaders of that
moment) first reaches the plain GA's final test mean, checked after every
generation (mean over seeds of the test accuracy and of the work share at
that generation). A network the final model retrains at several
checkpoints is trained once (`_Memo`: the kernel is deterministic).

Tasks: `shakespeare`, `spirals6` (six noisy spiral arms), three tables
made from scikit-learn's bundled data and generators: `cancer` (569 rows,
30 features, 2 classes), `blobs4` (1,500 rows, 20 features, 4 classes,
10 % flipped labels) and `wide3` (2,400 rows, 60 features, 8 informative,
3 classes), and one regression task, `friedman` (scikit-learn's Friedman #1
formula, 2,000 rows, noise 1.0), whose figure is R² where the others' is
accuracy (`measure` per task; every search maximises the run's fitness,
`val_r2` there). Mean ± sd over seeds, paired wins and Wilcoxon p are
reported whatever they are.
"""

import dataclasses
import json
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import Options, cores, warm_pool
from bench.report import bar
from thunderhelm.ga.core import measures
from thunderhelm.ga.core.engine import (
    GAConfig,
    GAState,
    candidate_training_seed,
    initial_state,
    work_of,
)
from thunderhelm.ga.core.fidelity import Fidelity, recorded, with_rungs
from thunderhelm.ga.core.genome import Genome, Unit
from thunderhelm.ga.core.network import to_network
from thunderhelm.ga.core.search import run_search
from thunderhelm.ga.core.space import SearchSpace
from thunderhelm.ga.pool import warmup
from thunderhelm.ga.pool.interpreter_pool import InterpreterPool
from thunderhelm.ga.training.artifact import model_from_training
from thunderhelm.ga.training.datasets import PreparedDataset, load_dataset
from thunderhelm.ga.training.evaluators import TRAIN_FUNCTION, PoolEvaluator
from thunderhelm.streams.config.settings import Settings
from thunderhelm.streams.execution import final_model, steps

__all__ = ["run"]

SEEDS = tuple(range(10))
RANDOM_SEED_OFFSET = 1_000_003  # random search's genomes come from a seed no GA run uses
TPE_SEED_OFFSET = 2_000_003
BATCH_SEED_STRIDE = 7_919  # each random batch draws from its own seed
METHODS = (
    "default",
    "ga_ensemble",
    "ga",
    "random",
    "random_sh",
    "tpe_hyperband",
    "tpe_hyperband_ensemble",
)
DEFAULT_METHOD = "default"
DELIVERS = {
    "default": "ensemble",
    "ga_ensemble": "ensemble",
    "ga": "single",
    "random": "single",
    "random_sh": "single",
    "tpe_hyperband": "single",
    "tpe_hyperband_ensemble": "ensemble",
}
SINGLE_RIVALS = ("ga", "random", "random_sh", "tpe_hyperband")

Network = dict[str, Any]
# Trains networks with their weights exported (a PoolEvaluator, or `_Memo` over one).
Export = Callable[[list[Network]], Sequence[Mapping[str, Any]]]


@dataclass(frozen=True)
class Trained:
    fitness: float  # on validation, at its last epoch run; -inf when the training failed
    network: Network  # as trained, without rungs
    work: float  # epoch-equivalents it trained
    complete: bool  # it ran every epoch (no rung or pruner stopped it)


@dataclass(frozen=True)
class Delivered:
    val: float  # the validation accuracy the method reports for what it delivers
    test: float
    work: float  # of the final retrainings
    members: int


def task_requests(quick: bool) -> dict[str, dict[str, Any]]:
    """The request of each task; `ga.seed` is replaced per seed."""
    if quick:
        tiny = {
            "ga": {"population": 3, "generations": 2, "tournament_size": 2},
            "training": {"epochs": 2, "batch_size": 64},
            "search_space": {"max_levels": 1, "max_units": 2, "max_neurons": 8},
            "final_model": {"ensemble_size": 2},
            "fidelity": {"min_figures": 2},
        }
        return {
            "spirals6": {
                **tiny,
                "dataset": {"name": "spirals", "samples": 300, "classes": 3, "seed": 0},
            },
            "shakespeare": {
                **tiny,
                "dataset": {"name": "shakespeare", "samples": 400, "context": 2, "seed": 0},
            },
            "cancer": {**tiny, "dataset": {"name": "npz", "path": "cancer.npz", "seed": 0}},
            "friedman": {
                **tiny,
                "dataset": {"name": "friedman1", "samples": 300, "noise": 1.0, "seed": 0},
            },
        }
    table = {
        "ga": {"population": 8, "generations": 5},
        "training": {"epochs": 10, "batch_size": 32},
        "search_space": {"max_levels": 3, "max_units": 3, "max_neurons": 48},
    }
    return {
        "spirals6": {
            **table,
            "dataset": {"name": "spirals", "samples": 3000, "classes": 6, "noise": 0.4, "seed": 0},
        },
        "shakespeare": {
            "dataset": {"name": "shakespeare", "samples": 16000, "context": 6, "seed": 0},
            "ga": {"population": 8, "generations": 5},
            "training": {"epochs": 4, "batch_size": 64},
            "search_space": {"max_levels": 2, "max_units": 2, "max_neurons": 96},
        },
        "cancer": {**table, "dataset": {"name": "npz", "path": "cancer.npz", "seed": 0}},
        "blobs4": {**table, "dataset": {"name": "npz", "path": "blobs4.npz", "seed": 0}},
        "wide3": {**table, "dataset": {"name": "npz", "path": "wide3.npz", "seed": 0}},
        "friedman": {
            **table,
            "dataset": {"name": "friedman1", "samples": 2000, "noise": 1.0, "seed": 0},
        },
    }


def write_tables(root: Path) -> None:
    """The tabular tasks as npz files (`x`, `y`) from data scikit-learn ships."""
    from sklearn.datasets import load_breast_cancer, make_classification

    cancer = load_breast_cancer()
    np.savez(root / "cancer.npz", x=cancer.data, y=cancer.target)
    x, y = make_classification(
        n_samples=1500, n_features=20, n_informative=6, n_redundant=4, n_classes=4,
        n_clusters_per_class=2, flip_y=0.1, class_sep=0.8, random_state=7,
    )  # fmt: skip
    np.savez(root / "blobs4.npz", x=x, y=y)
    x, y = make_classification(
        n_samples=2400, n_features=60, n_informative=8, n_redundant=6, n_classes=3,
        n_clusters_per_class=3, flip_y=0.03, class_sep=1.0, random_state=11,
    )  # fmt: skip
    np.savez(root / "wide3.npz", x=x, y=y)


def figure_of(figures: Mapping[str, Any]) -> float:
    """A task's figure from a model's figures: R² for regression, else accuracy."""
    return float(figures["r2"] if "r2" in figures else figures["accuracy"])


def _with_seed(request: Mapping[str, Any], seed: int) -> dict[str, Any]:
    return {**request, "ga": {**request["ga"], "seed": seed}}


def _without_rungs(request: Mapping[str, Any]) -> dict[str, Any]:
    return {**request, "fidelity": {**request.get("fidelity", {}), "rungs": False}}


def _trained(results: Sequence[Mapping[str, Any]], networks: Sequence[Network]) -> list[Trained]:
    out = []
    for result, network in zip(results, networks, strict=True):
        fitness = result["fitness"]
        assert isinstance(fitness, float)  # the evaluator's contract: -inf when it failed
        bare = {k: v for k, v in network.items() if k != "rungs"}
        complete = result.get("pruned_at") is None and result.get("status") == "ok"
        out.append(Trained(fitness, bare, work_of(result), complete))
    return out


def ga_search(
    request: Mapping[str, Any],
    dataset: PreparedDataset,
    evaluate: PoolEvaluator,
    budget: float | None,
) -> tuple[GAState, list[GAState]]:
    """The GA of `request`: its generations (budget None), or generations until `budget`.

    Returns the last state and the state after every generation.
    """
    config = steps.ga_config(request)
    state, states = initial_state(config), []
    while (state.generation < config.generations) if budget is None else (state.work < budget):
        one_more = dataclasses.replace(config, generations=state.generation + 1)
        state = run_search(one_more, dataset.n_features, dataset.n_classes, evaluate, start=state)
        states.append(state)
    return state, states


def _random_batch(config: GAConfig, batch: int, dataset: PreparedDataset) -> list[Network]:
    seed = config.seed + RANDOM_SEED_OFFSET + BATCH_SEED_STRIDE * batch
    drawn = dataclasses.replace(config, elite=0, seed=seed)
    return [
        to_network(g, dataset.n_features, dataset.n_classes, candidate_training_seed(drawn, 0, i))
        for i, g in enumerate(initial_state(drawn).population)
    ]


def random_search(
    request: Mapping[str, Any],
    dataset: PreparedDataset,
    evaluate: PoolEvaluator,
    budget: float,
    fidelity: Fidelity | None,
) -> list[Trained]:
    """Random genomes in batches until `budget`; under `fidelity`'s rungs when given."""
    config = steps.ga_config(request)
    scored: list[Trained] = []
    figures: dict[int, tuple[float, ...]] = {}
    batch = 0
    while sum(t.work for t in scored) < budget:
        networks = [with_rungs(n, figures, fidelity) for n in _random_batch(config, batch, dataset)]
        results = list(evaluate(networks))
        scored += _trained(results, networks)
        if fidelity is not None:
            curves = [r.get("curve") for r in results]
            figures = recorded(figures, [c for c in curves if isinstance(c, list)], fidelity)
        batch += 1
    return scored


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


def tpe_hyperband_search(
    request: Mapping[str, Any], dataset: PreparedDataset, evaluate: PoolEvaluator, budget: float
) -> list[Trained]:
    """Optuna TPE with its Hyperband pruner, fed each trial's learning curve epoch by epoch."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    base: GAConfig = steps.ga_config(request)
    config = dataclasses.replace(base, seed=base.seed + TPE_SEED_OFFSET)
    sampler = optuna.samplers.TPESampler(seed=config.seed, multivariate=True, group=True)
    pruner = optuna.pruners.HyperbandPruner(
        min_resource=1, max_resource=config.space.epochs_range[1]
    )
    # Named by its seed: Hyperband puts each trial in a bracket by a hash of the
    # study's name, and Optuna's default name is random, so the rival's
    # figures moved by up to 0.011 between two runs of the same seeds.
    study = optuna.create_study(
        study_name=f"quality-tpe-{config.seed}",
        direction="maximize",
        sampler=sampler,
        pruner=pruner,
    )
    scored: list[Trained] = []
    batch = 0
    while sum(t.work for t in scored) < budget:
        trials = [study.ask() for _ in range(config.population)]
        networks = [
            to_network(
                tpe_genome(t, config.space),
                dataset.n_features,
                dataset.n_classes,
                candidate_training_seed(config, batch, i),
            )
            for i, t in enumerate(trials)
        ]
        results = list(evaluate(networks))
        measure = steps.fitness_name(request)
        for trial, network, result in zip(trials, networks, results, strict=True):
            scored.append(_replayed(study, trial, network, result, measure))
        batch += 1
    return scored


def _replayed(
    study: Any, trial: Any, network: Network, result: Mapping[str, Any], measure: str
) -> Trained:
    """Report a finished training's curve of `measure` to its trial (negated where lower
    is better: the study maximises); pruned: the work before the prune."""
    import optuna

    sign = 1.0 if measures.higher_is_better(measure) else -1.0

    curve = list(result.get("curve") or [])
    if result.get("status") != "ok" or not curve:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return Trained(-math.inf, network, work_of(result), False)
    for point in curve:
        epoch, value = int(point["epoch"]), sign * float(point[measure])
        trial.report(value, step=epoch)
        if epoch < len(curve) and trial.should_prune():
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            return Trained(value, network, float(epoch), False)
    final = float(result["fitness"])
    study.tell(trial, final if math.isfinite(final) else 0.0)
    return Trained(final, network, work_of(result), True)


def deliver(
    request: Mapping[str, Any],
    nets: Sequence[Network],
    dataset: PreparedDataset,
    exporter: Export,
    *,
    search_val: float,
) -> Delivered:
    """What a method delivers from `nets` (best first), measured once on the test split.

    One network: it alone, retrained with its seed, reporting the search's
    validation score as a single-network search does. Several: the product's
    final model (`final_model.build`): each also retrained from a fresh seed,
    re-ranked on both, averaged unless the best alone is clearly better, and
    reported by the fresh-seed estimate.
    """
    if len(nets) == 1:
        alone: Mapping[str, Any] = exporter(list(nets))[0]
        work = work_of(alone)
        if alone.get("status") != "ok" or not alone.get("weights"):
            return Delivered(search_val, 0.0, work, 0)
        model = model_from_training(nets[0], alone["weights"], dataset, request)
        test = figure_of(model.figures(dataset.x_test, dataset.y_test, standardized=True))
        return Delivered(search_val, test, work, 1)
    finalists = [{"generation": 0, "index": i} for i in range(len(nets))]
    fresh = final_model.reevaluation_networks(request, finalists, nets)
    trained: list[Mapping[str, Any]] = list(exporter([*nets, *fresh]))
    work = float(sum(work_of(t) for t in trained))
    pairs = [
        (n, t, a)
        for n, t, a in zip(nets, trained[: len(nets)], trained[len(nets) :], strict=True)
        if t.get("status") == "ok" and t.get("weights")
    ]
    if not pairs:
        return Delivered(search_val, 0.0, work, 0)
    models = [model_from_training(n, t["weights"], dataset, request) for n, t, _ in pairs]
    seconds = [
        model_from_training(n, a["weights"], dataset, request)
        if a.get("status") == "ok" and a.get("weights")
        else None
        for n, _, a in pairs
    ]
    predictor, selection, delivered = final_model.build(request, models, seconds, dataset)
    estimated = selection["estimate"]
    val = figure_of(estimated or selection["validation"][selection["chosen"]])
    test = figure_of(predictor.figures(dataset.x_test, dataset.y_test, standardized=True))
    return Delivered(val, test, work, len(delivered))


class _Memo:
    """The exporter's trainings kept by network (genome, wiring, seed, settings).

    The kernel is deterministic, so a network retrained again at a later
    checkpoint would get the weights it got before: it is trained once.
    """

    def __init__(self, exporter: PoolEvaluator) -> None:
        self.exporter = exporter
        self.trained: dict[str, Mapping[str, Any]] = {}

    def __call__(self, nets: list[Network]) -> list[Mapping[str, Any]]:
        keys = [json.dumps(n, sort_keys=True) for n in nets]
        missing = {k: n for k, n in zip(keys, nets, strict=True) if k not in self.trained}
        for key, got in zip(missing, self.exporter(list(missing.values())), strict=True):
            self.trained[key] = got
        return [self.trained[k] for k in keys]


def _top(scored: Sequence[Trained], k: int, *, complete: bool = False) -> list[Trained]:
    ok = [s for s in scored if math.isfinite(s.fitness) and (s.complete or not complete)]
    return sorted(ok, key=lambda s: -s.fitness)[:k]


def _ga_nets(request: Mapping[str, Any], state: GAState, dataset: PreparedDataset) -> list[Network]:
    ga_state = state.to_dict()
    chosen = final_model.finalists(request, ga_state, ga_state["best"])
    return final_model.networks(request, chosen, dataset.n_features, dataset.n_classes)


def _seed_row(
    request: Mapping[str, Any],
    dataset: PreparedDataset,
    evaluate: PoolEvaluator,
    exporter: PoolEvaluator,
) -> dict[str, Any]:
    size = int(request.get("final_model", {}).get("ensemble_size", 5))
    out: dict[str, dict[str, Any]] = {}

    def record(method: str, got: Delivered, search: float, seconds: float, n: int) -> None:
        out[method] = {
            "val": round(got.val, 4),
            "test": round(got.test, 4),
            "work": round(search, 2),
            "final_work": round(got.work, 2),
            "trainings": n,
            "members": got.members,
            "s": round(seconds, 2),
        }

    began = time.perf_counter()
    plain = _without_rungs(request)
    state, states = ga_search(plain, dataset, evaluate, None)
    assert state.best is not None
    budget = state.work
    got = deliver(plain, _ga_nets(plain, state, dataset)[:1], dataset, exporter,
                  search_val=state.best.fitness)  # fmt: skip
    record("ga", got, state.work, time.perf_counter() - began, state.evaluations)
    got = deliver(plain, _ga_nets(plain, state, dataset), dataset, exporter,
                  search_val=state.best.fitness)  # fmt: skip
    record("ga_ensemble", got, state.work, time.perf_counter() - began, state.evaluations)

    began = time.perf_counter()
    state, states = ga_search(request, dataset, evaluate, budget)
    assert state.best is not None
    memo = _Memo(exporter)
    got = deliver(request, _ga_nets(request, state, dataset), dataset, memo,
                  search_val=state.best.fitness)  # fmt: skip
    record("default", got, state.work, time.perf_counter() - began, state.evaluations)
    anytime = []
    for at in states[:-1]:  # the last is the default's own deliverable
        early = deliver(request, _ga_nets(request, at, dataset), dataset, memo,
                        search_val=at.best.fitness if at.best else 0.0)  # fmt: skip
        anytime.append({"generation": at.generation, "work": round(at.work / budget, 4),
                        "test": early.test})  # fmt: skip
    out["default"]["anytime"] = anytime

    fidelity = steps.fidelity_of(request)
    for method, rungs in (("random", None), ("random_sh", fidelity)):
        began = time.perf_counter()
        scored = random_search(request, dataset, evaluate, budget, rungs)
        (best,) = _top(scored, 1, complete=rungs is not None) or _top(scored, 1)
        got = deliver(request, [best.network], dataset, exporter, search_val=best.fitness)
        seconds = time.perf_counter() - began
        record(method, got, sum(t.work for t in scored), seconds, len(scored))

    began = time.perf_counter()
    scored = tpe_hyperband_search(request, dataset, evaluate, budget)
    work = sum(t.work for t in scored)
    top = _top(scored, size, complete=True) or _top(scored, size)
    got = deliver(request, [top[0].network], dataset, exporter, search_val=top[0].fitness)
    record("tpe_hyperband", got, work, time.perf_counter() - began, len(scored))
    got = deliver(request, [t.network for t in top], dataset, exporter, search_val=top[0].fitness)
    record("tpe_hyperband_ensemble", got, work, time.perf_counter() - began, len(scored))
    return {"budget": round(budget, 2), "methods": out}


def _wilcoxon(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided paired Wilcoxon signed-rank p (1.0 when every pair ties)."""
    from scipy.stats import wilcoxon

    if all(x == y for x, y in zip(a, b, strict=True)):
        return 1.0
    return float(wilcoxon(a, b, zero_method="wilcox").pvalue)


def _task(
    name: str,
    request: Mapping[str, Any],
    dataset: PreparedDataset,
    pool: InterpreterPool,
    seeds: Sequence[int],
) -> dict[str, Any]:
    per_seed = []
    fitness = steps.fitness_of(request)  # val_r2 for a regression task
    with (
        PoolEvaluator(pool, dataset, deadline_s=3600.0, fitness=fitness) as evaluate,
        PoolEvaluator(
            pool, dataset, deadline_s=3600.0, export_weights=True, fitness=fitness
        ) as exporter,
    ):
        for seed in seeds:
            row = {
                "seed": seed,
                **_seed_row(_with_seed(request, seed), dataset, evaluate, exporter),
            }
            per_seed.append(row)
            brief = {m: (v["val"], v["test"]) for m, v in row["methods"].items()}
            print(f"quality {name} seed {seed}: {brief}", flush=True)
    methods: dict[str, dict[str, Any]] = {}
    anytime = _anytime(per_seed)
    default_test = [r["methods"][DEFAULT_METHOD]["test"] for r in per_seed]
    for method in METHODS:
        test = [r["methods"][method]["test"] for r in per_seed]
        val = [r["methods"][method]["val"] for r in per_seed]
        work = [r["methods"][method]["work"] for r in per_seed]
        entry: dict[str, Any] = {
            "delivers": DELIVERS[method],
            "test_mean": round(statistics.mean(test), 4),
            "test_sd": round(statistics.stdev(test), 4) if len(test) > 1 else 0.0,
            "val_mean": round(statistics.mean(val), 4),
            "optimism_mean": round(
                statistics.mean(v - t for v, t in zip(val, test, strict=True)), 4
            ),
            "work_mean": round(statistics.mean(work), 1),
        }
        if method != DEFAULT_METHOD:
            entry["p_vs_default"] = round(_wilcoxon(test, default_test), 4)
            entry["wins_vs_default"] = sum(t > d for t, d in zip(test, default_test, strict=True))
            entry["losses_vs_default"] = sum(t < d for t, d in zip(test, default_test, strict=True))
        methods[method] = entry
    return {
        "measure": "r2" if dataset.task == "regression" else "accuracy",
        "budget_work_mean": round(statistics.mean(r["budget"] for r in per_seed), 2),
        "trainings_mean": {
            m: round(statistics.mean(r["methods"][m]["trainings"] for r in per_seed), 1)
            for m in METHODS
        },
        "rows": {
            "train": len(dataset.y_train),
            "validation": len(dataset.y_val),
            "test": len(dataset.y_test),
        },
        "seeds": list(seeds),
        "by_seed": per_seed,
        "request": dict(request),
        "methods": methods,
        "anytime": anytime,
        "work_to_match_plain_ga": _work_to_match(per_seed, methods, anytime),
    }


def _anytime(per_seed: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The default's deliverable after each generation every seed ran, mean over seeds."""
    out = []
    for position in range(min(len(r["methods"][DEFAULT_METHOD]["anytime"]) for r in per_seed)):
        points = [r["methods"][DEFAULT_METHOD]["anytime"][position] for r in per_seed]
        out.append(
            {
                "generation": points[0]["generation"],
                "work_share_mean": round(statistics.mean(p["work"] for p in points), 4),
                "test_mean": round(statistics.mean(p["test"] for p in points), 4),
            }
        )
    return out


def _work_to_match(
    per_seed: Sequence[Mapping[str, Any]],
    methods: Mapping[str, Mapping[str, Any]],
    anytime: Sequence[Mapping[str, Any]],
) -> float | None:
    """The default's share of the plain GA's work at which it first reaches the GA's test mean."""
    target = float(methods["ga"]["test_mean"])
    for point in anytime:
        if point["test_mean"] >= target:
            return float(point["work_share_mean"])
    if methods[DEFAULT_METHOD]["test_mean"] >= target:
        shares = [r["methods"][DEFAULT_METHOD]["work"] / r["budget"] for r in per_seed]
        return float(round(statistics.mean(shares), 4))
    return None


def run(opts: Options) -> dict[str, Any]:
    load_before = os.getloadavg()
    size = opts.pool_size or cores()
    seeds = SEEDS[:2] if opts.quick else SEEDS
    requests = task_requests(opts.quick)
    tasks: dict[str, dict[str, Any]] = {}
    began = time.perf_counter()
    settings = Settings.from_env()
    with (
        tempfile.TemporaryDirectory(prefix="thunderhelm-quality-") as tables,
        InterpreterPool(size, allowed=(TRAIN_FUNCTION, warmup.FUNCTION)) as pool,
    ):
        write_tables(Path(tables))
        warm_pool(pool)
        for name, request in requests.items():
            dataset = load_dataset(
                request["dataset"], data_root=Path(tables), text_dir=settings.text_dir
            )
            tasks[name] = _task(name, request, dataset, pool, seeds)
    result: dict[str, Any] = {
        "quick": opts.quick,
        "default_method": DEFAULT_METHOD,
        "evaluations": tasks["shakespeare"]["trainings_mean"]["ga"],
        "budget": "the plain GA's training work at its generations, in epoch-equivalents; "
        "every other search goes on until its own work reaches it",
        "tasks": tasks,
        "aggregate": "mean ± sd over seeds of the test accuracy (R² for a regression task) of "
        "what each method delivers (selected on validation only)",
        "workers": size,
        "wall_s": round(time.perf_counter() - began, 1),
        "environment": {"load_before": [round(x, 2) for x in load_before]},
    }
    for name, task in tasks.items():
        for method in METHODS:
            result[f"{name}_{method}_test_mean"] = task["methods"][method]["test_mean"]
    result["bars"] = _bars(tasks)
    result["summary"] = _summary(tasks)
    return result


def _bars(tasks: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    bars = []
    below_005 = 0
    for name, t in tasks.items():
        m = t["methods"]
        best_rival = max(
            (r for r in METHODS if r != DEFAULT_METHOD), key=lambda r: m[r]["test_mean"]
        )
        above = all(
            m[DEFAULT_METHOD]["test_mean"] > m[r]["test_mean"] for r in m if r != DEFAULT_METHOD
        )
        figures = ", ".join(f"{r} {m[r]['test_mean']:.4f} ± {m[r]['test_sd']:.4f}" for r in METHODS)
        bars.append(bar(f"{name}: the default's test mean above every rival's", figures, above))
        single = max(SINGLE_RIVALS, key=lambda r: m[r]["test_mean"])
        p = m[single]["p_vs_default"]
        below_005 += p < 0.05 and m[DEFAULT_METHOD]["test_mean"] > m[single]["test_mean"]
        bars.append(
            bar(
                f"{name}: Wilcoxon p vs the best single-network rival ({single})",
                f"p {p:.4f}; best rival overall {best_rival}",
                None,
            )
        )
    bars.append(
        bar(
            "p < 0.05 against the best single-network rival on at least three tasks",
            f"{below_005} of {len(tasks)} tasks",
            below_005 >= 3,
        )
    )
    ga_opt = statistics.mean(t["methods"]["ga"]["optimism_mean"] for t in tasks.values())
    default_opt = statistics.mean(
        t["methods"][DEFAULT_METHOD]["optimism_mean"] for t in tasks.values()
    )
    bars.append(
        bar(
            "reported accuracy overstates test by at most half the plain GA's optimism",
            f"default {default_opt:+.4f}, plain GA {ga_opt:+.4f} (mean over tasks)",
            default_opt <= ga_opt / 2,
        )
    )
    shares = [t["work_to_match_plain_ga"] for t in tasks.values()]
    reached = [x for x in shares if x is not None]
    bars.append(
        bar(
            "the default reaches the plain GA's final test mean with at most half its work "
            "(mean over tasks)",
            ", ".join(
                f"{n} {'not reached' if x is None else f'{x:.2f}'}"
                for n, x in zip(tasks, shares, strict=True)
            ),
            len(reached) == len(shares) and statistics.mean(reached) <= 0.5,
        )
    )
    return bars


def _summary(tasks: Mapping[str, Mapping[str, Any]]) -> str:
    lines = [
        "Each method selects on validation only; what it delivers is retrained with its own "
        "seeds and measured once on the held-out test split. Equal training work per search "
        "(epoch-equivalents: passes over the training rows), the plain GA's at its generations; "
        "the final retrainings are counted apart.",
        "",
        "| task | rows train/val/test | budget | "
        + " | ".join(f"{m} test" for m in METHODS)
        + " | "
        + " | ".join(f"{m} p / wins-losses" for m in METHODS if m != DEFAULT_METHOD)
        + " |",
        "|---|---|---|" + "---|" * (2 * len(METHODS) - 1),
    ]
    for name, t in tasks.items():
        rows, m = t["rows"], t["methods"]
        tests = " | ".join(f"{m[x]['test_mean']:.4f} ± {m[x]['test_sd']:.4f}" for x in METHODS)
        rivals = " | ".join(
            f"{m[x]['p_vs_default']:.3f} / {m[x]['wins_vs_default']}-{m[x]['losses_vs_default']}"
            for x in METHODS
            if x != DEFAULT_METHOD
        )
        lines.append(
            f"| {name} | {rows['train']}/{rows['validation']}/{rows['test']} "
            f"| {t['budget_work_mean']:.0f} | {tests} | {rivals} |"
        )
    lines += [
        "",
        "Optimism (reported validation minus test accuracy), search work and trainings per search:",
        "",
        "| task | " + " | ".join(f"{m} optimism / work / trainings" for m in METHODS) + " |",
        "|---|" + "---|" * len(METHODS),
    ]
    for name, t in tasks.items():
        m = t["methods"]
        cells = " | ".join(
            f"{m[x]['optimism_mean']:+.4f} / {m[x]['work_mean']:.0f} / {t['trainings_mean'][x]:.0f}"
            for x in METHODS
        )
        lines.append(f"| {name} | {cells} |")
    return "\n".join(lines)
