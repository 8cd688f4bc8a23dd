"""`thunderhelm submit | watch | cancel | continue | rerun | run`: start, follow, stop runs.

`submit` and `cancel` produce a command to run-requests; `watch` (and
`submit --wait`) read a run's events from the start of run-events until its
result lands on run-results; `run` does the same job without Kafka, on the
local pool. Two different times never share a flag: `--budget-s` is the run's
own time budget (part of the request), `--follow-timeout` how long this
command waits for the result.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from thunderhelm.streams.cli import request_options as ro
from thunderhelm.streams.cli.base import answer, emit, emit_json, finish, note, state
from thunderhelm.streams.cli.exits import CliError, ExitCode
from thunderhelm.streams.config.settings import Settings

FollowOpt = Annotated[
    float | None,
    typer.Option(
        "--follow-timeout",
        min=0,
        help="give up waiting for the result after this many seconds (exit 4); default: wait",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output (docs/cli.md)")]


@dataclass(frozen=True)
class Outcome:
    """How a followed run ended: its result `data` (or the rejection) and its trace id."""

    result: dict[str, Any]
    trace_id: str | None

    @property
    def code(self) -> int:
        return int(ExitCode.OK if self.result.get("status") == "succeeded" else ExitCode.FAILED)


async def follow_run(
    settings: Settings,
    run_id: str,
    follow_timeout: float | None,
    view: Any,
    echo: Callable[[str], None] | None,
) -> Outcome:
    """Read the run's events until its result (or rejection), drawing them as they come."""
    from thunderhelm.schemas import events as ev
    from thunderhelm.streams.clients import client
    from thunderhelm.streams.observability import telemetry

    trace_id = None
    best: float | None = None
    population = 0
    in_generation: set[tuple[int, int]] = set()  # (generation, index) with an outcome
    async for seen in client.follow(settings, run_id, timeout_s=follow_timeout):
        data = seen.event.data if isinstance(seen.event.data, dict) else {}
        kind = seen.event.type
        if kind == ev.RUN_ACCEPTED:
            if data.get("traceparent"):
                trace_id = telemetry.trace_id_of(str(data["traceparent"]))
            ga = (data.get("request") or {}).get("ga", {})
            population = int(ga.get("population", 0))
            if view is not None:
                view.total(int(ga.get("generations", 0)))
        if seen.topic == settings.run_results:
            return Outcome(data, trace_id)
        line = f"[{run_id}] {client.describe(seen)}"
        if view is not None:
            view.line(line)
            if kind == ev.GENERATION_COMPLETED:
                gen_best = data.get("best_fitness")
                if gen_best is not None:
                    best = gen_best if best is None else max(best, gen_best)
                view.generation(int(data["generation"]) + 1, best)
            if kind == ev.CANDIDATE_COMPLETED:
                score = data.get("fitness")
                if isinstance(score, int | float):
                    best = float(score) if best is None else max(best, float(score))
                generation = int(data["generation"])
                in_generation = {c for c in in_generation if c[0] == generation}
                in_generation.add((generation, int(data["index"])))
                view.candidate(len(in_generation), population, best)
        elif echo is not None:
            echo(line)
        if kind == ev.RUN_REJECTED:
            return Outcome({"run_id": run_id, "status": "rejected", **data}, trace_id)
    raise AssertionError("follow() ends with a result or raises")  # pragma: no cover


def watch_run(
    ctx: typer.Context, run_id: str, follow_timeout: float | None, as_json: bool
) -> Outcome:
    """Follow a run to its end, live on a terminal; print the result; return the outcome."""
    from thunderhelm.streams.cli.progress import RunProgress
    from thunderhelm.streams.clients import client

    cli = state(ctx)
    settings = cli.settings
    try:
        if cli.rich(as_json):
            with RunProgress(cli.console(), run_id) as view:
                outcome = asyncio.run(follow_run(settings, run_id, follow_timeout, view, None))
        else:
            echo = None if as_json else (lambda line: emit(ctx, line))
            outcome = asyncio.run(follow_run(settings, run_id, follow_timeout, None, echo))
    except TimeoutError:
        raise CliError(
            ExitCode.TIMEOUT, f"run {run_id} did not finish within {follow_timeout} s"
        ) from None
    if as_json:
        return outcome
    result = outcome.result
    if result.get("status") == "rejected":
        emit(ctx, f"  run {run_id} rejected: {'; '.join(result.get('reasons', []))}")
        return outcome
    emit(ctx, client.summary(result))
    if outcome.trace_id:
        emit(ctx, f"trace id: {outcome.trace_id}")
        emit(ctx, f"trace (Jaeger UI):  {client.trace_url(settings, outcome.trace_id)}")
        emit(ctx, f"trace (Jaeger API): {client.trace_api_url(settings, outcome.trace_id)}")
    return outcome


