"""Named datasets, prepared once in the main interpreter for the training pool.

A run request names its dataset and a few parameters; this module turns that
plain data into train/validation/test arrays the pool can share. Nothing in a
spec is ever executed or used as an arbitrary path: files are read only from
the configured data root (relative paths that stay inside it) or the
configured text directory. numpy is used here only — it cannot be imported in
the pool's isolated interpreters, which receive the arrays as buffers.

Every dataset is split with a seeded permutation into train, validation and
test rows: a search selects on validation only and the test rows are touched
once, to report the winner. Features are standardised with the training
statistics (kept, so a saved model can be applied to raw inputs) and stored as
C-contiguous float32 features and int32 labels. A regression dataset
(`friedman1`, or a `table` with `task: "regression"`) stores float32 targets
standardised with the training rows' mean and standard deviation, kept as
`target_mean`/`target_scale` so predictions go back to the target's units.
"""

import csv
import functools
import gzip
import hashlib
import importlib.util
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np
import numpy.typing as npt

from thunderhelm.ga.training import tables
from thunderhelm.ga.training.tables import TableEncoding

__all__ = [
    "DATASET_NAMES",
    "DatasetError",
    "PreparedDataset",
    "bigram_baseline_accuracy",
    "load_dataset",
]

F32 = npt.NDArray[np.float32]
I32 = npt.NDArray[np.int32]

DATASET_NAMES = ("spirals", "digits", "shakespeare", "csv", "npz", "table", "friedman1")

_COMMON = {"name", "seed", "validation_fraction", "test_fraction", "standardize"}
_MAX_FILE_BYTES = 512 * 1024 * 1024
# Tables are read by pyarrow into typed columns, not parsed into Python
# values: a million rows of fifty columns is about 800 MB of CSV.
_MAX_TABLE_BYTES = 4 * 1024 * 1024 * 1024
_MAX_FEATURE_BYTES = 512 * 1024 * 1024
_MAX_CLASSES = 1000


class DatasetError(ValueError):
    """A dataset spec that cannot be honoured; the message says why."""


@dataclass(frozen=True, eq=False)
class PreparedDataset:
    """Train/validation/test arrays ready to be shared with the pool.

    `mean`/`scale` are the standardisation applied to the features
    (x = (raw - mean) / scale). `labels[i]` names class i as the source data
    spelled it. `vocabulary` and `context` are set for character-level text
    only. The test rows never reach the pool: only the final model sees them.
    """

    name: str
    x_train: F32
    y_train: I32  # float32 standardised targets for a regression dataset (`task`)
    x_val: F32
    y_val: I32
    x_test: F32
    y_test: I32
    n_features: int
    n_classes: int
    mean: F32
    scale: F32
    labels: tuple[str, ...]
    test_rows: npt.NDArray[np.int64]  # which rows of the source the test split holds
    vocabulary: str = ""
    context: int = 0
    # A `table` dataset: how its raw columns became the feature columns.
    table: TableEncoding | None = None
    task: str = "classification"
    # Regression: target = standardised target * target_scale + target_mean.
    target_mean: float = 0.0
    target_scale: float = 1.0

    def fingerprint(self) -> str:
        """sha256 over every split and the standardisation: equal data, equal fingerprint."""
        digest = hashlib.sha256(self.name.encode())
        for array in (self.x_train, self.y_train, self.x_val, self.y_val, self.x_test,
                      self.y_test, self.mean, self.scale):  # fmt: skip
            digest.update(str(array.shape).encode())
            digest.update(array.tobytes())
        digest.update("\x00".join(self.labels).encode())
        if self.task == "regression":  # classification fingerprints stay as they were
            digest.update(f"regression {self.target_mean!r} {self.target_scale!r}".encode())
        return "sha256:" + digest.hexdigest()

    def network_keys(self) -> dict[str, object]:
        """What a network spec adds to train on this dataset: nothing for classification."""
        if self.task != "regression":
            return {}
        return {"task": "regression", "target_scale": self.target_scale}

    def buffers(self) -> dict[str, memoryview]:
        """Read-only flat views of the four arrays, as the pool attaches them.

        Features are n x n_features float32 ('f') flattened row-major, labels
        int32 ('i'); the views share memory with the arrays, never copy.
        """
        return {
            "x_train": memoryview(self.x_train.reshape(-1)).toreadonly(),
            "y_train": memoryview(self.y_train).toreadonly(),
            "x_val": memoryview(self.x_val.reshape(-1)).toreadonly(),
            "y_val": memoryview(self.y_val).toreadonly(),
        }


