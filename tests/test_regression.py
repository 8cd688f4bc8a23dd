"""Regression end to end: the training's figures, fitness, datasets, a local run, the artifact.

Why: a regression run differs from a classification one at every step
(float targets standardised for training, figures de-standardised to the
target's units, R^2 as the default fitness, averaged predictions instead
of probabilities); each step is checked here on its own and once together.
"""

from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pydantic
import pytest
from typer.testing import CliRunner

from thunderhelm.ga.core import measures
from thunderhelm.ga.training.artifact import load_model
from thunderhelm.ga.training.candidate import SpecError, parse_spec, train_candidate
from thunderhelm.ga.training.datasets import DatasetError, load_dataset
from thunderhelm.ga.training.evaluators import InProcessEvaluator
from thunderhelm.schemas.requests import RunRequest
from thunderhelm.schemas.results import validated_result
from thunderhelm.streams.cli.main import app
from thunderhelm.streams.config.settings import Settings
from thunderhelm.streams.execution import steps
from thunderhelm.streams.execution.local_run import run_local

NET: dict[str, Any] = {
    "n_inputs": 10,
    "n_outputs": 1,
    "units": [
        {"inputs": [0], "neurons": 32, "activation": "gelu"},
        {"inputs": [0, 1], "neurons": 16, "activation": "relu"},
    ],
    "output_inputs": [1, 2],
    "learning_rate": 0.003,
    "weight_decay": 0.0001,
    "epochs": 15,
    "batch_size": 32,
    "seed": 1,
}


def friedman(tmp_path: Path, **spec: Any) -> Any:
    return load_dataset(
        {"name": "friedman1", "samples": 1500, "noise": 0.5, "seed": 3, **spec},
        data_root=tmp_path,
        text_dir=tmp_path,
    )


def test_friedman1_follows_its_formula_and_standardises_the_target(tmp_path: Path) -> None:
    data = friedman(tmp_path, noise=0.0)
    assert data.task == "regression" and data.n_classes == 1 and data.n_features == 10
    assert data.y_train.dtype == np.float32
    assert abs(float(data.y_train.mean())) < 1e-3 and float(data.y_train.std()) == pytest.approx(
        1, abs=1e-3
    )
    x = data.x_test.astype(np.float64) * data.scale + data.mean
    y = data.y_test.astype(np.float64) * data.target_scale + data.target_mean
    formula = (
        10 * np.sin(np.pi * x[:, 0] * x[:, 1])
        + 20 * (x[:, 2] - 0.5) ** 2
        + 10 * x[:, 3]
        + 5 * x[:, 4]
    )
    np.testing.assert_allclose(y, formula, atol=1e-3)
    assert friedman(tmp_path, noise=0.0).fingerprint() == data.fingerprint()
    assert friedman(tmp_path, noise=0.0, seed=4).fingerprint() != data.fingerprint()
    assert data.network_keys() == {"task": "regression", "target_scale": data.target_scale}


def test_a_regression_training_reports_its_figures_in_the_targets_units(tmp_path: Path) -> None:
    data = friedman(tmp_path)
    spec = {**NET, **data.network_keys()}
    result = json.loads(
        train_candidate(
            json.dumps(spec), data.x_train, data.y_train, data.x_val, data.y_val, 10,
            time.time() + 60,
        )
    )  # fmt: skip
    assert result["status"] == "ok" and "val_accuracy" not in result
    assert result["val_r2"] > 0.8
    # val_loss is the mean squared error of the standardised target.
    assert result["val_rmse"] == pytest.approx(math.sqrt(result["val_loss"]) * data.target_scale)
    assert 0 < result["val_mae"] <= result["val_rmse"]
    assert set(result["curve"][-1]) == {"epoch", "val_loss", "val_rmse", "val_mae", "val_r2", "at"}
    # R^2 is what the saved network gives on the validation rows.
    (scored,) = InProcessEvaluator(data, export_weights=True)([NET])
    assert scored["val_r2"] == pytest.approx(result["val_r2"])


