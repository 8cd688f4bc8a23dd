"""Data benchmark: a table of a million rows, loaded and encoded, against the tools users have.

One table of `ROWS` rows and 50 feature columns is written as CSV and as
Parquet: 40 numeric columns with 5 % gaps and 10 categorical ones of 50
levels with 3 % gaps, and a 3-class target. For each file, side by side in
one run, each in a fresh process (so peak RSS is its own):

* pyarrow: the file read alone, nothing else (the floor);
* thunderhelm: the `table` dataset as a run loads it (read, target and
  columns checked, encoding fitted on the training rows, every row encoded
  and standardised, the three splits);
* pandas_sklearn: what a user writes by hand: pandas reads the file and
  scikit-learn's ColumnTransformer (median imputation with indicators and
  scaling for numbers; most-frequent-33 one-hot with an infrequent bucket for
  categories) is fitted on the same training rows and transforms all of them.

Then the pool: a process attaches the encoded training matrix to a pool of
one and of two interpreters at two row counts; `rss_per_interpreter_growth_mb`
is how much the second interpreter's cost grows with the rows (0 when the
matrix is shared, not copied per interpreter).

Then regression, side by side on the same splits: Friedman #1 (the
`friedman1` dataset: 5,000 rows, noise 1.0; 60 % train, 20 % validation,
20 % test) for dataset seeds 0, 1 and 2, the GA seed equal to the dataset
seed. For each seed, in a fresh process:

* thunderhelm: a local run (`streams.execution.local_run.run_local`, what
  `thunderhelm run` does) with the product's defaults (search space, fitness
  val_r2, successive-halving rungs, final model) and a budget of population
  8, generations 4 (the defaults) and 30 epochs (the default is 3). Its
  result's `model.test.r2` is the delivered model's test R² (`friedman_r2`);
  `best.metrics.test_r2` is the best single network's. The delivered R² is
  also recomputed from the saved artifact's predictions on the test rows,
  in the target's units, as a check that both are scored on the same truth.
* HistGradientBoostingRegressor() with its defaults (random_state=0; at
  these row counts its early stopping is off) fitted on the train and
  validation rows together, the rows the search trained and selected on,
  and scored on the same test rows in the target's units (`hgb_r2`).

`friedman_r2` and `hgb_r2` are the means over the three seeds; `friedman`
has the per-seed figures. Quick mode: 1,000 rows, population 4,
generations 2, 5 epochs.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import Options, cores
from bench.report import bar

__all__ = ["run"]

ROWS = 1_000_000
QUICK_ROWS = 20_000
NUMERIC, CATEGORICAL, LEVELS = 40, 10, 50

_MAKE = f"""
import sys, numpy as np, pyarrow as pa, pyarrow.csv as pc, pyarrow.parquet as pq
n, out = int(sys.argv[1]), sys.argv[2]
rng = np.random.default_rng(0)
x = rng.normal(size=(n, {NUMERIC}))
cols = {{}}
for j in range({NUMERIC}):
    cols[f"n{{j}}"] = pa.array(x[:, j], mask=rng.random(n) < 0.05)
for j in range({CATEGORICAL}):
    levels = np.char.add("L", rng.integers(0, {LEVELS}, n).astype(str))
    cols[f"c{{j}}"] = pa.array(levels, mask=rng.random(n) < 0.03)
score = x[:, 0] + 0.5 * x[:, 1] - x[:, 2] * x[:, 3]
cols["target"] = pa.array(np.where(score > 0.5, "high", np.where(score < -0.5, "low", "mid")))
table = pa.table(cols)
pq.write_table(table, out + ".parquet")
pc.write_csv(table, out + ".csv")
"""

# Each timed step runs in its own process and prints {"s": wall, "rss_mb": peak}.
_STEP = """
import json, resource, sys, time
from pathlib import Path
path, how = Path(sys.argv[1]), sys.argv[2]
if how == "pyarrow":
    import pyarrow.csv as pc, pyarrow.parquet as pq
elif how == "thunderhelm":
    from thunderhelm.ga.training.datasets import load_dataset
else:
    import numpy as np, pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler
began = time.perf_counter()  # imports are not timed
if how == "pyarrow":
    table = pq.read_table(path) if path.suffix == ".parquet" else pc.read_csv(path)
    rows = table.num_rows
elif how == "thunderhelm":
    spec = {"name": "table", "path": path.name, "target": "target"}
    data = load_dataset(spec, data_root=path.parent, text_dir=None)
    rows = len(data.y_train) + len(data.y_val) + len(data.y_test)
    features = data.n_features