def load_dataset(spec: Mapping[str, object], *, data_root: Path, text_dir: Path) -> PreparedDataset:
    """Build the dataset a run request names.

    Common keys: `name`, `seed` (int, default 0), `validation_fraction`
    (default 0.2), `test_fraction` (default 0.2; the two together at most
    0.9), `standardize` (default true). Per name:
    `spirals` samples/classes/noise; `digits` samples; `shakespeare`
    context/samples/lowercase; `csv` and `npz` path (relative to `data_root`);
    `table` path (.csv or .parquet), target, task, features or drop,
    categorical (`ga/training/tables.py`).
    """
    name = spec.get("name")
    if name not in _LOADERS:
        raise DatasetError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}")
    assert isinstance(name, str)
    extra_keys, loader = _LOADERS[name]
    unknown = sorted(set(spec) - _COMMON - extra_keys)
    if unknown:
        allowed = ", ".join(sorted(_COMMON | extra_keys))
        raise DatasetError(f"dataset {name!r}: unknown keys {unknown}; allowed: {allowed}")
    seed = _int(spec, "seed", 0, 0, 2**63 - 1)
    fraction = _float(spec, "validation_fraction", 0.2, 0.01, 0.9)
    test_fraction = _float(spec, "test_fraction", 0.2, 0.01, 0.9)
    if fraction + test_fraction > 0.9:
        raise DatasetError("'validation_fraction' + 'test_fraction' must be at most 0.9")
    standardize = _bool(spec, "standardize", True)
    ctx = _Context(spec, seed, data_root, text_dir)
    encoding: TableEncoding | None = None
    task = "classification"
    y: npt.NDArray[np.int64] | npt.NDArray[np.float64]
    if name == "table":
        table = _table(ctx)
        y, labels, vocabulary, context, task = table.y, table.labels, "", 0, table.task
    elif name == "friedman1":
        x, y = _friedman1(ctx)
        labels, vocabulary, context, task = (), "", 0, "regression"
    else:
        assert loader is not None
        x, y, labels, vocabulary, context = loader(ctx)
    n_classes = 1 if task == "regression" else len(labels)  # one output: the target
    if len(y) < 6:
        raise DatasetError(f"dataset {name!r} has {len(y)} samples; at least 6 are needed")
    perm = np.random.default_rng([seed, 0x5E1]).permutation(len(y))
    n_val = max(1, round(len(y) * fraction))
    n_test = max(1, round(len(y) * test_fraction))
    n_val = min(n_val, len(y) - n_test - 2)
    val, train = perm[:n_val], perm[n_val + n_test :]
    test = np.sort(perm[n_val : n_val + n_test])  # source order: `test_rows` names them
    if name == "table":
        # The encoding learns from the training rows only, like the standardisation.
        encoding = tables.fit(table, np.sort(train))
        # Encoded and standardised straight into each split's float32 rows.
        design = tables.Design(table, encoding)
        width, moments, standardized = design.width, design.moments, design.standardized
    else:
        width = int(x.shape[1])
        moments = partial(_moments, x)
        standardized = partial(_standardized, x)
    if standardize:
        mean, scale = moments(train)
        scale[~(scale > 1e-12)] = 1.0
    else:
        mean, scale = np.zeros(width), np.ones(width)
    # Rounded to the float32 a saved model keeps, so raw rows standardised
    # later by that model get exactly the values the network was trained on.
    mean = mean.astype(np.float32).astype(np.float64)
    scale = scale.astype(np.float32).astype(np.float64)
    target = _Target.fit(y, train) if task == "regression" else _Target()
    return PreparedDataset(
        name=name,
        x_train=_frozen(standardized(train, mean, scale)),
        y_train=_frozen(target.apply(y[train])),
        x_val=_frozen(standardized(val, mean, scale)),
        y_val=_frozen(target.apply(y[val])),
        x_test=_frozen(standardized(test, mean, scale)),
        y_test=_frozen(target.apply(y[test])),
        n_features=width,
        n_classes=n_classes,
        mean=_frozen(mean.astype(np.float32)),
        scale=_frozen(scale.astype(np.float32)),
        labels=labels,
        test_rows=_frozen(test.astype(np.int64)),
        vocabulary=vocabulary,
        context=context,
        table=encoding,
        task=task,
        target_mean=target.mean,
        target_scale=target.scale,
    )