def test_regression_fitness_is_r2_by_default_or_negative_rmse(tmp_path: Path) -> None:
    data = friedman(tmp_path)
    request: dict[str, Any] = {"dataset": {"name": "friedman1"}, "fitness": {"name": None}}
    assert steps.fitness_name(request) == "val_r2"
    (default,) = InProcessEvaluator(data, fitness=steps.fitness_of(request))([NET])
    assert default["fitness"] == default["val_r2"]
    request["fitness"]["name"] = "val_rmse"
    (rmse,) = InProcessEvaluator(data, fitness=steps.fitness_of(request))([NET])
    assert rmse["fitness"] == -rmse["val_rmse"]
    request["fitness"]["name"] = "val_accuracy"
    with pytest.raises(ValueError, match="not a regression measure"):
        steps.fitness_name(request)
    assert steps.fitness_name({"dataset": {"name": "spirals"}}) == "val_accuracy"
    assert measures.measure_for_task("val_loss", "regression") == "val_loss"


@pytest.mark.parametrize(
    ("dataset", "fitness", "reason"),
    [
        ({"name": "friedman1"}, "val_accuracy", "is for classification"),
        ({"name": "friedman1"}, "val_macro_f1", "is for classification"),
        ({"name": "table", "path": "t.csv", "target": "y", "task": "regression"},
         "val_balanced_accuracy", "is for classification"),
        ({"name": "spirals"}, "val_r2", "is for regression"),
    ],
)  # fmt: skip
def test_a_measure_of_the_other_task_is_a_validation_error(
    dataset: dict[str, Any], fitness: str, reason: str
) -> None:
    with pytest.raises(pydantic.ValidationError, match=reason):
        RunRequest.model_validate({"run_id": "r", "dataset": dataset, "fitness": {"name": fitness}})
    RunRequest.model_validate({"run_id": "r", "dataset": dataset})  # the default fits both


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"n_outputs": 2}, "n_outputs 1"),
        ({"class_weight": "balanced"}, "classification only"),
        ({"target_scale": 0.0}, "target_scale"),
        ({"task": "ranking"}, "task must be one of"),
        ({"epochs": 3, "rungs": [{"epoch": 1, "min_val_accuracy": 0.5}]}, "does not apply"),
    ],
)
def test_bad_regression_specs_are_refused_with_a_reason(
    change: dict[str, Any], reason: str
) -> None:
    with pytest.raises(SpecError, match=reason):
        parse_spec(json.dumps({**NET, "task": "regression", **change}))
    with pytest.raises(SpecError, match="regression only"):
        parse_spec(json.dumps({**NET, "n_outputs": 3, "target_scale": 2.0}))
    rungs = [{"epoch": 1, "min_val_r2": 0.1}]
    assert parse_spec(json.dumps({**NET, "task": "regression", "epochs": 3, "rungs": rungs}))


def write_table(path: Path, rows: int, *, text_target: bool = False) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(rows, 2))
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["a", "kind", "b", "price"])
        for i, (a, b) in enumerate(x):
            price = f"p{i}" if text_target else f"{3 * a - b + 100:.4f}"
            out.writerow([f"{a:.4f}", "xy"[i % 2], "" if i % 7 == 0 else f"{b:.4f}", price])


def test_a_table_with_a_numeric_target_trains_as_regression(tmp_path: Path) -> None:
    write_table(tmp_path / "t.csv", 300)
    spec = {"name": "table", "path": "t.csv", "target": "price"}
    with pytest.raises(DatasetError, match="set task 'regression'"):
        load_dataset(spec, data_root=tmp_path, text_dir=tmp_path)
    data = load_dataset({**spec, "task": "regression"}, data_root=tmp_path, text_dir=tmp_path)
    assert data.task == "regression" and data.labels == () and data.n_classes == 1
    assert data.target_mean == pytest.approx(100, abs=1.0)
    assert data.table is not None and "kind=x" in data.table.feature_names()
    write_table(tmp_path / "text.csv", 50, text_target=True)
    with pytest.raises(DatasetError, match="holds text, not numbers"):
        load_dataset(
            {**spec, "path": "text.csv", "task": "regression"},
            data_root=tmp_path,
            text_dir=tmp_path,
        )


