"""A run's final model: its leading networks retrained as scored, delivered as an ensemble.

A search trains dozens of networks; the GA state keeps the fittest distinct
ones (`GAState.leaders`). At the end of a run the top `ensemble_size` of
them are retrained with the genome, wiring and training seed the search
scored them with (so with the weights it measured), side by side on the
pool. Averaging their class probabilities is the delivered model unless the
best network alone beats the average on validation by more than one
standard error (`choose` says why a plain comparison would be unfair), or
the request asks for one network (`final_model.deliver`).
Members weigh the same: a weighting fitted on the validation split would fit
its noise as well, while a plain average of good networks does not.

Each finalist is also retrained once from a fresh seed, beside the others
(`reevaluation_networks`). Its validation figure then says how good the
network is, not how lucky its one training was: the finalists are ranked by
the mean of their two figures, so one lucky training does not make the
"best" alone (`reevaluate`), and the delivered model's own figures are
measured again on the fresh-seed networks (`estimate`), whose weights were
never picked on the validation split. On held-back tasks the estimate
overstated the test accuracy about half as much as the searched weights'
own validation figures did (docs/ga.md, "Honest selection").

A regression run does the same with the members' predictions, in the
target's units, averaged instead of probabilities, and squared errors in
place of rows right.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import numpy.typing as npt

from thunderhelm.ga.core.engine import reevaluation_seed
from thunderhelm.ga.core.genome import genome_from_dict, genome_key
from thunderhelm.ga.training.artifact import (
    Ensemble,
    Model,
    Predictor,
    RegressionScores,
    Scores,
    model_from_training,
    regression_scores,
    scores,
    write_artifact,
)
from thunderhelm.ga.training.datasets import PreparedDataset
from thunderhelm.streams.execution import steps

DEFAULT_ENSEMBLE_SIZE = 5


class ArtifactWriteError(OSError):
    """The artifact folder cannot be written: the run fails with this reason."""


def finalists(
    request: Mapping[str, Any], ga_state: Mapping[str, Any] | None, best: Mapping[str, Any]
) -> list[Mapping[str, Any]]:
    """The networks to retrain for the final model, the search's best first.

    From the GA state's leaders (best first); a state written before the
    leaders were kept has only its best.
    """
    settings = request.get("final_model") or {}
    size = (
        1
        if settings.get("deliver") == "single"
        else int(settings.get("ensemble_size", DEFAULT_ENSEMBLE_SIZE))
    )
    best_key = genome_key_of(best)
    others = [
        leader
        for leader in (ga_state or {}).get("leaders") or ()
        if genome_key_of(leader) != best_key
    ]
    return [best, *others][: max(1, size)]


def genome_key_of(candidate: Mapping[str, Any]) -> str:
    return str(candidate.get("key") or genome_key(genome_from_dict(candidate["genome"])))


def networks(
    request: Mapping[str, Any],
    chosen: Sequence[Mapping[str, Any]],
    n_features: int,
    n_classes: int,
) -> list[dict[str, Any]]:
    """Each finalist's network exactly as the search trained it."""
    return [steps.best_network(request, c, n_features, n_classes) for c in chosen]


