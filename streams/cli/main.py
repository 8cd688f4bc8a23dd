"""`thunderhelm`: the command line, built with typer (and rich on a terminal).

Each group of commands lives in its own module and registers itself here;
base.py holds what they share (settings, output, the error handler) and
exits.py the exit codes. docs/cli.md lists every command, its `--json`
shape and the exit codes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import typer

from thunderhelm.streams.cli import (
    data_commands,
    dlq_commands,
    log_commands,
    model_commands,
    ops_commands,
    run_commands,
)
from thunderhelm.streams.cli.base import CliState, ThunderhelmGroup, state
from thunderhelm.streams.cli.exits import CliError

app = typer.Typer(
    cls=ThunderhelmGroup,
    name="thunderhelm",
    help="Durable, observable neural-architecture-search runs on Kafka.",
    epilog="Exit codes: 0 ok, 1 run failed/cancelled, 2 usage, 3 service unreachable, "
    "4 timeout, 5 not found or bad input, 130 interrupted (docs/cli.md).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _setup(ctx: typer.Context) -> None:
    # `worker` sets up its own logging: the supervisor's, or the worker's.
    if ctx.invoked_subcommand == "worker":
        return
    from thunderhelm.streams.observability import logs

    # A bad setting is reported by the command that reads it; logging falls back to text.
    try:
        log_format = state(ctx).settings.log_format
    except CliError:
        log_format = "text"
    logs.configure_logging(logging.INFO, log_format)
    # A command reports a failure in one line of its own; the client library's
    # notes (reconnects, bootstrap errors) would only repeat it.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


ops_commands.register(app)
run_commands.register(app)
log_commands.register(app)
app.add_typer(dlq_commands.dlq_app, name="dlq")
model_commands.register(app)
data_commands.register(app)
ops_commands.register_bench(app)


def main(argv: Sequence[str] | None = None, *, state: CliState | None = None) -> int:
    """Run the command line; return its exit code (`state` injects settings and output)."""
    try:
        app(args=None if argv is None else list(argv), prog_name="thunderhelm", obj=state)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
