"""RunExecutor: the worker's hands -- the pool, datasets and the steps of a run.

The saga decides *what* happens next; this class does it: builds the initial
population, trains a generation on the interpreter pool (in a thread, so the
event loop and the Faust agents never wait on it), and ends a run with its
result and artifact. Cancellation and budgets reach running trainings through
a per-run cancel token and the deadline the kernel checks between batches.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Mapping
from typing import Any, Protocol

from opentelemetry.context import Context

from thunderhelm.ga.core.engine import GAState, initial_state
from thunderhelm.ga.pool.interpreter_pool import CancelToken, InterpreterPool, PoolStats
from thunderhelm.ga.training.datasets import PreparedDataset, load_dataset
from thunderhelm.ga.training.evaluators import PoolEvaluator
from thunderhelm.schemas import events as ev
from thunderhelm.schemas.event_data import GenerationCompleted, RunEnded, RunStarted
from thunderhelm.streams.config.settings import Settings
from thunderhelm.streams.domain import saga
from thunderhelm.streams.execution import candidates, final_model, steps, warm_start
from thunderhelm.streams.observability import metrics

log = logging.getLogger(__name__)
# The pool's threads run at lower priority than the worker's event loop: on a
# saturated machine commands and events are still read promptly, and training
# gets every cycle the loop leaves (bench/stream.py measures it). `idle` also
# sets `low`'s nice value, which is what it falls back to where SCHED_IDLE is
# refused. Per setting: (nice value added, SCHED_IDLE).
POOL_PRIORITIES: dict[str, tuple[int, bool]] = {
    "idle": (10, True),
    "low": (10, False),
    "normal": (0, False),
}
# Who trained a candidate, as its outcome says (the scale benchmark counts shares by it).
WORKER_NAME = f"{socket.gethostname()}/{os.getpid()}"
# Datasets of other runs' tasks kept loaded: a worker helps a few runs at a time.
TASK_DATASETS_KEPT = 4
# How long the final model's retrainings may take. Not the run's own budget:
# a run its time budget stopped must still get its model (saga.react), and
# the finalists are networks the search already trained once each.
FINAL_MODEL_TIMEOUT_S = 3600.0


class StepInterrupted(Exception):
    """A generation stopped early (cancel or budget); the saga decides what follows."""


class StepExecutor(Protocol):
    """What `step_event` needs of an executor (RunExecutor, or a fake in tests)."""

    def initial_ga_state(self, state: saga.RunState) -> dict[str, Any]: ...

    async def run_generation(
        self,
        state: saga.RunState,
        context: Context | None,
        report: steps.Report | None = None,
    ) -> dict[str, Any]: ...

    async def finish(self, state: saga.RunState, action: saga.Finish) -> dict[str, Any]: ...


class WorkerExecutor(StepExecutor, Protocol):
    """What a worker needs of its executor besides the steps (RunExecutor, or a fake in tests)."""

    def start(self) -> None: ...

    def close(self) -> None: ...

    def cancel(self, run_id: str, *, final_model: bool = True) -> None: ...

    def pool_stats(self) -> PoolStats | None: ...

    def failure_result(self, state: saga.RunState, exc: BaseException) -> dict[str, Any]: ...

    async def generation_tasks(self, state: saga.RunState) -> list[dict[str, Any]]: ...

    def train_task(self, task: Mapping[str, Any], context: Context | None) -> dict[str, Any]: ...

    def dataset_shape(self, spec: Mapping[str, Any]) -> tuple[int, int]: ...


async def step_event(
    executor: StepExecutor,
    state: saga.RunState,
    action: saga.Start | saga.RunGeneration | saga.Finish,
    context: Context | None,
    report: steps.Report | None = None,
) -> saga.NewEvent:
    """Carry out one step the saga asked for; the event that records it done.

    The worker appends it to run-events and `thunderhelm run` to its local
    log, so both write the same events for the same steps. `report` gets each
    candidate's outcome as its training ends (in the training thread).
    """
    match action:
        case saga.Start():
            # Drawing the first population is the heaviest part of a start: off the loop.
            ga_state = await asyncio.to_thread(executor.initial_ga_state, state)
            return saga.NewEvent(ev.RUN_STARTED, RunStarted(run_id=state.run_id, ga_state=ga_state))
        case saga.RunGeneration():
            data = await executor.run_generation(state, context, report)
            return saga.NewEvent(ev.GENERATION_COMPLETED, GenerationCompleted.model_validate(data))
        case saga.Finish():
            result = await executor.finish(state, action)
            return saga.NewEvent(saga.END_EVENTS[action.status], ended(state.run_id, result))


def ended(run_id: str, result: Mapping[str, Any]) -> RunEnded:
    """The data of the event that ends a run with `result` (`steps.result_data`)."""
    return RunEnded.model_validate({"run_id": run_id, "result": result})


class RunExecutor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pool: InterpreterPool | None = None
        self._lock = threading.Lock()
        self._datasets: dict[str, PreparedDataset] = {}
        self._task_datasets: dict[str, PreparedDataset] = {}  # by spec, oldest first
        # One load per spec at a time: runs that arrive together wait for the
        # first load instead of each loading (and importing) it again.
        self._loading: dict[str, threading.Lock] = {}
        self._cancels: dict[str, CancelToken] = {}  # each run's generation in flight
        self._final_cancels: dict[str, CancelToken] = {}  # each run's final model in flight

    def start(self) -> None:
        if self.pool is None:
            priority = self.settings.pool_priority
            niceness, idle = POOL_PRIORITIES[priority]
            self.pool = InterpreterPool(
                self.settings.pool_size or None, niceness=niceness, idle=idle
            )
            log.info(
                "interpreter pool ready: %d interpreters, priority %s", self.pool.size, priority
            )
            metrics.observe_pool(self.pool_stats)

    def pool_stats(self) -> PoolStats | None:
        pool = self.pool
        return None if pool is None else pool.stats()

    def close(self) -> None:
        metrics.forget_pool(self.pool_stats)
        if self.pool is not None:
            self.pool.close()
            self.pool = None

    # --- budget and cancel ------------------------------------------------------

    def cancel(self, run_id: str, *, final_model: bool = True) -> None:
        """Stop the run's step in flight. `final_model=False` spares the final model's
        retraining: a run past its time budget still gets its model."""
        token = self._cancels.get(run_id)
        if token is not None:
            token.cancel()
        final = self._final_cancels.get(run_id)
        if final is not None and final_model:
            final.cancel()

    # --- steps -------------------------------------------------------------------

    def initial_ga_state(self, state: saga.RunState) -> dict[str, Any]:
        assert state.request is not None
        return initial_state(steps.ga_config(state.request), warm_start.seeds_of(state)).to_dict()

    async def run_generation(
        self,
        state: saga.RunState,
        context: Context | None,
        report: steps.Report | None = None,
    ) -> dict[str, Any]:
        """The step's `generation-completed` data; `report` (called in the training
        thread) gets each candidate's `candidate-completed` data as it finishes."""
        return await asyncio.to_thread(self._generation, state, context, report)

    def _generation(
        self, state: saga.RunState, context: Context | None, report: steps.Report | None
    ) -> dict[str, Any]:
        assert state.request is not None and state.ga_state is not None
        dataset = self._dataset(state)
        # A fresh token per step: a cancel that stopped an earlier step (a
        # revoked partition, say) must not stop this one.
        token = self._cancels[state.run_id] = CancelToken()
        # The fold fixed the deadline at acceptance; the kernel checks it between batches.
        deadline = _deadline(state)
        with PoolEvaluator(
            self._pool(),
            dataset,
            deadline_s=max(1.0, deadline - time.time()),
            cancel=token,
            fitness=steps.fitness_of(state.request),
            class_weight=steps.class_weight_of(state.request),
        ) as evaluator:
            outcome = steps.run_generation(
                state.request,
                GAState.from_dict(state.ga_state),
                dataset.n_features,
                dataset.n_classes,
                evaluator,
                context=context,
                known=state.outcomes,  # candidates the log has an outcome for
                report=None if report is None else _with_run_id(state.run_id, report),
            )
        if token.cancelled:
            raise StepInterrupted("cancelled")
        if time.time() > deadline:
            raise StepInterrupted("timed out")
        return {"run_id": state.run_id, **outcome.data}

    async def finish(self, state: saga.RunState, action: saga.Finish) -> dict[str, Any]:
        return await asyncio.to_thread(self.finish_now, state, action)

    # --- a generation spread over workers (streams/execution/candidates.py) -------------

    async def generation_tasks(self, state: saga.RunState) -> list[dict[str, Any]]:
        """`candidate.task` data for the generation's candidates the log has no outcome for."""
        return await asyncio.to_thread(self._generation_tasks, state)

    def _generation_tasks(self, state: saga.RunState) -> list[dict[str, Any]]:
        assert state.request is not None and state.ga_state is not None
        dataset = self._dataset(state)
        return candidates.generation_tasks(
            state.request,
            GAState.from_dict(state.ga_state),
            dataset.n_features,
            dataset.n_classes,
            run_id=state.run_id,
            deadline=_deadline(state),
            traceparent=state.traceparent,
            known=state.outcomes,
        )

    def train_task(self, task: Mapping[str, Any], context: Context | None) -> dict[str, Any]:
        """Train one candidate task on the pool, in this thread; its `candidate.trained` data."""
        dataset = self._task_dataset(task["dataset"])
        with PoolEvaluator(
            self._pool(),
            dataset,
            deadline_s=max(1.0, float(task["deadline"]) - time.time()),
            fitness=steps.fitness_of(task),
            class_weight=task.get("class_weight"),
        ) as evaluator:
            return candidates.train_task(task, evaluator, context, WORKER_NAME)

    def dataset_shape(self, spec: Mapping[str, Any]) -> tuple[int, int]:
        """(inputs, classes) of the dataset `spec` names, loaded once (kept for the run)."""
        dataset = self._task_dataset(spec)
        return dataset.n_features, dataset.n_classes

    def _task_dataset(self, spec: Mapping[str, Any]) -> PreparedDataset:
        """The dataset a task names, loaded once per spec (the newest few are kept)."""
        key = json.dumps(spec, sort_keys=True)
        with self._lock:
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:
            with self._lock:
                cached = self._task_datasets.pop(key, None)
                if cached is not None:
                    self._task_datasets[key] = cached  # most recently used last
                    return cached
            try:
                dataset = load_dataset(
                    spec, data_root=self.settings.data_root, text_dir=self.settings.text_dir
                )
            except BaseException:
                with self._lock:
                    self._loading.pop(key, None)
                raise
            with self._lock:
                self._task_datasets[key] = dataset
                while len(self._task_datasets) > TASK_DATASETS_KEPT:
                    self._task_datasets.pop(next(iter(self._task_datasets)))
                self._loading.pop(key, None)
            return dataset

    def use_dataset(self, run_id: str, dataset: PreparedDataset) -> None:
        """Hand over a dataset already loaded for `run_id` (spares loading it again)."""
        with self._lock:
            self._datasets[run_id] = dataset

    def finish_now(self, state: saga.RunState, action: saga.Finish) -> dict[str, Any]:
        """End the run in this thread: save the best model, return the result data."""
        artifact, test_metrics, model = None, None, None
        if action.status == "succeeded" and state.best is not None:
            path, saved = self._train_and_save_final(state)
            artifact, test_metrics, model = str(path), saved["test"], saved["model"]
        error = None
        if action.status != "succeeded":
            error = (action.error_class or "Error", action.message or action.status)
        self._forget(state.run_id)
        return _result_of(
            state,
            action.status,
            artifact=artifact,
            error=error,
            test_metrics=test_metrics,
            model=model,
            stopped_by=action.stopped_by,
        )

    def failure_result(self, state: saga.RunState, exc: BaseException) -> dict[str, Any]:
        self._forget(state.run_id)
        return _result_of(
            state, "failed", artifact=None, error=(type(exc).__name__, str(exc)[:1000])
        )

    # --- helpers -------------------------------------------------------------------

    def _pool(self) -> InterpreterPool:
        if self.pool is None:
            self.start()
        assert self.pool is not None
        return self.pool

    def _dataset(self, state: saga.RunState) -> PreparedDataset:
        with self._lock:
            cached = self._datasets.get(state.run_id)
        if cached is not None:
            return cached
        assert state.request is not None
        # Through the by-spec cache: this worker's trainer takes the run's own
        # tasks too, and must not load the same dataset a second time.
        dataset = self._task_dataset(state.request["dataset"])
        with self._lock:
            self._datasets[state.run_id] = dataset
        return dataset

    def _train_and_save_final(self, state: saga.RunState) -> tuple[Any, dict[str, Any]]:
        """Retrain the run's finalists as they were trained and from fresh seeds; save the model."""
        assert state.request is not None and state.best is not None
        dataset = self._dataset(state)
        chosen = final_model.finalists(state.request, state.ga_state, state.best)
        nets = final_model.networks(state.request, chosen, dataset.n_features, dataset.n_classes)
        fresh = final_model.reevaluation_networks(state.request, chosen, nets)
        # Its own token: a cancel that comes while the finalists retrain (a
        # big table's may take minutes) stops them, and the run ends cancelled.
        token = self._final_cancels[state.run_id] = CancelToken()
        with PoolEvaluator(
            self._pool(),
            dataset,
            deadline_s=FINAL_MODEL_TIMEOUT_S,
            cancel=token,
            export_weights=True,
            fitness=steps.final_fitness(state.request),
            class_weight=steps.class_weight_of(state.request),
        ) as evaluator:
            trained = evaluator([*nets, *fresh])  # side by side on the pool
        if token.cancelled:
            raise StepInterrupted("cancelled")
        return final_model.save(
            self.settings.artifact_dir,
            state.run_id,
            state.request,
            chosen,
            nets,
            trained[: len(nets)],
            dataset,
            trained[len(nets) :],
            lineage=warm_start.summary(state),
        )

    def _forget(self, run_id: str) -> None:
        with self._lock:
            self._datasets.pop(run_id, None)
        self._cancels.pop(run_id, None)
        self._final_cancels.pop(run_id, None)


def _result_of(state: saga.RunState, status: str, **ending: Any) -> dict[str, Any]:
    """The result data of `state` ending with `status`; `ending`: artifact, error and the
    figures of the saved model (`steps.result_data`'s keywords)."""
    return steps.result_data(
        state.run_id,
        status,
        best=state.best,
        generations=state.generation,
        evaluations=state.evaluations,
        started_at=state.accepted_at,
        work=saga.work_done(state),
        revision=state.revision,
        warm_start=warm_start.summary(state),
        **ending,
    )


def _deadline(state: saga.RunState) -> float:
    """The run's deadline, which the fold fixes when it folds `run.accepted`."""
    if state.deadline is None:
        raise ValueError(f"run {state.run_id} has no deadline: it was never accepted")
    return state.deadline


def _with_run_id(run_id: str, report: steps.Report) -> steps.Report:
    def reported(data: dict[str, Any]) -> None:
        report({"run_id": run_id, **data})

    return reported
