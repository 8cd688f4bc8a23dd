"""The model artifact of a finished run: writing it, loading it, predicting with it.

An artifact is a folder holding `model.json` (the manifest: format version,
network spec, preprocessing, class labels, the request, the dataset's
fingerprint, metrics) and `model.npz` (the weights and the feature
standardisation, float32). `docs/artifact.md` is the format's reference.
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
from typing import Any

import numpy as np
import numpy.typing as npt

from thunderhelm.ga.training.candidate import NetworkSpec, SpecError, parse_spec, tensor_shapes
from thunderhelm.ga.training.datasets import PreparedDataset
from thunderhelm.ga.training.reference import ReferenceNet

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "ArtifactError",
    "Model",
    "decode_weights",
    "load_model",
    "write_artifact",
]

FORMAT = "thunderhelm.model"
FORMAT_VERSION = 1
MANIFEST = "model.json"
WEIGHTS = "model.npz"
_MEAN, _SCALE = "preprocess.mean", "preprocess.scale"
ENCODING_FEATURES = "features"
ENCODING_CHARS = "one-hot-chars"

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


@dataclass(frozen=True, eq=False)
class Model:
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
    _net: ReferenceNet = field(init=False, repr=False)

    def __post_init__(self) -> None:
        flat = np.concatenate([self.tensors[n].reshape(-1) for n, _ in tensor_shapes(self.spec)])
        object.__setattr__(self, "_net", ReferenceNet(self.spec, flat, np.float32))

    @property
    def n_features(self) -> int:
        return self.spec.n_inputs

    @property
    def is_text(self) -> bool:
        return bool(self.vocabulary) and self.context > 0

    def standardize(self, x: npt.ArrayLike) -> F32:
        """Raw rows to the network's inputs: (raw - mean) / scale, float32."""
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

    def predict_proba(self, x: npt.ArrayLike) -> F32:
        """Class probabilities, one row per input row (softmax of the logits)."""
        logits = self.logits(x).astype(np.float64)
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        out: F32 = (shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float32)
        return out

    def predict(self, x: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """The most probable class index per row (`labels[i]` names class i)."""
        return np.asarray(self.logits(x).argmax(axis=1), dtype=np.int64)

    def predict_labels(self, x: npt.ArrayLike) -> list[str]:
        return [self.labels[i] for i in self.predict(x)]

    def evaluate(
        self, x: npt.ArrayLike, y: npt.ArrayLike, *, standardized: bool = False
    ) -> dict[str, float | int]:
        """Accuracy and mean cross-entropy on raw rows `x` with class indices `y`.

        `standardized`: `x` already went through this model's preprocessing.
        """
        labels = np.asarray(y, dtype=np.intp)
        inputs = np.asarray(x, dtype=np.float32) if standardized else self.standardize(x)
        logits = np.asarray(self._net.logits(inputs), dtype=np.float64)
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_total = np.log(np.exp(shifted).sum(axis=1))
        loss = float(np.mean(log_total - shifted[np.arange(len(labels)), labels]))
        accuracy = float(np.mean(logits.argmax(axis=1) == labels))
        return {"accuracy": accuracy, "loss": loss, "rows": len(labels)}

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


# -- writing -----------------------------------------------------------------------


def _json_ready(value: Any) -> Any:
    return json.loads(json.dumps(value, allow_nan=False))


def write_artifact(
    directory: Path,
    *,
    network: Mapping[str, Any],
    weights: Sequence[Mapping[str, Any]],
    dataset: PreparedDataset,
    request: Mapping[str, Any],
    training: Mapping[str, Any],
    search: Mapping[str, Any],
) -> tuple[Path, dict[str, Any]]:
    """Write a complete artifact into `directory`; return the manifest's path and metrics.

    `weights` is the training result's `weights` list; `training` the rest of
    that result (epochs, losses, as the kernel measured them); `search` what
    the search knew of the winner (genome, wiring, fitness, generation).
    Validation and test metrics are measured here, by the saved model itself.
    """
    spec = parse_spec(json.dumps(network))
    tensors = decode_weights(weights)
    text = bool(dataset.vocabulary) and dataset.context > 0
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "network": dict(network),
        "tensors": [{"name": n, "shape": list(s)} for n, s in tensor_shapes(spec)],
        "preprocessing": {
            "encoding": ENCODING_CHARS if text else ENCODING_FEATURES,
            "standardize": "x = (raw - mean) / scale, float32; mean and scale in model.npz",
            "n_features": dataset.n_features,
            "vocabulary": dataset.vocabulary,
            "context": dataset.context,
            "lowercase": bool(request.get("dataset", {}).get("lowercase", True)) and text,
        },
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
        "training": _json_ready({k: v for k, v in training.items() if k != "weights"}),
    }
    model = Model(
        spec,
        tensors,
        np.asarray(dataset.mean, dtype=np.float32),
        np.asarray(dataset.scale, dtype=np.float32),
        dataset.labels,
        dataset.vocabulary,
        dataset.context,
        manifest,
    )
    # The splits hold rows already standardised with this very mean and scale.
    metrics = {
        "validation": model.evaluate(dataset.x_val, dataset.y_val, standardized=True),
        "test": model.evaluate(dataset.x_test, dataset.y_test, standardized=True),
    }
    manifest["metrics"] = metrics
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {**tensors, _MEAN: model.mean, _SCALE: model.scale}
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


def load_model(path: Path | str) -> Model:
    """Load an artifact (its folder, model.json or model.npz); raises ArtifactError."""
    manifest_file = manifest_path(path)
    try:
        manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{manifest_file}: not a readable manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArtifactError(f"{manifest_file}: not a {FORMAT} manifest")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ArtifactError(
            f"{manifest_file}: artifact format version {version!r} is not supported; "
            f"this thunderhelm reads version {FORMAT_VERSION}"
        )
    try:
        spec = parse_spec(json.dumps(manifest["network"]))
        pre = manifest["preprocessing"]
        labels = tuple(str(label) for label in manifest["labels"])
        vocabulary, context = str(pre.get("vocabulary", "")), int(pre.get("context", 0))
    except (KeyError, TypeError, ValueError, SpecError) as exc:
        raise ArtifactError(f"{manifest_file}: malformed manifest ({exc})") from None
    weights_file = manifest_file.with_name(WEIGHTS)
    try:
        with np.load(weights_file, allow_pickle=False) as archive:
            arrays = {name: np.asarray(archive[name], dtype=np.float32) for name in archive.files}
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{weights_file}: not a readable weights archive ({exc})") from None
    tensors: dict[str, F32] = {}
    for name, shape in tensor_shapes(spec):
        if name not in arrays or arrays[name].shape != shape:
            got = None if name not in arrays else arrays[name].shape
            raise ArtifactError(f"{weights_file}: tensor {name} should be {shape}, got {got}")
        tensors[name] = arrays[name]
    mean, scale = arrays.get(_MEAN), arrays.get(_SCALE)
    if mean is None or scale is None or mean.shape != (spec.n_inputs,) or mean.shape != scale.shape:
        raise ArtifactError(f"{weights_file}: preprocessing arrays missing or mis-shaped")
    if len(labels) != spec.n_outputs:
        raise ArtifactError(f"{manifest_file}: {len(labels)} labels for {spec.n_outputs} outputs")
    if vocabulary and len(vocabulary) * context != spec.n_inputs:
        raise ArtifactError(f"{manifest_file}: vocabulary and context do not match n_inputs")
    return Model(spec, tensors, mean, scale, labels, vocabulary, context, manifest)
