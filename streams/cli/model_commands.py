"""`thunderhelm predict` and `thunderhelm export`: use a run's model artifact.

`predict` reads raw feature rows from a CSV (numbers, optionally a header and
a last label column) or an .npz (`x`, optionally `y`), and prints one
prediction per row as CSV, or everything as one JSON object with `--json`.
When the input carries labels it also reports the accuracy. For a text model,
`--text` scores the next character after a context and `--generate N`
samples N characters after it. `export --onnx` writes the model as ONNX.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from thunderhelm.streams.cli.base import answer, emit, emit_json, fail, state
from thunderhelm.streams.cli.exits import ExitCode

__all__ = ["read_inputs", "register"]

ArtifactArg = Annotated[
    str,
    typer.Argument(metavar="ARTIFACT", help="the artifact: its folder, model.json or model.npz"),
]


def predict(
    ctx: typer.Context,
    artifact: ArtifactArg,
    input: Annotated[
        Path | None, typer.Option("--input", help="raw feature rows: FILE.csv or FILE.npz")
    ] = None,
    text: Annotated[
        str | None, typer.Option(help="text model: the context to score (or to continue)")
    ] = None,
    generate: Annotated[
        int | None, typer.Option(min=0, metavar="N", help="with --text: sample N characters")
    ] = None,
    temperature: Annotated[float, typer.Option(help="sampling temperature")] = 1.0,
    seed: Annotated[int, typer.Option(help="sampling seed")] = 0,
    top: Annotated[int, typer.Option(help="with --text: most likely characters shown")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object instead of CSV")] = False,
) -> None:
    """Predict with a run's model artifact (exactly one of --input and --text)."""
    if (input is None) == (text is None):
        fail(ExitCode.USAGE, "give exactly one of --input and --text")
    if generate is not None and text is None:
        fail(ExitCode.USAGE, "--generate needs --text")
    model = _load(artifact)
    try:
        if model.regression:
            if input is None:
                raise ValueError("a regression model predicts from --input rows, not --text")
            _numbers(ctx, model, *read_regression_inputs(input, model), as_json)
            return
        if text is not None:
            _text(ctx, model, text, generate, temperature, seed, top, as_json)
            return
        assert input is not None
        if model.table is not None:  # named columns, text and gaps, as the table had them
            x, y = read_table_inputs(input, model.table.target, model.labels)
        else:
            x, y = read_inputs(input, model.n_features, model.labels)
        _rows(ctx, model, x, y, as_json)
    except ValueError as exc:  # the input does not fit the model
        fail(ExitCode.NOT_FOUND, str(exc))


def export(
    ctx: typer.Context,
    artifact: ArtifactArg,
    onnx: Annotated[Path, typer.Option(metavar="OUT.onnx", help="where to write the ONNX file")],
    as_json: Annotated[bool, typer.Option("--json", help='print {"onnx": PATH}')] = False,
) -> None:
    """Export a run's model artifact as ONNX."""
    from thunderhelm.ga.training.onnx_export import export_onnx

    try:
        written = export_onnx(_load(artifact), onnx)
    except ValueError as exc:  # a model the export cannot express
        fail(ExitCode.NOT_FOUND, str(exc))
    answer(ctx, as_json, {"onnx": str(written)}, str(written))


def register(app: typer.Typer) -> None:
    app.command()(predict)
    app.command()(export)


def _load(artifact: str) -> Any:
    from thunderhelm.ga.training.artifact import ArtifactError, load_model

    try:
        return load_model(artifact)
    except (ArtifactError, ValueError, OSError) as exc:
        fail(ExitCode.NOT_FOUND, str(exc))


