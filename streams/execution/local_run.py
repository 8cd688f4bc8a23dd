"""`thunderhelm run`: the main job on the local pool, without Kafka.

The same saga as the worker drives the run, against an in-process event log
(streams/execution/local_log.py): `react` names the next step, the worker's
RunExecutor carries it out, its event is appended to the log (fsynced) and
folded with `evolve`, until the run ends. So budgets end a local run exactly
as they end a worker's, Ctrl-C cancels it through the saga, and a run started
again with the same run id folds its log and goes on from its last completed
generation. Output: a progress bar per generation, then a table of the best
candidate, and with `--json` the result `data` of the contract as the last
line on stdout.

The logs live in `var/local-runs/` under the folder the command runs in (or
`THUNDERHELM_LOCAL_LOG_DIR`): they are the working state of runs started
there, not something the worker or the dashboard reads.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from types import FrameType
from typing import Any

from pydantic import ValidationError

from thunderhelm.ga.pool.interpreter_pool import InterpreterPool
from thunderhelm.ga.training.datasets import DatasetError, load_dataset
from thunderhelm.schemas import events as ev
from thunderhelm.schemas.codec import describe_validation_error
from thunderhelm.schemas.envelope import utc_now_iso
from thunderhelm.schemas.event_data import CandidateCompleted, ContinueRejected
from thunderhelm.schemas.requests import RunRequest
from thunderhelm.schemas.results import RunResult, validated_result
from thunderhelm.streams.config.settings import Settings
from thunderhelm.streams.domain import saga
from thunderhelm.streams.domain.retry import RetryPolicy
from thunderhelm.streams.execution import warm_start
from thunderhelm.streams.execution.continuation import continue_events
from thunderhelm.streams.execution.executor import RunExecutor, StepInterrupted, ended, step_event
from thunderhelm.streams.execution.local_log import LocalLog, LocalLogError, log_path
from thunderhelm.streams.execution.retrying import with_retries
from thunderhelm.streams.wire.events import event_envelope, to_domain

SOURCE = "thunderhelm/local-run"
# Called after each generation with (generations done, generations in all, best so far).
ProgressHook = Callable[[int, int, float | None], None]
# Called as each candidate finishes with (candidates with an outcome in this
# generation, population, best fitness so far).
CandidateHook = Callable[[int, int, float | None], None]
EXIT_CODES = {"succeeded": 0, "cancelled": 130}  # 130: the shell's code for SIGINT
INTERRUPT_REASON = "interrupted (Ctrl-C)"
SIGNAL_TICK_S = 0.05  # how late a Ctrl-C may reach the cancel token


LOG_DIR_VARIABLE = "THUNDERHELM_LOCAL_LOG_DIR"
DEFAULT_LOG_DIR = Path("var", "local-runs")


def log_dir(env: Mapping[str, str] = os.environ) -> Path:
    """Where local run logs live: `THUNDERHELM_LOCAL_LOG_DIR`, else `var/local-runs/` here.

    Absolute, so the path in messages is the one the run used whatever
    folder the user is in later.
    """
    return Path.cwd() / Path(env.get(LOG_DIR_VARIABLE) or DEFAULT_LOG_DIR)


def _bar(done: int, total: int, width: int = 24) -> str:
    filled = int(width * done / max(total, 1))
    return "[" + "#" * filled + "." * (width - filled) + f"] {done}/{total}"


def awake[T](step: Coroutine[Any, Any, T], tick: Callable[[], None]) -> T:
    """Run `step` to its end, calling `tick` in the main thread every tick meanwhile.

    A SIGINT may reach any thread (a pool thread, say); Python runs the
    handler in the main thread only when that thread runs Python code, so it
    must not sleep in the event loop until the step is done.
    """

    async def ticking() -> T:
        task = asyncio.ensure_future(step)
        while not task.done():
            await asyncio.wait({task}, timeout=SIGNAL_TICK_S)
            tick()
        return task.result()

    return asyncio.run(ticking())


class Interrupt:
    """SIGINT as a cancel: stops the running step through its token; a second one aborts."""

    def __init__(self, executor: RunExecutor, run_id: str) -> None:
        self.executor = executor
        self.run_id = run_id
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> Interrupt:
        self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
        self.executor.cancel(self.run_id)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def keep_cancelling(self) -> None:
        """Cancel the step now going, once asked: a Ctrl-C that came just before
        the step made its cancel token must still stop it."""
        if self.requested:
            self.executor.cancel(self.run_id)


class LocalRun:
    """One run's loop: the log, the fold, and the executor that does each step."""

    def __init__(
        self,
        log: LocalLog,
        executor: RunExecutor,
        interrupt: Interrupt,
        out: Any,
        hook: ProgressHook | None = None,
        clock: Callable[[], float] = time.time,
        candidate_hook: CandidateHook | None = None,
    ) -> None:
        self.hook = hook
        self.candidate_hook = candidate_hook
        # Candidates are appended from the training thread, the rest from this one.
        self._appending = threading.Lock()
        self.log = log
        self.executor = executor
        self.interrupt = interrupt
        self.out = out
        self.clock = clock  # wall time for the saga's budget (seconds since the epoch)
        self.state: saga.RunState | None = None
        self.sequence = 0

    def append(self, new: saga.NewEvent) -> None:
        """Append an event as the worker does (same envelope and validation), then fold it."""
        with self._appending:
            if (
                new.type == ev.CANDIDATE_COMPLETED
                and self.state is not None
                and self.state.terminal
            ):
                return  # a training that finished after the run ended (cancel, budget)
            self.sequence += 1
            run_id = self.state.run_id if self.state else str(new.data.run_id)
            record = event_envelope(run_id, new, self.sequence)
            record = record.model_copy(update={"source": SOURCE})
            self.log.append(record)
            self.state = saga.evolve(self.state, to_domain(record))

    def candidate(self, data: dict[str, Any]) -> None:
        """A candidate's outcome, from the training thread: on the log, then on the screen."""
        self.append(saga.NewEvent(ev.CANDIDATE_COMPLETED, CandidateCompleted.model_validate(data)))
        state = self.state
        if self.candidate_hook is None or state is None or state.ga_state is None:
            return
        scores = [o.fitness for o in state.outcomes.values()]
        if state.best is not None:
            scores.append(state.best.get("fitness"))
        finite = [float(f) for f in scores if isinstance(f, int | float)]
        population = len(state.ga_state.get("population", ()))
        self.candidate_hook(len(state.outcomes), population, max(finite) if finite else None)

    def drive(self) -> RunResult:
        """React, act, append, evolve -- until the saga says the result is out."""
        interrupt = self.interrupt
        while True:
            state = self.state
            assert state is not None
            if interrupt.requested and state.cancel_reason is None and not state.terminal:
                cancel = saga.CancelRun(
                    str(uuid.uuid4()), state.run_id, INTERRUPT_REASON, utc_now_iso()
                )
                for new in saga.decide(state, cancel):
                    self.append(new)
                continue
            action = saga.react(state, self.clock())
            match action:
                case saga.PublishResult():
                    return action.result
                case saga.Start():
                    self.append(asyncio.run(step_event(self.executor, state, action, None)))
                case saga.RunGeneration() | saga.Finish():
                    began = time.time()
                    done = self.perform(state, action)
                    if done is not None:
                        self.append(done)
                        if done.type == ev.GENERATION_COMPLETED:
                            self.progress(time.time() - began)
                case None:
                    raise RuntimeError(f"run {state.run_id} is {state.status}: nothing to do")

    def perform(
        self, state: saga.RunState, action: saga.RunGeneration | saga.Finish
    ) -> saga.NewEvent | None:
        """The step's event (`step_event`, as the worker's); None if cancel or budget stopped it."""
        run_id = state.run_id
        try:
            return awake(
                with_retries(
                    lambda: step_event(self.executor, state, action, None, self.candidate),
                    run_id,
                    RetryPolicy(),
                ),
                self.interrupt.keep_cancelling,
            )
        except StepInterrupted:
            return None  # the saga's next decision ends the run
        except Exception as exc:
            print(f"run {run_id}: step failed: {type(exc).__name__}: {exc}", file=self.out)
            return self.failed(state, exc)

    def failed(self, state: saga.RunState, exc: BaseException) -> saga.NewEvent:
        """The `run.failed` that ends the run with `exc` as its error, as a worker ends it."""
        result = self.executor.failure_result(state, exc)
        return saga.NewEvent(ev.RUN_FAILED, ended(state.run_id, result))

    def progress(self, seconds: float) -> None:
        state = self.state
        assert state is not None
        best = state.history[-1]["best_fitness"] if state.history else None
        if self.hook is not None:  # the CLI draws its own live progress
            self.hook(state.generation, state.total_generations, best)
            return
        print(
            f"generation {_bar(state.generation, state.total_generations)}  "
            f"best {best if best is None else round(best, 4)}  "
            f"evaluations {state.evaluations}  {seconds:.1f}s",
            file=self.out,
            flush=True,
        )


