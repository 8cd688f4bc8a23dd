"""Tables as users keep them: CSV or Parquet, a named target, numbers and categories, gaps.

A `table` dataset names a file under the data root and its `target` column;
`features` (or `drop`) chooses the input columns and `categorical` says which
of them are categories (inferred when absent: text and boolean columns are,
numeric ones are not). The file is read with pyarrow (typed, multi-threaded).

The encoding is fitted on the training rows only and kept as plain data
(`TableEncoding.to_dict`, in the artifact), so raw rows are encoded alike when
the model predicts:

* a number: as it is; a missing one becomes the training median, and when the
  training rows had gaps in that column, a 0/1 column says it was missing;
* a category: one-hot over its `MAX_LEVELS` most frequent training values
  (missing is a value of its own), every other or unseen value in one
  "other" column.

Rows whose target is missing are left out. With `task: "classification"`
(the default) a target is read as class labels (as text; numbers in numeric
order), and a numeric target with more than `MAX_CLASSES_INFERRED` distinct
values is refused (it is a regression target: say `task: "regression"`)
rather than treated as that many classes. With `task: "regression"` the
target must be numbers, read as they are.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

MAX_LEVELS = 32  # one-hot columns per category, besides "other"
MAX_DISTINCT = 10_000  # a "category" with more distinct values is an identifier: refused
MAX_CLASSES_INFERRED = 50
MISSING = "(missing)"
SUFFIXES = (".csv", ".parquet")


class TableError(ValueError):
    """A table or table spec that cannot be used; the message says why."""


@dataclass(frozen=True)
class NumericColumn:
    name: str
    median: float
    indicator: bool  # a "was missing" column follows

    @property
    def width(self) -> int:
        return 2 if self.indicator else 1


@dataclass(frozen=True)
class CategoricalColumn:
    name: str
    levels: tuple[str, ...]  # one column each, then one for every other value

    @property
    def width(self) -> int:
        return len(self.levels) + 1


type Column = NumericColumn | CategoricalColumn


@dataclass(frozen=True)
class TableEncoding:
    """How raw table columns become the network's feature columns (fitted on training rows)."""

    target: str
    columns: tuple[Column, ...]

    @property
    def width(self) -> int:
        return sum(c.width for c in self.columns)

    def feature_names(self) -> list[str]:
        names: list[str] = []
        for c in self.columns:
            if isinstance(c, NumericColumn):
                names += [c.name] + ([f"{c.name}=missing"] if c.indicator else [])
            else:
                names += [f"{c.name}={level}" for level in c.levels] + [f"{c.name}=(other)"]
        return names

    def encode(self, raw: Mapping[str, Sequence[Any]]) -> npt.NDArray[np.float64]:
        """Raw columns (name -> values, None for missing) as the feature matrix."""
        missing = [c.name for c in self.columns if c.name not in raw]
        if missing:
            raise TableError(f"the rows lack the model's input columns {missing}")
        rows = len(raw[self.columns[0].name]) if self.columns else 0
        out = np.zeros((rows, self.width), dtype=np.float64)
        at = 0
        for c in self.columns:
            values = raw[c.name]
            if len(values) != rows:
                raise TableError(f"column {c.name!r} has {len(values)} values, not {rows}")
            if isinstance(c, NumericColumn):
                numbers, gaps = _numbers(values, c.name)
                out[:, at] = np.where(gaps, c.median, numbers)
                if c.indicator:
                    out[:, at + 1] = gaps
            else:
                index = {level: i for i, level in enumerate(c.levels)}
                codes, levels = level_codes(values)
                place = np.array([index.get(level, len(c.levels)) for level in levels], np.intp)
                if rows:
                    out[np.arange(rows), at + place[codes]] = 1.0
            at += c.width
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "columns": [
                {"name": c.name, "kind": "number", "median": c.median, "indicator": c.indicator}
                if isinstance(c, NumericColumn)
                else {"name": c.name, "kind": "category", "levels": list(c.levels)}
                for c in self.columns
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TableEncoding:
        columns: list[Column] = []
        for c in data["columns"]:
            if c["kind"] == "number":
                columns.append(
                    NumericColumn(str(c["name"]), float(c["median"]), bool(c["indicator"]))
                )
            elif c["kind"] == "category":
                columns.append(
                    CategoricalColumn(str(c["name"]), tuple(str(v) for v in c["levels"]))
                )
            else:
                raise TableError(f"unknown column kind {c['kind']!r}")
        return cls(str(data["target"]), tuple(columns))


@dataclass(frozen=True)
class Table:
    """The columns a spec chose, read from the file, with the target's class labels."""

    columns: dict[str, Any]  # feature name -> a pyarrow array or a list (None for missing)
    categorical: frozenset[str]
    y: npt.NDArray[np.int64] | npt.NDArray[np.float64]  # float64 numbers for regression
    labels: tuple[str, ...]  # empty for regression
    target: str
    task: str = "classification"


def read_columns(path: Path) -> dict[str, Any]:
    """Every column of a CSV or Parquet file, as a pyarrow array (typed, nulls for gaps)."""
    try:
        import pyarrow.csv as pa_csv
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise TableError(f"reading tables needs pyarrow ({exc})") from None
    try:
        if path.suffix.lower() == ".parquet":
            table = pq.read_table(path)
        else:
            options = pa_csv.ConvertOptions(
                null_values=["", "NA", "N/A", "NaN", "nan", "null", "NULL", "None", "?"],
                strings_can_be_null=True,
            )
            table = pa_csv.read_csv(path, convert_options=options)
    except Exception as exc:  # pyarrow raises its own errors for unreadable files
        reason = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        raise TableError(f"{path.name}: not a readable {path.suffix} table ({reason})") from None
    return {name: table.column(name).combine_chunks() for name in table.column_names}


def select(raw: Mapping[str, Any], spec: Mapping[str, object], what: str) -> Table:
    """The spec's target and feature columns of `raw`, checked; the target read as classes."""
    target = spec.get("target")
    if not isinstance(target, str) or not target:
        raise TableError("a table dataset needs 'target': the name of the column to predict")
    names = list(raw)
    if target not in raw:
        raise TableError(f"{what}: no column {target!r} to predict; the columns are {names}")
    features = _names(spec, "features")
    drop = _names(spec, "drop")
    if features is not None and drop is not None:
        raise TableError("give 'features' or 'drop', not both")
    for key, chosen in (("features", features), ("drop", drop)):
        unknown = sorted(set(chosen or ()) - set(raw))
        if unknown:
            raise TableError(f"{what}: '{key}' names columns the table lacks: {unknown}")
    if features is None:
        features = [n for n in names if n != target and n not in set(drop or ())]
    if target in features:
        raise TableError(f"the target {target!r} cannot also be a feature")
    if not features:
        raise TableError(f"{what}: no feature columns left besides the target")
    declared = _names(spec, "categorical")
    unknown = sorted(set(declared or ()) - set(features))
    if unknown:
        raise TableError(f"'categorical' names columns that are not features: {unknown}")
    task = spec.get("task", "classification")
    if task not in ("classification", "regression"):
        raise TableError(f"'task' must be 'classification' or 'regression', got {task!r}")
    if task == "regression":
        values, kept, no_labels = _regression_target(raw[target], target, what)
        return _table_of(raw, features, declared, kept, values, no_labels, target, task, what)
    codes, levels = level_codes(raw[target])
    present = np.array([level != MISSING for level in levels], dtype=np.bool_)
    keep = present[codes] if len(levels) else np.zeros(0, np.bool_)
    if not keep.any():
        raise TableError(f"{what}: the target {target!r} has no values")
    kept_codes = codes[keep]
    used = np.unique(kept_codes)
    distinct = sorted(levels[i] for i in used)
    numeric_target = is_numeric(raw[target])
    if numeric_target and len(distinct) > MAX_CLASSES_INFERRED:
        raise TableError(
            f"{what}: the target {target!r} has {len(distinct)} distinct numbers, a regression "
            f"target (classes: at most {MAX_CLASSES_INFERRED}); set task 'regression'"
        )
    if len(distinct) < 2:
        raise TableError(f"{what}: the target {target!r} has one class only ({distinct[0]!r})")
    labels = tuple(sorted(distinct, key=float) if numeric_target else distinct)
    code = {label: i for i, label in enumerate(labels)}
    to_label = np.array([code.get(level, -1) for level in levels], dtype=np.int64)
    y = to_label[kept_codes]
    return _table_of(raw, features, declared, keep, y, labels, target, task, what)


def _regression_target(
    values: Any, target: str, what: str
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_], tuple[str, ...]]:
    """A regression target's numbers (rows with a gap left out) and which rows are kept."""
    if not is_numeric(values):
        raise TableError(f"{what}: the regression target {target!r} holds text, not numbers")
    numbers, gaps = _numbers(values, target)
    keep = ~gaps
    if not keep.any():
        raise TableError(f"{what}: the target {target!r} has no values")
    return numbers[keep], keep, ()


