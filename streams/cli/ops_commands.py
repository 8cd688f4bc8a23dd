"""`thunderhelm services | worker | dashboard | bench`: the long-running and dev commands.

`services` runs Kafka and Jaeger locally (streams/devservices), `worker` the
Faust worker under its supervisor, `dashboard` the web UI. `bench` runs the
benchmarks, which live in the source checkout (`bench/`, never installed):
it starts `python -m bench` there with the same options.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from thunderhelm.streams.cli.base import (
    ThunderhelmGroup,
    emit,
    emit_json,
    fail,
    finish,
    state,
)
from thunderhelm.streams.cli.exits import ExitCode

services_app = typer.Typer(
    cls=ThunderhelmGroup,
    no_args_is_help=True,
    help=(
        "Run a local Kafka broker and Jaeger on 127.0.0.1 without Docker. "
        "Environment: THUNDERHELM_CACHE_DIR, THUNDERHELM_STATE_DIR, THUNDERHELM_KAFKA_PORT, "
        "THUNDERHELM_JAEGER_*_PORT, THUNDERHELM_SERVICES_START_TIMEOUT (docs/cli.md)."
    ),
)

KafkaOnly = Annotated[bool, typer.Option("--kafka-only", help="only Kafka")]
JaegerOnly = Annotated[bool, typer.Option("--jaeger-only", help="only Jaeger")]
ServicesJson = Annotated[bool, typer.Option("--json", help="print the status as JSON")]


def _services(
    ctx: typer.Context, action: str, kafka_only: bool, jaeger_only: bool, as_json: bool,
    fresh: bool = False,
) -> None:  # fmt: skip
    from thunderhelm.streams.devservices import commands

    if kafka_only and jaeger_only:
        fail(ExitCode.USAGE, "--kafka-only and --jaeger-only exclude each other")
    kafka, jaeger = not jaeger_only, not kafka_only
    try:
        settings = commands.ServicesSettings.from_env()
    except commands.ServicesError as exc:
        fail(ExitCode.USAGE, f"bad setting: {exc}")
    try:
        if action == "start":
            result = commands.start(settings, kafka=kafka, jaeger=jaeger, fresh=fresh)
        elif action == "stop":
            result = commands.stop(settings, kafka=kafka, jaeger=jaeger)
        else:
            result = commands.status(settings, kafka=kafka, jaeger=jaeger)
    except commands.ServicesError as exc:
        fail(ExitCode.FAILED, str(exc))
    if as_json:
        emit_json(ctx, result.as_dict(), indent=2)
    else:
        emit(ctx, result.render())
    if action == "status" and not result.all_running:
        finish(ExitCode.UNREACHABLE)


@services_app.command(help="Start the services (idempotent) and wait until they answer.")
def start(
    ctx: typer.Context,
    kafka_only: KafkaOnly = False,
    jaeger_only: JaegerOnly = False,
    fresh: Annotated[
        bool, typer.Option("--fresh", help="wipe Kafka data and restart Jaeger first")
    ] = False,
    as_json: ServicesJson = False,
) -> None:
    _services(ctx, "start", kafka_only, jaeger_only, as_json, fresh)


def _services_command(action: str, help_text: str) -> None:
    """Add `services ACTION`, whose only options are the ones every services command has."""

    @services_app.command(name=action, help=help_text)
    def command(
        ctx: typer.Context,
        kafka_only: KafkaOnly = False,
        jaeger_only: JaegerOnly = False,
        as_json: ServicesJson = False,
    ) -> None:
        _services(ctx, action, kafka_only, jaeger_only, as_json)


_services_command("stop", "Stop the services this tool started (idempotent).")
_services_command("status", "Show each service; exit 3 if one is not running.")


def worker(
    ctx: typer.Context,
    no_supervise: Annotated[
        bool,
        typer.Option("--no-supervise", help="run the worker in this process, with no supervisor"),
    ] = False,
) -> None:
    """Run the Faust worker.

    By default this process is a small supervisor that runs the worker as a
    child process, logs 'worker process PID started' and restarts it with
    exponential backoff when it dies (a signal or a non-zero exit);
    SIGTERM/SIGINT stop both.
    """
    if not no_supervise:
        from thunderhelm.streams.worker import supervisor

        finish(supervisor.main())
        return
    import logging

    from thunderhelm.streams.cli.worker_run import run_worker
    from thunderhelm.streams.observability import logs

    logs.configure_logging(logging.INFO)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    finish(run_worker(state(ctx).settings))


def dashboard(
    ctx: typer.Context,
    host: Annotated[
        str | None, typer.Option(help="address to listen on (THUNDERHELM_DASHBOARD_HOST)")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(min=0, max=65535, help="port (THUNDERHELM_DASHBOARD_PORT, 6070)"),
    ] = None,
) -> None:
    """Serve the web dashboard: runs, generations, traces, dead letters."""
    from thunderhelm.streams.dashboard import main as dash

    finish(dash.main(state(ctx).settings, host, port))


BENCHMARKS = (
    "pool",
    "kernel",
    "quality",
    "faults",
    "dlq",
    "tracing",
    "soak",
    "stream",
    "scale",
    "all",
)


def bench(
    name: Annotated[
        str, typer.Argument(metavar="NAME", help=f"benchmark: {', '.join(BENCHMARKS)}")
    ],
    quick: Annotated[
        bool, typer.Option("--quick", help="tiny settings: checks the code paths, measures nothing")
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option(help="folder for results/NAME.json and RESULTS.md (default: bench/)"),
    ] = None,
    pool_size: Annotated[
        int | None, typer.Option(min=1, help="interpreters (default: one per core)")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="one JSON object per benchmark on stdout")
    ] = False,
) -> None:
    """Run benchmarks from the source checkout; figures go to bench/RESULTS.md."""
    from thunderhelm.streams.config.settings import REPO_ROOT

    if name not in BENCHMARKS:
        fail(ExitCode.USAGE, f"no benchmark {name!r}; one of {', '.join(BENCHMARKS)}")
    if not (REPO_ROOT / "bench" / "__main__.py").is_file():
        fail(ExitCode.NOT_FOUND, "needs a source checkout (bench/ is not installed)")
    argv = [name, *(["--quick"] if quick else []), *(["--json"] if as_json else [])]
    if out is not None:
        argv += ["--out", str(out.resolve())]
    if pool_size is not None:
        argv += ["--pool-size", str(pool_size)]
    finish(subprocess.call([sys.executable, "-m", "bench", *argv], cwd=REPO_ROOT))


def register(app: typer.Typer) -> None:
    app.add_typer(services_app, name="services", help="Start, stop or show local Kafka and Jaeger.")
    app.command()(worker)
    app.command()(dashboard)


def register_bench(app: typer.Typer) -> None:
    app.command()(bench)
