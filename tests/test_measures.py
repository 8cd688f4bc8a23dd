"""The validation measures: which way is better, rung bounds, and the class-balanced figures."""

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score

from thunderhelm.ga.core import measures
from thunderhelm.ga.core.fidelity import Fidelity, bound, rungs_for
from thunderhelm.ga.core.search import fitness_from_metrics


@pytest.mark.parametrize("seed", range(6))
def test_the_class_figures_are_scikit_learns(seed: int) -> None:
    rng = np.random.default_rng(seed)
    classes = int(rng.integers(2, 7))
    y = rng.choice(classes, size=200, p=np.arange(1, classes + 1) / sum(range(1, classes + 1)))
    # Some classes never predicted, one predicted but never present.
    predicted = np.where(rng.random(200) < 0.6, y, rng.integers(0, classes + 1, 200))
    k = classes + 1
    balanced, macro_f1 = measures.class_figures(
        np.bincount(predicted, minlength=k).tolist(),
        np.bincount(y[predicted == y], minlength=k).tolist(),
        np.bincount(y, minlength=k).tolist(),
    )
    with pytest.warns(UserWarning):  # scikit-learn warns of the class never present
        expected = balanced_accuracy_score(y, predicted)
    assert balanced == pytest.approx(expected)
    assert macro_f1 == pytest.approx(f1_score(y, predicted, average="macro", zero_division=0))


def test_no_rows_no_figures() -> None:
    assert measures.class_figures([0, 0], [0, 0], [0, 0]) == (None, None)


def test_each_measure_has_its_direction_and_its_rung_bound() -> None:
    assert measures.rung_bound("val_balanced_accuracy") == "min_val_balanced_accuracy"
    assert measures.rung_bound("val_loss") == "max_val_loss"
    assert measures.bounded_measure("min_val_macro_f1") == "val_macro_f1"
    with pytest.raises(ValueError, match="unknown measure"):
        measures.rung_bound("val_nonsense")
    with pytest.raises(ValueError, match="unknown rung bound"):
        measures.bounded_measure("min_val_nonsense")


def test_the_class_balanced_fitness_is_maximised_and_bounded_from_below() -> None:
    metrics = {"status": "ok", "val_balanced_accuracy": 0.6, "val_accuracy": 0.9, "params": 1}
    assert fitness_from_metrics(metrics, "val_balanced_accuracy") == 0.6
    fidelity = Fidelity(eta=2.0, min_figures=2, metric="val_balanced_accuracy")
    figures = (0.2, 0.4, 0.6, 0.8)
    assert bound(figures, fidelity) == 0.4  # the best half goes on
    assert rungs_for(4, {1: figures}, fidelity) == [{"epoch": 1, "min_val_balanced_accuracy": 0.4}]


@pytest.mark.parametrize("seed", range(6))
def test_the_roc_auc_of_the_trainings_is_scikit_learns(seed: int) -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    classes = 2 if seed < 2 else int(rng.integers(3, 7))
    y = rng.integers(0, classes, 300)
    scores = rng.random((300, classes)) + np.eye(classes)[y] * rng.random(300)[:, None]
    scores = np.round(scores, 1)  # many ties, which count half
    scores /= scores.sum(axis=1, keepdims=True)
    got = measures.one_vs_rest_auc(scores.T.tolist(), y.tolist())
    expected = (
        roc_auc_score(y, scores[:, 1])
        if classes == 2
        else roc_auc_score(y, scores, multi_class="ovr")
    )
    assert got == pytest.approx(expected, abs=1e-12)


def test_no_class_on_both_sides_no_roc_auc() -> None:
    assert measures.one_vs_rest_auc([[0.9, 0.8], [0.1, 0.2]], [0, 0]) is None


def test_a_roc_auc_fitness_trains_with_it_measured_as_the_model_measures_it(tmp_path) -> None:
    import json
    import time

    from thunderhelm.ga.training.artifact import model_from_training, scores
    from thunderhelm.ga.training.candidate import SpecError, parse_spec, train_candidate
    from thunderhelm.ga.training.datasets import load_dataset
    from thunderhelm.ga.training.evaluators import Fitness, InProcessEvaluator

    data = load_dataset(
        {"name": "spirals", "classes": 4, "samples": 2000, "seed": 1},
        data_root=tmp_path,
        text_dir=tmp_path,
    )
    net = {
        "n_inputs": 2, "n_outputs": 4,
        "units": [{"inputs": [0], "neurons": 16, "activation": "tanh"}],
        "output_inputs": [1], "learning_rate": 0.01, "weight_decay": 0.0,
        "epochs": 4, "batch_size": 32, "seed": 1,
    }  # fmt: skip
    fitness = Fitness(kind="val_roc_auc")
    (result,) = InProcessEvaluator(data, export_weights=True, fitness=fitness)([net])
    assert result["fitness"] == result["val_roc_auc"] > 0.5
    # Measured where a decision reads it: the last epoch (no rungs here).
    assert [("val_roc_auc" in point) for point in result["curve"]] == [False] * 3 + [True]
    model = model_from_training(net, result["weights"], data, {})
    own = scores(model.log_proba_of_inputs(data.x_val), data.y_val)["roc_auc"]
    assert result["val_roc_auc"] == pytest.approx(own, abs=2e-3)  # float32 logits vs float64
    # Not asked: not measured.
    (plain,) = InProcessEvaluator(data)([net])
    assert "val_roc_auc" not in plain and plain["fitness"] == plain["val_accuracy"]
    # A rung that bounds it asks for it; a bad flag and regression are refused.
    ranked = parse_spec(json.dumps({**net, "rungs": [{"epoch": 2, "min_val_roc_auc": 0.9}]}))
    assert ranked.roc_auc
    stopped = json.loads(train_candidate(
        json.dumps({**net, "rungs": [{"epoch": 2, "min_val_roc_auc": 0.99}]}),
        data.x_train, data.y_train, data.x_val, data.y_val, 2, time.time() + 60,
    ))  # fmt: skip
    assert stopped["pruned_at"] == 2 and stopped["val_roc_auc"] < 0.99
    with pytest.raises(SpecError, match="roc_auc must be true or false"):
        parse_spec(json.dumps({**net, "roc_auc": "yes"}))
    with pytest.raises(SpecError, match="roc_auc applies to classification only"):
        parse_spec(json.dumps({**net, "n_outputs": 1, "task": "regression", "roc_auc": True}))