@dataclass(frozen=True)
class _Target:
    """How targets are stored: int32 labels, or (regression) standardised float32 numbers."""

    regression: bool = False
    mean: float = 0.0
    scale: float = 1.0

    @classmethod
    def fit(cls, y: npt.NDArray[Any], train: npt.NDArray[np.intp]) -> "_Target":
        values = np.asarray(y[train], dtype=np.float64)
        scale = float(values.std())
        if not scale > 1e-12:
            raise DatasetError("a regression target must vary over the training rows")
        # Rounded to float32, as a saved model keeps them.
        return cls(True, float(np.float32(values.mean())), float(np.float32(scale)))

    def apply(self, y: npt.NDArray[np.generic]) -> I32:
        if not self.regression:
            return y.astype(np.int32)
        # float32 for regression: the field types name the classification case.
        out: Any = ((np.asarray(y, np.float64) - self.mean) / self.scale).astype(np.float32)
        return out  # type: ignore[no-any-return]


def bigram_baseline_accuracy(dataset: PreparedDataset) -> float:
    """Validation accuracy of "predict the commonest next char after the previous char".

    Counts come from the training windows only; a previous char never seen in
    training predicts the commonest training label. This is the bar a
    character-level model has to beat.
    """
    if not dataset.vocabulary or dataset.context < 1:
        raise DatasetError(f"{dataset.name!r} is not a character-level dataset")
    v = len(dataset.vocabulary)
    prev_train = _previous_char(dataset, dataset.x_train)
    prev_val = _previous_char(dataset, dataset.x_val)
    counts = np.zeros((v, v), dtype=np.int64)
    np.add.at(counts, (prev_train, dataset.y_train), 1)
    fallback = int(np.bincount(dataset.y_train, minlength=v).argmax())
    predict = np.where(counts.sum(axis=1) > 0, counts.argmax(axis=1), fallback)
    return float(np.mean(predict[prev_val] == dataset.y_val))


def _previous_char(dataset: PreparedDataset, x: F32) -> npt.NDArray[np.intp]:
    v = len(dataset.vocabulary)
    last = slice((dataset.context - 1) * v, dataset.context * v)
    raw = x[:, last] * dataset.scale[last] + dataset.mean[last]
    return np.asarray(raw.argmax(axis=1))


# -- spec parsing -------------------------------------------------------------


@dataclass(frozen=True)
class _Context:
    spec: Mapping[str, object]
    seed: int
    data_root: Path
    text_dir: Path


# features, labels, class names, vocabulary, context
_Loaded = tuple[npt.NDArray[np.float64], npt.NDArray[np.int64], tuple[str, ...], str, int]


def _int(spec: Mapping[str, object], key: str, default: int, lo: int, hi: int) -> int:
    value = spec.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise DatasetError(f"{key!r} must be an integer in [{lo}, {hi}], got {value!r}")
    return value


def _float(spec: Mapping[str, object], key: str, default: float, lo: float, hi: float) -> float:
    value = spec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DatasetError(f"{key!r} must be a number, got {value!r}")
    if not (math.isfinite(value) and lo <= value <= hi):
        raise DatasetError(f"{key!r} must be in [{lo}, {hi}], got {value!r}")
    return float(value)


def _bool(spec: Mapping[str, object], key: str, default: bool) -> bool:
    value = spec.get(key, default)
    if not isinstance(value, bool):
        raise DatasetError(f"{key!r} must be true or false, got {value!r}")
    return value


def _frozen[A: np.ndarray](array: A) -> A:
    out = np.ascontiguousarray(array)
    out.flags.writeable = False
    return out  # type: ignore[return-value]  # ascontiguousarray keeps dtype and shape


