"""The quality benchmark: the product's final model against the samplers users would pick.

Every method searches the same space (the one `steps.ga_config` derives from
the request) with the same number of candidate trainings, the same training
(the compiled kernel on the interpreter pool, the epochs and batch sizes the
genome asks for) and the same seeded train / validation / test splits. Each
selects on validation only; what it delivers is retrained with its members'
own recorded seeds (so the same weights) and measured once on the held-out
test split.

* default: what `thunderhelm run` delivers with its defaults: the GA's
  search, then the final model (`streams/execution/final_model.py`): its top
  5 distinct networks averaged, unless the best alone is better on
  validation.
* ga: the same GA search, its best network alone (the product before the
  final model).
* random: that many distinct genomes from the engine's own generator, the
  best alone.
* tpe: Optuna's `TPESampler(multivariate=True, group=True)`, each trial's
  parameters mapped onto a genome of the same space, asked in batches of the
  GA's population size; the best alone.
* tpe_ensemble: the do-it-yourself rival: the same TPE trials, their top 5
  averaged by the product's own rule.

"work" is training work, rows * epochs summed over every training a method
ran, the final retrainings included. Multi-fidelity rivals (Hyperband,
successive halving) are not measured: the product does not train
candidates on partial budgets yet.

Tasks: `shakespeare`, `spirals6` (six noisy spiral arms), and three tables
made from scikit-learn's bundled data and generators: `cancer` (569 rows,
30 features, 2 classes), `blobs4` (1,500 rows, 20 features, 4 classes,
10 % flipped labels) and `wide3` (2,400 rows, 60 features, 8 informative,
3 classes). Mean ± sd over seeds, paired wins and Wilcoxon p are reported
whatever they are.
"""

import dataclasses
import math
import os
import statistics
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import Options, cores, run_request, warm_pool
from bench.report import bar
from thunderhelm.ga.core.engine import GAConfig, candidate_training_seed, initial_state
from thunderhelm.ga.core.genome import Genome, Unit
from thunderhelm.ga.core.network import to_network
from thunderhelm.ga.core.space import SearchSpace
from thunderhelm.ga.pool import warmup
from thunderhelm.ga.pool.interpreter_pool import InterpreterPool
from thunderhelm.ga.training.artifact import Predictor, model_from_training
from thunderhelm.ga.training.datasets import PreparedDataset, load_dataset
from thunderhelm.ga.training.evaluators import TRAIN_FUNCTION, PoolEvaluator
from thunderhelm.streams.config.settings import Settings
from thunderhelm.streams.execution import final_model, steps

__all__ = ["run"]

SEEDS = tuple(range(10))
RANDOM_SEED_OFFSET = 1_000_003  # random search's genomes come from a seed no GA run uses
TPE_SEED_OFFSET = 2_000_003
METHODS = ("default", "ga", "random", "tpe", "tpe_ensemble")
DEFAULT_METHOD = "default"
DELIVERS = {
    "default": "ensemble",
    "ga": "single",
    "random": "single",
    "tpe": "single",
    "tpe_ensemble": "ensemble",
}
SINGLE_RIVALS = ("ga", "random", "tpe")

Network = dict[str, Any]


@dataclass(frozen=True)
class Trained:
    fitness: float  # on validation; -inf when the training failed
    network: Network
    work: float  # rows * epochs it trained


@dataclass(frozen=True)
class Delivered:
    val: float  # the validation accuracy the method reports for what it delivers
    test: float
    work: float
    members: int


def task_requests(quick: bool) -> dict[str, dict[str, Any]]:
    """The request of each task; `ga.seed` is replaced per seed."""
    if quick:
        tiny = {
            "ga": {"population": 3, "generations": 2, "tournament_size": 2},
            "training": {"epochs": 1, "batch_size": 64},
            "search_space": {"max_levels": 1, "max_units": 2, "max_neurons": 8},
            "final_model": {"ensemble_size": 2},
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


def _with_seed(request: Mapping[str, Any], seed: int) -> dict[str, Any]:
    return {**request, "ga": {**request["ga"], "seed": seed}}


def _trained(
    results: Sequence[Mapping[str, Any]], networks: Sequence[Network], rows: int
) -> list[Trained]:
    out = []
    for result, network in zip(results, networks, strict=True):
        fitness = result["fitness"]
        assert isinstance(fitness, float)  # the evaluator's contract: -inf when it failed
        epochs = int(result.get("epochs_run") or 0)
        out.append(Trained(fitness, network, float(rows * epochs)))
    return out


class Recorder:
    """An evaluate port that keeps every training it ran (the GA's search calls it)."""

    def __init__(self, evaluate: PoolEvaluator, rows: int) -> None:
        self.evaluate, self.rows = evaluate, rows
        self.seen: list[Trained] = []

    def __call__(self, networks: list[Network]) -> list[Mapping[str, Any]]:
        results: list[Mapping[str, Any]] = list(self.evaluate(networks))
        self.seen += _trained(results, networks, self.rows)
        return results


def random_search(
    request: Mapping[str, Any], dataset: PreparedDataset, evaluate: PoolEvaluator, n: int
) -> list[Trained]:
    base = steps.ga_config(request)
    config = dataclasses.replace(base, population=n, elite=0, seed=base.seed + RANDOM_SEED_OFFSET)
    networks = [
        to_network(g, dataset.n_features, dataset.n_classes, candidate_training_seed(config, 0, i))
        for i, g in enumerate(initial_state(config).population)
    ]
    return _trained(evaluate(networks), networks, len(dataset.y_train))


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
) -> list[Trained]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    base: GAConfig = steps.ga_config(request)
    config = dataclasses.replace(base, seed=base.seed + TPE_SEED_OFFSET)
    sampler = optuna.samplers.TPESampler(seed=config.seed, multivariate=True, group=True)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    scored: list[Trained] = []
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
        results = _trained(evaluate(networks), networks, len(dataset.y_train))
        for trial, done in zip(trials, results, strict=True):
            study.tell(trial, done.fitness if math.isfinite(done.fitness) else 0.0)
        scored += results
        batch += 1
    return scored