else:
    frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    y = frame.pop("target")
    numbers = [c for c in frame.columns if c.startswith("n")]
    categories = [c for c in frame.columns if c.startswith("c")]
    gaps = frame[categories].notna()
    frame[categories] = frame[categories].astype(object).where(gaps, "(missing)")
    impute = SimpleImputer(strategy="median", add_indicator=True)
    encode = ColumnTransformer([
        ("n", make_pipeline(impute, StandardScaler()), numbers),
        ("c", OneHotEncoder(max_categories=33, handle_unknown="infrequent_if_exist"), categories),
    ])
    train = np.random.default_rng(0).permutation(len(frame))[: int(0.6 * len(frame))]
    encode.fit(frame.iloc[train])
    x = encode.transform(frame)
    rows = x.shape[0]
seconds = time.perf_counter() - began
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
out = {"s": round(seconds, 3), "rss_mb": round(peak, 1), "rows": rows}
if how == "thunderhelm":
    out["features"] = features
print(json.dumps(out))
"""

_POOL = """
import json, sys, time
import numpy as np
from thunderhelm.ga.pool.interpreter_pool import InterpreterPool
rows, size = int(sys.argv[1]), int(sys.argv[2])
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
x = np.random.default_rng(0).normal(size=(rows, 410)).astype(np.float32)
with InterpreterPool(size) as pool:
    time.sleep(0.5)
    before = rss()
    pool.attach("data", {"x": memoryview(x)})
    time.sleep(1.0)
    print(json.dumps({"attached_mb": round(rss() - before, 1), "rss_mb": round(rss(), 1)}))
"""


_FRIEDMAN = """
import contextlib, io, json, shutil, sys, tempfile, time
from pathlib import Path
import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.metrics import r2_score
from thunderhelm.ga.training.artifact import load_model
from thunderhelm.ga.training.datasets import load_dataset
from thunderhelm.streams.config.settings import Settings
from thunderhelm.streams.execution.local_run import run_local
request, pool_size = json.loads(sys.argv[1]), int(sys.argv[2])
tmp = Path(tempfile.mkdtemp(prefix="thunderhelm-friedman-"))
settings = Settings(data_root=tmp, artifact_dir=tmp / "artifacts", pool_size=pool_size)
began = time.perf_counter()
said = io.StringIO()
with contextlib.redirect_stdout(said):
    code = run_local(settings, request, pool_size, as_json=True, logs=tmp / "logs")
run_s = time.perf_counter() - began
result = json.loads(said.getvalue().strip().splitlines()[-1])
if code != 0 or result["status"] != "succeeded":
    raise SystemExit(f"run ended {code}: {result.get('status')} {result.get('error')}")
data = load_dataset(request["dataset"], data_root=tmp, text_dir=tmp)
def units(y):
    return y.astype(np.float64) * data.target_scale + data.target_mean
