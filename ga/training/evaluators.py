"""The map-shaped port between the GA and wherever candidates are trained.

The GA only needs ``evaluate(networks) -> results``: one result dict per
network spec, in order. `PoolEvaluator` trains them in parallel on the
interpreter pool with the dataset attached once; `InProcessEvaluator` calls
the very same training function in the main interpreter, for tests and as
the sequential or thread-pool baseline. Both turn every failure into a
result with fitness -inf, so one bad candidate never stops a generation.
"""

import _interpreters
import json
import math
import time
from collections.abc import Buffer, Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from itertools import count
from types import TracebackType
from typing import Self

from thunderhelm.ga.core import measures
from thunderhelm.ga.core.search import Evaluate, OnResult, Result, fitness_from_metrics
from thunderhelm.ga.pool.interpreter_pool import (
    CancelToken,
    InterpreterPool,
    TaskFuture,
    dataset_arg,
)
from thunderhelm.ga.training.datasets import PreparedDataset

__all__ = [
    "TRAIN_FUNCTION",
    "Evaluate",
    "Fitness",
    "InProcessEvaluator",
    "OnResult",
    "PoolEvaluator",
    "failure_result",
    "parse_result",
    "train_args",
]

TRAIN_FUNCTION = "thunderhelm.ga.training.candidate:train_candidate"
TRAIN_BUFFERS = ("x_train", "y_train", "x_val", "y_val")
_keys = count(1)

REGRESSION_MEASURES = ("val_rmse", "val_mae", "val_r2")


@dataclass(frozen=True)
class Fitness:
    """How a training result is scored: the request's `fitness` settings.

    The one place a candidate's fitness is computed (`parse_result`); every
    search and the worker read `result["fitness"]` and never score again.
    """

    kind: str = "val_accuracy"
    param_penalty: float = 0.0  # per parameter

    def of(self, metrics: Mapping[str, object]) -> float:
        return fitness_from_metrics(metrics, self.kind, self.param_penalty)

    def spec_keys(self) -> dict[str, object]:
        """What each trained network spec needs for this fitness to be measured."""
        return {"roc_auc": True} if self.kind in measures.ON_REQUEST else {}


def train_args(
    network: Mapping[str, object],
    buffers: Sequence[object],
    n_features: int,
    deadline: float,
    cancel: object,
    export_weights: bool,
) -> tuple[object, ...]:
    """The argument tuple of `train_candidate`, in its order (see TRAIN_FUNCTION).

    `buffers` are the four arrays named in `TRAIN_BUFFERS` (or references to
    them in the pool); raises ValueError for a spec that is not plain JSON.
    """
    if len(buffers) != len(TRAIN_BUFFERS):
        raise ValueError(f"need {len(TRAIN_BUFFERS)} buffers, got {len(buffers)}")
    spec = json.dumps(network, allow_nan=False)
    return (spec, *buffers, n_features, deadline, cancel, export_weights)


def parse_result(raw: str, interpreter: int | None, fitness: Fitness = Fitness()) -> Result:
    """Turn the training function's JSON into the GA's result dict.

    Fitness is `fitness` applied to a run that finished (`status` ok);
    anything else — timeout, cancel, NaN, bad spec — scores -inf.
    """
    try:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("result is not a JSON object")
    except ValueError as exc:
        return failure_result(f"unreadable training result: {exc}", interpreter)
    status = str(data.get("status", "error"))
    result: Result = {
        "fitness": -math.inf,
        "val_accuracy": data.get("val_accuracy"),
        "val_loss": data.get("val_loss"),
        "val_balanced_accuracy": data.get("val_balanced_accuracy"),
        "val_macro_f1": data.get("val_macro_f1"),
        **({"val_roc_auc": data["val_roc_auc"]} if "val_roc_auc" in data else {}),
        "train_loss": data.get("train_loss"),
        "params": data.get("params"),
        "epochs_run": data.get("epochs_run", 0),
        "status": status,
        "error": data.get("error"),
        "interpreter": interpreter,
        "started_at": data.get("started_at"),
        "ended_at": data.get("ended_at"),
        "curve": data.get("curve") or [],
        "pruned_at": data.get("pruned_at"),
    }
    for measure in REGRESSION_MEASURES:
        if measure in data:  # a regression training's figures
            result[measure] = data[measure]
    result["fitness"] = fitness.of(result)
    if "weights" in data:
        result["weights"] = data["weights"]
    return result


def failure_result(
    error: str,
    interpreter: int | None,
    started_at: float | None = None,
    ended_at: float | None = None,
) -> Result:
    """The result of a candidate that produced no training result at all."""
    return {
        "fitness": -math.inf,
        "val_accuracy": None,
        "val_loss": None,
        "val_balanced_accuracy": None,
        "val_macro_f1": None,
        "train_loss": None,
        "params": None,
        "epochs_run": 0,
        "status": "error",
        "error": error,
        "interpreter": interpreter,
        "started_at": started_at,
        "ended_at": ended_at if ended_at is not None else time.time(),
    }


CANCEL_BUFFER = "cancel"