def _table_of(
    raw: Mapping[str, Any],
    features: list[str],
    declared: list[str] | None,
    keep: npt.NDArray[np.bool_],
    y: npt.NDArray[np.int64] | npt.NDArray[np.float64],
    labels: tuple[str, ...],
    target: str,
    task: str,
    what: str,
) -> Table:
    """The chosen feature columns of the kept rows, their kinds checked."""
    columns = {name: _kept(raw[name], keep) for name in features}
    categorical = (
        set(declared)
        if declared is not None
        else {name for name, values in columns.items() if not is_numeric(values)}
    )
    for name in sorted(categorical):
        _, seen = level_codes(columns[name])
        if len(seen) > MAX_DISTINCT:
            raise TableError(
                f"{what}: column {name!r} has {len(seen)} distinct values (at most "
                f"{MAX_DISTINCT} for a category); an identifier? drop it"
            )
    for name in features:
        if name not in categorical and not is_numeric(columns[name]):
            raise TableError(f"{what}: column {name!r} holds text; list it in 'categorical'")
    return Table(columns, frozenset(categorical), y, labels, target, task)


def fit(table: Table, train: npt.NDArray[np.int64]) -> TableEncoding:
    """The encoding of `table`'s columns, fitted on the rows `train` only."""
    columns: list[Column] = []
    for name, values in table.columns.items():
        if name in table.categorical:
            codes, levels = level_codes(values)
            tally = np.bincount(codes[train], minlength=len(levels))
            counts = {levels[i]: int(n) for i, n in enumerate(tally) if n}
            # Most frequent first; ties by value, so every replay agrees.
            ranked = sorted(counts, key=lambda level: (-counts[level], level))
            columns.append(CategoricalColumn(name, tuple(ranked[:MAX_LEVELS])))
        else:
            numbers, gaps = _numbers(values, name)
            numbers, gaps = numbers[train], gaps[train]
            present = numbers[~gaps]
            median = float(np.median(present)) if present.size else 0.0
            columns.append(NumericColumn(name, median, bool(gaps.any())))
    return TableEncoding(table.target, tuple(columns))


