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

import csv
import io
import math
import mmap
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

MAX_LEVELS = 32  # one-hot columns per category, besides "other"
MAX_DISTINCT = 10_000  # a "category" with more distinct values is an identifier: refused
MAX_CLASSES_INFERRED = 50
MISSING = "(missing)"
SUFFIXES = (".csv", ".parquet")
CSV_DELIMITERS = (",", ";", "\t", "|")  # the first wins a tie
_SNIFF_LINE_BYTES = 1 << 24
_SNIFF_ROWS = 20

F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]
Rows = npt.NDArray[np.intp] | npt.NDArray[np.int64]


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
                place = one_hot_places(level_codes(values), c.levels)
                if rows:
                    out[np.arange(rows), at + place] = 1.0
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
    # Each column's codes or numbers, computed once: select, fit and the design
    # matrix all need them, and a million rows cost milliseconds each.
    _codes: dict[str, tuple[npt.NDArray[np.intp], list[str]]] = field(
        default_factory=dict, repr=False, compare=False
    )
    _numbers: dict[str, tuple[F64, npt.NDArray[np.bool_]]] = field(
        default_factory=dict, repr=False, compare=False
    )

    def level_codes(self, name: str) -> tuple[npt.NDArray[np.intp], list[str]]:
        """`level_codes` of the column `name`, cached."""
        if name not in self._codes:
            self._codes[name] = level_codes(self.columns[name])
        return self._codes[name]

    def numbers(self, name: str) -> tuple[F64, npt.NDArray[np.bool_]]:
        """The column `name`'s numbers (unspecified at gaps) and its gaps, cached."""
        if name not in self._numbers:
            self._numbers[name] = _floats(self.columns[name], name)
        return self._numbers[name]


def read_columns(path: Path) -> dict[str, Any]:
    """Every column of a CSV or Parquet file, as a pyarrow array (typed, nulls for gaps)."""
    try:
        import pyarrow.csv as pa_csv
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise TableError(f"reading tables needs pyarrow ({exc})") from None
    try:
        if path.suffix.lower() == ".parquet":
            table = _read_parquet(path)
        else:
            options = pa_csv.ConvertOptions(
                null_values=["", "NA", "N/A", "NaN", "nan", "null", "NULL", "None", "?"],
                strings_can_be_null=True,
            )
            parse = pa_csv.ParseOptions(delimiter=csv_delimiter(path))
            table = pa_csv.read_csv(path, parse_options=parse, convert_options=options)
        names = table.column_names  # decoded here: a header not in UTF-8 fails now
    except UnicodeDecodeError as exc:
        where = f"{exc.reason} at byte {exc.start}"
        raise TableError(f"{path.name}: not UTF-8 text ({where}); save it as UTF-8") from None
    except Exception as exc:  # pyarrow raises its own errors for unreadable files
        reason = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        raise TableError(f"{path.name}: not a readable {path.suffix} table ({reason})") from None
    return {name: _one_array(table.column(name)) for name in names}


def csv_delimiter(path: Path) -> str:
    """The separator of a CSV file: the one that splits its first rows into most columns alike.

    Files saved with a comma as the decimal mark (much of Europe) separate
    fields with ';', and tab-separated files are common too. A candidate
    counts only if every sampled row gets the same number of fields, so a
    header name holding commas does not make ',' the separator; a file no
    candidate splits is one column, read with ','.
    """
    with path.open("rb") as handle:
        # Whole lines, however wide the header; one more than needed, since
        # a row with a quoted line break may end past the last line read.
        sample = b"".join(handle.readline(_SNIFF_LINE_BYTES) for _ in range(_SNIFF_ROWS + 1))
        whole = not handle.read(1)
    text = sample.decode("utf-8", errors="replace")
    best, widest = ",", 1
    for candidate in CSV_DELIMITERS:
        try:
            rows = [row for row in csv.reader(io.StringIO(text), delimiter=candidate) if row]
        except csv.Error:  # a field past the csv module's limit: not this separator
            continue
        widths = {len(row) for row in rows[: len(rows) if whole else -1][:_SNIFF_ROWS]}
        if len(widths) == 1 and (width := widths.pop()) > widest:
            best, widest = candidate, width
    return best


