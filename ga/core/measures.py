"""The validation measures a training reports, and which way each is better.

A run's fitness is one of them (`fitness.name` in the request), and so is the
figure its successive-halving rungs bound (`min_<measure>` or `max_<measure>`
in a network spec). `val_balanced_accuracy` (the mean recall of the classes
present) and `val_macro_f1` (F1 averaged over the classes present or
predicted) are for imbalanced classes, where plain accuracy rewards
predicting the majority. Stdlib only: the pool interpreters import it.
"""

HIGHER_IS_BETTER: tuple[str, ...] = ("val_accuracy", "val_balanced_accuracy", "val_macro_f1")
LOWER_IS_BETTER: tuple[str, ...] = ("val_loss",)
MEASURES: tuple[str, ...] = HIGHER_IS_BETTER + LOWER_IS_BETTER


def higher_is_better(measure: str) -> bool:
    if measure not in MEASURES:
        raise ValueError(f"unknown measure {measure!r}; expected one of {MEASURES}")
    return measure in HIGHER_IS_BETTER


def rung_bound(measure: str) -> str:
    """The name of a rung's bound on `measure`: `min_...` when higher is better, else `max_...`."""
    return ("min_" if higher_is_better(measure) else "max_") + measure


RUNG_BOUNDS: frozenset[str] = frozenset(rung_bound(m) for m in MEASURES)


def bounded_measure(bound: str) -> str:
    """The measure a rung bound names (`min_val_accuracy` -> `val_accuracy`)."""
    if bound not in RUNG_BOUNDS:
        raise ValueError(f"unknown rung bound {bound!r}; expected one of {sorted(RUNG_BOUNDS)}")
    return bound[4:]


def class_figures(
    predicted: list[int], hits: list[int], rows: list[int]
) -> tuple[float | None, float | None]:
    """Balanced accuracy and macro-F1 from per-class counts (as scikit-learn defines them).

    `predicted[k]`: rows predicted as class k; `hits[k]`: of them right;
    `rows[k]`: rows of class k. None where no class has rows (or none is seen).
    """
    recalls = [h / n for h, n in zip(hits, rows, strict=True) if n > 0]
    f1s = [
        2.0 * h / (n + p) for p, h, n in zip(predicted, hits, rows, strict=True) if n > 0 or p > 0
    ]
    balanced = sum(recalls) / len(recalls) if recalls else None
    macro_f1 = sum(f1s) / len(f1s) if f1s else None
    return balanced, macro_f1