truth = units(data.y_test)
raw_test = data.x_test.astype(np.float64) * data.scale + data.mean
recomputed = r2_score(truth, load_model(result["artifact"]).predict(raw_test))
began = time.perf_counter()
hgb = HistGradientBoostingRegressor(random_state=0).fit(
    np.vstack([data.x_train, data.x_val]), units(np.concatenate([data.y_train, data.y_val]))
)
hgb_r2 = r2_score(truth, hgb.predict(data.x_test))
shutil.rmtree(tmp, ignore_errors=True)
print(json.dumps({
    "seed": request["dataset"]["seed"],
    "delivered_r2": round(result["model"]["test"]["r2"], 4),
    "delivered_kind": result["model"]["kind"],
    "delivered_r2_recomputed": round(float(recomputed), 4),
    "best_single_r2": round(result["best"]["metrics"]["test_r2"], 4),
    "hgb_r2": round(float(hgb_r2), 4),
    "run_s": round(run_s, 1),
    "hgb_s": round(time.perf_counter() - began, 2),
    "rows": {"train": len(data.y_train), "validation": len(data.y_val), "test": len(truth)},
}))
"""

FRIEDMAN_SEEDS = (0, 1, 2)


def _friedman_request(seed: int, quick: bool) -> dict[str, Any]:
    return {
        "run_id": f"bench-friedman-{seed}",
        "dataset": {"name": "friedman1", "samples": 1000 if quick else 5000, "noise": 1.0,
                    "seed": seed},
        "ga": {"population": 4 if quick else 8, "generations": 2 if quick else 4, "seed": seed},
        "training": {"epochs": 5 if quick else 30},
    }  # fmt: skip


def _friedman(opts: Options) -> dict[str, Any]:
    """Per seed: thunderhelm's delivered and best single test R², HistGradientBoosting's."""
    pool_size = opts.pool_size or cores()
    per_seed = []
    for seed in FRIEDMAN_SEEDS:
        request = _friedman_request(seed, opts.quick)
        row = _python(_FRIEDMAN, json.dumps(request), str(pool_size))
        print(f"data friedman1 seed {seed}: {row}", flush=True)
        per_seed.append(row)

    def mean(key: str) -> float:
        return round(statistics.fmean(float(row[key]) for row in per_seed), 4)

    budget = _friedman_request(0, opts.quick)
    return {
        "dataset": {k: v for k, v in budget["dataset"].items() if k != "seed"},
        "seeds": list(FRIEDMAN_SEEDS),
        "budget": {"ga": {k: v for k, v in budget["ga"].items() if k != "seed"},
                   **budget["training"], "pool_size": pool_size},
        "hgb": "HistGradientBoostingRegressor() defaults, random_state=0, fitted on "
               "train + validation",
        "per_seed": per_seed,
        "delivered_r2": [row["delivered_r2"] for row in per_seed],
        "best_single_r2": [row["best_single_r2"] for row in per_seed],
        "hgb_r2": [row["hgb_r2"] for row in per_seed],
        "mean_delivered_r2": mean("delivered_r2"),
        "mean_best_single_r2": mean("best_single_r2"),
        "mean_hgb_r2": mean("hgb_r2"),
        "run_s": [row["run_s"] for row in per_seed],
    }  # fmt: skip


def _python(code: str, *args: str, timeout_s: float = 1800) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"benchmark step failed: {done.stderr[-2000:]}")
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def _pool_growth(quick: bool) -> dict[str, Any]:
    """The second interpreter's extra RSS at two row counts, and how it grows with rows."""
    small, large = (5_000, 20_000) if quick else (10_000, 1_000_000)
    cost = {}
    for rows in (small, large):
        one = _python(_POOL, str(rows), "1")["rss_mb"]
        two = _python(_POOL, str(rows), "2")["rss_mb"]
        cost[rows] = round(two - one, 1)
    return {
        "rows": [small, large],
        "second_interpreter_mb": [cost[small], cost[large]],
        "matrix_mb": [round(r * 410 * 4 / 2**20, 1) for r in (small, large)],
        "growth_mb": round(cost[large] - cost[small], 1),
    }