class PoolEvaluator:
    """Trains a generation on the interpreter pool, one task per network.

    The dataset is attached once, at construction, and detached by `close`.
    `deadline_s` is the wall-clock budget of one `__call__` (a generation):
    every candidate gets the same absolute deadline and checks it between
    batches. `grace_s` is how long past the deadline results are still
    awaited before a candidate is reported as timed out.
    """

    def __init__(
        self,
        pool: InterpreterPool,
        dataset: PreparedDataset,
        *,
        deadline_s: float,
        cancel: CancelToken | None = None,
        export_weights: bool = False,
        grace_s: float = 30.0,
        fitness: Fitness = Fitness(),
        class_weight: str | None = None,
    ) -> None:
        if deadline_s <= 0:
            raise ValueError("deadline_s must be positive")
        self.pool = pool
        self.dataset = dataset
        self.deadline_s = deadline_s
        self.cancel = cancel
        self.export_weights = export_weights
        self.grace_s = grace_s
        self.fitness = fitness
        # The request's training option, added to every network it trains
        # (docs/network-spec.md): the networks stay the search's own.
        self.class_weight = class_weight
        self.key = f"{dataset.name}-{next(_keys)}"
        buffers = dict(dataset.buffers())
        if cancel is not None:
            # The flag travels with the data: attached once, not sent per task.
            buffers[CANCEL_BUFFER] = cancel.view
        pool.attach(self.key, buffers)

    def __call__(
        self, networks: Sequence[Mapping[str, object]], on_result: OnResult | None = None
    ) -> list[Result]:
        deadline = time.time() + self.deadline_s
        refs = tuple(dataset_arg(self.key, name) for name in TRAIN_BUFFERS)
        cancel = None if self.cancel is None else dataset_arg(self.key, CANCEL_BUFFER)
        submitted: list[TaskFuture | Result] = []
        for network in networks:
            if self.class_weight is not None:
                network = {**network, "class_weight": self.class_weight}
            network = {**network, **self.fitness.spec_keys(), **self.dataset.network_keys()}
            try:
                args = train_args(
                    network, refs, self.dataset.n_features, deadline, cancel, self.export_weights
                )
                submitted.append(self.pool.submit(TRAIN_FUNCTION, args, deadline=deadline))
            except (TypeError, ValueError, RuntimeError) as exc:
                submitted.append(failure_result(f"{type(exc).__name__}: {exc}", None))
        results: list[Result] = []
        # Collected in submission order: the pool starts tasks in that order,
        # so each result is reported about when its training ends.
        for position, item in enumerate(submitted):
            results.append(self._collect(item, deadline))
            if on_result is not None:
                on_result(position, results[-1])
        return results

    def _collect(self, item: TaskFuture | Result, deadline: float) -> Result:
        if isinstance(item, dict):
            return item
        wait = max(0.0, deadline + self.grace_s - time.time())
        try:
            raw = item.result(timeout=wait)
        except FutureTimeout:
            # The task keeps running (an interpreter cannot be interrupted);
            # the generation does not wait for it any longer.
            result = failure_result("no result by the deadline", None)
            result["status"] = "timeout"
            return result
        except Exception as exc:
            info = item.info
            return failure_result(
                f"{type(exc).__name__}: {exc}",
                None if info is None else info.interpreter,
                None if info is None else info.started_at,
                None if info is None else info.ended_at,
            )
        interpreter = None if item.info is None else item.info.interpreter
        return parse_result(raw, interpreter, self.fitness)

    def close(self) -> None:
        """Detach the dataset from the pool (idempotent)."""
        self.pool.detach(self.key)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class InProcessEvaluator:
    """Trains candidates in the main interpreter with the same training function.

    `workers` > 1 runs them on a thread pool: the baseline the interpreter
    pool is compared with.
    """

    def __init__(
        self,
        dataset: PreparedDataset,
        *,
        deadline_s: float = 600.0,
        cancel: CancelToken | None = None,
        export_weights: bool = False,
        workers: int = 1,
        fitness: Fitness = Fitness(),
    ) -> None:
        from thunderhelm.ga.training.candidate import train_candidate  # needs the compiled kernel

        self._train: Callable[..., str] = train_candidate
        self.dataset = dataset
        self.deadline_s = deadline_s
        self.cancel = cancel
        self.export_weights = export_weights
        self.workers = workers
        self.fitness = fitness
        self._buffers: dict[str, Buffer] = dict(dataset.buffers())
        self._interpreter = _interpreters.get_current()[0]

    def __call__(
        self, networks: Sequence[Mapping[str, object]], on_result: OnResult | None = None
    ) -> list[Result]:
        deadline = time.time() + self.deadline_s
        results: Iterator[Result]
        if self.workers <= 1:
            results = (self._one(n, deadline) for n in networks)
        else:
            ex = ThreadPoolExecutor(self.workers, thread_name_prefix="thunderhelm-train")
            with ex:
                results = iter(list(ex.map(lambda n: self._one(n, deadline), networks)))
        out: list[Result] = []
        for position, result in enumerate(results):
            out.append(result)
            if on_result is not None:
                on_result(position, result)
        return out

    def _one(self, network: Mapping[str, object], deadline: float) -> Result:
        started = time.time()
        try:
            args = train_args(
                {**network, **self.fitness.spec_keys(), **self.dataset.network_keys()},
                [self._buffers[name] for name in TRAIN_BUFFERS],
                self.dataset.n_features,
                deadline,
                None if self.cancel is None else self.cancel.view,
                self.export_weights,
            )
            raw = self._train(*args)
        except Exception as exc:
            return failure_result(f"{type(exc).__name__}: {exc}", self._interpreter, started)
        return parse_result(raw, self._interpreter, self.fitness)