def rows_to_columns(rows: Any) -> dict[str, Any]:
    """Raw rows as users hold them: a list of dicts, a dict of columns, a pandas DataFrame,
    a pyarrow Table, or the path of a CSV or Parquet file."""
    if isinstance(rows, str | Path):
        path = Path(rows)
        if path.suffix.lower() not in SUFFIXES:
            raise TableError(f"{path.name}: rows come as a .csv or .parquet file")
        return read_columns(path)
    if hasattr(rows, "column_names") and hasattr(rows, "to_pydict"):  # pyarrow Table
        return {str(k): rows.column(k).combine_chunks() for k in rows.column_names}
    if hasattr(rows, "columns") and hasattr(rows, "to_dict"):  # pandas DataFrame
        frame = rows.astype(object).where(rows.notna(), None)
        return {str(k): list(v) for k, v in frame.to_dict("list").items()}
    if isinstance(rows, Mapping):
        return {str(k): v if _arrow(v) is not None else list(v) for k, v in rows.items()}
    if isinstance(rows, Sequence) and all(isinstance(r, Mapping) for r in rows):
        names = {str(k) for r in rows for k in r}
        return {n: [r.get(n) for r in rows] for n in sorted(names)}
    raise TableError(
        "rows for a table model: a list of dicts, a dict of columns, a DataFrame, "
        "a pyarrow Table or a .csv/.parquet path"
    )