def _traced_cli_settings() -> Settings:
    """The settings the CLI traces its commands under (its own service name)."""
    name = os.environ.get("THUNDERHELM_CLI_SERVICE_NAME", "thunderhelm-cli")
    return Settings.from_env({**os.environ, "OTEL_SERVICE_NAME": name})


def _traced(send: Coroutine[Any, Any, str]) -> str:
    """Produce a request under the CLI's tracing; the trace id it began (its spans flushed)."""
    from thunderhelm.streams.observability import telemetry

    telemetry.configure(_traced_cli_settings())
    trace_id = asyncio.run(send)
    telemetry.flush()
    return trace_id


def register(app: typer.Typer) -> None:
    app.command(help="Produce a run request to run-requests; print the run id.")(submit)
    app.command(help="Follow a run's events to its result; exit 0 if it succeeded.")(watch)
    app.command(help="Request the cancellation of a run.")(cancel)
    app.command(name="continue", help="Take a run that succeeded on for more generations.")(
        continue_run
    )
    app.command(help="Submit a run's request again under a new run id; with --wait, compare.")(
        rerun
    )
    app.command(help="Run a NAS job on the local interpreter pool, without Kafka.")(run)


@ro.with_request
def submit(
    ctx: typer.Context,
    request: dict[str, Any],
    wait: Annotated[
        bool, typer.Option("--wait", help="then follow the run to its end, as watch")
    ] = False,
    follow_timeout: FollowOpt = None,
    as_json: JsonOpt = False,
) -> None:
    from thunderhelm.streams.clients import client

    settings = state(ctx).settings
    trace_id = _traced(client.submit(settings, request))
    if not wait:
        if as_json:
            emit_json(ctx, {"run_id": request["run_id"], "trace_id": trace_id, "result": None})
        else:
            emit(ctx, request["run_id"])
        return
    if not as_json:
        emit(ctx, request["run_id"])
        note(f"trace id: {trace_id}")
    outcome = watch_run(ctx, request["run_id"], follow_timeout, as_json)
    if as_json:
        emit_json(
            ctx, {"run_id": request["run_id"], "trace_id": trace_id, "result": outcome.result}
        )
    finish(outcome.code)


def watch(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(metavar="RUN_ID", help="the run to follow")],
    follow_timeout: FollowOpt = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="print only the result data as one JSON object")
    ] = False,
) -> None:
    outcome = watch_run(ctx, run_id, follow_timeout, as_json)
    if as_json:
        emit_json(ctx, outcome.result)
    finish(outcome.code)


def cancel(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(metavar="RUN_ID", help="the run to cancel")],
    reason: Annotated[str, typer.Option(help="recorded with the cancel")] = "cancelled by user",
    as_json: JsonOpt = False,
) -> None:
    from thunderhelm.streams.clients import client

    settings = state(ctx).settings
    trace_id = _traced(client.cancel(settings, run_id, reason))
    data = {"run_id": run_id, "reason": reason, "trace_id": trace_id}
    answer(ctx, as_json, data, f"cancel requested for {run_id}")