def _one_array(column: Any) -> Any:
    """A column read in chunks as one pyarrow array (copied only when it has several)."""
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def _read_parquet(path: Path) -> Any:
    """One Parquet file as a pyarrow Table.

    `ParquetFile` reads it as `pq.read_table` does, without importing
    pyarrow.dataset (and pandas with it: half a second). A file it cannot
    read goes to `read_table`, whose error message names the file.
    """
    import pyarrow.parquet as pq

    try:
        with pq.ParquetFile(path) as file:
            return file.read()
    except Exception:
        return pq.read_table(path)


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
    used = np.flatnonzero(np.bincount(kept_codes, minlength=len(levels)))  # sorted, as unique
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
    table = Table(columns, frozenset(categorical), y, labels, target, task)
    in_parallel(table.level_codes, sorted(categorical))  # cached for the checks, fit, encoding
    for name in sorted(categorical):
        _, seen = table.level_codes(name)
        if len(seen) > MAX_DISTINCT:
            raise TableError(
                f"{what}: column {name!r} has {len(seen)} distinct values (at most "
                f"{MAX_DISTINCT} for a category); an identifier? drop it"
            )
    for name in features:
        if name not in categorical and not is_numeric(columns[name]):
            raise TableError(f"{what}: column {name!r} holds text; list it in 'categorical'")
    return table


def fit(table: Table, train: npt.NDArray[np.int64]) -> TableEncoding:
    """The encoding of `table`'s columns, fitted on the rows `train` only."""

    def fitted(name: str) -> Column:
        if name in table.categorical:
            codes, levels = table.level_codes(name)
            tally = np.bincount(codes[train], minlength=len(levels))
            counts = {levels[i]: int(n) for i, n in enumerate(tally) if n}
            # Most frequent first; ties by value, so every replay agrees.
            ranked = sorted(counts, key=lambda level: (-counts[level], level))
            return CategoricalColumn(name, tuple(ranked[:MAX_LEVELS]))
        numbers, gaps = table.numbers(name)
        numbers, gaps = np.take(numbers, train), np.take(gaps, train)
        present = numbers[~gaps]  # a copy of our own: the median may reorder it
        median = float(np.median(present, overwrite_input=True)) if present.size else 0.0
        return NumericColumn(name, median, bool(gaps.any()))

    return TableEncoding(table.target, tuple(in_parallel(fitted, list(table.columns))))


