"""The validation measures a training reports, and which way each is better.

A run's fitness is one of them (`fitness.name` in the request), and so is the
figure its successive-halving rungs bound (`min_<measure>` or `max_<measure>`
in a network spec). `val_balanced_accuracy` (the mean recall of the classes
present) and `val_macro_f1` (F1 averaged over the classes present or
predicted) are for imbalanced classes, where plain accuracy rewards
predicting the majority; `val_roc_auc` (one class against the rest,
averaged over the classes) measures how well the probabilities rank the
rows, whatever the threshold. A regression training reports `val_r2`,
`val_rmse` and `val_mae` in the target's own units instead (its `val_loss`
is the mean squared error on the standardised target); as a fitness,
`val_rmse` is maximised as its negative. Stdlib only: the pool interpreters
import it.
"""

HIGHER_IS_BETTER: tuple[str, ...] = (
    "val_accuracy",
    "val_balanced_accuracy",
    "val_macro_f1",
    "val_roc_auc",
    "val_r2",
)
LOWER_IS_BETTER: tuple[str, ...] = ("val_loss", "val_rmse", "val_mae")
MEASURES: tuple[str, ...] = HIGHER_IS_BETTER + LOWER_IS_BETTER

TASKS: tuple[str, ...] = ("classification", "regression")
# The measures each task's trainings report (val_loss: both; val_roc_auc: when
# the network spec asks for it, see `ON_REQUEST`).
TASK_MEASURES: dict[str, tuple[str, ...]] = {
    "classification": (
        "val_accuracy",
        "val_balanced_accuracy",
        "val_macro_f1",
        "val_roc_auc",
        "val_loss",
    ),
    "regression": ("val_r2", "val_rmse", "val_mae", "val_loss"),
}
# Measured only when asked (a network spec's `roc_auc`): it costs a sort of the
# validation rows per class on every pass.
ON_REQUEST: tuple[str, ...] = ("val_roc_auc",)
# The fitness a request that names none gets.
DEFAULT_MEASURE: dict[str, str] = {"classification": "val_accuracy", "regression": "val_r2"}


def measure_for_task(name: str | None, task: str) -> str:
    """The fitness measure of a `task` run: `name`, or the task's default when None.

    Raises ValueError for a measure the task's trainings do not report.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    if name is None:
        return DEFAULT_MEASURE[task]
    if name not in TASK_MEASURES[task]:
        raise ValueError(
            f"fitness {name!r} is not a {task} measure; choose one of {TASK_MEASURES[task]}"
        )
    return name


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


def one_vs_rest_auc(scores: list[list[float]], labels: list[int]) -> float | None:
    """Macro one-vs-rest ROC-AUC (scikit-learn's), from ranks: the Mann-Whitney statistic.

    `scores[k][i]` is row i's score for class k (its probability); tied
    scores share the mean of their ranks. Averaged over the classes with rows
    on both sides; for two classes, the plain AUC. None when no class has.
    """
    n = len(labels)
    counts = [0] * len(scores)
    for label in labels:
        counts[label] += 1
    aucs: list[float] = []
    for k, column in enumerate(scores):
        positives = counts[k]
        if not 0 < positives < n:
            continue
        order = sorted(range(n), key=column.__getitem__)
        rank_sum = 0.0
        start = 0
        while start < n:  # a run of tied scores shares its mean rank
            end = start + 1
            while end < n and column[order[end]] == column[order[start]]:
                end += 1
            mean_rank = (start + end + 1) / 2.0
            rank_sum += mean_rank * sum(1 for i in order[start:end] if labels[i] == k)
            start = end
        aucs.append((rank_sum - positives * (positives + 1) / 2.0) / (positives * (n - positives)))
    if not aucs:
        return None
    if len(scores) == 2:
        return aucs[-1]  # both classes give the same AUC
    return sum(aucs) / len(aucs)