def _labels(raw: npt.NDArray[np.int64], what: str) -> tuple[npt.NDArray[np.int64], int]:
    if raw.size and raw.min() < 0:
        raise DatasetError(f"{what}: labels must be non-negative integers")
    n_classes = int(raw.max()) + 1 if raw.size else 0
    if not 2 <= n_classes <= _MAX_CLASSES:
        raise DatasetError(f"{what}: need between 2 and {_MAX_CLASSES} classes, got {n_classes}")
    return raw, n_classes


# -- loaders ------------------------------------------------------------------


def _friedman1(ctx: _Context) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Friedman #1 (scikit-learn's make_friedman1 formula), drawn from the dataset's seed.

    x ~ U(0, 1)^10; y = 10 sin(pi x1 x2) + 20 (x3 - 0.5)^2 + 10 x4 + 5 x5 + noise N(0, 1):
    the other five features are irrelevant.
    """
    samples = _int(ctx.spec, "samples", 5000, 6, 1_000_000)
    noise = _float(ctx.spec, "noise", 1.0, 0.0, 100.0)
    rng = np.random.default_rng([ctx.seed, 0xF41])
    x = rng.uniform(0.0, 1.0, (samples, 10))
    y = (
        10.0 * np.sin(np.pi * x[:, 0] * x[:, 1])
        + 20.0 * (x[:, 2] - 0.5) ** 2
        + 10.0 * x[:, 3]
        + 5.0 * x[:, 4]
        + noise * rng.standard_normal(samples)
    )
    return x, y


def _spirals(ctx: _Context) -> _Loaded:
    samples = _int(ctx.spec, "samples", 1200, 4, 1_000_000)
    classes = _int(ctx.spec, "classes", 3, 2, 32)
    noise = _float(ctx.spec, "noise", 0.2, 0.0, 5.0)
    rng = np.random.default_rng([ctx.seed, 0x5917])
    y = np.arange(samples, dtype=np.int64) % classes
    # sqrt keeps the point density even along each arm.
    t = np.sqrt(rng.uniform(0.0, 1.0, samples))
    theta = 4.0 * t + 2.0 * math.pi * y / classes + noise * rng.standard_normal(samples)
    x = np.stack([t * np.cos(theta), t * np.sin(theta)], axis=1)
    return x, y, _numbered(classes), "", 0


@functools.cache
def _digits_table() -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """scikit-learn's digits (what `load_digits` returns), read from the file it ships.

    Importing sklearn takes about 1.5 s, most of it holding the interpreter's
    lock: on a worker, the first digits run stalled the event loop that
    accepts every other request (`bench stream`'s probe). Locating the package
    imports none of it; sklearn's own loader is the fallback should its data
    move.
    """
    found = importlib.util.find_spec("sklearn")
    places = [] if found is None else list(found.submodule_search_locations or [])
    shipped = [Path(p) / "datasets" / "data" / "digits.csv.gz" for p in places]
    if shipped and shipped[0].is_file():
        with gzip.open(shipped[0], "rt") as handle:
            table = np.loadtxt(handle, delimiter=",")
        x, y = table[:, :-1], table[:, -1].astype(np.int64)
    else:
        from sklearn.datasets import load_digits

        x, y = load_digits(return_X_y=True)
        y = y.astype(np.int64)
    x.flags.writeable = y.flags.writeable = False  # kept for every later load
    return x, y


def _digits(ctx: _Context) -> _Loaded:
    samples = _int(ctx.spec, "samples", 1797, 4, 1797)
    x_all, y_all = _digits_table()
    keep = np.sort(np.random.default_rng([ctx.seed, 0xD1]).permutation(len(y_all))[:samples])
    return x_all[keep].astype(np.float64), y_all[keep].astype(np.int64), _numbered(10), "", 0


def _shakespeare(ctx: _Context) -> _Loaded:
    context = _int(ctx.spec, "context", 8, 1, 64)
    samples = _int(ctx.spec, "samples", 20_000, 4, 500_000)
    lowercase = _bool(ctx.spec, "lowercase", True)
    files = sorted(ctx.text_dir.glob("*.txt")) if ctx.text_dir.is_dir() else []
    if not files:
        raise DatasetError(f"shakespeare: no .txt files in the text directory {ctx.text_dir}")
    text = "\n".join(f.read_text(encoding="utf-8", errors="replace") for f in files)
    if lowercase:
        text = text.lower()
    vocabulary = "".join(sorted(set(text)))
    v = len(vocabulary)
    points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    vocab_points = np.frombuffer(vocabulary.encode("utf-32-le"), dtype=np.uint32)
    codes = np.searchsorted(vocab_points, points)
    windows = len(codes) - context
    n = min(samples, windows)
    if n < 4:
        raise DatasetError("shakespeare: the text is shorter than the context window")
    if n * context * v * 8 > _MAX_FEATURE_BYTES:
        raise DatasetError(
            f"shakespeare: {n} windows of {context} chars over {v} symbols is too large; "
            "lower samples or context"
        )
    starts = np.random.default_rng([ctx.seed, 0x7E47]).choice(windows, size=n, replace=False)
    idx = codes[starts[:, None] + np.arange(context)]
    x = np.zeros((n, context * v), dtype=np.float64)
    x[np.arange(n)[:, None], np.arange(context) * v + idx] = 1.0
    y = codes[starts + context].astype(np.int64)
    return x, y, tuple(vocabulary), vocabulary, context


# Rows per step of the standardisation: a million rows of a wide table would
# otherwise hold several float64 copies of the matrix at once.
_CHUNK_ROWS = 65_536


def _moments(
    x: npt.NDArray[np.float64], rows: npt.NDArray[np.intp]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Mean and standard deviation of `x`'s `rows`, per column, in two passes of chunks."""
    total = np.zeros(x.shape[1])
    for at in range(0, len(rows), _CHUNK_ROWS):
        total += x[rows[at : at + _CHUNK_ROWS]].sum(axis=0)
    mean = total / max(1, len(rows))
    squares = np.zeros(x.shape[1])
    for at in range(0, len(rows), _CHUNK_ROWS):
        squares += np.square(x[rows[at : at + _CHUNK_ROWS]] - mean).sum(axis=0)
    return mean, np.sqrt(squares / max(1, len(rows)))


def _standardized(
    x: npt.NDArray[np.float64],
    rows: npt.NDArray[np.intp],
    mean: npt.NDArray[np.float64],
    scale: npt.NDArray[np.float64],
) -> npt.NDArray[np.float32]:
    """`(x[rows] - mean) / scale` as float32, a chunk of rows at a time."""
    out = np.empty((len(rows), x.shape[1]), dtype=np.float32)
    for at in range(0, len(rows), _CHUNK_ROWS):
        chunk = x[rows[at : at + _CHUNK_ROWS]]
        chunk -= mean
        chunk /= scale
        out[at : at + len(chunk)] = chunk
    return out


def _table(ctx: _Context) -> tables.Table:
    path = _confined_file(ctx, tables.SUFFIXES)
    try:
        return tables.select(tables.read_columns(path), ctx.spec, path.name)
    except tables.TableError as exc:
        raise DatasetError(str(exc)) from None


def _confined_file(ctx: _Context, suffix: str | tuple[str, ...]) -> Path:
    rel = ctx.spec.get("path")
    if not isinstance(rel, str) or not rel or "\x00" in rel:
        raise DatasetError("'path' must be a non-empty relative path string")
    posix, windows = PurePosixPath(rel), PureWindowsPath(rel)
    if posix.is_absolute() or windows.is_absolute() or windows.drive or rel.startswith("~"):
        raise DatasetError(f"'path' must be relative to the data root, got {rel!r}")
    if ".." in posix.parts or ".." in windows.parts:
        raise DatasetError(f"'path' must not contain '..', got {rel!r}")
    try:
        root = ctx.data_root.resolve(strict=True)
    except OSError:
        raise DatasetError(f"the data root {ctx.data_root} does not exist") from None
    # Resolving follows symlinks, so a link that points out of the root is caught here.
    target = (root / posix).resolve()
    if not target.is_relative_to(root):
        raise DatasetError(f"'path' {rel!r} resolves outside the data root")
    suffixes = (suffix,) if isinstance(suffix, str) else suffix
    if target.suffix.lower() not in suffixes:
        raise DatasetError(f"'path' must name a {' or '.join(suffixes)} file, got {rel!r}")
    if not target.is_file():
        raise DatasetError(f"no such file under the data root: {rel!r}")
    limit = _MAX_TABLE_BYTES if suffixes == tables.SUFFIXES else _MAX_FILE_BYTES
    if target.stat().st_size > limit:
        raise DatasetError(f"{rel!r} is larger than {limit} bytes")
    return target


def _csv(ctx: _Context) -> _Loaded:
    path = _confined_file(ctx, ".csv")
    delimiter = tables.csv_delimiter(path)
    with path.open(newline="", encoding="utf-8", errors="replace") as f:
        rows = [r for r in csv.reader(f, delimiter=delimiter) if r and any(c.strip() for c in r)]
    if rows and not numeric_cells(rows[0][:-1]):
        rows = rows[1:]  # a header row
    if not rows or len(rows[0]) < 2:
        raise DatasetError(f"{path.name}: need at least one feature column and a label column")
    width = len(rows[0])
    for i, row in enumerate(rows):
        if len(row) != width or not numeric_cells(row[:-1]):
            raise DatasetError(f"{path.name}: row {i + 1} is not {width - 1} numbers and a label")
    x = np.array([[float(c) for c in row[:-1]] for row in rows], dtype=np.float64)
    raw = [row[-1].strip() for row in rows]
    if all(r.lstrip("-").isdigit() for r in raw):
        y, n_classes = _labels(np.array([int(r) for r in raw], dtype=np.int64), path.name)
        names = _numbered(n_classes)
    else:
        unique, inverse = np.unique(np.array(raw), return_inverse=True)
        y, n_classes = _labels(inverse.astype(np.int64), path.name)
        names = tuple(str(u) for u in unique)
    return _finite(x, path.name), y, names, "", 0


def _npz(ctx: _Context) -> _Loaded:
    path = _confined_file(ctx, ".npz")
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "x" not in archive or "y" not in archive:
                raise DatasetError(f"{path.name}: the archive needs arrays 'x' and 'y'")
            x_raw, y_raw = archive["x"], archive["y"]
    except (OSError, ValueError) as exc:
        if isinstance(exc, DatasetError):
            raise
        raise DatasetError(f"{path.name}: not a readable .npz archive ({exc})") from None
    if x_raw.ndim == 1:
        x_raw = x_raw[:, None]
    if x_raw.ndim != 2 or y_raw.ndim != 1 or len(x_raw) != len(y_raw):
        raise DatasetError(f"{path.name}: need x of shape (n, features) and y of shape (n,)")
    if not (np.issubdtype(x_raw.dtype, np.number) and np.issubdtype(y_raw.dtype, np.number)):
        raise DatasetError(f"{path.name}: x and y must be numeric")
    if not np.all(np.equal(np.mod(y_raw, 1), 0)):
        raise DatasetError(f"{path.name}: labels must be integers")
    y, n_classes = _labels(y_raw.astype(np.int64), path.name)
    return _finite(x_raw.astype(np.float64), path.name), y, _numbered(n_classes), "", 0


def _numbered(n_classes: int) -> tuple[str, ...]:
    return tuple(str(i) for i in range(n_classes))


def numeric_cells(cells: list[str]) -> bool:
    """Whether every cell reads as a number (a CSV header row does not)."""
    try:
        for c in cells:
            float(c)
    except ValueError:
        return False
    return True


def _finite(x: npt.NDArray[np.float64], what: str) -> npt.NDArray[np.float64]:
    if x.shape[1] == 0 or not np.all(np.isfinite(x)):
        raise DatasetError(f"{what}: features must be finite numbers")
    return x


_LOADERS: dict[str, tuple[set[str], Callable[[_Context], _Loaded] | None]] = {
    "spirals": ({"samples", "classes", "noise"}, _spirals),
    "digits": ({"samples"}, _digits),
    "shakespeare": ({"context", "samples", "lowercase"}, _shakespeare),
    "csv": ({"path"}, _csv),
    "npz": ({"path"}, _npz),
    # No loader of this shape: `_table`, as its encoding is fitted after the split.
    "table": ({"path", "target", "task", "features", "drop", "categorical"}, None),
    # Neither: a regression target (float), not class labels.
    "friedman1": ({"samples", "noise"}, None),
}
