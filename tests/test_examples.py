"""The example tables: made from data scikit-learn ships, and a first run from the CLI on them."""

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import thunderhelm
from tests.test_cli_errors import cli
from tests.test_tables import check_raw_onnx
from thunderhelm.ga.training.datasets import load_dataset
from thunderhelm.ga.training.examples import EXAMPLES, dataset_spec, write_example


@pytest.mark.parametrize("file_format", ["csv", "parquet"])
def test_the_examples_load_as_their_task_with_gaps_and_categories(
    tmp_path: Path, file_format: str
) -> None:
    loaded = {}
    for name, example in EXAMPLES.items():
        path = write_example(example, tmp_path, file_format)
        spec = dataset_spec(example, path.name)
        loaded[name] = load_dataset(spec, data_root=tmp_path, text_dir=tmp_path)
        assert loaded[name].task == example.task
    diabetes, cancer = loaded["diabetes"], loaded["cancer"]
    assert diabetes.n_features == 10 and 25 < diabetes.target_mean < 300
    assert cancer.labels == ("benign", "malignant")
    assert cancer.table is not None
    names = cancer.table.feature_names()
    # Gaps in two numbers (their "was missing" columns) and a missing level in each category.
    assert {"smoothness=missing", "concavity=missing", "size=(missing)"} <= set(names)
    assert {"texture=fine", "size=very large"} <= set(names)
    rows = sum(len(y) for y in (cancer.y_train, cancer.y_val, cancer.y_test))
    assert rows == 569
    # The same tables each time (the blanks are seeded).
    again = write_example(EXAMPLES["cancer"], tmp_path / "again", file_format)
    assert again.read_bytes() == (tmp_path / again.name).read_bytes()


def run_from_cli(tmp_path: Path, name: str) -> dict[str, Any]:
    """`thunderhelm examples`, then `thunderhelm run` on one of them; the result."""
    env = {
        "THUNDERHELM_STATE_DIR": str(tmp_path),
        "THUNDERHELM_LOCAL_LOG_DIR": str(tmp_path / "local-runs"),
        "OTEL_TRACES_EXPORTER": "none",
    }
    code, out, err = cli("examples", name, "--json", env=env)
    assert code == 0, err
    written = json.loads(out)
    assert Path(written["path"]).parent == tmp_path / "data"
    request = {
        "dataset": written["dataset"],
        "ga": {"population": 4, "generations": 2, "seed": 3},
        "training": {"epochs": 6},
    }
    (tmp_path / "request.json").write_text(json.dumps(request))
    code, out, err = cli(
        "run", "--file", str(tmp_path / "request.json"), "--pool-size", "2", "--json",
        env=env, timeout=300,
    )  # fmt: skip
    assert code == 0, err
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    assert result["status"] == "succeeded"
    code, _, err = cli("export", result["artifact"], "--onnx", str(tmp_path / "m.onnx"), env=env)
    assert code == 0, err
    return result


def test_the_mixed_table_runs_from_the_cli_and_its_onnx_takes_the_raw_columns(
    tmp_path: Path,
) -> None:
    result = run_from_cli(tmp_path, "cancer")
    assert result["model"]["test"]["accuracy"] > 0.8
    assert result["model"]["test"]["roc_auc"] > 0.85
    model = thunderhelm.load_model(result["artifact"])
    frame = pd.read_csv(tmp_path / "data" / "cancer.csv")
    assert frame["size"].isna().any() and frame["smoothness"].isna().any()
    check_raw_onnx(model, frame, tmp_path / "m.onnx")
    unseen = pd.DataFrame(
        {"size": ["enormous", None], "texture": [None, "fine"], "smoothness": [None, 0.1],
         "compactness": [0.1, 0.05], "concavity": [np.nan, 0.0], "concave_points": [0.05, 0.01],
         "symmetry": [0.2, 0.15], "fractal_dimension": [0.06, 0.07]}
    )  # fmt: skip
    check_raw_onnx(model, unseen, tmp_path / "m.onnx")


def test_the_regression_table_runs_from_the_cli_and_its_onnx_predicts_the_target(
    tmp_path: Path,
) -> None:
    result = run_from_cli(tmp_path, "diabetes")
    assert result["model"]["test"]["r2"] > 0.2  # a small, noisy table; linear models get ~0.45
    model = thunderhelm.load_model(result["artifact"])
    check_raw_onnx(model, pd.read_csv(tmp_path / "data" / "diabetes.csv"), tmp_path / "m.onnx")


def test_an_unknown_example_or_format_is_refused_with_its_reason(tmp_path: Path) -> None:
    env = {"THUNDERHELM_STATE_DIR": str(tmp_path)}
    code, _, err = cli("examples", "titanic", env=env)
    assert code == 2 and "no example 'titanic'" in err
    code, _, err = cli("examples", "--format", "xlsx", env=env)
    assert code == 2 and "--format is one of" in err
    assert not (tmp_path / "data").exists()


def test_a_run_can_search_for_roc_auc(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from thunderhelm.schemas.results import validated_result
    from thunderhelm.streams.config.settings import Settings
    from thunderhelm.streams.execution.local_run import run_local

    path = write_example(EXAMPLES["cancer"], tmp_path)
    request = {
        "run_id": "cancer-auc",
        "dataset": dataset_spec(EXAMPLES["cancer"], path.name),
        "ga": {"population": 4, "generations": 2, "seed": 5},
        "training": {"epochs": 5, "class_weight": "balanced"},
        "fitness": {"name": "val_roc_auc"},
    }
    settings = Settings(data_root=tmp_path, artifact_dir=tmp_path / "artifacts", pool_size=2)
    assert run_local(settings, request, 2, as_json=True, logs=tmp_path / "logs") == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert validated_result(result) == result
    best = result["best"]
    assert best["fitness"] == best["metrics"]["val_roc_auc"] > 0.9
    assert result["model"]["validation"]["roc_auc"] > 0.9
