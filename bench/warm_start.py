"""What a warm start is worth: a search on a shifted task begun from an earlier search's best.

Per seed: a source search on 6-class spirals; then the same short search on
a shifted variant of the task (more noise, other rows), once cold and once
warm (generation 0 begins with the source's 5 best distinct genomes, as
`streams/execution/warm_start.py` takes them). Both target searches have the
same population and generations, so the same number of trainings; their
training work (epoch-equivalents) is reported beside. Each delivers the
product's final model, measured once on the target's test split. The task
and its shift were chosen before any measurement and were not tuned on.
"""

import statistics
import time
from collections.abc import Mapping
from typing import Any

from bench.common import Options, cores, load_named, warm_pool
from bench.quality import _ga_nets, _wilcoxon, deliver
from thunderhelm.ga.core.engine import GAState, initial_state
from thunderhelm.ga.core.search import run_search
from thunderhelm.ga.pool import warmup
from thunderhelm.ga.pool.interpreter_pool import InterpreterPool
from thunderhelm.ga.training.datasets import PreparedDataset
from thunderhelm.ga.training.evaluators import TRAIN_FUNCTION, PoolEvaluator
from thunderhelm.streams.domain import saga
from thunderhelm.streams.execution import steps, warm_start

SEEDS = tuple(range(6))
TOP = 5


def _request(
    seed: int, *, noise: float, rows_seed: int, generations: int, quick: bool
) -> dict[str, Any]:
    return {
        "run_id": f"warm-bench-{seed}",
        "dataset": {
            "name": "spirals",
            "samples": 600 if quick else 3000,
            "classes": 6,
            "noise": noise,
            "seed": rows_seed,
        },
        "ga": {"population": 4 if quick else 8, "generations": generations, "seed": seed},
        "training": {"epochs": 2 if quick else 8, "batch_size": 64},
    }


def _search(
    request: Mapping[str, Any],
    dataset: PreparedDataset,
    evaluate: PoolEvaluator,
    seeds: list[Any],
) -> tuple[GAState, list[float]]:
    """The GA of `request` from a generation 0 that begins with `seeds`; its best after each."""
    config = steps.ga_config(request)
    bests: list[float] = []
    state = run_search(
        config,
        dataset.n_features,
        dataset.n_classes,
        evaluate,
        start=initial_state(config, seeds),
        on_generation=lambda s: bests.append(round(s.best.fitness, 4) if s.best else 0.0),
    )
    return state, bests


def _taken(request: Mapping[str, Any], source: GAState) -> list[Any]:
    """The source's best genomes, as a warm-started request would take them."""
    data = source.to_dict()
    state = saga.RunState("source", "succeeded", request=request, ga_state=data, best=data["best"])
    return [genome for genome, _ in warm_start.ranked_genomes(state)][:TOP]


def run(opts: Options) -> dict[str, Any]:
    seeds = SEEDS[:1] if opts.quick else SEEDS
    began = time.perf_counter()
    rows = []
    with InterpreterPool(
        opts.pool_size or cores(), allowed=(TRAIN_FUNCTION, warmup.FUNCTION)
    ) as pool:
        warm_pool(pool)
        for seed in seeds:
            source_request = _request(
                seed, noise=0.25, rows_seed=1000 + seed, generations=4, quick=opts.quick
            )
            target_request = _request(
                seed + 100, noise=0.4, rows_seed=2000 + seed, generations=2, quick=opts.quick
            )
            source_data = load_named(source_request["dataset"])
            target_data = load_named(target_request["dataset"])
            with PoolEvaluator(pool, source_data, deadline_s=3600.0) as evaluate:
                source, _ = _search(source_request, source_data, evaluate, [])
            taken = _taken(source_request, source)
            row: dict[str, Any] = {"seed": seed, "taken": len(taken)}
            with (
                PoolEvaluator(pool, target_data, deadline_s=3600.0) as evaluate,
                PoolEvaluator(pool, target_data, deadline_s=3600.0, export_weights=True) as export,
            ):
                for name, seeded in (("cold", []), ("warm", taken)):
                    state, bests = _search(target_request, target_data, evaluate, seeded)
                    assert state.best is not None
                    nets = _ga_nets(target_request, state, target_data)
                    got = deliver(
                        target_request, nets, target_data, export, search_val=state.best.fitness
                    )
                    row[name] = {
                        "test": round(got.test, 4),
                        "best_val_by_generation": bests,
                        "work": round(state.work, 2),
                        "trainings": state.evaluations,
                    }
            rows.append(row)
            print(f"warm_start seed {seed}: cold {row['cold']} warm {row['warm']}", flush=True)
    cold = [r["cold"]["test"] for r in rows]
    warm = [r["warm"]["test"] for r in rows]
    pairs = list(zip(warm, cold, strict=True))
    first_cold = [r["cold"]["best_val_by_generation"][0] for r in rows]
    first_warm = [r["warm"]["best_val_by_generation"][0] for r in rows]
    result: dict[str, Any] = {
        "quick": opts.quick,
        "seeds": list(seeds),
        "by_seed": rows,
        "cold_test_mean": round(statistics.mean(cold), 4),
        "warm_test_mean": round(statistics.mean(warm), 4),
        "warm_minus_cold_test_mean": round(statistics.mean(w - c for w, c in pairs), 4),
        "warm_wins": sum(w > c for w, c in pairs),
        "warm_losses": sum(w < c for w, c in pairs),
        "p_warm_vs_cold": round(_wilcoxon(warm, cold), 4) if len(rows) > 1 else None,
        "first_generation_best_val_cold_mean": round(statistics.mean(first_cold), 4),
        "first_generation_best_val_warm_mean": round(statistics.mean(first_warm), 4),
        "cold_work_mean": round(statistics.mean(r["cold"]["work"] for r in rows), 2),
        "warm_work_mean": round(statistics.mean(r["warm"]["work"] for r in rows), 2),
        "wall_s": round(time.perf_counter() - began, 1),
    }
    result["bars"] = [
        {
            "bar": "a warm start delivers at least the cold start's test accuracy, on the mean "
            "over seeds, at equal trainings",
            "measured": f"warm {result['warm_test_mean']} vs cold {result['cold_test_mean']}",
            "met": result["warm_test_mean"] >= result["cold_test_mean"],
        }
    ]
    result["summary"] = (
        "Source: 6-class spirals (noise 0.25), population 8, 4 generations. Target: the same "
        "task shifted (noise 0.4, other rows), population 8, 2 generations, cold against warm "
        f"(generation 0 begins with the source's {TOP} best distinct genomes): equal trainings. "
        "Test accuracy of the delivered final model, mean over "
        f"{len(rows)} seeds: cold {result['cold_test_mean']}, warm {result['warm_test_mean']} "
        f"(warm - cold {result['warm_minus_cold_test_mean']:+}, warm better on "
        f"{result['warm_wins']}, worse on {result['warm_losses']}, Wilcoxon p "
        f"{result['p_warm_vs_cold']}). Best validation fitness after generation 1: cold "
        f"{result['first_generation_best_val_cold_mean']}, warm "
        f"{result['first_generation_best_val_warm_mean']}. Training work (epoch-equivalents): "
        f"cold {result['cold_work_mean']}, warm {result['warm_work_mean']}."
    )
    return result