def continue_run(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(metavar="RUN_ID", help="the run to take on")],
    generations: Annotated[
        int, typer.Option("--generations", min=1, max=1000, help="how many more generations")
    ],
    budget_s: Annotated[
        float | None,
        typer.Option("--budget-s", min=0.001, help="its time budget from now (default: its own)"),
    ] = None,
    max_evaluations: Annotated[
        int | None,
        typer.Option(min=1, help="its budget of candidate trainings, all generations counted"),
    ] = None,
    max_work: Annotated[
        float | None,
        typer.Option(
            min=0.001, help="its budget of training work (epoch-equivalents), all counted"
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Go on from the run's last checkpoint: the same run id, its events and its trace.

    The run ends with a new result record, the next `revision` of the run's
    result; `watch RUN_ID` follows it. A run that failed, was cancelled or is
    still running refuses (`run.continue-rejected` in its log, with why).
    """
    from thunderhelm.streams.clients import client

    budget: dict[str, Any] = {}
    for name, value in (
        ("timeout_s", budget_s),
        ("max_evaluations", max_evaluations),
        ("max_work", max_work),
    ):
        if value is not None:
            budget[name] = value
    settings = state(ctx).settings
    trace_id = _traced(client.continue_run(settings, run_id, generations, budget))
    data = {"run_id": run_id, "generations": generations, "budget": budget, "trace_id": trace_id}
    answer(ctx, as_json, data, f"continue requested for {run_id}: {generations} more generation(s)")


def rerun(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(metavar="RUN_ID", help="the run to run again")],
    new_run_id: Annotated[
        str | None,
        typer.Option("--run-id", help="the new run's id (default: RUN_ID-rerun-<random>)"),
    ] = None,
    wait: Annotated[
        bool,
        typer.Option("--wait", help="follow the new run to its end and say if it matched"),
    ] = False,
    follow_timeout: FollowOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The same request (read from the run's `run.accepted`), under a new run id.

    A failed or cancelled run gets another try; a finished one is checked for
    reproducibility: with `--wait`, the new run's best network and fitness are
    compared with the first run's result (`matched`, exit 1 when they differ).
    """
    import uuid

    from thunderhelm.streams.clients import client

    settings = state(ctx).settings
    request, first = asyncio.run(client.run_record(settings, run_id))
    if request is None:
        raise CliError(ExitCode.NOT_FOUND, f"no accepted run {run_id!r} on {settings.run_events}")
    new_id = new_run_id or f"{run_id[:110]}-rerun-{uuid.uuid4().hex[:6]}"
    request = {**request, "run_id": new_id}
    trace_id = _traced(client.submit(settings, request))
    if not wait:
        if as_json:
            emit_json(ctx, {"run_id": new_id, "rerun_of": run_id, "trace_id": trace_id})
        else:
            emit(ctx, new_id)
        return
    if not as_json:
        emit(ctx, new_id)
    outcome = watch_run(ctx, new_id, follow_timeout, as_json)
    matched = None if first is None else client.same_outcome(first, outcome.result)
    if as_json:
        emit_json(
            ctx,
            {
                "run_id": new_id,
                "rerun_of": run_id,
                "trace_id": trace_id,
                "result": outcome.result,
                "matched": matched,
            },
        )
    elif matched is None:
        emit(ctx, f"{run_id} has no result to compare with")
    else:
        emit(ctx, f"matches {run_id}: {'yes' if matched else 'no'} (best network and fitness)")
    finish(outcome.code if matched is not False else int(ExitCode.FAILED))


@ro.with_request
def run(
    ctx: typer.Context,
    request: dict[str, Any],
    pool_size: Annotated[
        int, typer.Option(min=0, help="interpreters in the pool (0: one per core)")
    ] = 0,
    as_json: Annotated[
        bool, typer.Option("--json", help="progress to stderr; last stdout line: the result")
    ] = False,
    log_dir: Annotated[
        Path | None,
        typer.Option(
            file_okay=False,
            help="folder of the local event logs (default: THUNDERHELM_LOCAL_LOG_DIR, "
            "else var/local-runs/ here)",
        ),
    ] = None,
    more: Annotated[
        int,
        typer.Option(
            "--more",
            min=0,
            max=1000,
            help="a run of this id that succeeded goes on for this many more generations "
            "from its last checkpoint (its log; the same request)",
        ),
    ] = 0,
) -> None:
    """Exit 0 when the run succeeded, 1 when it failed, 130 when Ctrl-C cancelled it."""
    from thunderhelm.streams.execution.local_run import run_local

    cli = state(ctx)
    settings = cli.settings
    if not cli.rich(as_json):
        finish(run_local(settings, request, pool_size, as_json, log_dir, more=more))
        return
    from thunderhelm.streams.cli.progress import RunProgress

    with RunProgress(cli.console(), request["run_id"]) as view:
        view.total(int((request.get("ga") or {}).get("generations", 0)))

        def on_generation(done: int, total: int, best: float | None) -> None:
            view.total(total)
            view.generation(done, best)

        code = run_local(
            settings,
            request,
            pool_size,
            as_json,
            log_dir,
            progress=on_generation,
            candidates=view.candidate,
            more=more,
        )
    finish(code)
