"""The model artifact of a finished run: writing it, loading it, predicting with it.

An artifact is a folder holding `model.json` (the manifest: format version,
the member networks' specs, preprocessing, class labels, the request, the
dataset's fingerprint, metrics) and `model.npz` (the weights and the feature
standardisation, float32). It holds one network (`Model`) or several whose
probabilities are averaged (`Ensemble`). A regression model (its networks'
spec says `"task": "regression"`) predicts numbers in the target's units:
the network's one output times `target_scale` plus `target_mean`, an
ensemble averaging those. `docs/artifact.md` is the format's
reference.
The forward pass is the numpy twin of the kernel (`reference.ReferenceNet`),
so a loaded model needs numpy only, never the compiled kernel's pool.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import numpy.typing as npt

from thunderhelm.ga.training.candidate import NetworkSpec, SpecError, parse_spec, tensor_shapes
from thunderhelm.ga.training.datasets import PreparedDataset
from thunderhelm.ga.training.reference import ReferenceNet
from thunderhelm.ga.training.tables import TableEncoding, TableError, rows_to_columns

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "ArtifactError",
    "Ensemble",
    "Model",
    "Predictor",
    "decode_weights",
    "load_model",
    "model_from_training",
    "scores",
    "write_artifact",
]

FORMAT = "thunderhelm.model"
FORMAT_VERSION = 2
# Version 1 held one network at the manifest's top level; it still loads.
READABLE_VERSIONS = (1, 2)
MANIFEST = "model.json"
WEIGHTS = "model.npz"
_MEAN, _SCALE = "preprocess.mean", "preprocess.scale"
ENCODING_FEATURES = "features"
ENCODING_CHARS = "one-hot-chars"
ENCODING_TABLE = "table"

F32 = npt.NDArray[np.float32]


class ArtifactError(ValueError):
    """An artifact that cannot be read or used; the message says why."""


def decode_weights(tensors: Sequence[Mapping[str, Any]]) -> dict[str, F32]:
    """The `weights` list of a training result (base64 little-endian float32) as arrays."""
    out: dict[str, F32] = {}
    for tensor in tensors:
        flat = np.frombuffer(base64.b64decode(tensor["data"]), dtype="<f4").astype(np.float32)
        out[str(tensor["name"])] = flat.reshape(tuple(int(d) for d in tensor["shape"]))
    return out


class _Predicting:
    """What every loaded artifact does, given its `logits` and preprocessing."""

    labels: tuple[str, ...]
    vocabulary: str
    context: int
    manifest: dict[str, Any]

    def logits(self, x: npt.ArrayLike) -> F32:
        raise NotImplementedError

    @property
    def regression(self) -> bool:
        raise NotImplementedError

    def standardize(self, x: Any) -> F32:
        raise NotImplementedError

    def values_of_inputs(self, inputs: F32) -> npt.NDArray[np.float64]:
        raise NotImplementedError

    @property
    def is_text(self) -> bool:
        return bool(self.vocabulary) and self.context > 0

    def _classification_only(self, what: str) -> None:
        if self.regression:
            raise ValueError(f"a regression model predicts numbers; {what} is for classification")

    def predict_values(self, x: Any) -> npt.NDArray[np.float64]:
        """Regression: the predicted target of every row, in the target's own units."""
        if not self.regression:
            raise ValueError("a classification model predicts classes; use predict")
        return self.values_of_inputs(self.standardize(x))

    def figures(
        self, x: npt.ArrayLike, y: npt.ArrayLike, *, standardized: bool = False
    ) -> Scores | RegressionScores:
        """`evaluate`'s figures, or for a regression model `regression_scores` of its
        predictions against standardised targets `y`."""
        if not self.regression:
            return self.evaluate(x, y, standardized=standardized)
        inputs = np.asarray(x, dtype=np.float32) if standardized else self.standardize(x)
        mean, scale = self.target_units()
        return regression_scores(self.values_of_inputs(inputs), y, mean, scale)

    def target_units(self) -> tuple[float, float]:
        """Regression: (mean, scale) that turn the standardised output into the target."""
        raise NotImplementedError

    def evaluate(self, x: npt.ArrayLike, y: npt.ArrayLike, *, standardized: bool = False) -> Scores:
        raise NotImplementedError

    def predict_proba(self, x: npt.ArrayLike) -> F32:
        """Class probabilities, one row per input row."""
        self._classification_only("predict_proba")
        logits = self.logits(x).astype(np.float64)
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        out: F32 = (shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float32)
        return out

    def predict(self, x: npt.ArrayLike) -> npt.NDArray[Any]:
        """The most probable class index per row (`labels[i]` names class i).

        A regression model: the predicted numbers (float64, the target's units).
        """
        if self.regression:
            return self.predict_values(x)
        return np.asarray(self.logits(x).argmax(axis=1), dtype=np.int64)

    def predict_labels(self, x: npt.ArrayLike) -> list[str]:
        self._classification_only("predict_labels")
        return [self.labels[i] for i in self.predict(x)]

    # -- text ------------------------------------------------------------------

    def encode_text(self, text: str) -> F32:
        """The raw feature row of the last `context` characters of `text`.

        One-hot per position, position-major: feature `p * len(vocabulary) +
        code`, where `code` is the character's index in the vocabulary.
        """
        if not self.is_text:
            raise ValueError("this model was not trained on text")
        if self.manifest.get("preprocessing", {}).get("lowercase", False):
            text = text.lower()
        if len(text) < self.context:
            raise ValueError(f"the text needs at least {self.context} characters")
        window = text[-self.context :]
        unknown = sorted(set(window) - set(self.vocabulary))
        if unknown:
            raise ValueError(f"characters not in the model's vocabulary: {unknown!r}")
        v = len(self.vocabulary)
        row = np.zeros(self.context * v, dtype=np.float32)
        for position, char in enumerate(window):
            row[position * v + self.vocabulary.index(char)] = 1.0
        return row

    def next_char_proba(self, text: str) -> dict[str, float]:
        """Probability of every vocabulary character following `text`."""
        proba = self.predict_proba(self.encode_text(text))[0]
        return {self.vocabulary[i]: float(p) for i, p in enumerate(proba)}

    def generate(self, text: str, n: int, *, seed: int = 0, temperature: float = 1.0) -> str:
        """`n` characters sampled after `text` (temperature 0: always the most probable)."""
        if n < 0 or not math.isfinite(temperature) or temperature < 0:
            raise ValueError("n must be >= 0 and temperature a finite number >= 0")
        rng = np.random.default_rng(seed)
        out = text
        for _ in range(n):
            logits = self.logits(self.encode_text(out))[0].astype(np.float64)
            if temperature == 0:
                code = int(logits.argmax())
            else:
                p = np.exp((logits - logits.max()) / temperature)
                code = int(rng.choice(len(p), p=p / p.sum()))
            out += self.vocabulary[code]
        return out[len(text) :]