def run_local(
    settings: Settings,
    raw: dict[str, Any],
    pool_size: int,
    as_json: bool,
    logs: Path | None = None,
    *,
    progress: ProgressHook | None = None,
    candidates: CandidateHook | None = None,
    more: int = 0,
) -> int:
    """Run (or resume) one request to its end; `logs` overrides `log_dir()`. Exit code back.

    `more`: a run of this id that succeeded goes on for that many more
    generations (`saga.ContinueRun`, as a worker takes a continue).
    """
    try:
        request = RunRequest.model_validate(raw).model_dump(mode="json")
    except ValidationError as exc:
        for reason in describe_validation_error(exc):
            print(f"invalid request: {reason}", file=sys.stderr)
        return 2
    out = sys.stderr if as_json else sys.stdout
    run_id = request["run_id"]
    try:
        log = LocalLog(log_path(logs or log_dir(), run_id))
        with log.held():
            hooks = (progress, candidates)
            return _run_logged(settings, request, log, pool_size, as_json, out, hooks, more)
    except LocalLogError as exc:
        print(f"local run log: {exc}", file=sys.stderr)
        return 2


def _run_logged(
    settings: Settings,
    request: dict[str, Any],
    log: LocalLog,
    pool_size: int,
    as_json: bool,
    out: Any,
    hooks: tuple[ProgressHook | None, CandidateHook | None] = (None, None),
    more: int = 0,
) -> int:
    run_id = request["run_id"]
    state, count = log.fold()
    if state is not None and state.request is not None and not _same_run(state, request):
        print(
            f"run {run_id} already exists in {log.path} with another request; use a new run id",
            file=sys.stderr,
        )
        return 2
    local = settings.model_copy(update={"pool_size": pool_size or settings.pool_size})
    if "pool_priority" not in settings.model_fields_set:
        # No event loop or broker client here needs the CPU before training
        # does; under SCHED_IDLE (the worker's default) a run on a busy host
        # barely moved and took minutes to notice a Ctrl-C.
        local = local.model_copy(update={"pool_priority": "normal"})
    executor = RunExecutor(local)
    progress, on_candidate = hooks
    run = LocalRun(
        log, executor, Interrupt(executor, run_id), out, progress, candidate_hook=on_candidate
    )
    run.state, run.sequence = state, count
    if more:
        problem = _go_on(run, more, settings)
        if problem is not None:
            print(f"run {run_id}: {problem}", file=sys.stderr)
            return 2
        state = run.state
    if state is not None and state.terminal:
        assert state.result is not None
        print(f"run {run_id} already {state.status} (log {log.path})", file=out)
        return _report(state.result, out, as_json)
    if state is None:
        start = saga.StartRun(str(uuid.uuid4()), request, utc_now_iso())
        if request.get("warm_start"):
            found = _warm_start(settings, request, log)
            if isinstance(found, list):
                for reason in found:
                    print(f"invalid request: {reason}", file=sys.stderr)
                return 2
            start = dataclasses.replace(start, warm_start=found)
        for new in saga.decide(None, start):
            run.append(new)
    else:
        print(
            f"run {run_id}: resuming from generation {state.generation} (log {log.path})", file=out
        )
    # Ctrl-C is a cancel from here on, while the data loads and the pool starts
    # too: a SIGINT that came in during the pool's start was lost (the run went
    # on), and the first step cancels itself once one has come (`keep_cancelling`).
    with run.interrupt:
        try:
            dataset = load_dataset(
                request["dataset"], data_root=settings.data_root, text_dir=settings.text_dir
            )
        except DatasetError as exc:
            # As a worker ends it: the run fails with the reason, on its log.
            assert run.state is not None
            print(f"run {run_id}: dataset: {exc}", file=sys.stderr)
            run.append(run.failed(run.state, exc))
            assert run.state.result is not None
            return _report(run.state.result, out, as_json)
        predicts = (
            "a number (regression)"
            if dataset.task == "regression"
            else f"{dataset.n_classes} classes"
        )
        print(
            f"run {run_id}: {dataset.name} {dataset.n_features} features, "
            f"{predicts}, {len(dataset.y_train)} train / "
            f"{len(dataset.y_val)} val / {len(dataset.y_test)} test",
            file=out,
        )
        executor.use_dataset(run_id, dataset)
        with InterpreterPool(local.pool_size or None) as pool:
            executor.pool = pool
            try:
                result = run.drive()
            finally:
                executor.pool = None
    return _report(result, out, as_json)


