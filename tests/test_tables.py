"""Tables as users have them: a named target, categories, gaps, CSV and Parquet, end to end."""

import contextlib
import csv
import io
import json
import mmap
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import thunderhelm
from thunderhelm.ga.training.datasets import DatasetError, load_dataset
from thunderhelm.ga.training.tables import (
    MAX_LEVELS,
    MISSING,
    CategoricalColumn,
    NumericColumn,
    csv_delimiter,
)
from thunderhelm.streams.cli.main import main as cli
from thunderhelm.streams.config.settings import Settings
from thunderhelm.streams.execution.local_run import run_local

CITIES = ("NY", "SF", "LA", "CHI")


def homes(rows: int = 900, seed: int = 0) -> dict[str, list[Any]]:
    """A mixed table: a text category, numbers with gaps, an id to drop, a text target."""
    rng = np.random.default_rng(seed)
    city = rng.choice(CITIES, rows)
    size = rng.normal(100, 30, rows)
    age = rng.integers(0, 50, rows)
    score = size / 30 + (city == "SF") * 2 - age / 25 + rng.normal(0, 0.5, rows)
    tier = np.where(score > 3.5, "high", np.where(score > 2, "mid", "low"))
    return {
        "id": list(range(rows)),
        "city": [None if rng.random() < 0.05 else str(c) for c in city],
        "size": [None if rng.random() < 0.05 else round(float(s), 1) for s in size],
        "age": [int(a) for a in age],
        "tier": [str(t) for t in tier],
    }


def write_csv(table: dict[str, list[Any]], path: Path, delimiter: str = ",") -> Path:
    names = list(table)
    with path.open("w", newline="") as f:
        out = csv.writer(f, delimiter=delimiter)
        out.writerow(names)
        for row in zip(*(table[n] for n in names), strict=True):
            out.writerow(["NA" if v is None else v for v in row])
    return path


def spec(**extra: Any) -> dict[str, Any]:
    return {"name": "table", "path": "homes.csv", "target": "tier", "drop": ["id"], **extra}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tables")
    table = homes()
    write_csv(table, folder / "homes.csv")
    pq.write_table(pa.table(table), folder / "homes.parquet")
    return folder


def load(root: Path, **overrides: Any) -> Any:
    return load_dataset({**spec(), **overrides}, data_root=root, text_dir=root)


def test_a_mixed_table_becomes_numbers_with_the_encoding_fitted_on_training_rows(
    root: Path,
) -> None:
    data = load(root)
    assert data.labels == ("high", "low", "mid") and data.n_classes == 3
    encoding = data.table
    assert encoding is not None and [c.name for c in encoding.columns] == ["city", "size", "age"]
    city, size, age = encoding.columns
    assert isinstance(city, CategoricalColumn) and set(city.levels) == {*CITIES, MISSING}
    assert isinstance(size, NumericColumn) and size.indicator  # it had gaps
    assert isinstance(age, NumericColumn) and not age.indicator
    assert data.n_features == encoding.width == len(city.levels) + 1 + 2 + 1
    # The median is the training rows' own: the other splits never shaped the encoding.
    table = homes()
    perm = np.random.default_rng([0, 0x5E1]).permutation(900)  # load_dataset's split
    train = perm[360:]  # after 180 validation and 180 test rows
    sizes = [table["size"][i] for i in train if table["size"][i] is not None]
    assert size.median == pytest.approx(float(np.median(sizes)))
    everywhere = [v for v in table["size"] if v is not None]
    assert size.median != pytest.approx(float(np.median(everywhere)), abs=1e-9)
    assert np.isfinite(data.x_train).all() and np.isfinite(data.x_test).all()


def test_parquet_and_csv_of_one_table_give_the_same_dataset(root: Path) -> None:
    from_csv, from_parquet = load(root), load(root, path="homes.parquet")
    assert from_csv.fingerprint() == from_parquet.fingerprint()


@pytest.mark.parametrize("delimiter", [";", "\t", "|"])
def test_a_csv_separated_otherwise_than_by_commas_gives_the_same_dataset(
    root: Path, delimiter: str
) -> None:
    table = homes()
    # A quoted header name with more commas than separators: its commas are not one.
    table["rooms, baths, floors, sheds, porches, total"] = table.pop("age")
    write_csv(table, root / "separated.csv", delimiter)
    write_csv(table, root / "commas.csv")
    separated, commas = load(root, path="separated.csv"), load(root, path="commas.csv")
    assert separated.table is not None
    assert [c.name for c in separated.table.columns] == [
        "city",
        "size",
        "rooms, baths, floors, sheds, porches, total",
    ]
    assert separated.fingerprint() == commas.fingerprint()