class Scores(TypedDict):
    """A model's figures on labelled rows (`scores`)."""

    accuracy: float
    loss: float
    rows: int
    balanced_accuracy: float | None
    macro_f1: float | None
    roc_auc: float | None


def scores(log_proba: npt.NDArray[np.float64], y: npt.ArrayLike) -> Scores:
    """Figures of log-probabilities against class indices.

    `accuracy`, `loss` (mean cross-entropy, the log-loss) and `rows`; and the
    measures of imbalanced problems, as scikit-learn defines them:
    `balanced_accuracy` (the mean recall of the classes present),
    `macro_f1` (F1 averaged over the classes present or predicted) and
    `roc_auc` (one class against the rest, averaged over the classes with
    rows on both sides; for two classes, the plain AUC; None when no class
    has).
    """
    labels = np.asarray(y, dtype=np.intp)
    predicted = log_proba.argmax(axis=1)
    loss = float(np.mean(-log_proba[np.arange(len(labels)), labels]))
    accuracy = float(np.mean(predicted == labels))
    n_classes = log_proba.shape[1]
    true_counts = np.bincount(labels, minlength=n_classes)
    predicted_counts = np.bincount(predicted, minlength=n_classes)
    hits = np.bincount(labels[predicted == labels], minlength=n_classes)
    present = true_counts > 0
    recall = hits[present] / true_counts[present]
    seen = present | (predicted_counts > 0)
    f1 = 2.0 * hits[seen] / (true_counts[seen] + predicted_counts[seen])
    return {
        "accuracy": accuracy,
        "loss": loss,
        "rows": len(labels),
        "balanced_accuracy": float(recall.mean()) if recall.size else None,
        "macro_f1": float(f1.mean()) if f1.size else None,
        "roc_auc": _one_vs_rest_auc(log_proba, labels, true_counts),
    }