def _warm_start(
    settings: Settings, request: Mapping[str, Any], log: LocalLog
) -> dict[str, Any] | list[str]:
    """What the run takes from its source, a run logged in the same folder (or why it cannot)."""
    source_id = str(request["warm_start"]["run_id"])
    try:
        source, _ = LocalLog(log_path(log.path.parent, source_id)).fold()
    except LocalLogError as exc:
        return [f"warm_start.run_id: {exc}"]

    def shape(spec: Mapping[str, Any]) -> warm_start.Shape:
        dataset = load_dataset(spec, data_root=settings.data_root, text_dir=settings.text_dir)
        return dataset.n_features, dataset.n_classes

    return warm_start.taken(request, source, shape)


def _same_run(state: saga.RunState, request: Mapping[str, Any]) -> bool:
    """Whether `request` is the one the logged run was started with.

    A continued run's request has grown its generations and may have another
    budget: those two are not compared.
    """
    first = dict(state.request or {})
    if state.revision > 1:
        first["ga"] = {
            **first.get("ga", {}),
            "generations": request.get("ga", {}).get("generations"),
        }
        first["budget"] = request.get("budget")
    return first == dict(request)


def _go_on(run: LocalRun, more: int, settings: Settings) -> str | None:
    """Append the run's continue for `more` generations; why not, if it cannot be taken."""
    state = run.state
    if state is None:
        return "no such run in this folder's logs to continue (run it first)"
    command = saga.ContinueRun(str(uuid.uuid4()), state.run_id, more, None, utc_now_iso())
    decided = continue_events(state, command, settings.limits)
    if not decided:
        return None
    if decided[0].type == ev.CONTINUE_REJECTED:
        assert isinstance(decided[0].data, ContinueRejected)
        return "; ".join(decided[0].data.reasons)
    print(
        f"run {state.run_id}: continuing from generation {state.generation} "
        f"for {more} more (log {run.log.path})",
        file=run.out,
    )
    run.append(decided[0])
    return None


