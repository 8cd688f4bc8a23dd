"""`thunderhelm dlq list | show | redrive`: the dead-letter tool's commands.

The reading, decoding and re-driving live in dead_letters.py; this module is
the command line over them: filters as options, a table on a terminal, plain
lines in a pipe, JSON with `--json` (shapes in docs/cli.md).
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Annotated, Any, get_args

import typer

from thunderhelm.schemas.event_data import DeadLetterStage
from thunderhelm.streams.cli.base import (
    ThunderhelmGroup,
    emit,
    emit_json,
    fail,
    finish,
    options_of,
    state,
)
from thunderhelm.streams.cli.exits import ExitCode

dlq_app = typer.Typer(
    cls=ThunderhelmGroup,
    no_args_is_help=True,
    help="List, show and re-drive dead letters (docs/contract.md).",
)

FILTERS = "Filters"
PREVIEW_BYTES = 400


# Typer checks a Literal's values itself; its help would show the alias's name.
STAGES = "[" + "|".join(get_args(DeadLetterStage.__value__)) + "]"


def _when(text: str) -> int:
    from thunderhelm.streams.clients.dead_letters import parse_when as when

    try:
        return when(text)
    except ValueError:
        raise typer.BadParameter(f"expected ISO 8601 or epoch ms, got {text!r}") from None


def _record(text: str) -> tuple[int, int]:
    from thunderhelm.streams.clients.dead_letters import _record as record

    try:
        return record(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


StageOpt = Annotated[
    DeadLetterStage | None,
    typer.Option(help="pipeline stage", metavar=STAGES, rich_help_panel=FILTERS),
]
ErrorOpt = Annotated[
    str | None,
    typer.Option(help="error class (substring, case-insensitive)", rich_help_panel=FILTERS),
]
TopicOpt = Annotated[str | None, typer.Option(help="original topic", rich_help_panel=FILTERS)]
SinceOpt = Annotated[
    int | None,
    typer.Option(
        parser=_when,
        metavar="TIME",
        help="dead-lettered at or after (ISO 8601 or epoch ms)",
        rich_help_panel=FILTERS,
    ),
]
UntilOpt = Annotated[
    int | None,
    typer.Option(
        parser=_when, metavar="TIME", help="dead-lettered at or before", rich_help_panel=FILTERS
    ),
]
PartitionOpt = Annotated[
    int | None,
    typer.Option(min=0, help="partition of the dead-letter topic", rich_help_panel=FILTERS),
]


def _filter(
    stage: StageOpt = None,
    error: ErrorOpt = None,
    topic: TopicOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    partition: PartitionOpt = None,
) -> Any:
    """The `Filter` the filter options select; its parameters declare those options."""
    from thunderhelm.streams.clients.dead_letters import Filter

    return Filter(
        stage=stage,
        error=error,
        topic=topic,
        since_ms=since,
        until_ms=until,
        partition=partition,
    )


_filtered = options_of(_filter, "wanted")


def _table(rows: list[dict[str, Any]], title: str) -> Any:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for name in ("record", "dead-lettered", "stage", "error", "original", "attempt", "key"):
        table.add_column(name, no_wrap=True)
    table.add_column("bytes", justify="right")
    table.add_column("message")
    for row in rows:
        key = row["key"].get("text", row["key"].get("base64", "-"))
        table.add_row(
            f"{row['partition']}:{row['offset']}",
            row["dead_lettered_at"],
            row["stage"],
            f"[red]{row['error_class']}[/]",
            row["original"],
            str(row["attempt"]),
            repr(key),
            str(row["bytes"]),
            row["error_message"],
        )
    return table


def _show_rows(ctx: typer.Context, rows: list[dict[str, Any]], footer: str) -> None:
    from thunderhelm.streams.clients.dead_letters import _print_table

    cli = state(ctx)
    if cli.rich():
        cli.console().print(_table(rows, footer))
        return
    _print_table(rows, cli.out)
    emit(ctx, footer)


@dlq_app.command(name="list", help="List dead letters, oldest first.")
@_filtered
def list_(
    ctx: typer.Context,
    *,
    wanted: Any,
    limit: Annotated[int, typer.Option(min=0, help="at most this many (0: all)")] = 200,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
) -> None:
    from thunderhelm.streams.clients import dead_letters as dl

    found = asyncio.run(dl.read_dead_letters(state(ctx).settings, wanted))
    shown = found if limit == 0 else found[:limit]
    rows = [dl.summary(letter) for letter in shown]
    if as_json:
        for row in rows:
            emit_json(ctx, row)
        return
    _show_rows(ctx, rows, f"{len(shown)} of {len(found)} matching dead letters")


@dlq_app.command(help="Show one dead letter, decoded (JSON).")
def show(
    ctx: typer.Context,
    where: Annotated[
        str, typer.Argument(metavar="PARTITION:OFFSET", help="the record on the dead-letter topic")
    ],
    preview: Annotated[int, typer.Option(min=0, help="value bytes to show")] = PREVIEW_BYTES,
    as_json: Annotated[bool, typer.Option("--json", help="one line instead of indented")] = False,
) -> None:
    from thunderhelm.streams.clients import dead_letters as dl

    partition, offset = _record(where)
    only = dl.Filter(records=frozenset([(partition, offset)]), partition=partition)
    found = asyncio.run(dl.read_dead_letters(state(ctx).settings, only))
    if not found:
        fail(ExitCode.NOT_FOUND, f"no dead letter at {partition}:{offset}")
    emit_json(ctx, dl.detail(found[0], preview), indent=None if as_json else 2)


@dlq_app.command(help="Produce dead letters to their original topic again.")
@_filtered
def redrive(
    ctx: typer.Context,
    records: Annotated[
        list[str] | None,
        typer.Argument(metavar="[PARTITION:OFFSET]...", help="records to re-drive"),
    ] = None,
    *,
    wanted: Any,
    all_: Annotated[
        bool, typer.Option("--all", help="every dead letter (no selector needed)")
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="say what would be re-driven")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="one object: what was (or would be) re-driven")
    ] = False,
) -> None:
    """Exit 5 when records were named and none of them exists."""
    from thunderhelm.streams.clients import dead_letters as dl

    chosen = [_record(text) for text in records or ()]
    wanted = dataclasses.replace(wanted, records=frozenset(chosen))
    if not (wanted.selects_something or all_):
        fail(ExitCode.USAGE, "say which records: PARTITION:OFFSET, a filter, or --all")
    settings = state(ctx).settings
    found = asyncio.run(dl.read_dead_letters(settings, wanted))
    written = [] if dry_run else asyncio.run(dl.redrive(settings, found))
    if as_json:
        targets: list[dict[str, Any] | None] = [
            {"topic": t, "partition": p, "offset": o} for t, p, o in written
        ] or [None] * len(found)
        moved = [
            {"partition": letter.partition, "offset": letter.offset, "to": to}
            for letter, to in zip(found, targets, strict=True)
        ]
        emit_json(ctx, {"dry_run": dry_run, "records": moved})
    elif dry_run:
        _show_rows(
            ctx,
            [dl.summary(letter) for letter in found],
            f"would re-drive {len(found)} dead letters",
        )
    else:
        for letter, (to_topic, to_part, to_offset) in zip(found, written, strict=True):
            emit(ctx, f"{letter.partition}:{letter.offset} -> {to_topic}[{to_part}]@{to_offset}")
        emit(ctx, f"re-drove {len(written)} dead letters")
    finish(ExitCode.NOT_FOUND if chosen and not found else ExitCode.OK)