class RegressionScores(TypedDict):
    """A regression model's figures on rows with known targets (`regression_scores`)."""

    rmse: float
    mae: float
    r2: float | None
    loss: float
    rows: int


def regression_scores(
    predicted: npt.NDArray[np.float64], y: npt.ArrayLike, mean: float, scale: float
) -> RegressionScores:
    """Figures of predictions (the target's units) against standardised targets `y`.

    `rmse`, `mae` in the target's units; `r2` (1 - SSE / SST, None when the
    targets do not vary); `loss`: the mean squared error on the standardised
    target, the training's loss.
    """
    truth = np.asarray(y, dtype=np.float64) * scale + mean
    error = predicted - truth
    sst = float(np.sum((truth - truth.mean()) ** 2))
    mse = float(np.mean(error**2))
    return {
        "rmse": math.sqrt(mse),
        "mae": float(np.mean(np.abs(error))),
        "r2": 1.0 - float(np.sum(error**2)) / sst if sst > 0 else None,
        "loss": mse / (scale * scale),
        "rows": len(truth),
    }


def _one_vs_rest_auc(
    log_proba: npt.NDArray[np.float64],
    labels: npt.NDArray[np.intp],
    true_counts: npt.NDArray[np.intp],
) -> float | None:
    """Macro one-vs-rest ROC-AUC from ranks (the Mann-Whitney statistic; ties count half)."""
    n = len(labels)
    aucs = []
    for k in np.flatnonzero((true_counts > 0) & (true_counts < n)):
        ranks = _average_ranks(log_proba[:, k])
        positives = int(true_counts[k])
        rank_sum = float(ranks[labels == k].sum())
        aucs.append((rank_sum - positives * (positives + 1) / 2.0) / (positives * (n - positives)))
    if not aucs:
        return None
    if log_proba.shape[1] == 2:
        return float(aucs[-1])  # both classes give the same AUC
    return float(np.mean(aucs))