def read_table_inputs(path: Path, target: str, labels: tuple[str, ...]) -> tuple[Any, Any]:
    """A table model's raw rows (a .csv or .parquet file, named columns) and, when the
    file has the target column, its class indices (else None)."""
    import numpy as np

    from thunderhelm.ga.training.tables import TableError, level_codes, rows_to_columns

    try:
        columns = rows_to_columns(path)
    except TableError as exc:
        raise ValueError(str(exc)) from None
    if target not in columns:
        return columns, None
    codes, levels = level_codes(columns.pop(target))
    index = {label: i for i, label in enumerate(labels)}
    unknown = sorted(set(levels) - set(index))
    if unknown:
        raise ValueError(f"{path.name}: target values the model does not know: {unknown[:5]}")
    return columns, np.array([index[level] for level in levels], dtype=np.int64)[codes]


def _read_rows(path: Path, n_features: int, last: str) -> tuple[Any, Any]:
    """Raw feature rows `x` (float64) of a .npz or CSV file, and what it gives beside them.

    A .npz holds `x` and optionally `y` (returned as stored); a CSV holds the
    features and optionally `last` (a label, the target) as each row's last
    cell (returned as text), after an optional header row. None: no `y`.
    """
    import numpy as np

    if path.suffix.lower() == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            if "x" not in archive:
                raise ValueError(f"{path.name}: the archive needs an array 'x'")
            x = np.atleast_2d(np.asarray(archive["x"], dtype=np.float64))
            y = np.asarray(archive["y"]) if "y" in archive else None
        if y is not None and y.shape != (len(x),):
            raise ValueError(f"{path.name}: 'y' must hold {last} per row")
        return x, y
    if path.suffix.lower() != ".csv":
        raise ValueError(f"{path.name}: --input must be a .csv or .npz file")
    from thunderhelm.ga.training.datasets import numeric_cells
    from thunderhelm.ga.training.tables import csv_delimiter

    delimiter = csv_delimiter(path)
    with path.open(newline="", encoding="utf-8") as f:
        rows = [r for r in csv.reader(f, delimiter=delimiter) if r and any(c.strip() for c in r)]
    if rows and not numeric_cells(rows[0][:n_features]):
        rows = rows[1:]  # a header row
    if not rows:
        raise ValueError(f"{path.name}: no rows")
    width = len(rows[0])
    if width not in (n_features, n_features + 1) or any(len(r) != width for r in rows):
        raise ValueError(
            f"{path.name}: every row needs {n_features} features (and optionally {last})"
        )
    try:
        x = np.array([[float(c) for c in r[:n_features]] for r in rows], dtype=np.float64)
    except ValueError:
        raise ValueError(f"{path.name}: every feature must be a number") from None
    return x, ([r[-1].strip() for r in rows] if width > n_features else None)


def read_inputs(path: Path, n_features: int, labels: tuple[str, ...]) -> tuple[Any, Any]:
    """Raw rows `x` and, when the file has them, class indices `y` (else None)."""
    import numpy as np

    x, given = _read_rows(path, n_features, "a label")
    if given is None:
        return x, None
    if isinstance(given, np.ndarray):  # a .npz: class indices
        y = np.asarray(given, dtype=np.int64)
        if len(y) and (y.min() < 0 or y.max() >= len(labels)):
            raise ValueError(f"{path.name}: 'y' must hold one class index per row")
        return x, y
    index = {label: i for i, label in enumerate(labels)}
    unknown = sorted(set(given) - set(index))
    if unknown:
        raise ValueError(f"{path.name}: labels the model does not know: {unknown[:5]}")
    return x, np.array([index[label] for label in given], dtype=np.int64)


def read_regression_inputs(path: Path, model: Any) -> tuple[Any, Any]:
    """A regression model's raw rows and, when the file has them, the targets (else None).

    A table model reads named columns (the target's, if present); any other
    reads a .npz (`x`, optional `y`) or a CSV of the features and optionally
    the target last. A missing target is NaN and left out of the figures.
    """
    if model.table is not None:
        from thunderhelm.ga.training.tables import TableError, rows_to_columns

        try:
            columns = rows_to_columns(path)
        except TableError as exc:
            raise ValueError(str(exc)) from None
        if model.table.target not in columns:
            return columns, None
        return columns, _numbers_of(columns.pop(model.table.target), path.name)
    x, given = _read_rows(path, model.n_features, "the target")
    return x, None if given is None else _numbers_of(given, path.name)