def reevaluation_networks(
    request: Mapping[str, Any],
    chosen: Sequence[Mapping[str, Any]],
    nets: Sequence[Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """Each finalist's network with a fresh training seed: its second, independent training."""
    config = steps.ga_config(request)
    return [
        {
            **net,
            "seed": reevaluation_seed(
                config, int(c.get("generation") or 0), int(c.get("index") or 0)
            ),
        }
        for c, net in zip(chosen, nets, strict=True)
    ]


# The figure of `scores` that each fitness measure where higher is better reads.
_SCORE_OF: dict[str, Literal["accuracy", "balanced_accuracy", "macro_f1", "roc_auc"]] = {
    "val_accuracy": "accuracy",
    "val_balanced_accuracy": "balanced_accuracy",
    "val_macro_f1": "macro_f1",
    "val_roc_auc": "roc_auc",
}


def _validation_scores(model: Predictor, dataset: PreparedDataset) -> Scores | RegressionScores:
    """A model's figures on the validation rows: `scores`, or `regression_scores`."""
    if dataset.task == "regression":
        mean, scale = model.target_units()
        return regression_scores(model.values_of_inputs(dataset.x_val), dataset.y_val, mean, scale)
    return scores(model.log_proba_of_inputs(dataset.x_val), np.asarray(dataset.y_val, np.intp))


def _fitness_figure(fitness: str, figures: Scores | RegressionScores) -> float:
    """The run's fitness measure read off a model's figures (higher is better)."""
    if fitness == "val_loss":
        return -float(figures["loss"])
    if "rmse" in figures:  # regression
        regression = cast(RegressionScores, figures)
        if fitness == "val_rmse":
            return -regression["rmse"]
        return -math.inf if regression["r2"] is None else regression["r2"]
    figure = figures[_SCORE_OF.get(fitness, "accuracy")]
    return float(figure) if figure is not None else -math.inf


def reevaluate(
    request: Mapping[str, Any],
    models: Sequence[Model],
    fresh: Sequence[Model | None],
    dataset: PreparedDataset,
) -> tuple[list[int], list[dict[str, Any]]]:
    """The finalists' order by the mean of their two trainings' validation figures, and the figures.

    `models[i]` is finalist i as the search trained it, `fresh[i]` its
    fresh-seed training (None: it failed, the search's figure stands alone).
    Ties keep the search's order.
    """
    fitness = steps.fitness_name(request)
    means: list[float] = []
    figures: list[dict[str, Any]] = []
    for model, again in zip(models, fresh, strict=True):
        searched = _fitness_figure(fitness, _validation_scores(model, dataset))
        second = (
            None if again is None else _fitness_figure(fitness, _validation_scores(again, dataset))
        )
        means.append(searched if second is None else (searched + second) / 2)
        figures.append(
            {
                "searched": round(searched, 6),
                "fresh_seed": None if second is None else round(second, 6),
                "mean": round(means[-1], 6),
            }
        )
    order = sorted(range(len(models)), key=lambda i: -means[i])
    return order, figures


def estimate(fresh: Sequence[Model | None], dataset: PreparedDataset) -> dict[str, Any] | None:
    """The delivered model's validation figures with its networks' fresh-seed weights.

    `fresh` are the delivered members' fresh-seed trainings, in the model's
    order; None when none of them trained.
    """
    trained = [m for m in fresh if m is not None]
    if not trained:
        return None
    model: Predictor = (
        trained[0]
        if len(trained) == 1
        else Ensemble(tuple(trained), tuple(1.0 / len(trained) for _ in trained))
    )
    figures = _validation_scores(model, dataset)
    if "rmse" in figures:
        return {**_regression_figures(figures), "retrainings": len(trained)}
    accuracy = float(figures["accuracy"])
    return {
        "accuracy": accuracy,
        "loss": float(figures["loss"]),
        "accuracy_se": round(math.sqrt(accuracy * (1.0 - accuracy) / max(1, figures["rows"])), 6),
        "retrainings": len(trained),
    }


def _row_advantage(
    fitness: str,
    alone: npt.NDArray[np.float64],
    averaged: npt.NDArray[np.float64],
    y: npt.NDArray[np.intp],
) -> npt.NDArray[np.float64]:
    """Per validation row, how much better the best network alone does than the average.

    `alone` and `averaged` are their log-probabilities of the rows: rows
    right, or cross-entropy for a `val_loss` run and for a `val_roc_auc` one
    (a ranking measure has no per-row form; cross-entropy is the per-row
    measure of the same probabilities, and a proper one); for the class-balanced
    measures, rows right weighted so that each class counts alike, which is
    balanced accuracy exactly and macro-F1's nearest per-row form.
    """
    rows = np.arange(len(y))
    if fitness in ("val_loss", "val_roc_auc"):
        # = loss(average) - loss(single)
        return np.asarray(alone[rows, y] - averaged[rows, y], dtype=np.float64)
    right_alone = (alone.argmax(axis=1) == y).astype(np.float64)
    diff: npt.NDArray[np.float64] = right_alone - (averaged.argmax(axis=1) == y).astype(np.float64)
    if fitness in ("val_balanced_accuracy", "val_macro_f1"):
        counts = np.bincount(y)
        diff *= len(y) / (np.count_nonzero(counts) * counts[y])
    return diff


def _single_advantage(
    fitness: str, single: Model, ensemble: Ensemble, dataset: PreparedDataset
) -> npt.NDArray[np.float64]:
    """`_row_advantage` of the two models; for regression, the average's squared error
    less the single's (standardised units)."""
    if dataset.task == "regression":
        truth = np.asarray(dataset.y_val, dtype=np.float64)
        mean, scale = single.target_units()
        alone = (single.values_of_inputs(dataset.x_val) - mean) / scale - truth
        averaged = (ensemble.values_of_inputs(dataset.x_val) - mean) / scale - truth
        return np.asarray(averaged**2 - alone**2, dtype=np.float64)
    y = np.asarray(dataset.y_val, dtype=np.intp)
    return _row_advantage(
        fitness,
        single.log_proba_of_inputs(dataset.x_val),
        ensemble.log_proba_of_inputs(dataset.x_val),
        y,
    )


def choose(
    request: Mapping[str, Any], models: Sequence[Model], dataset: PreparedDataset
) -> tuple[Predictor, dict[str, Any]]:
    """The model to deliver from the retrained finalists (best first), and why.

    The best network was picked on this very validation split, so its score
    there is its luckiest (the winner's curse) while the average's is not:
    comparing the two scores as they are would favour it. It has to win by
    more than one standard error of the paired per-row difference
    (`_single_advantage`).
    """
    settings = request.get("final_model") or {}
    deliver = str(settings.get("deliver", "auto"))
    fitness = steps.fitness_name(request)
    single = models[0]
    selection: dict[str, Any] = {"deliver": deliver, "fitness": fitness}
    selection["validation"] = {"single": _validation_scores(single, dataset)}
    if len(models) == 1:
        return single, {**selection, "chosen": "single", "why": "one network to deliver"}
    if deliver == "single":
        return single, {**selection, "chosen": "single", "why": "requested"}
    ensemble = Ensemble(tuple(models), tuple(1.0 / len(models) for _ in models))
    selection["validation"]["ensemble"] = _validation_scores(ensemble, dataset)
    if deliver == "ensemble":
        return ensemble, {**selection, "chosen": "ensemble", "why": "requested"}
    diff = _single_advantage(fitness, single, ensemble, dataset)
    margin = float(diff.mean())
    se = float(diff.std(ddof=1) / math.sqrt(len(diff))) if len(diff) > 1 else 0.0
    selection["single_margin"] = {"mean": round(margin, 6), "standard_error": round(se, 6)}
    if not margin > se:
        why = (
            f"the {len(models)}-network average: the best network alone is not better on "
            "validation by more than one standard error"
        )
        return ensemble, {**selection, "chosen": "ensemble", "why": why}
    why = "the best network alone is better on validation by more than one standard error"
    return single, {**selection, "chosen": "single", "why": why}


def save(
    directory: Path,
    run_id: str,
    request: Mapping[str, Any],
    chosen: Sequence[Mapping[str, Any]],
    nets: Sequence[Mapping[str, Any]],
    trained: Sequence[Mapping[str, Any]],
    dataset: PreparedDataset,
    fresh: Sequence[Mapping[str, Any]] | None = None,
    lineage: Mapping[str, Any] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Write the run's artifact to `<dir>/<run_id>/`; return its manifest path and figures.

    `trained[i]` is finalist i retrained as the search trained it, `fresh[i]`
    its fresh-seed training (`reevaluation_networks`; none: no
    re-evaluation). The figures: `test` (the search's best network alone on
    the test split, as the result's `best.metrics` reports it) and `model`
    (the delivered model: kind, members, validation and test metrics, the
    fresh-seed estimate).
    """
    root = directory.resolve()
    target = (root / run_id).resolve()
    if target.parent != root:  # run ids are validated; this keeps it that way
        raise ValueError(f"artifact path for {run_id!r} escapes {root}")
    best_trained = trained[0]
    if best_trained.get("status") != "ok" or not best_trained.get("weights"):
        raise RuntimeError(f"retraining the best network failed: {best_trained.get('error')}")
    again = list(fresh) if fresh is not None else [{} for _ in trained]
    # A finalist other than the best that fails to retrain is left out.
    kept = [(c, n, t, a) for c, n, t, a in zip(chosen, nets, trained, again, strict=True) if _ok(t)]
    models = [model_from_training(n, t["weights"], dataset, request) for _, n, t, _ in kept]
    searched_best = models[0]
    seconds = [
        model_from_training(n, a["weights"], dataset, request) if _ok(a) else None
        for _, n, _, a in kept
    ]
    predictor, selection, delivered = build(request, models, seconds, dataset)
    used = [kept[i] for i in delivered]
    for entry in selection["reevaluation"]:
        candidate = kept[entry.pop("finalist")][0]
        entry["generation"], entry["index"] = candidate.get("generation"), candidate.get("index")
    members = [
        {"network": n, "training": t, "search": _search(run_id, c, lineage)} for c, n, t, _ in used
    ]
    try:
        path, metrics = write_artifact(
            target,
            predictor=predictor,
            members=members,
            dataset=dataset,
            request=request,
            search=_search(run_id, chosen[0], lineage),
            selection=selection,
        )
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ArtifactWriteError(f"cannot write the model artifact to {target}: {reason}") from exc
    single_test = searched_best.figures(dataset.x_test, dataset.y_test, standardized=True)
    shares = predictor.weights if isinstance(predictor, Ensemble) else (1.0,)
    model = {
        "kind": "ensemble" if isinstance(predictor, Ensemble) else "single",
        "members": [
            {
                "generation": c.get("generation"),
                "index": c.get("index"),
                "fitness": c.get("fitness"),
                "weight": share,
            }
            for (c, _, _, _), share in zip(used, shares, strict=True)
        ],
        "validation": _any_figures(metrics["validation"]),
        "test": _any_figures(metrics["test"]),
        "estimate": selection["estimate"],
        "why": selection["why"],
    }
    return path, {"test": single_test, "model": model}


def build(
    request: Mapping[str, Any],
    models: Sequence[Model],
    seconds: Sequence[Model | None],
    dataset: PreparedDataset,
) -> tuple[Predictor, dict[str, Any], list[int]]:
    """The model to deliver from the finalists' two trainings, why, and which finalists it holds.

    `models` are the finalists as the search trained them (the search's best
    first), `seconds` their fresh-seed trainings. Returns the predictor, the
    selection record (with `reevaluation` and `estimate`) and the positions
    in `models` of its networks, in the model's order.
    """
    order, figures = reevaluate(request, models, seconds, dataset)
    predictor, selection = choose(request, [models[i] for i in order], dataset)
    delivered = order if isinstance(predictor, Ensemble) else order[:1]
    selection["reevaluation"] = [{"finalist": i, **figures[i]} for i in order]
    selection["estimate"] = estimate([seconds[i] for i in delivered], dataset)
    return predictor, selection, delivered


def _ok(training: Mapping[str, Any]) -> bool:
    return training.get("status") == "ok" and bool(training.get("weights"))


def _any_figures(metrics: Mapping[str, Any]) -> dict[str, float | None]:
    return _regression_figures(metrics) if "rmse" in metrics else _figures(metrics)


def _regression_figures(metrics: Mapping[str, Any]) -> dict[str, float | None]:
    return {
        name: None if metrics.get(name) is None else float(metrics[name])
        for name in ("rmse", "mae", "r2", "loss")
    }


def _figures(metrics: Mapping[str, Any]) -> dict[str, float | None]:
    figures: dict[str, float | None] = {
        "accuracy": float(metrics["accuracy"]),
        "loss": float(metrics["loss"]),
    }
    for name in ("balanced_accuracy", "macro_f1", "roc_auc"):
        value = metrics.get(name)
        figures[name] = None if value is None else float(value)
    return figures


def _search(
    run_id: str, candidate: Mapping[str, Any], lineage: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    taken = lineage is not None and candidate.get("key") in lineage["genomes"]
    return {
        # A warm start's genome: the run it came from.
        **({"warm_start_from": lineage["run_id"]} if taken and lineage else {}),
        "run_id": run_id,
        "genome": candidate.get("genome"),
        "wiring": candidate.get("wiring"),
        "fitness": candidate.get("fitness"),
        "generation": candidate.get("generation"),
        "index": candidate.get("index"),
        # The learning curve the search measured (its rungs may have stopped it early).
        "curve": (candidate.get("metrics") or {}).get("curve"),
    }