def _average_ranks(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """1-based ranks, tied values sharing the mean of their ranks."""
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts = np.r_[0, np.flatnonzero(np.diff(ordered)) + 1]
    ends = np.r_[starts[1:], len(values)]
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


@dataclass(frozen=True, eq=False)
class Model(_Predicting):
    """A trained network with the preprocessing it was trained behind.

    Inputs are raw feature rows, as the dataset's source holds them (for
    text: the one-hot window, see `encode_text`); `predict_proba` applies
    the standardisation, the network and a softmax.
    """

    spec: NetworkSpec
    tensors: dict[str, F32]
    mean: F32
    scale: F32
    labels: tuple[str, ...]
    vocabulary: str = ""
    context: int = 0
    manifest: dict[str, Any] = field(default_factory=dict)
    # A table model: raw rows (named columns, text, gaps) are encoded by this first.
    table: TableEncoding | None = None
    target_mean: float = 0.0  # regression: target = output * spec.target_scale + this
    _net: ReferenceNet = field(init=False, repr=False)

    def __post_init__(self) -> None:
        flat = np.concatenate([self.tensors[n].reshape(-1) for n, _ in tensor_shapes(self.spec)])
        object.__setattr__(self, "_net", ReferenceNet(self.spec, flat, np.float32))

    @property
    def n_features(self) -> int:
        return self.spec.n_inputs

    @property
    def regression(self) -> bool:
        return self.spec.regression

    def target_units(self) -> tuple[float, float]:
        return self.target_mean, self.spec.target_scale

    def values_of_inputs(self, inputs: F32) -> npt.NDArray[np.float64]:
        """Regression: predictions in the target's units for rows already standardised."""
        output = np.asarray(self._net.logits(inputs), dtype=np.float64)[:, 0]
        out: npt.NDArray[np.float64] = output * self.spec.target_scale + self.target_mean
        return out

    def standardize(self, x: Any) -> F32:
        """Raw rows to the network's inputs: (raw - mean) / scale, float32.

        A table model takes rows as users hold them (a list of dicts, a dict
        of columns, a DataFrame, a pyarrow Table, a .csv/.parquet path) and
        encodes them first; a numpy array is taken as already encoded.
        """
        if self.table is not None and not isinstance(x, np.ndarray):
            try:
                x = self.table.encode(rows_to_columns(x))
            except TableError as exc:
                raise ValueError(str(exc)) from None
        raw = np.asarray(x, dtype=np.float64)
        if raw.ndim == 1:
            raw = raw[None, :]
        if raw.ndim != 2 or raw.shape[1] != self.n_features:
            raise ValueError(f"inputs must have shape (rows, {self.n_features}), got {np.shape(x)}")
        if not np.all(np.isfinite(raw)):
            raise ValueError("inputs must be finite numbers")
        out: F32 = ((raw - self.mean) / self.scale).astype(np.float32)
        return out

    def logits(self, x: npt.ArrayLike) -> F32:
        out: F32 = np.asarray(self._net.logits(self.standardize(x)), dtype=np.float32)
        return out

    def log_proba_of_inputs(self, inputs: F32) -> npt.NDArray[np.float64]:
        """Log class probabilities of rows already standardised (float64)."""
        logits = np.asarray(self._net.logits(inputs), dtype=np.float64)
        shifted = logits - logits.max(axis=1, keepdims=True)
        out: npt.NDArray[np.float64] = shifted - np.log(np.exp(shifted).sum(axis=1))[:, None]
        return out

    def evaluate(self, x: npt.ArrayLike, y: npt.ArrayLike, *, standardized: bool = False) -> Scores:
        """Accuracy and mean cross-entropy on raw rows `x` with class indices `y`.

        `standardized`: `x` already went through this model's preprocessing.
        """
        self._classification_only("evaluate")
        inputs = np.asarray(x, dtype=np.float32) if standardized else self.standardize(x)
        return scores(self.log_proba_of_inputs(inputs), y)


@dataclass(frozen=True, eq=False)
class Ensemble(_Predicting):
    """Several networks trained behind the same preprocessing; their probabilities averaged.

    `weights[i]` is member i's share of the average (they sum to 1). Every
    member takes the same raw rows, so preprocessing, labels and text
    settings are the first member's.
    """

    members: tuple[Model, ...]
    weights: tuple[float, ...]
    manifest: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.members or len(self.weights) != len(self.members):
            raise ValueError("an ensemble needs one weight per member, and members")
        first = self.members[0]
        for m in self.members[1:]:
            same = m.labels == first.labels and m.n_features == first.n_features
            same = same and m.regression == first.regression
            if not same or not np.array_equal(m.mean, first.mean):
                raise ValueError("ensemble members must share labels and preprocessing")

    @property
    def labels(self) -> tuple[str, ...]:  # type: ignore[override]  # read-only here
        return self.members[0].labels

    @property
    def vocabulary(self) -> str:  # type: ignore[override]
        return self.members[0].vocabulary

    @property
    def context(self) -> int:  # type: ignore[override]
        return self.members[0].context

    @property
    def n_features(self) -> int:
        return self.members[0].n_features

    @property
    def table(self) -> TableEncoding | None:
        return self.members[0].table

    @property
    def regression(self) -> bool:
        return self.members[0].regression

    def standardize(self, x: npt.ArrayLike) -> F32:
        return self.members[0].standardize(x)

    def target_units(self) -> tuple[float, float]:
        return self.members[0].target_units()

    def values_of_inputs(self, inputs: F32) -> npt.NDArray[np.float64]:
        """Regression: the weighted mean of the members' predictions (the target's units)."""
        total = np.zeros(len(inputs), dtype=np.float64)
        for weight, member in zip(self.weights, self.members, strict=True):
            total += weight * member.values_of_inputs(inputs)
        return total

    def log_proba_of_inputs(self, inputs: F32) -> npt.NDArray[np.float64]:
        """Log of the weighted mean of the members' probabilities (float64)."""
        total = np.zeros((len(inputs), len(self.labels)), dtype=np.float64)
        for weight, member in zip(self.weights, self.members, strict=True):
            total += weight * np.exp(member.log_proba_of_inputs(inputs))
        out: npt.NDArray[np.float64] = np.log(np.maximum(total, np.finfo(np.float64).tiny))
        return out

    def logits(self, x: npt.ArrayLike) -> F32:
        """Log-probabilities: the softmax of these is the averaged probability."""
        return self.log_proba_of_inputs(self.standardize(x)).astype(np.float32)

    def evaluate(self, x: npt.ArrayLike, y: npt.ArrayLike, *, standardized: bool = False) -> Scores:
        """Accuracy and mean cross-entropy of the averaged probabilities."""
        self._classification_only("evaluate")
        inputs = np.asarray(x, dtype=np.float32) if standardized else self.standardize(x)
        return scores(self.log_proba_of_inputs(inputs), y)


# What `load_model` returns: one network or an ensemble, used alike.
type Predictor = Model | Ensemble


# -- writing -----------------------------------------------------------------------


def _json_ready(value: Any) -> Any:
    return json.loads(json.dumps(value, allow_nan=False))


def _preprocessing(dataset: PreparedDataset, request: Mapping[str, Any]) -> dict[str, Any]:
    text = bool(dataset.vocabulary) and dataset.context > 0
    table = {}
    if dataset.table is not None:
        table = {"table": dataset.table.to_dict(), "features": dataset.table.feature_names()}
    if dataset.task == "regression":
        table["target"] = {
            "mean": dataset.target_mean,
            "scale": dataset.target_scale,
            "predict": "target = output * scale + mean",
        }
    return {
        **table,
        "encoding": ENCODING_CHARS if text else ENCODING_TABLE if table else ENCODING_FEATURES,
        "standardize": "x = (raw - mean) / scale, float32; mean and scale in model.npz",
        "n_features": dataset.n_features,
        "vocabulary": dataset.vocabulary,
        "context": dataset.context,
        "lowercase": bool(request.get("dataset", {}).get("lowercase", True)) and text,
    }


def model_from_training(
    network: Mapping[str, Any],
    weights: Sequence[Mapping[str, Any]],
    dataset: PreparedDataset,
    request: Mapping[str, Any],
) -> Model:
    """The network a training result's `weights` fill, behind `dataset`'s preprocessing."""
    return Model(
        parse_spec(json.dumps({**network, **dataset.network_keys()})),
        decode_weights(weights),
        np.asarray(dataset.mean, dtype=np.float32),
        np.asarray(dataset.scale, dtype=np.float32),
        dataset.labels,
        dataset.vocabulary,
        dataset.context,
        {"preprocessing": _preprocessing(dataset, request)},
        dataset.table,
        dataset.target_mean,
    )


def split_metrics(predictor: Predictor, dataset: PreparedDataset) -> dict[str, Any]:
    """Validation and test metrics of `predictor` on `dataset`'s (standardised) splits."""
    return {
        "validation": predictor.figures(dataset.x_val, dataset.y_val, standardized=True),
        "test": predictor.figures(dataset.x_test, dataset.y_test, standardized=True),
    }


def _member_prefix(index: int) -> str:
    return f"m{index}/"


def write_artifact(
    directory: Path,
    *,
    predictor: Predictor,
    members: Sequence[Mapping[str, Any]],
    dataset: PreparedDataset,
    request: Mapping[str, Any],
    search: Mapping[str, Any],
    selection: Mapping[str, Any] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Write a complete artifact into `directory`; return the manifest's path and metrics.

    `predictor` is the model to deliver, a `Model` or an `Ensemble` whose
    members were made by `model_from_training` on this `dataset`.
    `members[i]` tells of network i: its `network` spec, `training` (the
    training result less its weights) and `search` (what the search knew of
    it: genome, wiring, fitness, generation). `search` is the search's best
    network; `selection` why this model was delivered. Validation and test
    metrics are measured here, by the saved model itself.
    """
    nets = predictor.members if isinstance(predictor, Ensemble) else (predictor,)
    shares = predictor.weights if isinstance(predictor, Ensemble) else (1.0,)
    if len(members) != len(nets):
        raise ValueError(f"{len(nets)} networks but {len(members)} member descriptions")
    arrays: dict[str, F32] = {}
    listed: list[dict[str, Any]] = []
    for i, (net, share, about) in enumerate(zip(nets, shares, members, strict=True)):
        prefix = _member_prefix(i)
        arrays.update({prefix + name: net.tensors[name] for name, _ in tensor_shapes(net.spec)})
        listed.append(
            {
                "network": {**about["network"], **dataset.network_keys()},
                "tensors": [
                    {"name": prefix + n, "shape": list(shape)}
                    for n, shape in tensor_shapes(net.spec)
                ],
                "weight": float(share),
                "search": _json_ready(about.get("search", {})),
                "training": _json_ready(
                    {k: v for k, v in about.get("training", {}).items() if k != "weights"}
                ),
                "metrics": split_metrics(net, dataset),
            }
        )
    metrics = split_metrics(predictor, dataset)
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": "ensemble" if len(nets) > 1 else "single",
        "members": listed,
        "preprocessing": _preprocessing(dataset, request),
        "labels": list(dataset.labels),
        "request": _json_ready(request),
        "dataset": {
            "name": dataset.name,
            "fingerprint": dataset.fingerprint(),
            "rows": {
                "train": len(dataset.y_train),
                "validation": len(dataset.y_val),
                "test": len(dataset.y_test),
            },
        },
        "search": _json_ready(search),
        "selection": _json_ready(selection or {}),
        "metrics": metrics,
    }
    directory.mkdir(parents=True, exist_ok=True)
    arrays[_MEAN] = np.asarray(dataset.mean, dtype=np.float32)
    arrays[_SCALE] = np.asarray(dataset.scale, dtype=np.float32)
    np.savez(directory / WEIGHTS, **arrays)  # type: ignore[arg-type]  # numpy's kwargs stub
    path = directory / MANIFEST
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True, allow_nan=False))
    return path, metrics


# -- loading -----------------------------------------------------------------------


def manifest_path(path: Path | str) -> Path:
    """The manifest an artifact path names: the folder, its model.json or its model.npz."""
    p = Path(path)
    if p.is_dir():
        p = p / MANIFEST
    elif p.name == WEIGHTS:
        p = p.with_name(MANIFEST)
    if not p.is_file():
        raise ArtifactError(f"no model artifact at {path} (expected a folder with {MANIFEST})")
    return p


def load_model(path: Path | str) -> Predictor:
    """Load an artifact (its folder, model.json or model.npz); raises ArtifactError.

    One network loads as a `Model`, several as an `Ensemble`.
    """
    manifest_file = manifest_path(path)
    try:
        manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{manifest_file}: not a readable manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArtifactError(f"{manifest_file}: not a {FORMAT} manifest")
    version = manifest.get("format_version")
    if version not in READABLE_VERSIONS:
        raise ArtifactError(
            f"{manifest_file}: artifact format version {version!r} is not supported; "
            f"this thunderhelm reads versions {', '.join(map(str, READABLE_VERSIONS))}"
        )
    weights_file = manifest_file.with_name(WEIGHTS)
    try:
        with np.load(weights_file, allow_pickle=False) as archive:
            arrays = {name: np.asarray(archive[name], dtype=np.float32) for name in archive.files}
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{weights_file}: not a readable weights archive ({exc})") from None
    try:
        pre = manifest["preprocessing"]
        labels = tuple(str(label) for label in manifest["labels"])
        vocabulary, context = str(pre.get("vocabulary", "")), int(pre.get("context", 0))
        table = TableEncoding.from_dict(pre["table"]) if pre.get("table") else None
        target_mean = float(pre["target"]["mean"]) if pre.get("target") else 0.0
        if version == 1:
            described = [{"network": manifest["network"], "weight": 1.0}]
            prefixes = [""]
        else:
            described = list(manifest["members"])
            prefixes = [_member_prefix(i) for i in range(len(described))]
        specs = [parse_spec(json.dumps(m["network"])) for m in described]
        shares = [float(m["weight"]) for m in described]
    except (KeyError, TypeError, ValueError, SpecError) as exc:
        raise ArtifactError(f"{manifest_file}: malformed manifest ({exc})") from None
    if not specs:
        raise ArtifactError(f"{manifest_file}: no member networks")
    if not all(math.isfinite(w) and w >= 0 for w in shares) or not math.isclose(sum(shares), 1.0):
        raise ArtifactError(f"{manifest_file}: member weights must be >= 0 and sum to 1")
    mean, scale = arrays.get(_MEAN), arrays.get(_SCALE)
    nets: list[Model] = []
    for spec, prefix in zip(specs, prefixes, strict=True):
        tensors: dict[str, F32] = {}
        for name, shape in tensor_shapes(spec):
            stored = arrays.get(prefix + name)
            if stored is None or stored.shape != shape:
                got = None if stored is None else stored.shape
                raise ArtifactError(
                    f"{weights_file}: tensor {prefix + name} should be {shape}, got {got}"
                )
            tensors[name] = stored
        if (
            mean is None
            or scale is None
            or mean.shape != (spec.n_inputs,)
            or mean.shape != scale.shape
        ):
            raise ArtifactError(f"{weights_file}: preprocessing arrays missing or mis-shaped")
        if spec.regression != bool(pre.get("target")):
            raise ArtifactError(f"{manifest_file}: regression networks need the target's mean")
        if not spec.regression and len(labels) != spec.n_outputs:
            raise ArtifactError(
                f"{manifest_file}: {len(labels)} labels for {spec.n_outputs} outputs"
            )
        if vocabulary and len(vocabulary) * context != spec.n_inputs:
            raise ArtifactError(f"{manifest_file}: vocabulary and context do not match n_inputs")
        if table is not None and table.width != spec.n_inputs:
            raise ArtifactError(f"{manifest_file}: the table encoding does not match n_inputs")
        nets.append(
            Model(
                spec,
                tensors,
                mean,
                scale,
                labels,
                vocabulary,
                context,
                manifest,
                table,
                target_mean,
            )
        )
    if len(nets) == 1:
        return nets[0]
    try:
        return Ensemble(tuple(nets), tuple(shares), manifest)
    except ValueError as exc:
        raise ArtifactError(f"{manifest_file}: {exc}") from None
