"""The kernel benchmark: the compiled kernel in a sub-interpreter against numpy in main.

Candidates are trained by `thunderhelm.ga.training._kernel` inside isolated interpreters, where
numpy cannot be imported; `thunderhelm.ga.training.reference` is the same network, loss, AdamW
step, initial weights and batch order in numpy. This benchmark trains the same
candidate networks on the same data both ways — the kernel through a warm
one-interpreter pool, numpy in the main interpreter with its BLAS limited to
one thread (by `threadpoolctl`, since numpy is already loaded) so each side
uses one core — and reports kernel speed ÷ numpy speed. The kernel in the main
interpreter is timed too, to show what the sub-interpreter itself costs.
"""

import json
import os
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

from threadpoolctl import (  # type: ignore[import-untyped]  # ships no type hints
    threadpool_info,
    threadpool_limits,
)

from bench.common import Options, best_of, load_named, warm_pool
from bench.report import bar
from thunderhelm.ga.core.engine import candidate_training_seed, initial_state
from thunderhelm.ga.core.network import to_network
from thunderhelm.ga.pool import warmup
from thunderhelm.ga.pool.interpreter_pool import InterpreterPool
from thunderhelm.ga.training.datasets import PreparedDataset
from thunderhelm.ga.training.evaluators import TRAIN_FUNCTION, InProcessEvaluator, PoolEvaluator
from thunderhelm.ga.training.reference import train_reference
from thunderhelm.streams.execution import steps

__all__ = ["run"]


def workloads(quick: bool) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(dataset spec, request) pairs; each request's first population is what gets trained."""
    if quick:
        return [
            (
                {"name": "spirals", "samples": 200},
                {
                    "ga": {"population": 2},
                    "training": {"epochs": 1, "batch_size": 32},
                    "search_space": {"max_neurons": 8},
                },
            )
        ]
    return [
        (
            {"name": "digits"},
            {
                "ga": {"population": 4, "seed": 0},
                "training": {"epochs": 8, "batch_size": 32},
                "search_space": {"max_neurons": 128},
            },
        ),
        (
            {"name": "shakespeare", "samples": 8000},
            {
                "ga": {"population": 3, "seed": 0},
                "training": {"epochs": 2, "batch_size": 64},
                "search_space": {"max_neurons": 256},
            },
        ),
    ]


def candidates(request: Mapping[str, Any], dataset: PreparedDataset) -> list[dict[str, Any]]:
    """The networks of the request's generation 0, exactly as a run would train them."""
    config = steps.ga_config(request)
    return [
        to_network(g, dataset.n_features, dataset.n_classes, candidate_training_seed(config, 0, i))
        for i, g in enumerate(initial_state(config).population)
    ]


def _numpy(network: Mapping[str, Any], dataset: PreparedDataset) -> dict[str, Any]:
    return train_reference(
        json.dumps(network), dataset.x_train, dataset.y_train, dataset.x_val, dataset.y_val
    )


def measure(
    pool: InterpreterPool,
    dataset: PreparedDataset,
    networks: Sequence[Mapping[str, Any]],
    repeats: int,
) -> list[dict[str, Any]]:
    rows = []
    in_main = InProcessEvaluator(dataset)
    with PoolEvaluator(pool, dataset, deadline_s=600.0) as in_pool:
        for network in networks:
            one = [network]
            kernel_s, kernel_all, kernel_outs = best_of(repeats, partial(in_pool, one))
            main_s, _, _ = best_of(repeats, partial(in_main, one))
            with threadpool_limits(limits=1, user_api="blas"):
                numpy_s, numpy_all, numpy_out = best_of(repeats, partial(_numpy, network, dataset))
            kernel_out = kernel_outs[0]
            rows.append(
                {
                    "units": [u["neurons"] for u in network["units"]],
                    "params": kernel_out.get("params"),
                    "epochs": network["epochs"],
                    "batch_size": network["batch_size"],
                    "kernel_subinterp_s": round(kernel_s, 4),
                    "kernel_main_s": round(main_s, 4),
                    "numpy_s": round(numpy_s, 4),
                    "ratio_vs_numpy": round(numpy_s / kernel_s, 3),
                    "kernel_val_accuracy": kernel_out.get("val_accuracy"),
                    "numpy_val_accuracy": numpy_out.get("val_accuracy"),
                    "kernel_all_s": [round(t, 4) for t in kernel_all],
                    "numpy_all_s": [round(t, 4) for t in numpy_all],
                }
            )
    return rows