def in_parallel[T, R](work: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """`work` of each item, in order, on a few threads (numpy and pyarrow let go of
    the GIL in their loops); the first failure in order is raised, as in a loop."""
    if len(items) < 2 or _THREADS < 2:
        return [work(item) for item in items]
    with ThreadPoolExecutor(_THREADS) as pool:
        return list(pool.map(work, items))


# -- the design matrix, standardised, a block of rows at a time -------------------

# Rows encoded at a time: a block of the float32 output (4096 x 410 features
# is 6.7 MB) stays in cache while each run of columns writes its part of it.
_BLOCK_ROWS = 4096
# Threads for the column and row-block work (the pyarrow readers use all cores too).
_THREADS = min(8, os.process_cpu_count() or 1)
# Rows summed at a time for the moments, as `datasets` sums a dense matrix's.
_MOMENT_ROWS = 65_536


@dataclass(frozen=True)
class _NumberRun:
    """Adjacent numeric columns alike (all with or all without an indicator)."""

    at: int  # the first feature column; each column's indicator follows it
    step: int  # 2 with indicators, else 1
    filled: F64  # rows x columns, gaps already the training median
    gaps: npt.NDArray[np.bool_] | None  # rows x columns, with indicators

    @property
    def width(self) -> int:
        return int(self.filled.shape[1]) * self.step


@dataclass(frozen=True)
class _OneHotRun:
    """Adjacent categorical columns of one width (levels + "other")."""

    at: int
    each: int  # one column's width
    place: npt.NDArray[np.integer[Any]]  # rows x columns: the hot column in each ("other" last)

    @property
    def width(self) -> int:
        return int(self.place.shape[1]) * self.each


class Design:
    """The matrix `encoding.encode(table.columns)` describes, never built whole.

    `moments` gives its columns' training statistics and `standardized` any
    rows of it as `(x - mean) / scale` in float32, a block of rows at a time,
    with the same float64 arithmetic per value as standardising the encoded
    float64 matrix: the same values, without that matrix (8 bytes a value)
    or one-hot temporaries. Adjacent columns of a kind go together as a run,
    so each block costs a few numpy calls per run, not per column.
    """

    def __init__(self, table: Table, encoding: TableEncoding) -> None:
        self.width = encoding.width
        groups = _runs_of(encoding.columns)
        starts = np.cumsum([0] + [sum(c.width for c in group) for group in groups])

        def run(i: int) -> _NumberRun | _OneHotRun:
            group, at = groups[i], int(starts[i])
            if isinstance(group[0], NumericColumn):
                return _number_run(table, group, at)
            return _one_hot_run(table, group, at)

        self._runs = in_parallel(run, range(len(groups)))

    def moments(self, rows: Rows) -> tuple[F64, F64]:
        """Mean and standard deviation of each feature column over `rows`."""
        parts: list[Callable[[], _Moments]] = []
        for run in self._runs:
            if isinstance(run, _NumberRun):
                parts.append(partial(_number_moments, run, rows))
                if run.gaps is not None:
                    parts.append(partial(_indicator_moments, run, run.gaps, rows))
            else:
                parts.append(partial(_one_hot_moments, run, rows))
        mean, std = np.zeros(self.width), np.zeros(self.width)
        for columns, part_mean, part_std in in_parallel(lambda part: part(), parts):
            mean[columns], std[columns] = part_mean, part_std
        return mean, std

    def standardized(self, rows: Rows, mean: F64, scale: F64) -> F32:
        """`(x[rows] - mean) / scale` as float32, x being the encoded matrix."""
        writers = [_writer(run, mean, scale) for run in self._runs]
        out = _present((len(rows), self.width), np.float32)

        def fill(start: int) -> None:  # blocks are disjoint: threads need no lock
            chosen = rows[start : start + _BLOCK_ROWS]
            block = out[start : start + len(chosen)]
            for write in writers:
                write(block, chosen)

        in_parallel(fill, range(0, len(rows), _BLOCK_ROWS))
        return out


type _Moments = tuple[slice, F64, F64]  # which feature columns, their mean and std


def _number_moments(run: _NumberRun, rows: Rows) -> _Moments:
    return (slice(run.at, run.at + run.width, run.step), *column_moments(run.filled, rows))


def _indicator_moments(run: _NumberRun, gaps: npt.NDArray[np.bool_], rows: Rows) -> _Moments:
    ones = np.count_nonzero(np.take(gaps, rows, axis=0), axis=0)
    return (slice(run.at + 1, run.at + run.width, 2), *_binary_moments(ones, len(rows)))


def _one_hot_moments(run: _OneHotRun, rows: Rows) -> _Moments:
    hot = np.take(run.place, rows, axis=0) + _first_rows(run)
    ones = np.bincount(hot.reshape(-1), minlength=run.width)
    return (slice(run.at, run.at + run.width), *_binary_moments(ones, len(rows)))


type _Writer = Callable[[F32, Rows], None]


def _writer(run: _NumberRun | _OneHotRun, mean: F64, scale: F64) -> _Writer:
    """What writes `run`'s standardised columns of a block of rows."""
    if isinstance(run, _OneHotRun):
        return _one_hot_writer(run, mean, scale)
    span = slice(run.at, run.at + run.width)
    # Contiguous copies: numpy broadcasts a strided operand several times slower.
    span_mean, span_scale = np.ascontiguousarray(mean[span]), np.ascontiguousarray(scale[span])
    gaps = run.gaps

    def write(block: F32, rows: Rows) -> None:
        if gaps is None:
            values = np.take(run.filled, rows, axis=0)
        else:  # the encoded columns as they lie: each number, then its 0/1 gap flag
            values = np.empty((len(rows), run.width))
            values[:, 0::2] = np.take(run.filled, rows, axis=0)
            values[:, 1::2] = np.take(gaps, rows, axis=0)
        values -= span_mean
        # Divided in float64, rounded to float32 as it is stored: no float64 copy.
        np.divide(values, span_scale, out=block[:, span], casting="same_kind")

    return write


def _one_hot_writer(run: _OneHotRun, mean: F64, scale: F64) -> _Writer:
    # A one-hot column takes two values only: each column's every possible row
    # (row k: its k-th column hot), standardised once here and looked up after.
    lookup = np.concatenate(
        [
            (np.eye(run.each) - mean[at : at + run.each]) / scale[at : at + run.each]
            for at in range(run.at, run.at + run.width, run.each)
        ]
    ).astype(np.float32)
    first_row = _first_rows(run)
    span = slice(run.at, run.at + run.width)

    def write(block: F32, rows: Rows) -> None:
        hot = np.take(run.place, rows, axis=0) + first_row
        # A contiguous take, then one copy: faster than a take into the strided block.
        rows_of_lookup = np.take(lookup, hot.reshape(-1), axis=0, mode="clip")  # all in range
        block[:, span] = rows_of_lookup.reshape(len(rows), run.width)

    return write


def _first_rows(run: _OneHotRun) -> npt.NDArray[np.intp]:
    """Where each column of `run` starts among all its columns' one-hot positions."""
    return np.arange(run.place.shape[1], dtype=np.intp) * run.each


# Below this an array's page faults cost too little to be worth a mapping of its own.
_POPULATE_BYTES = 64 << 20


def _present[D: np.generic](shape: tuple[int, int], dtype: type[D]) -> npt.NDArray[D]:
    """`np.empty(shape, dtype)` whose memory the kernel maps in at once (MAP_POPULATE).

    Written row block by row block, a fresh array takes a page fault per 4 KB
    page, and on a virtual machine those faults were the largest part of
    encoding a million-row table (`bench data`, bench/RESULTS.md); mapped in
    one call they cost less than half. Elsewhere, or for a small array, it is
    `np.empty`.
    """
    size = math.prod(shape) * np.dtype(dtype).itemsize
    flags = getattr(mmap, "MAP_POPULATE", 0)
    if size < _POPULATE_BYTES or not flags:
        return np.empty(shape, dtype=dtype)
    try:
        mapped = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | flags)
    except OSError:  # no room to map it whole now: page by page, as numpy does
        return np.empty(shape, dtype=dtype)
    # The array holds the mapping; it is unmapped when the last view goes.
    return np.frombuffer(mapped, dtype=dtype).reshape(shape)