def _numbers_of(column: Any, where: str) -> Any:
    """A target column's values as float64, NaN where missing."""
    import numpy as np

    values = column.to_pylist() if hasattr(column, "to_pylist") else list(column)
    try:
        return np.array(
            [np.nan if v is None or v == "" else float(v) for v in values], dtype=np.float64
        )
    except (TypeError, ValueError):
        raise ValueError(f"{where}: the target column holds values that are not numbers") from None


def _numbers(ctx: typer.Context, model: Any, x: Any, y: Any, as_json: bool) -> None:
    """A regression model's predictions, and its figures on the rows whose target is given."""
    import numpy as np

    predicted = np.asarray(model.predict(x), dtype=np.float64)
    figures: dict[str, float | None] | None = None
    if y is not None and np.isfinite(y).any():
        known = np.isfinite(y)
        truth, guess = y[known], predicted[known]
        sst = float(np.sum((truth - truth.mean()) ** 2))
        figures = {
            "rmse": float(np.sqrt(np.mean((guess - truth) ** 2))),
            "mae": float(np.mean(np.abs(guess - truth))),
            "r2": 1.0 - float(np.sum((guess - truth) ** 2)) / sst if sst > 0 else None,
        }
    if as_json:
        out: dict[str, Any] = {
            "rows": len(predicted),
            "predictions": [round(float(v), 7) for v in predicted],
        }
        if figures is not None:
            out.update(figures)
        emit_json(ctx, out)
        return
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["row", "prediction"])
    for row, value in enumerate(predicted):
        writer.writerow([row, f"{float(value):.6g}"])
    state(ctx).out.write(buffer.getvalue())
    if figures is not None:
        said = ", ".join(f"{k} {v:.6f}" for k, v in figures.items() if v is not None)
        print(f"{said} on {int(np.isfinite(y).sum())} rows with a target", file=sys.stderr)


def _rows(ctx: typer.Context, model: Any, x: Any, y: Any, as_json: bool) -> None:
    proba = model.predict_proba(x)
    predicted = proba.argmax(axis=1)
    accuracy = None if y is None else float((predicted == y).mean())
    if as_json:
        out: dict[str, Any] = {
            "rows": len(predicted),
            "labels": list(model.labels),
            "predictions": [model.labels[i] for i in predicted],
            "probabilities": [[round(float(p), 7) for p in row] for row in proba],
        }
        if accuracy is not None:
            out["accuracy"] = accuracy
        emit_json(ctx, out)
        return
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["row", "prediction", "probability"])
    for row, (i, p) in enumerate(zip(predicted, proba, strict=True)):
        writer.writerow([row, model.labels[i], f"{float(p[i]):.6f}"])
    state(ctx).out.write(buffer.getvalue())
    if accuracy is not None:
        print(f"accuracy {accuracy:.6f} on {len(predicted)} labelled rows", file=sys.stderr)


def _text(
    ctx: typer.Context,
    model: Any,
    text: str,
    generate: int | None,
    temperature: float,
    seed: int,
    top: int,
    as_json: bool,
) -> None:
    if generate is not None:
        made = model.generate(text, generate, seed=seed, temperature=temperature)
        emit(ctx, json.dumps({"context": text, "generated": made}) if as_json else made)
        return
    proba = model.next_char_proba(text)
    ranked = sorted(proba.items(), key=lambda kv: -kv[1])[: max(1, top)]
    if as_json:
        emit_json(ctx, {"context": text, "next": proba, "top": [c for c, _ in ranked]})
    else:
        for char, p in ranked:
            emit(ctx, f"{char!r}\t{p:.6f}")
