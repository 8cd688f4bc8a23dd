"""What every benchmark shares: options, datasets, whole NAS runs, timing and RSS.

A whole run is `ga.core.search.run_search` on the configuration
`streams.execution.steps.ga_config`
derives from a run request, so the benchmarks search exactly as `thunderhelm run`
and the worker do, through whichever `evaluate` port is being measured.
"""

import os
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.report import DEFAULT_OUT
from thunderhelm.ga.core.engine import GAState
from thunderhelm.ga.core.search import Evaluate, run_search
from thunderhelm.ga.pool import warmup
from thunderhelm.ga.pool.interpreter_pool import InterpreterPool, dataset_arg
from thunderhelm.ga.training.datasets import PreparedDataset, load_dataset
from thunderhelm.streams.config.settings import Settings
from thunderhelm.streams.execution import steps

__all__ = [
    "Options",
    "best_of",
    "cores",
    "load_named",
    "rss_mb",
    "run_request",
    "warm_pool",
]


@dataclass(frozen=True)
class Options:
    """How a benchmark runs: `quick` shrinks it to a smoke test of its code paths."""

    quick: bool = False
    out: Path = DEFAULT_OUT
    pool_size: int | None = None  # None: one interpreter per core


def cores() -> int:
    return os.cpu_count() or 1


def load_named(spec: Mapping[str, object]) -> PreparedDataset:
    """A dataset by its request spec, with the data folders the CLI would use."""
    settings = Settings.from_env()
    return load_dataset(spec, data_root=settings.data_root, text_dir=settings.text_dir)


def run_request(
    request: Mapping[str, Any], dataset: PreparedDataset, evaluate: Evaluate
) -> GAState:
    """One whole NAS run of `request` on `dataset`, candidates trained by `evaluate`."""
    return run_search(steps.ga_config(request), dataset.n_features, dataset.n_classes, evaluate)


def warm_pool(pool: InterpreterPool, timeout_s: float = 60.0) -> None:
    """Import the kernel in every interpreter of `pool` (needs `warmup:warm` allowed)."""
    flags = bytearray(pool.size)
    pool.attach("warm", {"flags": memoryview(flags)})
    try:
        ref = dataset_arg("warm", "flags")
        futures = [pool.submit(warmup.FUNCTION, (ref, i, timeout_s)) for i in range(pool.size)]
        for future in futures:
            future.result(timeout_s + 5)
    finally:
        pool.detach("warm")


def rss_mb() -> float:
    """Resident set size of this process, MiB (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise OSError("VmRSS not found in /proc/self/status")


def best_of[T](repeats: int, work: Callable[[], T]) -> tuple[float, list[float], T]:
    """Run `work` `repeats` times; the fastest wall time, all times, and the last result.

    The minimum is the figure least disturbed by other load on the machine.
    """
    began = time.perf_counter()
    result = work()
    times = [time.perf_counter() - began]
    for _ in range(repeats - 1):
        began = time.perf_counter()
        result = work()
        times.append(time.perf_counter() - began)
    return min(times), times, result


def digits_run(
    name: str, index: int, quick: bool, *, seed: int, timeout_s: float
) -> dict[str, Any]:
    """A short digits run for the fault benchmarks: 4 candidates, 2 or 3 generations.

    `name` starts the run id; a random tail keeps ids apart between runs of a benchmark.
    """
    return {
        "run_id": f"{name}-{index:02d}-{uuid.uuid4().hex[:5]}",
        "dataset": {"name": "digits", "seed": index},
        "ga": {
            "population": 4,
            "generations": 2 if quick else 3,
            "tournament_size": 2,
            "elite": 1,
            "seed": seed,
        },
        "training": {"epochs": 3 if quick else 8, "batch_size": 32},
        "search_space": {"max_levels": 2, "max_units": 2, "max_neurons": 32},
        "budget": {"timeout_s": timeout_s},
    }
