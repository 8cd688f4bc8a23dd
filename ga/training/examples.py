"""Small example tables for demos and tests, made from data scikit-learn ships.

Nothing is downloaded: both come from the copies inside the scikit-learn
package. `thunderhelm examples` writes them under the data root, where a
`table` dataset names them (`dataset_spec`).

* `diabetes` (regression): scikit-learn's diabetes data in its original
  units, 442 patients. Ten numbers (age, sex as 1 or 2, body-mass index,
  blood pressure and six blood serum measurements, named as scikit-learn's
  description names them) and the target `progression`, a measure of the
  disease's progression one year after baseline.
* `cancer` (classification, mixed types, gaps): the Wisconsin breast cancer
  data, 569 tumours, target `diagnosis` (`malignant` or `benign`, 37 % and
  63 %). Six of the cell nuclei's mean measurements are numbers; the mean
  area becomes the category `size` (its quartiles: small, medium, large,
  very large) and the mean texture the category `texture` (its thirds:
  fine, medium, coarse), as a lab sheet would note them. A fixed 5 % of the
  cells of `smoothness`, `concavity`, `size` and `texture` are blanked
  (seed 0), so that the imputation of numbers and the missing level of
  categories have work to do.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

FORMATS = ("csv", "parquet")
GAP_SHARE = 0.05


@dataclass(frozen=True)
class Example:
    name: str
    target: str
    task: Literal["classification", "regression"]
    about: str
    build: Callable[[], Any]  # -> pyarrow.Table


def _diabetes() -> Any:
    import pyarrow as pa
    from sklearn.datasets import load_diabetes

    data = load_diabetes(scaled=False)
    names = ["age", "sex", "bmi", "bp", "tc", "ldl", "hdl", "tch", "ltg", "glu"]
    columns: dict[str, Any] = {n: data.data[:, i] for i, n in enumerate(names)}
    columns["age"] = columns["age"].astype(np.int64)
    columns["sex"] = columns["sex"].astype(np.int64)
    columns["progression"] = data.target
    return pa.table(columns)


def _bands(values: Any, names: Sequence[str]) -> list[str]:
    """Each value's band among equal shares of `values` (quantiles), by name."""
    edges = np.quantile(values, np.linspace(0, 1, len(names) + 1)[1:-1])
    return [names[i] for i in np.searchsorted(edges, values, side="right")]


def _cancer() -> Any:
    import pyarrow as pa
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    column = {name: data.data[:, i] for i, name in enumerate(data.feature_names)}
    rows = len(data.target)
    rng = np.random.default_rng(0)

    def gappy(values: list[Any]) -> list[Any]:
        blank = rng.random(rows) < GAP_SHARE
        return [None if b else v for v, b in zip(values, blank, strict=True)]

    numbers = {
        name: [round(float(v), 5) for v in column[f"mean {name.replace('_', ' ')}"]]
        for name in (
            "smoothness",
            "compactness",
            "concavity",
            "concave_points",
            "symmetry",
            "fractal_dimension",
        )
    }
    table: dict[str, Any] = {
        "size": gappy(_bands(column["mean area"], ("small", "medium", "large", "very large"))),
        "texture": gappy(_bands(column["mean texture"], ("fine", "medium", "coarse"))),
        **numbers,
        "diagnosis": [str(data.target_names[t]) for t in data.target],
    }
    for name in ("smoothness", "concavity"):
        table[name] = gappy(table[name])
    return pa.table(table)


EXAMPLES: dict[str, Example] = {
    e.name: e
    for e in (
        Example(
            "diabetes",
            "progression",
            "regression",
            "442 patients, 10 numbers; predict the disease's progression after a year",
            _diabetes,
        ),
        Example(
            "cancer",
            "diagnosis",
            "classification",
            "569 tumours, 6 numbers and 2 categories with gaps; malignant or benign",
            _cancer,
        ),
    )
}


def dataset_spec(example: Example, file_name: str) -> dict[str, Any]:
    """The request's `dataset` for an example written as `file_name` under the data root."""
    spec: dict[str, Any] = {"name": "table", "path": file_name, "target": example.target}
    if example.task == "regression":
        spec["task"] = "regression"
    return spec


def write_example(example: Example, folder: Path, file_format: str = "csv") -> Path:
    """Write `example` as `<folder>/<name>.<format>` (a gap: an empty CSV cell, a Parquet null)."""
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    if file_format not in FORMATS:
        raise ValueError(f"unknown format {file_format!r}; expected one of {FORMATS}")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{example.name}.{file_format}"
    table = example.build()
    if file_format == "csv":
        pa_csv.write_csv(table, path)
    else:
        pq.write_table(table, path)
    return path