def test_a_local_regression_run_succeeds_and_its_model_predicts_the_target(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    request = {
        "run_id": "regression-small",
        "dataset": {"name": "friedman1", "samples": 2000, "noise": 0.1, "seed": 3},
        "ga": {"population": 4, "generations": 2, "tournament_size": 2, "elite": 1, "seed": 11},
        "training": {"epochs": 16, "batch_size": 32},
        "search_space": {"max_levels": 2, "max_units": 2, "max_neurons": 32},
    }
    settings = Settings(data_root=tmp_path, artifact_dir=tmp_path / "artifacts", pool_size=2)
    code = run_local(settings, request, 2, as_json=True, logs=tmp_path / "logs")
    out, err = capsys.readouterr()
    result = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and result["status"] == "succeeded"
    assert "friedman1 10 features, a number (regression), 1200 train" in err
    assert validated_result(result) == result
    metrics = result["best"]["metrics"]
    assert result["best"]["fitness"] == metrics["val_r2"]
    # Eight short trainings of small networks: far from the best R^2, far above 0.
    assert metrics["test_r2"] > 0.4, metrics
    assert metrics["test_rmse"] > 0 and metrics["test_mae"] <= metrics["test_rmse"]
    assert result["model"]["test"]["r2"] > 0.4
    model = load_model(result["artifact"])
    assert model.regression
    rng = np.random.default_rng(7)
    raw = rng.uniform(size=(200, 10))
    predicted = model.predict(raw)
    assert predicted.dtype == np.float64 and predicted.shape == (200,)
    truth = (
        10 * np.sin(np.pi * raw[:, 0] * raw[:, 1])
        + 20 * (raw[:, 2] - 0.5) ** 2
        + 10 * raw[:, 3]
        + 5 * raw[:, 4]
    )
    assert predicted.min() > -5 and predicted.max() < 35  # the target's range, about 0..30
    assert 1 - np.sum((predicted - truth) ** 2) / np.sum((truth - truth.mean()) ** 2) > 0.4
    with pytest.raises(ValueError, match="regression model predicts numbers"):
        model.predict_proba(raw)
    check_onnx(model, raw.astype(np.float32), tmp_path)
    # The CLI: rows with the target last, predictions and the figures on them.
    rows = tmp_path / "rows.csv"
    np.savetxt(rows, np.column_stack([raw, truth]), delimiter=",")
    done = CliRunner().invoke(app, ["predict", result["artifact"], "--input", str(rows), "--json"])
    assert done.exit_code == 0, done.output
    said = json.loads(done.stdout.strip().splitlines()[-1])
    assert said["predictions"] == pytest.approx(list(predicted), abs=1e-6)
    assert said["rows"] == 200 and said["r2"] > 0.4


def check_onnx(model: Any, raw: np.ndarray, tmp_path: Path) -> None:
    """The ONNX export (no softmax, de-standardised) agrees with `predict` in onnxruntime."""
    import onnxruntime

    from thunderhelm.ga.training.onnx_export import REGRESSION_OUTPUT, export_onnx

    single = model.members[0] if hasattr(model, "members") else model
    for i, predictor in enumerate((model, single)):
        path = export_onnx(predictor, tmp_path / f"model{i}.onnx")
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert [o.name for o in session.get_outputs()] == [REGRESSION_OUTPUT]
        (out,) = session.run(None, {"input": raw})
        assert out.shape == (len(raw), 1)
        np.testing.assert_allclose(out[:, 0], predictor.predict(raw), rtol=0, atol=1e-4)


def test_a_regression_ensemble_is_delivered_only_when_the_best_alone_is_not_clearly_better(
    tmp_path: Path,
) -> None:
    from thunderhelm.ga.training.artifact import Ensemble, model_from_training
    from thunderhelm.streams.execution.final_model import choose

    data = friedman(tmp_path)
    request = {"dataset": {"name": "friedman1"}}
    weak = {**NET, "epochs": 1, "learning_rate": 0.0001}
    nets = [NET, {**NET, "seed": 2}, weak]
    trained = InProcessEvaluator(data, export_weights=True)(nets)
    good, twin, bad = (
        model_from_training(n, t["weights"], data, request)
        for n, t in zip(nets, trained, strict=True)
    )
    # Averaged with a network that has barely trained, the best alone is clearly better.
    chosen, why = choose(request, [good, bad], data)
    assert chosen is good and why["chosen"] == "single", why
    assert why["single_margin"]["mean"] > why["single_margin"]["standard_error"] > 0
    # Two equally good networks: their average is delivered.
    chosen, why = choose(request, [good, twin], data)
    assert isinstance(chosen, Ensemble) and why["chosen"] == "ensemble", why
    assert why["validation"]["ensemble"]["r2"] >= why["validation"]["single"]["r2"] - 0.01
