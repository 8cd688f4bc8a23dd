"""`thunderhelm examples`: write the example tables under the data root.

They are made from data scikit-learn ships (ga/training/examples.py), so a
first run needs no data of one's own; the command prints the `dataset` a
request names each one with.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from thunderhelm.streams.cli.base import emit, emit_json, fail, state
from thunderhelm.streams.cli.exits import ExitCode


def examples(
    ctx: typer.Context,
    names: Annotated[
        list[str] | None,
        typer.Argument(metavar="[NAME]...", help="diabetes (regression), cancer (mixed types)"),
    ] = None,
    to: Annotated[
        Path | None, typer.Option(help="folder to write to (default: the data root)")
    ] = None,
    file_format: Annotated[
        str, typer.Option("--format", help="csv or parquet", metavar="csv|parquet")
    ] = "csv",
    as_json: Annotated[
        bool, typer.Option("--json", help="one JSON object per table: path, task, dataset")
    ] = False,
) -> None:
    """Write small example tables (from data scikit-learn ships) to the data root."""
    from thunderhelm.ga.training.examples import EXAMPLES, FORMATS, dataset_spec, write_example

    unknown = sorted(set(names or ()) - set(EXAMPLES))
    if unknown:
        fail(ExitCode.USAGE, f"no example {unknown[0]!r}; there are {sorted(EXAMPLES)}")
    if file_format not in FORMATS:
        fail(ExitCode.USAGE, f"--format is one of {FORMATS}, not {file_format!r}")
    folder = to if to is not None else state(ctx).settings.data_root
    for name in names or list(EXAMPLES):
        example = EXAMPLES[name]
        try:
            path = write_example(example, folder, file_format)
        except OSError as exc:
            fail(ExitCode.NOT_FOUND, f"cannot write {name} to {folder}: {exc.strerror or exc}")
        spec = dataset_spec(example, path.name)
        if as_json:
            emit_json(ctx, {"name": name, "path": str(path), "task": example.task, "dataset": spec})
        else:
            emit(ctx, f"{path}  ({example.about})\n  dataset: {json.dumps(spec)}")


def register(app: typer.Typer) -> None:
    app.command()(examples)