def _report(ended: RunResult, out: Any, as_json: bool) -> int:
    result = validated_result(ended)  # as on run-results
    _table(result, out)
    if as_json:
        print(json.dumps(result))
    return EXIT_CODES.get(result["status"], 1)


def _table(result: dict[str, Any], out: Any) -> None:
    best = result.get("best") or {}
    metrics = best.get("metrics", {})
    genome = best.get("genome", {})
    levels = genome.get("levels", [])
    shape = " | ".join(
        ",".join(str(u.get("neurons")) + u.get("activation", "")[:4] for u in level)
        for level in levels
    )
    rows = [
        ("status", result["status"]),
        *(
            [
                ("best val_r2", metrics.get("val_r2")),
                ("best val_rmse", metrics.get("val_rmse")),
                ("best test_r2", metrics.get("test_r2")),
            ]
            if metrics.get("val_r2") is not None  # a regression run
            else [
                ("best val_accuracy", metrics.get("val_accuracy")),
                ("best val_loss", metrics.get("val_loss")),
                ("best test_accuracy", metrics.get("test_accuracy")),
            ]
        ),
        ("params", metrics.get("params")),
        ("levels (neurons+act)", shape or "-"),
        ("learning rate", genome.get("learning_rate")),
        ("generations", result["generations"]),
        ("evaluations", result["evaluations"]),
        ("time", f"{result['duration_s']:.1f}s"),
        ("artifact", result["artifact"]),
    ]
    if "val_r2" in metrics:  # a regression run: its figures in place of accuracy
        rows[1:4] = [
            ("best val_r2", metrics.get("val_r2")),
            ("best val_rmse", metrics.get("val_rmse")),
            ("best test_r2", metrics.get("test_r2")),
            ("best test_rmse", metrics.get("test_rmse")),
        ]
    if error := result.get("error"):
        rows.insert(1, ("error", f"{error['class']}: {error['message']}"))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        if isinstance(value, float):
            value = round(value, 4)
        print(f"  {key:<{width}}  {value}", file=out)