def deliver(
    request: Mapping[str, Any],
    nets: Sequence[Network],
    dataset: PreparedDataset,
    exporter: PoolEvaluator,
    *,
    search_val: float,
) -> Delivered:
    """Retrain `nets` (best first) and measure what the product's rule delivers from them.

    One network: it alone, reporting the search's validation score as a
    single-network search does.
    """
    trained: list[Mapping[str, Any]] = list(exporter(list(nets)))
    rows = len(dataset.y_train)
    work = float(sum(rows * int(t.get("epochs_run") or 0) for t in trained))
    models = [
        model_from_training(n, t["weights"], dataset, request)
        for n, t in zip(nets, trained, strict=True)
        if t.get("status") == "ok" and t.get("weights")
    ]
    if not models:
        return Delivered(search_val, 0.0, work, 0)
    predictor: Predictor = models[0]
    val = search_val
    if len(nets) > 1:
        predictor, selection = final_model.choose(request, models, dataset)
        val = float(selection["validation"][selection["chosen"]]["accuracy"])
    test = predictor.evaluate(dataset.x_test, dataset.y_test, standardized=True)["accuracy"]
    members = len(getattr(predictor, "members", (predictor,)))
    return Delivered(val, float(test), work, members)


def _top(scored: Sequence[Trained], k: int) -> list[Trained]:
    ok = [s for s in scored if math.isfinite(s.fitness)]
    return sorted(ok, key=lambda s: -s.fitness)[:k]


def _seed_row(
    request: Mapping[str, Any],
    dataset: PreparedDataset,
    evaluate: PoolEvaluator,
    exporter: PoolEvaluator,
) -> dict[str, Any]:
    size = int(request.get("final_model", {}).get("ensemble_size", 5))
    rows = len(dataset.y_train)
    recorder = Recorder(evaluate, rows)
    began = time.perf_counter()
    state = run_request(request, dataset, recorder)
    assert state.best is not None
    n = len(recorder.seen)
    search_work = sum(t.work for t in recorder.seen)
    ga_state = state.to_dict()
    best = ga_state["best"]
    chosen = final_model.finalists(request, ga_state, best)
    ga_nets = final_model.networks(request, chosen, dataset.n_features, dataset.n_classes)
    out: dict[str, dict[str, Any]] = {}

    def record(method: str, got: Delivered, search: float, seconds: float) -> None:
        out[method] = {
            "val": round(got.val, 4),
            "test": round(got.test, 4),
            "work": search + got.work,
            "members": got.members,
            "s": round(seconds, 2),
        }

    ga_s = time.perf_counter() - began
    got = deliver(request, ga_nets, dataset, exporter, search_val=state.best.fitness)
    record("default", got, search_work, time.perf_counter() - began)
    got = deliver(request, ga_nets[:1], dataset, exporter, search_val=state.best.fitness)
    record("ga", got, search_work, ga_s)
    for method, search in (("random", random_search), ("tpe", tpe_search)):
        began = time.perf_counter()
        scored = search(request, dataset, evaluate, n)
        work = sum(t.work for t in scored)
        top = _top(scored, size)
        s = time.perf_counter() - began
        got = deliver(request, [top[0].network], dataset, exporter, search_val=top[0].fitness)
        record(method, got, work, s)
        if method == "tpe":
            nets = [t.network for t in top]
            got = deliver(request, nets, dataset, exporter, search_val=top[0].fitness)
            record("tpe_ensemble", got, work, time.perf_counter() - began)
    return {"trainings": n, "methods": out}


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
    with (
        PoolEvaluator(pool, dataset, deadline_s=3600.0) as evaluate,
        PoolEvaluator(pool, dataset, deadline_s=3600.0, export_weights=True) as exporter,
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
        "trainings_per_search": per_seed[0]["trainings"],
        "rows": {
            "train": len(dataset.y_train),
            "validation": len(dataset.y_val),
            "test": len(dataset.y_test),
        },
        "seeds": list(seeds),
        "by_seed": per_seed,
        "request": dict(request),
        "methods": methods,
        # Not measured: it needs the default's anytime curve (its final model after
        # every generation, five retrainings each).
        "work_to_match_plain_ga": None,
    }


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
        "evaluations": tasks["shakespeare"]["trainings_per_search"],
        "tasks": tasks,
        "aggregate": "mean ± sd over seeds of the test accuracy of what each method delivers "
        "(selected on validation only)",
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
    return bars


def _summary(tasks: Mapping[str, Mapping[str, Any]]) -> str:
    lines = [
        "Each method selects on validation only; what it delivers is retrained with its own "
        "seeds and measured once on the held-out test split. Equal trainings per search; "
        "work (rows * epochs) includes the final retrainings.",
        "",
        "| task | rows train/val/test | trainings | "
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
            f"| {t['trainings_per_search']} | {tests} | {rivals} |"
        )
    lines += [
        "",
        "Optimism (reported validation minus test accuracy) and work per search:",
        "",
        "| task | " + " | ".join(f"{m} optimism / work" for m in METHODS) + " |",
        "|---|" + "---|" * len(METHODS),
    ]
    for name, t in tasks.items():
        m = t["methods"]
        cells = " | ".join(
            f"{m[x]['optimism_mean']:+.4f} / {m[x]['work_mean']:.0f}" for x in METHODS
        )
        lines.append(f"| {name} | {cells} |")
    return "\n".join(lines)
