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
from collections.abc import Buffer, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from itertools import count
from types import TracebackType
from typing import Protocol, Self

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
    "InProcessEvaluator",
    "PoolEvaluator",
    "failure_result",
    "parse_result",
]

TRAIN_FUNCTION = "thunderhelm.ga.training.candidate:train_candidate"
_BUFFERS = ("x_train", "y_train", "x_val", "y_val")
_keys = count(1)

Result = dict[str, object]


class Evaluate(Protocol):
    """Train each network spec and return one result dict per spec, in order."""

    def __call__(self, networks: Sequence[Mapping[str, object]]) -> list[Result]: ...


def parse_result(raw: str, interpreter: int | None) -> Result:
    """Turn the training function's JSON into the GA's result dict.

    Fitness is the validation accuracy of a run that finished (`status`
    ok); anything else — timeout, cancel, NaN, bad spec — scores -inf.
    """
    try:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("result is not a JSON object")
    except ValueError as exc:
        return failure_result(f"unreadable training result: {exc}", interpreter)
    status = str(data.get("status", "error"))
    accuracy = data.get("val_accuracy")
    ok = status == "ok" and isinstance(accuracy, int | float) and math.isfinite(accuracy)
    result: Result = {
        "fitness": float(accuracy) if ok and accuracy is not None else -math.inf,
        "val_accuracy": accuracy,
        "val_loss": data.get("val_loss"),
        "train_loss": data.get("train_loss"),
        "params": data.get("params"),
        "epochs_run": data.get("epochs_run", 0),
        "status": status,
        "error": data.get("error"),
        "interpreter": interpreter,
        "started_at": data.get("started_at"),
        "ended_at": data.get("ended_at"),
    }
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
    ) -> None:
        if deadline_s <= 0:
            raise ValueError("deadline_s must be positive")
        self.pool = pool
        self.dataset = dataset
        self.deadline_s = deadline_s
        self.cancel = cancel
        self.export_weights = export_weights
        self.grace_s = grace_s
        self.key = f"{dataset.name}-{next(_keys)}"
        buffers = dict(dataset.buffers())
        if cancel is not None:
            # The flag travels with the data: attached once, not sent per task.
            buffers[CANCEL_BUFFER] = cancel.view
        pool.attach(self.key, buffers)

    def __call__(self, networks: Sequence[Mapping[str, object]]) -> list[Result]:
        deadline = time.time() + self.deadline_s
        refs = tuple(dataset_arg(self.key, name) for name in _BUFFERS)
        cancel = None if self.cancel is None else dataset_arg(self.key, CANCEL_BUFFER)
        submitted: list[TaskFuture | Result] = []
        for network in networks:
            try:
                spec = json.dumps(network, allow_nan=False)
                args = (*refs, self.dataset.n_features, deadline, cancel, self.export_weights)
                submitted.append(self.pool.submit(TRAIN_FUNCTION, (spec, *args), deadline=deadline))
            except (TypeError, ValueError, RuntimeError) as exc:
                submitted.append(failure_result(f"{type(exc).__name__}: {exc}", None))
        return [self._collect(item, deadline) for item in submitted]

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
        return parse_result(raw, None if item.info is None else item.info.interpreter)

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
    ) -> None:
        from thunderhelm.ga.training.candidate import train_candidate  # needs the compiled kernel

        self._train: Callable[..., str] = train_candidate
        self.dataset = dataset
        self.deadline_s = deadline_s
        self.cancel = cancel
        self.export_weights = export_weights
        self.workers = workers
        self._buffers: dict[str, Buffer] = dict(dataset.buffers())
        self._interpreter = _interpreters.get_current()[0]

    def __call__(self, networks: Sequence[Mapping[str, object]]) -> list[Result]:
        deadline = time.time() + self.deadline_s
        if self.workers <= 1:
            return [self._one(n, deadline) for n in networks]
        with ThreadPoolExecutor(self.workers, thread_name_prefix="thunderhelm-train") as ex:
            return list(ex.map(lambda n: self._one(n, deadline), networks))

    def _one(self, network: Mapping[str, object], deadline: float) -> Result:
        started = time.time()
        try:
            raw = self._train(
                json.dumps(network, allow_nan=False),
                *(self._buffers[name] for name in _BUFFERS),
                self.dataset.n_features,
                deadline,
                None if self.cancel is None else self.cancel.view,
                self.export_weights,
            )
        except Exception as exc:
            return failure_result(f"{type(exc).__name__}: {exc}", self._interpreter, started)
        return parse_result(raw, self._interpreter)