def run(opts: Options) -> dict[str, Any]:
    load_before = os.getloadavg()
    repeats = 1 if opts.quick else 3
    per_workload: dict[str, Any] = {}
    rows_all: list[dict[str, Any]] = []
    allowed = (TRAIN_FUNCTION, warmup.FUNCTION)
    with InterpreterPool(1, allowed=allowed) as pool:
        warm_pool(pool)
        for spec, request in workloads(opts.quick):
            dataset = load_named(spec)
            rows = measure(pool, dataset, candidates(request, dataset), repeats)
            rows_all += rows
            kernel_total = sum(r["kernel_subinterp_s"] for r in rows)
            numpy_total = sum(r["numpy_s"] for r in rows)
            per_workload[dataset.name] = {
                "dataset": spec,
                "train_rows": len(dataset.y_train),
                "features": dataset.n_features,
                "classes": dataset.n_classes,
                "kernel_subinterp_s": round(kernel_total, 4),
                "numpy_s": round(numpy_total, 4),
                "ratio_vs_numpy": round(numpy_total / kernel_total, 3),
                "networks": rows,
            }
    kernel_s = sum(r["kernel_subinterp_s"] for r in rows_all)
    main_s = sum(r["kernel_main_s"] for r in rows_all)
    numpy_s = sum(r["numpy_s"] for r in rows_all)
    ratio = numpy_s / kernel_s
    blas = [
        {k: info.get(k) for k in ("internal_api", "prefix", "version", "num_threads")}
        for info in threadpool_info()
        if info.get("user_api") == "blas"
    ]
    result: dict[str, Any] = {
        "quick": opts.quick,
        "ratio_vs_numpy": round(ratio, 3),
        "kernel_subinterp_s": round(kernel_s, 4),
        "kernel_main_s": round(main_s, 4),
        "numpy_s": round(numpy_s, 4),
        "subinterp_overhead": round(kernel_s / main_s - 1.0, 4),
        "repeats": repeats,
        "timing": "best of the repeats; each includes the validation pass",
        "numpy_threads": "1 BLAS thread via threadpoolctl.threadpool_limits(1, 'blas')",
        "numpy_blas": blas,
        "workloads": per_workload,
        "environment": {"load_before": [round(x, 2) for x in load_before]},
    }
    result["bars"] = [
        bar(
            "kernel training in a sub-interpreter >= 0.8x the numpy reference's speed",
            f"{ratio:.2f}x (numpy {numpy_s:.2f}s / kernel {kernel_s:.2f}s over "
            f"{len(rows_all)} networks)",
            ratio >= 0.8,
        )
    ]
    lines = [
        "| dataset | networks | kernel (sub-interp) s | numpy s | kernel speed ÷ numpy |",
        "|---|---|---|---|---|",
    ]
    for name, w in per_workload.items():
        lines.append(
            f"| {name} | {len(w['networks'])} | {w['kernel_subinterp_s']:.3f} | "
            f"{w['numpy_s']:.3f} | {w['ratio_vs_numpy']:.2f}x |"
        )
    result["summary"] = "\n".join(
        [
            "Generation-0 candidates of a digits run and of a shakespeare run (wider inputs "
            "and layers), each trained to the end both ways from identical weights and batch "
            "order; best of "
            f"{repeats}. numpy is held to one BLAS thread with threadpoolctl; the kernel "
            "calls OpenBLAS with one thread per interpreter. The same kernel in the main "
            f"interpreter took {main_s:.2f}s (the sub-interpreter costs "
            f"{100 * (kernel_s / main_s - 1):+.1f}%).",
            "",
            *lines,
        ]
    )
    return result