# -- values ---------------------------------------------------------------------


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def level_of(value: Any) -> str:
    """A category's value as text; missing (None, NaN) is a value of its own."""
    if value is None or _is_nan(value):
        return MISSING
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _arrow(values: Any) -> Any:
    """`values` as a pyarrow array if it is one (a column read from a file), else None."""
    try:
        import pyarrow as pa
    except ImportError:  # pragma: no cover - a dependency of the package
        return None
    return values if isinstance(values, pa.Array) else None


def is_numeric(values: Any) -> bool:
    """Whether a column holds numbers only (and gaps): a typed column by its type."""
    column = _arrow(values)
    if column is not None:
        import pyarrow as pa

        kind = column.type
        return bool(
            pa.types.is_integer(kind)
            or pa.types.is_floating(kind)
            or pa.types.is_decimal(kind)
            or pa.types.is_null(kind)
        )
    return all(
        v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in values
    )


def level_codes(values: Any) -> tuple[npt.NDArray[np.intp], list[str]]:
    """Each value's category as a code into the distinct levels (`level_of` of each value).

    A typed column is dictionary-encoded by pyarrow (hashing in C++), and
    only its distinct values go through `level_of`: a million rows cost the
    same few dozen Python calls as a hundred.
    """
    column = _arrow(values)
    if column is not None:
        import pyarrow.compute as pc

        encoded = pc.dictionary_encode(column)
        names = [level_of(v) for v in encoded.dictionary.to_pylist()]
        indices = encoded.indices
        if indices.null_count:
            indices = pc.fill_null(indices, len(names))
            names.append(MISSING)
        raw_codes = np.asarray(indices.to_numpy(zero_copy_only=False), dtype=np.intp)
    else:
        lookup: dict[str, int] = {}
        raw_codes = np.fromiter(
            (lookup.setdefault(level_of(v), len(lookup)) for v in values),
            dtype=np.intp,
            count=len(values),
        )
        names = list(lookup)
    # Values that read alike (a NaN and a gap; 3 and 3.0) are one level.
    distinct: dict[str, int] = {}
    remap = np.array([distinct.setdefault(n, len(distinct)) for n in names], dtype=np.intp)
    return remap[raw_codes] if len(names) else raw_codes, list(distinct)


def _kept(values: Any, keep: npt.NDArray[np.bool_]) -> Any:
    column = _arrow(values)
    if column is not None:
        import pyarrow as pa

        return column.filter(pa.array(keep))
    return [v for v, k in zip(values, keep, strict=True) if k]


def _numbers(values: Any, name: str) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    column = _arrow(values)
    if column is not None and is_numeric(column):
        import pyarrow as pa
        import pyarrow.compute as pc

        numbers = np.asarray(
            pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64
        )
        gaps = ~np.isfinite(numbers)
        return np.where(gaps, 0.0, numbers), gaps
    if column is not None:
        values = column.to_pylist()
    out = np.zeros(len(values), dtype=np.float64)
    gaps = np.zeros(len(values), dtype=np.bool_)
    for i, v in enumerate(values):
        if v is None or _is_nan(v) or (isinstance(v, str) and not v.strip()):
            gaps[i] = True
            continue
        try:
            out[i] = float(v)
        except (TypeError, ValueError):
            raise TableError(f"column {name!r}: {v!r} is not a number") from None
        if not math.isfinite(out[i]):
            gaps[i] = True
    return out, gaps


def _names(spec: Mapping[str, object], key: str) -> list[str] | None:
    value = spec.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TableError(f"{key!r} must be a list of column names")
    return list(value)
