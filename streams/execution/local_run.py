"""`thunderhelm run`: the main job on the local pool, without Kafka.

The same engine as the worker (streams/steps.py, the interpreter pool, the
kernel), driven in a plain loop: a progress bar per generation, then a table
of the best candidate, and with `--json` the result `data` of the contract as
the last line on stdout.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from pydantic import ValidationError

from thunderhelm.ga.core.engine import initial_state, is_finished
from thunderhelm.ga.pool.interpreter_pool import CancelToken, InterpreterPool
from thunderhelm.ga.training.datasets import load_dataset
from thunderhelm.ga.training.evaluators import PoolEvaluator
from thunderhelm.schemas.codec import describe_validation_error
from thunderhelm.schemas.envelope import utc_now_iso
from thunderhelm.schemas.requests import RunRequest
from thunderhelm.streams.domain import saga
from thunderhelm.streams.execution import steps
from thunderhelm.streams.execution.executor import RunExecutor
from thunderhelm.streams.worker.settings import Settings


def _bar(done: int, total: int, width: int = 24) -> str:
    filled = int(width * done / max(total, 1))
    return "[" + "#" * filled + "." * (width - filled) + f"] {done}/{total}"


def run_local(settings: Settings, raw: dict[str, Any], pool_size: int, as_json: bool) -> int:
    try:
        request = RunRequest.model_validate(raw).model_dump(mode="json")
    except ValidationError as exc:
        for reason in describe_validation_error(exc):
            print(f"invalid request: {reason}", file=sys.stderr)
        return 2
    out = sys.stderr if as_json else sys.stdout
    started = utc_now_iso()
    began = time.time()
    dataset = load_dataset(
        request["dataset"], data_root=settings.data_root, text_dir=settings.text_dir
    )
    config = steps.ga_config(request)
    print(
        f"run {request['run_id']}: {dataset.name} {dataset.n_features} features, "
        f"{dataset.n_classes} classes, {len(dataset.y_train)} train / {len(dataset.y_val)} val"
        f" / {len(dataset.y_test)} test",
        file=out,
    )
    deadline = began + float(request["budget"]["timeout_s"])
    local = Settings(**{**settings.__dict__, "pool_size": pool_size or settings.pool_size})
    executor = RunExecutor(local)
    with InterpreterPool(pool_size or None) as pool:
        executor.pool = pool
        evaluator = PoolEvaluator(
            pool,
            dataset,
            deadline_s=max(1.0, deadline - time.time()),
            cancel=CancelToken(),
            fitness=steps.fitness_of(request),
        )
        state = initial_state(config)
        while not is_finished(state, config):
            t0 = time.time()
            outcome = steps.run_generation(
                request, state, dataset.n_features, dataset.n_classes, evaluator
            )
            state = outcome.state
            best = outcome.data["best_fitness"]
            print(
                f"generation {_bar(state.generation, config.generations)}  "
                f"best {best if best is None else round(best, 4)}  "
                f"evaluations {state.evaluations}  {time.time() - t0:.1f}s",
                file=out,
                flush=True,
            )
            if time.time() > deadline:
                break
        status = "succeeded" if is_finished(state, config) else "failed"
        best_dict = None if state.best is None else state.best.to_dict()
        run_state = saga.RunState(
            run_id=request["run_id"],
            status="running",
            request=request,
            generation=state.generation,
            evaluations=state.evaluations,
            best=best_dict,
            accepted_at=started,
        )
        action = (
            saga.Finish("succeeded")
            if status == "succeeded"
            else saga.Finish("failed", "TimeoutError", "run exceeded its budget.timeout_s")
        )
        executor.use_dataset(request["run_id"], dataset)
        result = executor.finish_now(run_state, action)  # the same ending as the worker
        executor.pool = None
    _table(result, out)
    if as_json:
        print(json.dumps(result))
    return 0 if result["status"] == "succeeded" else 1


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
        ("best val_accuracy", metrics.get("val_accuracy")),
        ("best val_loss", metrics.get("val_loss")),
        ("best test_accuracy", metrics.get("test_accuracy")),
        ("params", metrics.get("params")),
        ("levels (neurons+act)", shape or "-"),
        ("learning rate", genome.get("learning_rate")),
        ("generations", result["generations"]),
        ("evaluations", result["evaluations"]),
        ("time", f"{result['duration_s']:.1f}s"),
        ("artifact", result["artifact"]),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        if isinstance(value, float):
            value = round(value, 4)
        print(f"  {key:<{width}}  {value}", file=out)