def test_the_separator_of_a_header_wider_than_any_buffer_is_found(tmp_path: Path) -> None:
    names = [f"measurement_{i:05d}" for i in range(8000)]  # a 150 kB header line
    row = ";".join("1.5" for _ in names)
    (tmp_path / "wide.csv").write_text(";".join(names) + "\n" + f"{row}\n" * 3)
    assert csv_delimiter(tmp_path / "wide.csv") == ";"


def test_features_drop_and_categorical_choose_the_columns(root: Path) -> None:
    only = load(root, drop=None, features=["size", "age"])
    assert only.table is not None and [c.name for c in only.table.columns] == ["size", "age"]
    as_category = load(root, categorical=["city", "age"])
    assert as_category.table is not None
    assert isinstance(as_category.table.columns[2], CategoricalColumn)  # age, by request
    assert len(as_category.table.columns[2].levels) == MAX_LEVELS  # 50 ages: the top 32


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"target": "price"}, "no column 'price' to predict"),
        ({"drop": ["id", "zip"]}, "'drop' names columns the table lacks: ['zip']"),
        ({"drop": None, "features": ["city", "tier"]}, "cannot also be a feature"),
        ({"categorical": ["nope"]}, "'categorical' names columns that are not features"),
        ({"drop": None}, None),  # the id column: numbers, kept (a user may want it)
        ({"target": "size"}, "set task 'regression'"),
        ({"task": "regression"}, "holds text, not numbers"),
        ({"path": "homes.txt"}, "must name a .csv or .parquet file"),
        ({"path": "broken.parquet"}, "not a readable .parquet table"),
        ({"target": "empty"}, "has no values"),
        ({"drop": None, "categorical": ["city", "id"]}, None),  # 900 ids as levels: allowed
        ({"path": "ids.csv", "drop": None}, "10050 distinct values"),
        ({"path": "latin-1.csv"}, "latin-1.csv: not UTF-8 text"),
    ],
)
def test_each_bad_table_spec_gets_one_clear_reason(
    root: Path, overrides: dict[str, Any], reason: str | None
) -> None:
    (root / "broken.parquet").write_bytes(b"not parquet at all")
    with_empty = homes()
    with_empty["empty"] = [None] * len(with_empty["tier"])
    write_csv(with_empty, root / "empty.csv")
    rows = 10_050
    ids = {"key": [f"k{i}" for i in range(rows)], "tier": ["a", "b"] * (rows // 2)}
    write_csv(ids, root / "ids.csv")
    (root / "latin-1.csv").write_bytes("id,city,größe,tier\n1,SF,3,low\n".encode("latin-1"))
    if overrides.get("target") == "empty":
        overrides = {**overrides, "path": "empty.csv"}
    if reason is None:
        assert load(root, **overrides).n_classes == 3
        return
    with pytest.raises(DatasetError, match=reason.replace("(", r"\(").replace("[", r"\[")):
        load(root, **overrides)


@pytest.mark.parametrize("mapped", [False, True], ids=["numpy", "mapped"])
def test_a_table_runs_end_to_end_and_predicts_from_raw_rows(
    root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    mapped: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The interpreter pool trains on the design matrix in numpy's memory and in a
    mapping of its own (`tables._present`, a large table's) alike."""
    from thunderhelm.ga.training import tables

    if mapped:
        monkeypatch.setattr(tables, "_POPULATE_BYTES", 0)
    request = {
        "run_id": "table-homes",
        "dataset": spec(seed=2),
        "ga": {"population": 4, "generations": 2, "seed": 1},
        "training": {"epochs": 4},
    }
    settings = Settings(data_root=root, artifact_dir=tmp_path / "artifacts", pool_size=2)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert run_local(settings, request, 2, as_json=True, logs=tmp_path / "logs") == 0
    result = json.loads(out.getvalue().strip().splitlines()[-1])
    assert result["status"] == "succeeded"
    model = thunderhelm.load_model(result["artifact"])
    assert model.table is not None and model.manifest["preprocessing"]["encoding"] == "table"
    # Rows as users have them: dicts with text, gaps and an unseen city.
    rows = [
        {"city": "SF", "size": 150.0, "age": 2},
        {"city": None, "size": None, "age": 40},
        {"city": "Paris", "size": "90", "age": 10},
    ]
    assert all(label in model.labels for label in model.predict_labels(rows))
    proba = model.predict_proba({"city": ["SF"], "size": [None], "age": [1]})
    assert proba.shape == (1, 3) and abs(float(proba.sum()) - 1.0) < 1e-5
    with pytest.raises(ValueError, match=r"lack the model's input columns \['age'\]"):
        model.predict([{"city": "SF", "size": 1.0}])
    # The test split, raw from the file, scores what the result says.
    data = load(root, seed=2)
    table = homes()
    test_rows = [{k: table[k][i] for k in ("city", "size", "age")} for i in data.test_rows]
    predicted = model.predict(test_rows)
    assert float(np.mean(predicted == data.y_test)) == result["model"]["test"]["accuracy"]
    # The CLI on the raw CSV (target column included: it reports the accuracy).
    assert cli(["predict", result["artifact"], "--input", str(root / "homes.csv"), "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["rows"] == 900 and answer["accuracy"] > 0.5
    # ONNX: the raw columns in (text with gaps as "", numbers with gaps as NaN).
    assert cli(["export", result["artifact"], "--onnx", str(tmp_path / "t.onnx")]) == 0
    import pandas as pd

    check_raw_onnx(model, pd.read_csv(root / "homes.csv"), tmp_path / "t.onnx")  # "NA": a gap
    check_raw_onnx(model, pd.DataFrame(rows).astype({"size": float}), tmp_path / "t.onnx")
    # A column named as the graph's own output cannot be an input beside it.
    import dataclasses

    from thunderhelm.ga.training.onnx_export import to_onnx
    from thunderhelm.ga.training.tables import TableEncoding

    single = getattr(model, "members", (model,))[0]
    clash = TableEncoding("tier", (NumericColumn("probabilities", 0.0, False),))
    with pytest.raises(ValueError, match=r"uses itself: \['probabilities'\]"):
        to_onnx(dataclasses.replace(single, table=clash))


def check_raw_onnx(model: Any, frame: Any, onnx_file: Path) -> None:
    """onnxruntime, fed a DataFrame's raw columns as a user would, agrees with `predict`."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx_file))
    feeds: dict[str, Any] = {}
    for given in session.get_inputs():
        column = frame[given.name]
        if given.type == "tensor(string)":
            text = column.map(lambda v: "" if v is None or v != v else str(v))
            feeds[given.name] = text.to_numpy(dtype=object).reshape(-1, 1)
        else:
            feeds[given.name] = column.to_numpy(dtype=np.float32).reshape(-1, 1)
    (got,) = session.run(None, feeds)
    want = model.predict(frame) if model.regression else model.predict_proba(frame)
    np.testing.assert_allclose(got.reshape(want.shape), want, atol=1e-4)


def test_the_request_schema_takes_a_table_and_refuses_features_with_drop() -> None:
    from pydantic import ValidationError

    from thunderhelm.schemas.requests import RunRequest

    ok = RunRequest.model_validate({"run_id": "t", "dataset": spec()})
    assert ok.dataset.name == "table"
    with pytest.raises(ValidationError, match="give 'features' or 'drop', not both"):
        RunRequest.model_validate({"run_id": "t", "dataset": spec(features=["city"])})


def test_the_encoding_is_pinned_on_a_small_mixed_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """Levels by count, ties by value, gaps as a level, the rest and unseen values as "other";
    medians and gap flags from the training rows; the design matrix agrees with `encode`."""
    from thunderhelm.ga.training import tables

    monkeypatch.setattr(tables, "MAX_LEVELS", 2)
    raw = {
        "color": pa.array(["red", "blue", "red", None, None, "blue", "green", "teal"]),
        "size": pa.array([1.0, None, 3.0, 4.0, 2.0, float("nan"), 5.0, None]),
        "age": pa.array([10, 20, 30, 40, 50, 60, 70, 80]),
        "y": pa.array(["a", "b", "a", "b", "a", "b", "a", "b"]),
    }
    table = tables.select(raw, {"target": "y"}, "t")
    train = np.arange(7)  # "teal" (row 7) is never seen in training
    encoding = tables.fit(table, train)
    # red, blue and (missing) twice each: the tie goes by value, "(" before "b" before "r".
    assert encoding.to_dict() == {
        "target": "y",
        "columns": [
            {"name": "color", "kind": "category", "levels": [MISSING, "blue"]},
            {"name": "size", "kind": "number", "median": 3.0, "indicator": True},
            {"name": "age", "kind": "number", "median": 40.0, "indicator": False},
        ],
    }
    assert encoding.feature_names() == [
        f"color={MISSING}",
        "color=blue",
        "color=(other)",
        "size",
        "size=missing",
        "age",
    ]
    expected = np.array(
        [
            [0, 0, 1, 1, 0, 10],
            [0, 1, 0, 3, 1, 20],
            [0, 0, 1, 3, 0, 30],
            [1, 0, 0, 4, 0, 40],
            [1, 0, 0, 2, 0, 50],
            [0, 1, 0, 3, 1, 60],
            [0, 0, 1, 5, 0, 70],
            [0, 0, 1, 3, 1, 80],
        ],
        dtype=np.float64,
    )
    x = encoding.encode(table.columns)
    assert np.array_equal(x, expected)
    # Raw rows at predict time, as lists with None: the same matrix.
    as_lists = {name: values.to_pylist() for name, values in raw.items() if name != "y"}
    assert np.array_equal(encoding.encode(as_lists), expected)
    # The design matrix: the same moments and standardised values, never built whole.
    design = tables.Design(table, encoding)
    mean, scale = design.moments(train)
    assert np.allclose(mean, expected[train].mean(axis=0), rtol=0, atol=1e-12)
    assert np.allclose(scale, expected[train].std(axis=0), rtol=0, atol=1e-12)
    rows = np.array([7, 0, 3, 3, 5])
    want = ((expected[rows] - mean) / scale).astype(np.float32)
    assert np.array_equal(design.standardized(rows, mean, scale), want)


def mixed(rows: int, seed: int) -> pa.Table:
    """Runs of every kind: numbers with and without gaps side by side, categories of
    more and fewer than MAX_LEVELS values, integers, booleans, NaN and infinities."""
    rng = np.random.default_rng(seed)
    gaps = rng.random((6, rows)) < 0.1
    many = rng.integers(0, 45, rows).astype(str)
    return pa.table(
        {
            "a": pa.array(rng.normal(size=rows), mask=gaps[0]),
            "b": pa.array(rng.normal(size=rows), mask=gaps[1]),
            "n": rng.integers(-5, 5, rows),
            "many": pa.array(np.char.add("v", many), mask=gaps[2]),
            "few": pa.array(rng.choice(["x", "y", "z"], rows), mask=gaps[3]),
            "few2": pa.array(rng.choice(["p", "q", "r"], rows)),
            "flag": pa.array(rng.random(rows) < 0.5, mask=gaps[4]),
            "odd": pa.array(np.where(rng.random(rows) < 0.02, np.inf, rng.normal(size=rows))),
            "c": pa.array(rng.normal(size=rows), mask=gaps[5]),
            "y": pa.array(rng.choice(["lo", "hi", "mid"], rows), mask=rng.random(rows) < 0.03),
        }
    )


def _mapped(array: np.ndarray) -> bool:
    """Whether `array`'s memory is an mmap of its own (`tables._present`)."""
    base: Any = array
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    return isinstance(base, memoryview) and isinstance(base.obj, mmap.mmap)


@pytest.mark.parametrize("mapped", [False, True], ids=["numpy", "mapped"])
@pytest.mark.parametrize("standardize", [True, False])
@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_the_splits_are_the_encoded_matrix_standardised(
    tmp_path: Path, suffix: str, standardize: bool, mapped: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The splits built a block at a time equal the dense float64 route: `encode` of every
    row (as at predict time), the training moments, then (x - mean) / scale in float32;
    the same in memory mapped whole (a large table's) as in numpy's own."""
    import pyarrow.csv as pa_csv

    from thunderhelm.ga.training import datasets, tables

    if mapped:
        monkeypatch.setattr(tables, "_POPULATE_BYTES", 0)  # every array mapped, however small

    table = mixed(9000, seed=5)  # more rows than one thread's share of the number run
    path = tmp_path / f"mixed{suffix}"
    if suffix == ".csv":
        pa_csv.write_csv(table, path)
    else:
        pq.write_table(table, path)
    spec = {"name": "table", "path": path.name, "target": "y", "standardize": standardize}
    data = load_dataset(spec, data_root=tmp_path, text_dir=tmp_path)
    encoding = data.table
    assert encoding is not None
    kinds = [type(c).__name__ for c in encoding.columns]
    assert kinds.count("CategoricalColumn") == 4 and len(kinds) == 9
    # The dense route, rebuilt from the split `load_dataset` drew.
    n = len(data.y_train) + len(data.y_val) + len(data.y_test)
    perm = np.random.default_rng([0, 0x5E1]).permutation(n)
    val, train = perm[: len(data.y_val)], perm[len(data.y_val) + len(data.y_test) :]
    kept = np.asarray(table.column("y").is_valid())
    raw = {name: table.column(name).filter(kept).combine_chunks() for name in table.column_names}
    x = encoding.encode(raw)
    if standardize:
        mean, scale = datasets._moments(x, train)
        scale[~(scale > 1e-12)] = 1.0
        assert np.array_equal(data.mean, mean.astype(np.float32))
        assert np.array_equal(data.scale, scale.astype(np.float32))
    mean, scale = data.mean.astype(np.float64), data.scale.astype(np.float64)
    assert np.array_equal(data.x_train, ((x[train] - mean) / scale).astype(np.float32))
    assert _mapped(data.x_train) == mapped
    assert np.array_equal(data.x_val, ((x[val] - mean) / scale).astype(np.float32))
    assert np.array_equal(data.x_test, ((x[data.test_rows] - mean) / scale).astype(np.float32))
