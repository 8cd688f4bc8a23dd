"""`thunderhelm runs | replay | trace`: what the event log and Jaeger say about runs.

`runs` and `replay` fold run-events with the worker's own `saga.evolve`
(replay.py); `trace` fetches a run's trace from Jaeger's API (trace_view.py).
On a terminal `runs` is a table and `trace` a tree; piped, they print the
plain lines; with `--json`, one documented shape each (docs/cli.md).
"""

from __future__ import annotations

import asyncio
import urllib.error
from enum import StrEnum
from typing import Annotated

import typer

from thunderhelm.streams.cli.base import emit, emit_json, fail, finish, state
from thunderhelm.streams.cli.exits import ExitCode


class Status(StrEnum):
    accepted = "accepted"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"
    rejected = "rejected"
    cancel_pending = "cancel-pending"


class Color(StrEnum):
    auto = "auto"
    always = "always"
    never = "never"


def runs(
    ctx: typer.Context,
    status: Annotated[Status | None, typer.Option(help="only runs in this state")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per run")] = False,
) -> None:
    """List runs, folded from the event log."""
    from thunderhelm.streams.clients import replay

    cli = state(ctx)
    replayed, _table = asyncio.run(replay.replay(cli.settings))
    wanted = status.value if status else None
    if as_json:
        for row in replay.run_rows(replayed, wanted):
            emit_json(ctx, row)
    elif cli.rich():
        cli.console().print(replay.runs_table(replay.run_rows(replayed, wanted)))
    else:
        emit(ctx, replay.render_runs(replayed, wanted))


def replay_cmd(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="the comparison as one object")] = False,
) -> None:
    """Rebuild every run from the event log and diff it with the worker's table.

    Exit 1 when they differ.
    """
    from thunderhelm.streams.clients import replay

    replayed, table = asyncio.run(replay.replay(state(ctx).settings))
    if as_json:
        report = replay.comparison(replayed, table)
        emit_json(ctx, report)
        finish(ExitCode.OK if report["agree"] else ExitCode.FAILED)
        return
    text, code = replay.render_replay(replayed, table)
    emit(ctx, text)
    finish(code)


def trace(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(metavar="RUN_ID", help="the run whose trace to show")],
    trace_id: Annotated[str | None, typer.Option(help="skip the lookup on run-events")] = None,
    jaeger: Annotated[
        str | None, typer.Option(help="Jaeger query base URL (THUNDERHELM_JAEGER_UI)")
    ] = None,
    wait: Annotated[
        float, typer.Option(min=0, help="seconds to wait for the whole run in Jaeger")
    ] = 0.0,
    as_json: Annotated[bool, typer.Option("--json", help="print Jaeger's trace JSON")] = False,
    color: Annotated[Color, typer.Option(help="colour the plain tree")] = Color.auto,
) -> None:
    """Show a run's trace from Jaeger's API as a tree."""
    from thunderhelm.streams.clients import trace_view

    cli = state(ctx)
    settings = cli.settings
    base = (jaeger or settings.jaeger_ui).rstrip("/")
    if trace_id is None:
        trace_id = asyncio.run(trace_view.find_trace_id(settings, run_id))
        if trace_id is None:
            fail(ExitCode.NOT_FOUND, f"no trace found for run {run_id} on {settings.run_events}")
    try:
        found = trace_view.fetch_trace(base, trace_id, wait)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        fail(ExitCode.UNREACHABLE, f"cannot reach Jaeger at {base}: {reason}")
    ui = f"{base}/trace/{trace_id}"
    if found is None:
        code = ExitCode.TIMEOUT if wait > 0 else ExitCode.NOT_FOUND
        fail(code, f"trace {trace_id} is not in Jaeger (yet?)  UI: {ui}")
    if as_json:
        emit_json(ctx, found, indent=2)
        return
    if cli.rich() and color is not Color.never:
        console = cli.console()
        console.print(f"run {run_id}", highlight=False)
        console.print(trace_view.rich_tree(found))
        console.print(f"Jaeger UI: {ui}", highlight=False)
        return
    paint = color is Color.always or (color is Color.auto and cli.out.isatty())
    emit(ctx, f"run {run_id}")
    emit(ctx, trace_view.render(found, color=paint))
    emit(ctx, f"Jaeger UI: {ui}")


def register(app: typer.Typer) -> None:
    app.command()(runs)
    app.command(name="replay")(replay_cmd)
    app.command()(trace)
