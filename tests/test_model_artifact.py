"""A finished run's artifact: complete, versioned, loadable, usable from the shell, exportable.

A real run (the `thunderhelm run` code path: interpreter pool, compiled
kernel) on a CSV whose raw columns have wildly different offsets and scales,
so a model used without its preprocessing would be wrong; then the artifact
is loaded, used through `thunderhelm predict` on the raw test rows, and
exported to ONNX and run in onnxruntime.
"""

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import thunderhelm
from thunderhelm.ga.training.artifact import FORMAT_VERSION, ArtifactError, Ensemble, Model
from thunderhelm.ga.training.datasets import load_dataset
from thunderhelm.streams.cli.main import main as cli
from thunderhelm.streams.config.settings import Settings, default_text_dir
from thunderhelm.streams.execution.local_run import run_local

TEXT_DIR = default_text_dir()
needs_text = pytest.mark.skipif(not TEXT_DIR.is_dir(), reason=f"{TEXT_DIR} is missing")

CSV_REQUEST: dict[str, Any] = {
    "run_id": "artifact-csv",
    "dataset": {"name": "csv", "path": "blobs.csv", "seed": 4},
    "ga": {"population": 4, "generations": 2, "tournament_size": 2, "elite": 1, "seed": 3},
    "training": {"epochs": 4, "batch_size": 32},
    "search_space": {"max_levels": 2, "max_units": 2, "max_neurons": 16},
}
LABELS = ("north", "south", "east", "west")


def _blobs(path: Path) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(12)
    y = rng.integers(0, 4, 600)
    centres = np.array([[0, 0, 0], [3, 0, 1], [0, 3, -1], [3, 3, 0]], dtype=np.float64)
    z = centres[y] + rng.normal(scale=0.9, size=(600, 3))
    # Raw columns far from standard: what a model without its scaling gets wrong.
    x = z * np.array([1000.0, 0.001, 1.0]) + np.array([5e4, -7.0, 300.0])
    rows = ["a,b,c,direction"] + [
        ",".join([*(repr(float(v)) for v in r), LABELS[c]]) for r, c in zip(x, y, strict=True)
    ]
    path.write_text("\n".join(rows) + "\n")
    return x, y


