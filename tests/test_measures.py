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