def _runs_of(columns: Sequence[Column]) -> list[list[Column]]:
    """`columns` in order, adjacent ones of a kind and width together."""
    runs: list[list[Column]] = []
    for c in columns:
        last = runs[-1][-1] if runs else None
        if last is not None and type(last) is type(c) and _alike(last, c):
            runs[-1].append(c)
        else:
            runs.append([c])
    return runs


def _alike(a: Column, b: Column) -> bool:
    if isinstance(a, NumericColumn) and isinstance(b, NumericColumn):
        return a.indicator == b.indicator
    return a.width == b.width


def _number_run(table: Table, group: Sequence[Column], at: int) -> _NumberRun:
    rows = len(table.y)
    indicator = isinstance(group[0], NumericColumn) and group[0].indicator
    filled = _present((rows, len(group)), np.float64)
    gaps = np.empty((rows, len(group)), dtype=np.bool_) if indicator else None
    columns = [(c.median, *table.numbers(c.name)) for c in group if isinstance(c, NumericColumn)]

    def fill(first: int) -> None:  # a share of the rows: threads write disjoint rows
        # Column by column into a block of rows that stays in cache, not down all rows.
        for start in range(first, min(rows, first + share), _BLOCK_ROWS):
            part = slice(start, min(start + _BLOCK_ROWS, first + share))
            for j, (median, numbers, missing) in enumerate(columns):
                filled[part, j] = numbers[part]
                np.copyto(filled[part, j], median, where=missing[part])
                if gaps is not None:
                    gaps[part, j] = missing[part]

    # The numbers are most of a table's columns: their run alone would keep one
    # thread busy while the others wait, so its rows are shared out too.
    share = max(_BLOCK_ROWS, -(-rows // _THREADS // _BLOCK_ROWS) * _BLOCK_ROWS)
    in_parallel(fill, range(0, rows, share))
    return _NumberRun(at, 2 if indicator else 1, filled, gaps)


def _one_hot_run(table: Table, group: Sequence[Column], at: int) -> _OneHotRun:
    each = group[0].width
    small = np.uint8 if each <= 256 else np.intp  # an eighth of the memory reads
    place = np.empty((len(table.y), len(group)), dtype=small)
    for j, c in enumerate(group):
        assert isinstance(c, CategoricalColumn)
        place[:, j] = one_hot_places(table.level_codes(c.name), c.levels)
    return _OneHotRun(at, each, place)


def column_moments(matrix: npt.NDArray[np.floating[Any]], rows: Rows) -> tuple[F64, F64]:
    """Mean and standard deviation of `matrix`'s `rows`, per column, in two passes of chunks
    (summed in the order and chunks `datasets` sums a dense matrix's: the same float64s)."""
    chosen = np.take(matrix, rows, axis=0)  # gathered once for both passes
    total = np.zeros(matrix.shape[1])
    for at in range(0, len(rows), _MOMENT_ROWS):
        total += chosen[at : at + _MOMENT_ROWS].sum(axis=0)
    mean = total / max(1, len(rows))
    squares = np.zeros(matrix.shape[1])
    for at in range(0, len(rows), _MOMENT_ROWS):
        squares += np.square(chosen[at : at + _MOMENT_ROWS] - mean).sum(axis=0)
    return mean, np.sqrt(squares / max(1, len(rows)))


def _binary_moments(ones: npt.NDArray[np.int64], n: int) -> tuple[F64, F64]:
    """Mean and standard deviation of 0/1 columns of `n` rows with `ones` ones each.

    The same figures as summing the column's values (the mean exactly; the
    squares in closed form, which can differ from a running sum in the last
    bits of a float64, far below the float32 they are rounded to).
    """
    n = max(1, n)  # no rows: zeros, as a sum over none
    mean = ones / n
    squares = ones * np.square(1.0 - mean) + (n - ones) * np.square(mean)
    return mean, np.sqrt(squares / n)


def one_hot_places(coded: tuple[npt.NDArray[np.intp], list[str]], levels: Sequence[str]) -> Any:
    """Each row's one-hot column for a category encoded over `levels`: its level's
    position, or `len(levels)` ("other") for any other or unseen value.

    `coded` is the column's `level_codes`.
    """
    codes, seen = coded
    index = {level: i for i, level in enumerate(levels)}
    place = np.array([index.get(level, len(levels)) for level in seen], np.intp)
    return place[codes]


def rows_to_columns(rows: Any) -> dict[str, Any]:
    """Raw rows as users hold them: a list of dicts, a dict of columns, a pandas DataFrame,
    a pyarrow Table, or the path of a CSV or Parquet file."""
    if isinstance(rows, str | Path):
        path = Path(rows)
        if path.suffix.lower() not in SUFFIXES:
            raise TableError(f"{path.name}: rows come as a .csv or .parquet file")
        return read_columns(path)
    if hasattr(rows, "column_names") and hasattr(rows, "to_pydict"):  # pyarrow Table
        return {str(k): _one_array(rows.column(k)) for k in rows.column_names}
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
        raw_codes, present = _buffers(indices, np.dtype(f"int{indices.type.bit_width}"))
        if present is not None:
            raw_codes = np.where(present, raw_codes, len(names))  # gaps: the code after the last
            names.append(MISSING)
        raw_codes = raw_codes.astype(np.intp, copy=False)
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
    if len(distinct) == len(names):  # every level its own: the codes stand
        return raw_codes, list(distinct)
    return remap[raw_codes], list(distinct)


def _kept(values: Any, keep: npt.NDArray[np.bool_]) -> Any:
    if keep.all():  # no target gaps: the column as it is, not a copy
        return values
    column = _arrow(values)
    if column is not None:
        import pyarrow as pa

        packed = pa.py_buffer(np.packbits(keep, bitorder="little"))  # not pa.array: see _buffers
        return column.filter(pa.Array.from_buffers(pa.bool_(), len(keep), [None, packed]))
    return [v for v, k in zip(values, keep, strict=True) if k]


def _numbers(values: Any, name: str) -> tuple[F64, npt.NDArray[np.bool_]]:
    """A column's numbers (0 where missing) and where they are missing."""
    numbers, gaps = _floats(values, name)
    return np.where(gaps, 0.0, numbers), gaps


def _floats(values: Any, name: str) -> tuple[F64, npt.NDArray[np.bool_]]:
    """A column's numbers and where they are missing (a gap, NaN or infinite); the
    numbers at the gaps are unspecified. A typed column's are its own memory."""
    column = _arrow(values)
    if column is not None and is_numeric(column):
        import pyarrow as pa
        import pyarrow.compute as pc

        numbers, valid = _buffers(pc.cast(column, pa.float64()), np.dtype(np.float64))
        gaps = ~np.isfinite(numbers)
        if valid is not None:
            gaps |= ~valid
        return numbers, gaps
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


def _buffers(column: Any, dtype: np.dtype[Any]) -> tuple[Any, npt.NDArray[np.bool_] | None]:
    """A fixed-width pyarrow array's values (read-only, no copy; unspecified under a
    gap) and which are present (None when all are).

    Read from its buffers: pyarrow's own conversions (`to_numpy`, `pa.array`,
    `pa.scalar`) import pandas when it is installed, half a second.
    """
    n, offset = len(column), column.offset
    validity, data = column.buffers()[:2]
    if data is None:  # an array of gaps only
        values = np.zeros(n, dtype=dtype)
    else:
        values = np.frombuffer(data, dtype=dtype, count=offset + n)[offset:]
        values.flags.writeable = False
    if not column.null_count:
        return values, None
    bits = np.frombuffer(validity, dtype=np.uint8)
    valid = np.unpackbits(bits, count=offset + n, bitorder="little")[offset:]
    return values, valid.view(np.bool_)


def _names(spec: Mapping[str, object], key: str) -> list[str] | None:
    value = spec.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TableError(f"{key!r} must be a list of column names")
    return list(value)