def _run(settings: Settings, request: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> Any:
    logs = settings.artifact_dir.parent / "logs"  # a log per test, not the checkout's var/
    assert run_local(settings, request, 2, as_json=True, logs=logs) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def csv_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("csv-run")
    x, y = _blobs(root / "blobs.csv")
    settings = Settings(data_root=root, artifact_dir=root / "artifacts", pool_size=2)
    out = io.StringIO()  # module scope: capsys is per test
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert run_local(settings, CSV_REQUEST, 2, as_json=True, logs=root / "logs") == 0
    result = json.loads(out.getvalue().strip().splitlines()[-1])
    dataset = load_dataset(CSV_REQUEST["dataset"], data_root=root, text_dir=root)
    return {"root": root, "x": x, "y": y, "result": result, "dataset": dataset}


def test_the_result_names_a_complete_versioned_artifact(csv_run: dict[str, Any]) -> None:
    result = csv_run["result"]
    manifest = json.loads(Path(result["artifact"]).read_text())
    assert manifest["format"] == "thunderhelm.model"
    assert manifest["format_version"] == FORMAT_VERSION
    assert manifest["labels"] == sorted(LABELS)  # the csv's label spellings, class order
    assert manifest["request"]["run_id"] == CSV_REQUEST["run_id"]
    assert manifest["dataset"]["fingerprint"] == csv_run["dataset"].fingerprint()
    assert manifest["preprocessing"]["n_features"] == 3
    assert set(manifest["metrics"]) == {"validation", "test"}
    # The search selected on validation; the test figures are reported beside it.
    best = result["best"]["metrics"]
    # Every finalist was trained again from a fresh seed; the search's best is
    # among them, measured as the search measured it.
    reevaluation = manifest["selection"]["reevaluation"]
    searched = manifest["search"]
    (entry,) = [
        e
        for e in reevaluation
        if (e["generation"], e["index"]) == (searched["generation"], searched["index"])
    ]
    assert best["val_accuracy"] == pytest.approx(entry["searched"])
    assert all(isinstance(e["fresh_seed"], float) for e in reevaluation)
    means = [e["mean"] for e in reevaluation]
    assert means == sorted(means, reverse=True)  # the members' order
    estimate = result["model"]["estimate"]
    assert estimate == manifest["selection"]["estimate"]
    assert estimate["retrainings"] == len(manifest["members"]) and estimate["accuracy_se"] > 0
    assert best["test_accuracy"] > 0.5  # four blobs; chance is 0.25
    (first, *_) = manifest["members"]
    # Each member keeps its learning curves: the search's and the final training's.
    curve = first["training"]["curve"]
    assert [p["epoch"] for p in curve] == list(range(1, first["training"]["epochs_run"] + 1))
    assert curve[-1]["val_accuracy"] == pytest.approx(best["val_accuracy"], abs=1e-6)
    assert first["search"]["curve"][0]["epoch"] == 1
    # The result's `model` is the delivered one: the manifest's own figures.
    delivered = result["model"]
    assert delivered["kind"] == manifest["kind"]
    assert len(delivered["members"]) == len(manifest["members"])
    assert delivered["test"]["accuracy"] == manifest["metrics"]["test"]["accuracy"]
    assert result["stopped_by"] == "generations"


def test_load_model_predicts_on_raw_inputs(csv_run: dict[str, Any]) -> None:
    model = thunderhelm.load_model(csv_run["result"]["artifact"])
    ds = csv_run["dataset"]
    raw = csv_run["x"][ds.test_rows]
    proba = model.predict_proba(raw)
    assert proba.shape == (len(raw), 4)
    assert np.allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    accuracy = float(np.mean(model.predict(raw) == ds.y_test))
    assert accuracy == csv_run["result"]["model"]["test"]["accuracy"]
    # Without its preprocessing the same network is far worse: the scaling matters.
    unscaled = model.evaluate(raw, ds.y_test, standardized=True)["accuracy"]
    assert unscaled < accuracy - 0.2
    assert model.predict_labels(raw[:3]) == [model.labels[i] for i in model.predict(raw[:3])]


def test_predict_command_reproduces_the_test_accuracy(
    csv_run: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ds, x = csv_run["dataset"], csv_run["x"]
    _write_test_rows(csv_run, tmp_path / "test.csv")
    artifact = csv_run["result"]["artifact"]
    assert cli(["predict", artifact, "--input", str(tmp_path / "test.csv"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["rows"] == len(ds.test_rows)
    assert out["accuracy"] == csv_run["result"]["model"]["test"]["accuracy"]
    assert all(p in LABELS for p in out["predictions"])
    # The same rows separated by ';' read alike.
    semicolons = (tmp_path / "test.csv").read_text().replace(",", ";")
    (tmp_path / "test-semicolons.csv").write_text(semicolons)
    assert (
        cli(["predict", artifact, "--input", str(tmp_path / "test-semicolons.csv"), "--json"]) == 0
    )
    assert json.loads(capsys.readouterr().out) == out
    # CSV out, from an .npz input without labels.
    np.savez(tmp_path / "raw.npz", x=x[ds.test_rows[:5]])
    assert cli(["predict", str(Path(artifact).parent), "--input", str(tmp_path / "raw.npz")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "row,prediction,probability" and len(lines) == 6
    assert [line.split(",")[1] for line in lines[1:]] == out["predictions"][:5]


def test_bad_inputs_get_a_clear_error(
    csv_run: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    artifact = csv_run["result"]["artifact"]
    (tmp_path / "narrow.csv").write_text("1,2\n3,4\n")
    # Exit 5: the input or the artifact does not fit (docs/cli.md).
    assert cli(["predict", artifact, "--input", str(tmp_path / "narrow.csv")]) == 5
    assert "every row needs 3 features" in capsys.readouterr().err
    assert cli(["predict", artifact, "--text", "hello"]) == 5
    assert "not trained on text" in capsys.readouterr().err
    assert cli(["predict", str(tmp_path), "--input", "x.csv"]) == 5
    assert "no model artifact" in capsys.readouterr().err


def _write_test_rows(run: dict[str, Any], path: Path) -> None:
    """The run's test rows, raw, as a CSV with its header and label column."""
    x, y = run["x"], run["y"]
    rows = ["a,b,c,direction"] + [
        ",".join([*(repr(float(v)) for v in x[i]), LABELS[y[i]]]) for i in run["dataset"].test_rows
    ]
    path.write_text("\n".join(rows) + "\n")


def _copy_artifact(csv_run: dict[str, Any], target: Path) -> Path:
    source = Path(csv_run["result"]["artifact"]).parent
    target.mkdir()
    for name in ("model.json", "model.npz"):
        (target / name).write_bytes((source / name).read_bytes())
    return target


def test_unknown_format_versions_are_refused(csv_run: dict[str, Any], tmp_path: Path) -> None:
    copy = _copy_artifact(csv_run, tmp_path / "future")
    manifest = json.loads((copy / "model.json").read_text())
    manifest["format_version"] = FORMAT_VERSION + 1
    (copy / "model.json").write_text(json.dumps(manifest))
    with pytest.raises(
        ArtifactError, match=r"format version 3 is not supported.*reads versions 1, 2"
    ):
        thunderhelm.load_model(copy)


def test_mismatched_weights_are_refused(csv_run: dict[str, Any], tmp_path: Path) -> None:
    copy = _copy_artifact(csv_run, tmp_path / "broken")
    with np.load(copy / "model.npz") as archive:
        arrays = {k: archive[k] for k in archive.files}
    arrays["m0/output.b"] = arrays["m0/output.b"][:-1]
    np.savez(copy / "model.npz", **arrays)
    with pytest.raises(ArtifactError, match=r"tensor m0/output\.b should be"):
        thunderhelm.load_model(copy / "model.json")


def test_onnx_export_matches_in_onnxruntime(
    csv_run: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import onnxruntime

    artifact = csv_run["result"]["artifact"]
    out = tmp_path / "model.onnx"
    assert cli(["export", artifact, "--onnx", str(out)]) == 0
    assert out.is_file()
    capsys.readouterr()
    ds = csv_run["dataset"]
    raw = csv_run["x"][ds.test_rows].astype(np.float32)
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (onnx_proba,) = session.run(None, {"input": raw})
    ours = thunderhelm.load_model(artifact).predict_proba(raw)
    assert onnx_proba.shape == ours.shape
    assert np.max(np.abs(onnx_proba - ours)) < 1e-4


@needs_text
def test_text_model_scores_and_generates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    request: dict[str, Any] = {
        "run_id": "artifact-text",
        "dataset": {"name": "shakespeare", "samples": 3000, "context": 4, "seed": 1},
        "ga": {"population": 2, "generations": 1, "tournament_size": 2, "elite": 1, "seed": 1},
        "training": {"epochs": 2, "batch_size": 64},
        "search_space": {"max_levels": 1, "max_units": 1, "max_neurons": 32},
    }
    settings = Settings(data_root=tmp_path, artifact_dir=tmp_path / "a", text_dir=TEXT_DIR)
    result = _run(settings, request, capsys)
    artifact = result["artifact"]
    model = thunderhelm.load_model(artifact)
    assert model.is_text and model.context == 4
    manifest = model.manifest
    assert manifest["preprocessing"]["encoding"] == "one-hot-chars"
    assert manifest["preprocessing"]["vocabulary"] == "".join(model.labels)
    proba = model.next_char_proba("to be or not to b")
    assert sum(proba.values()) == pytest.approx(1.0, abs=1e-5)
    # Encoding a window by hand gives the dataset's own feature row.
    ds = load_dataset(request["dataset"], data_root=tmp_path, text_dir=TEXT_DIR)
    v = len(ds.vocabulary)
    raw = ds.x_test[0] * ds.scale + ds.mean
    window = "".join(ds.vocabulary[int(np.argmax(raw[p * v : (p + 1) * v]))] for p in range(4))
    assert np.array_equal(model.encode_text(window), np.round(raw).astype(np.float32))
    assert cli(["predict", artifact, "--text", "to be or n", "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["next"] == pytest.approx(model.next_char_proba("to be or n"), abs=1e-6)
    assert cli(["predict", artifact, "--text", "to be", "--generate", "20", "--json"]) == 0
    generated = json.loads(capsys.readouterr().out)["generated"]
    assert len(generated) == 20 and set(generated) <= set(model.vocabulary)
    assert generated == model.generate("to be", 20, seed=0)


def test_onnx_graph_covers_every_activation_and_skip_wiring(tmp_path: Path) -> None:
    import onnxruntime

    from thunderhelm.ga.training.artifact import Model
    from thunderhelm.ga.training.candidate import ACTIVATIONS, parse_spec, tensor_shapes
    from thunderhelm.ga.training.onnx_export import export_onnx

    units = [
        {"inputs": [0], "neurons": 6, "activation": ACTIVATIONS[0]},
        {"inputs": [0, 1], "neurons": 5, "activation": ACTIVATIONS[1]},
        {"inputs": [1, 2], "neurons": 4, "activation": ACTIVATIONS[2]},
        {"inputs": [0, 3], "neurons": 7, "activation": ACTIVATIONS[3]},
        {"inputs": [2, 4], "neurons": 3, "activation": ACTIVATIONS[4]},
    ]
    network = {
        "n_inputs": 4, "n_outputs": 3, "units": units, "output_inputs": [1, 3, 5],
        "learning_rate": 0.01, "weight_decay": 0.0, "epochs": 1, "batch_size": 8, "seed": 0,
    }  # fmt: skip
    spec = parse_spec(json.dumps(network))
    rng = np.random.default_rng(5)
    tensors = {n: rng.normal(size=s).astype(np.float32) for n, s in tensor_shapes(spec)}
    mean = np.array([10.0, -3.0, 0.0, 500.0], dtype=np.float32)
    scale = np.array([2.0, 0.5, 1.0, 100.0], dtype=np.float32)
    model = Model(spec, tensors, mean, scale, ("a", "b", "c"))
    raw = (rng.normal(size=(64, 4)) * scale + mean).astype(np.float32)
    path = export_onnx(model, tmp_path / "all.onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (onnx_proba,) = session.run(None, {"input": raw})
    assert np.max(np.abs(onnx_proba - model.predict_proba(raw))) < 1e-4


@pytest.fixture(scope="module")
def ensemble_run(csv_run: dict[str, Any]) -> dict[str, Any]:
    root = csv_run["root"]
    request = {
        **CSV_REQUEST,
        "run_id": "artifact-ensemble",
        "final_model": {"deliver": "ensemble", "ensemble_size": 3},
    }
    settings = Settings(data_root=root, artifact_dir=root / "artifacts", pool_size=2)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert run_local(settings, request, 2, as_json=True, logs=root / "logs") == 0
    return {**csv_run, "result": json.loads(out.getvalue().strip().splitlines()[-1])}


def test_an_ensemble_artifact_averages_its_members(
    ensemble_run: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = ensemble_run["result"]
    model = thunderhelm.load_model(result["artifact"])
    assert isinstance(model, Ensemble)
    assert len(model.members) == 3 and model.weights == pytest.approx((1 / 3,) * 3)
    assert result["model"]["kind"] == "ensemble" and len(result["model"]["members"]) == 3
    # The search's best network is a member, retrained as it was scored.
    best = result["best"]
    assert best["fitness"] in [m["fitness"] for m in result["model"]["members"]]
    members = model.manifest["members"]
    assert {k: v for k, v in best["genome"].items() if k != "wiring"} in [
        m["search"]["genome"] for m in members
    ]
    assert len({json.dumps(m["search"]["genome"], sort_keys=True) for m in members}) == 3
    ds = ensemble_run["dataset"]
    raw = ensemble_run["x"][ds.test_rows]
    averaged = np.mean([m.predict_proba(raw) for m in model.members], axis=0)
    assert np.allclose(model.predict_proba(raw), averaged, atol=1e-6)
    accuracy = float(np.mean(model.predict(raw) == ds.y_test))
    assert accuracy == result["model"]["test"]["accuracy"]
    assert model.evaluate(raw, ds.y_test)["accuracy"] == accuracy
    _write_test_rows(ensemble_run, tmp_path / "test.csv")
    assert (
        cli(["predict", result["artifact"], "--input", str(tmp_path / "test.csv"), "--json"]) == 0
    )
    assert json.loads(capsys.readouterr().out)["accuracy"] == accuracy


def test_an_ensemble_exports_to_one_onnx_graph_that_agrees(
    ensemble_run: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import onnxruntime

    artifact = ensemble_run["result"]["artifact"]
    out = tmp_path / "ensemble.onnx"
    assert cli(["export", artifact, "--onnx", str(out)]) == 0
    capsys.readouterr()
    ds = ensemble_run["dataset"]
    raw = ensemble_run["x"][ds.test_rows].astype(np.float32)
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (onnx_proba,) = session.run(None, {"input": raw})
    ours = thunderhelm.load_model(artifact).predict_proba(raw)
    assert np.max(np.abs(onnx_proba - ours)) < 1e-4
    single = thunderhelm.load_model(artifact).members[0].predict_proba(raw)  # type: ignore[union-attr]
    assert np.max(np.abs(onnx_proba - single)) > 1e-3, "the graph is not the first member alone"


def test_a_version_1_artifact_still_loads(ensemble_run: dict[str, Any], tmp_path: Path) -> None:
    """Version 1 held one network at the manifest's top level, its tensors unprefixed."""
    source = Path(ensemble_run["result"]["artifact"]).parent
    manifest = json.loads((source / "model.json").read_text())
    first = manifest.pop("members")[0]
    old = {
        **{k: v for k, v in manifest.items() if k not in ("kind", "selection")},
        "format_version": 1,
        "network": first["network"],
        "tensors": [{**t, "name": t["name"].removeprefix("m0/")} for t in first["tensors"]],
        "training": first["training"],
    }
    target = tmp_path / "v1"
    target.mkdir()
    (target / "model.json").write_text(json.dumps(old))
    with np.load(source / "model.npz") as archive:
        arrays = {
            k.removeprefix("m0/"): archive[k] for k in archive.files if not k.startswith("m1/")
        }
    np.savez(target / "model.npz", **{k: v for k, v in arrays.items() if "/" not in k})
    model = thunderhelm.load_model(target)
    assert isinstance(model, Model)
    ds = ensemble_run["dataset"]
    raw = ensemble_run["x"][ds.test_rows]
    ensemble = thunderhelm.load_model(source)
    assert isinstance(ensemble, Ensemble)
    assert np.array_equal(model.predict_proba(raw), ensemble.members[0].predict_proba(raw))


def _fixed_model(logits_of_row: np.ndarray, labels: tuple[str, ...]) -> Model:
    """A network that ignores its input and always outputs `logits_of_row` (1 feature)."""
    from thunderhelm.ga.training.candidate import parse_spec

    network = {
        "n_inputs": 1, "n_outputs": len(labels), "units": [], "output_inputs": [0],
        "learning_rate": 0.01, "weight_decay": 0.0, "epochs": 1, "batch_size": 8, "seed": 0,
    }  # fmt: skip
    spec = parse_spec(json.dumps(network))
    tensors = {
        "output.W": np.zeros((len(labels), 1), dtype=np.float32),
        "output.b": np.asarray(logits_of_row, dtype=np.float32),
    }
    one = np.ones(1, dtype=np.float32)
    return Model(spec, tensors, one * 0, one, labels)


def test_a_lucky_training_does_not_make_the_best_and_the_estimate_uses_fresh_seeds() -> None:
    from types import SimpleNamespace

    from thunderhelm.streams.execution.final_model import build

    labels = ("a", "b")
    data: Any = SimpleNamespace(
        x_val=np.zeros((10, 1), np.float32),
        y_val=np.array([0] * 7 + [1] * 3),
        task="classification",
    )
    sure_a = _fixed_model(np.array([3.0, 0.0]), labels)  # right on 7 of 10
    sure_b = _fixed_model(np.array([0.0, 3.0]), labels)  # right on 3 of 10
    lean_a = _fixed_model(np.array([1.0, 0.0]), labels)  # right on 7 of 10, less sure
    single = {"final_model": {"deliver": "single"}}
    # Finalist 0 was the search's best by one lucky training: its second
    # training says b. Finalist 1 is right twice: it goes first.
    predictor, selection, delivered = build(single, [sure_a, lean_a], [sure_b, sure_a], data)
    assert delivered == [1] and predictor is lean_a
    (first, second) = selection["reevaluation"]
    assert first == {"finalist": 1, "searched": 0.7, "fresh_seed": 0.7, "mean": 0.7}
    assert second == {"finalist": 0, "searched": 0.7, "fresh_seed": 0.3, "mean": 0.5}
    # The estimate is the delivered network's fresh-seed training on validation.
    estimate = selection["estimate"]
    assert estimate["accuracy"] == 0.7 and estimate["retrainings"] == 1
    assert estimate["accuracy_se"] == pytest.approx((0.7 * 0.3 / 10) ** 0.5, abs=1e-6)
    # A finalist whose second training failed keeps its search figure alone.
    _, selection, delivered = build(single, [sure_a, lean_a], [None, sure_b], data)
    assert delivered == [0] and selection["reevaluation"][0]["fresh_seed"] is None
    assert selection["estimate"] is None  # nothing trained from a fresh seed to measure
    ensemble = {"final_model": {"deliver": "ensemble"}}
    predictor, selection, delivered = build(ensemble, [sure_a, lean_a], [sure_b, sure_a], data)
    assert delivered == [1, 0] and isinstance(predictor, Ensemble)
    assert selection["estimate"]["retrainings"] == 2


def test_auto_delivers_the_ensemble_unless_the_best_alone_is_better_on_validation() -> None:
    from types import SimpleNamespace

    from thunderhelm.streams.execution.final_model import choose

    labels = ("a", "b")
    y_val = np.array([0] * 6 + [1] * 2)
    data: Any = SimpleNamespace(
        x_val=np.zeros((8, 1), np.float32), y_val=y_val, task="classification"
    )
    sure_a = _fixed_model(np.array([3.0, 0.0]), labels)  # right on 6 of 8
    sure_b = _fixed_model(np.array([0.0, 3.0]), labels)  # right on 2 of 8
    leaning_a = _fixed_model(np.array([1.0, 0.0]), labels)
    request: dict[str, Any] = {"final_model": {"deliver": "auto"}}
    # The average (two of three say b) is right on 2 of 8: the best alone wins by
    # half the rows, more than a standard error (0.33).
    chosen, why = choose(request, [sure_a, sure_b, sure_b], data)
    assert chosen is sure_a and why["chosen"] == "single", why
    # With half the rows the same margin is within one standard error: the average.
    half: Any = SimpleNamespace(
        x_val=data.x_val[:4], y_val=np.array([0, 0, 0, 1]), task="classification"
    )
    chosen, why = choose(request, [sure_a, sure_b, sure_b], half)
    assert why["chosen"] == "ensemble" and why["single_margin"]["mean"] == 0.5, why
    chosen, why = choose(request, [sure_a, leaning_a, sure_a], data)
    assert isinstance(chosen, Ensemble) and why["chosen"] == "ensemble"
    forced, _ = choose({"final_model": {"deliver": "ensemble"}}, [sure_a, sure_b], data)
    assert isinstance(forced, Ensemble)
    # By the run's fitness: on validation loss the average of a sure and a
    # leaning network beats the sure one alone when the sure one is wrong.
    loss_request = {"final_model": {"deliver": "auto"}, "fitness": {"name": "val_loss"}}
    chosen, why = choose(loss_request, [sure_a, leaning_a], data)
    assert why["chosen"] == "ensemble", why


@pytest.mark.parametrize("classes", [2, 3, 5])
def test_the_imbalance_measures_are_scikit_learns(classes: int) -> None:
    from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score

    from thunderhelm.ga.training.artifact import scores

    rng = np.random.default_rng(classes)
    rows = 400
    # Imbalanced labels, and probabilities rounded so that scores tie.
    y = rng.choice(
        classes, size=rows, p=np.linspace(1, 3, classes) / np.linspace(1, 3, classes).sum()
    )
    logits = rng.normal(size=(rows, classes)) + 1.5 * np.eye(classes)[y]
    proba = np.round(np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True), 2)
    proba = np.clip(proba, 1e-6, None)
    proba /= proba.sum(axis=1, keepdims=True)
    got = scores(np.log(proba), y)
    predicted = proba.argmax(axis=1)
    assert got["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, predicted))
    assert got["macro_f1"] == pytest.approx(f1_score(y, predicted, average="macro"))
    expected_auc = (
        roc_auc_score(y, proba[:, 1])
        if classes == 2
        else roc_auc_score(y, proba, multi_class="ovr", average="macro")
    )
    # Ranked on log-probabilities: a few distinct probabilities share a log.
    assert got["roc_auc"] == pytest.approx(expected_auc, abs=1e-4)


def test_the_imbalance_measures_of_rows_of_one_class() -> None:
    from thunderhelm.ga.training.artifact import scores

    proba = np.array([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3]])
    got = scores(np.log(proba), [0, 0])
    assert got["balanced_accuracy"] == 0.5  # one class present: its recall
    assert got["roc_auc"] is None  # no class has rows on both sides
    assert got["macro_f1"] == pytest.approx((2 / 3 + 0.0) / 2)  # class 0, and class 1 predicted


def test_for_a_class_balanced_fitness_the_single_must_win_on_balanced_accuracy() -> None:
    from sklearn.metrics import balanced_accuracy_score

    from thunderhelm.streams.execution.final_model import _row_advantage

    # 18 common rows and 2 rare ones: the single gets the rare ones right and
    # two common ones wrong; the average the reverse.
    y = np.array([0] * 18 + [1] * 2)
    single = np.array([0] * 16 + [1] * 2 + [1] * 2)
    average = np.array([0] * 18 + [0] * 2)
    as_log = lambda labels: np.log(np.eye(2)[labels] * 0.98 + 0.01)  # noqa: E731
    by_rows = _row_advantage("val_accuracy", as_log(single), as_log(average), y).mean()
    balanced = _row_advantage("val_balanced_accuracy", as_log(single), as_log(average), y).mean()
    assert by_rows == pytest.approx(-0.0)  # rows right: a tie
    assert balanced == pytest.approx(
        balanced_accuracy_score(y, single) - balanced_accuracy_score(y, average)
    )