def run(opts: Options) -> dict[str, Any]:
    rows = QUICK_ROWS if opts.quick else ROWS
    began = time.perf_counter()
    figures: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="thunderhelm-data-") as tmp:
        stem = str(Path(tmp) / "table")
        subprocess.run([sys.executable, "-c", _MAKE, str(rows), stem], check=True, timeout=1800)
        sizes = {fmt: Path(f"{stem}.{fmt}").stat().st_size for fmt in ("csv", "parquet")}
        for fmt in ("csv", "parquet"):
            for how in ("pyarrow", "thunderhelm", "pandas_sklearn"):
                figures[f"{fmt}_{how}"] = _python(_STEP, f"{stem}.{fmt}", how)
                print(f"data {fmt} {how}: {figures[f'{fmt}_{how}']}", flush=True)
    pool = _pool_growth(opts.quick)
    friedman = _friedman(opts)

    def ratio(a: str, b: str) -> float:
        return round(float(figures[a]["s"]) / float(figures[b]["s"]), 2)

    result: dict[str, Any] = {
        "quick": opts.quick,
        "rows": rows,
        "columns": {"numeric": NUMERIC, "categorical": CATEGORICAL, "levels": LEVELS},
        "file_mb": {fmt: round(size / 2**20, 1) for fmt, size in sizes.items()},
        "figures": figures,
        "csv_ratio_vs_pyarrow": ratio("csv_thunderhelm", "csv_pyarrow"),
        "parquet_ratio_vs_pyarrow": ratio("parquet_thunderhelm", "parquet_pyarrow"),
        "csv_ratio_vs_pandas_sklearn": ratio("csv_thunderhelm", "csv_pandas_sklearn"),
        "parquet_ratio_vs_pandas_sklearn": ratio("parquet_thunderhelm", "parquet_pandas_sklearn"),
        "peak_rss_ratio": round(
            figures["parquet_thunderhelm"]["rss_mb"] / figures["parquet_pandas_sklearn"]["rss_mb"],
            2,
        ),
        "pool": pool,
        "rss_per_interpreter_growth_mb": pool["growth_mb"],
        "friedman": friedman,
        "friedman_r2": friedman["mean_delivered_r2"],
        "hgb_r2": friedman["mean_hgb_r2"],
        "wall_s": round(time.perf_counter() - began, 1),
    }
    # The float32 design matrix the load produces (all three splits), in MB.
    matrix_mb = round(rows * figures["parquet_thunderhelm"]["features"] * 4 / 2**20, 1)
    result["design_matrix_mb"] = matrix_mb
    csv_vs_pyarrow = result["csv_ratio_vs_pyarrow"]
    csv_vs_pandas = result["csv_ratio_vs_pandas_sklearn"]
    parquet_vs_pandas = result["parquet_ratio_vs_pandas_sklearn"]
    result["bars"] = [
        bar(
            "csv: load and encode in at most 2x pyarrow's own read of the file and at most "
            "0.2x pandas + scikit-learn by hand (time)",
            f"thunderhelm {figures['csv_thunderhelm']['s']} s, pyarrow "
            f"{figures['csv_pyarrow']['s']} s ({csv_vs_pyarrow}x), pandas + scikit-learn "
            f"{figures['csv_pandas_sklearn']['s']} s ({csv_vs_pandas}x)",
            csv_vs_pyarrow <= 2.0 and csv_vs_pandas <= 0.2,
        ),
        bar(
            "parquet: load and encode in at most 0.1x pandas + scikit-learn by hand (time)",
            f"thunderhelm {figures['parquet_thunderhelm']['s']} s, pyarrow "
            f"{figures['parquet_pyarrow']['s']} s, pandas + scikit-learn "
            f"{figures['parquet_pandas_sklearn']['s']} s ({parquet_vs_pandas}x)",
            parquet_vs_pandas <= 0.1,
        ),
    ]
    rss_limit = {fmt: round(2 * (matrix_mb + mb), 1) for fmt, mb in result["file_mb"].items()}
    result["bars"] += [
        bar(
            f"{fmt}: peak RSS of the load at most 2x (float32 design matrix + file size)",
            f"{figures[f'{fmt}_thunderhelm']['rss_mb']} MB; 2x ({matrix_mb} MB + "
            f"{result['file_mb'][fmt]} MB) = {rss_limit[fmt]} MB "
            f"(pandas + scikit-learn {figures[f'{fmt}_pandas_sklearn']['rss_mb']} MB)",
            figures[f"{fmt}_thunderhelm"]["rss_mb"] <= rss_limit[fmt],
        )
        for fmt in ("csv", "parquet")
    ]
    result["bars"] += [
        bar(
            "the pool shares the design matrix: a second interpreter's RSS does not grow with rows",
            f"second interpreter {pool['second_interpreter_mb'][0]} MB at {pool['rows'][0]} rows, "
            f"{pool['second_interpreter_mb'][1]} MB at {pool['rows'][1]} rows "
            f"(matrix {pool['matrix_mb'][0]} MB and {pool['matrix_mb'][1]} MB)",
            abs(pool["growth_mb"]) < 0.1 * pool["matrix_mb"][1],
        ),
    ]
    rows_said = f"{friedman['dataset']['samples']:,} rows"
    result["bars"] += [
        bar(
            f"friedman1 ({rows_said}, noise {friedman['dataset']['noise']}): the delivered "
            "model's test R² ≥ HistGradientBoostingRegressor's with defaults, same split "
            f"(mean over {len(FRIEDMAN_SEEDS)} seeds)",
            f"thunderhelm {friedman['mean_delivered_r2']} (per seed "
            f"{friedman['delivered_r2']}; best single network {friedman['mean_best_single_r2']}), "
            f"HistGradientBoosting {friedman['mean_hgb_r2']} (per seed {friedman['hgb_r2']}); "
            f"population {friedman['budget']['ga']['population']}, generations "
            f"{friedman['budget']['ga']['generations']}, {friedman['budget']['epochs']} epochs"
            + (", quick mode: fewer rows, candidates and epochs" if opts.quick else ""),
            friedman["mean_delivered_r2"] >= friedman["mean_hgb_r2"],
        ),
    ]
    return result
