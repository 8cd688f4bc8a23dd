"""Train one candidate network from its JSON spec; runs inside pool interpreters.

This module is imported inside isolated sub-interpreters, so it uses only the
standard library and the compiled kernel ``thunderhelm.ga.training._kernel``. It owns everything
about a training run except the arithmetic: strict validation of the network
spec (``docs/network-spec.md``), the deterministic initial weights and
per-epoch shuffles (shared with the numpy reference ``thunderhelm.ga.training.reference`` so both
start from identical weights and see batches in the same order), the epoch
loop with its deadline and cancel flag, and the JSON result.

Result of :func:`train_candidate` (a JSON object):

* ``status``: ``"ok"`` | ``"timeout"`` | ``"cancelled"`` | ``"error"`` | ``"nan"``
* ``val_accuracy``, ``val_loss``, ``val_balanced_accuracy``, ``val_macro_f1``:
  on the validation set after the last epoch (null unless status is
  ``"ok"``; ``thunderhelm.ga.core.measures`` defines them); a regression
  spec (``"task": "regression"``) reports ``val_loss`` (mean squared error
  on the standardised target), ``val_rmse``, ``val_mae`` (in the target's
  units: times ``target_scale``) and ``val_r2`` instead
* ``train_loss``: mean per-sample loss over the last completed epoch (null if
  none completed)
* ``params``: number of weights and biases (null if the spec is invalid)
* ``epochs_run``: completed epochs
* ``curve``: the learning curve, one ``{"epoch", "val_accuracy", "val_loss",
  "val_balanced_accuracy", "val_macro_f1", "at"}`` per completed epoch (``at``:
  the ``time.time()`` it was measured)
* ``pruned_at``: the rung epoch at which the spec's ``rungs`` stopped the
  training (its validation figures are then the rung's), or null
* ``started_at``, ``ended_at``: ``time.time()`` values
* ``error``: message, or null
* ``weights`` (only when asked): list of ``{"name", "shape", "data"}`` where
  ``data`` is base64 of little-endian float32, row-major; order: for each unit
  in spec order ``unit<id>.W`` (neurons x fan_in) then ``unit<id>.b``
  (neurons), then ``output.W`` (n_outputs x fan_in) and ``output.b``. The
  fan-in columns follow the order of the layer's input node ids.
"""

import base64
import json
import math
import random
import sys
import time
from array import array
from collections.abc import Buffer
from dataclasses import dataclass
from typing import Any

from thunderhelm.ga.core import measures

try:
    import thunderhelm.ga.training._kernel as _kernel
except ImportError:
    # The module's run-time search path missed libscipy_openblas (an editable
    # install built in an isolated environment, say): load it by its path.
    from thunderhelm.ga.training import blas

    blas.preload()
    import thunderhelm.ga.training._kernel as _kernel

ACTIVATIONS: tuple[str, ...] = ("relu", "elu", "gelu", "tanh", "sigmoid")
# Activations that get He initialisation; the rest (and the output) get Glorot.
_HE_ACTIVATIONS = frozenset({"relu", "elu", "gelu"})

# Sanity limits: a spec beyond them is rejected instead of exhausting memory.
MAX_INPUTS = 1_000_000
MAX_OUTPUTS = 100_000
MAX_UNITS = 1_024
MAX_NEURONS = 65_536
MAX_PARAMS = 50_000_000
MAX_EPOCHS = 10_000
MAX_BATCH = 65_536
MAX_LEARNING_RATE = 10.0
MAX_WEIGHT_DECAY = 10.0
MAX_SCRATCH_FLOATS = 1 << 28  # 1 GiB of per-batch activations and gradients
EVAL_ROWS = 256  # rows per evaluation chunk (the kernel's buffers hold max(batch, this))

_SPEC_KEYS = frozenset(
    {
        "n_inputs",
        "n_outputs",
        "units",
        "output_inputs",
        "learning_rate",
        "weight_decay",
        "epochs",
        "batch_size",
        "seed",
    }
)
# Optional: successive-halving rungs, each ``{"epoch": e, "min_val_accuracy": a}``
# or another bound of `measures.RUNG_BOUNDS` (``max_val_loss``, ...); a training
# whose validation figure at epoch ``e`` is on the wrong side of its bound stops
# there (docs/network-spec.md).
# ``class_weight``: "balanced" scales each training row's loss by
# n / (classes present x rows of its class), so every class weighs alike.
# ``task``: "regression" trains one linear output on float32 standardised
# targets; ``target_scale`` (the target's standard deviation) turns its
# validation errors back into the target's units.
# ``roc_auc``: true adds ``val_roc_auc`` to the validation passes of the rung
# epochs and the last one (a sort of the validation rows per class: asked
# for, not always paid for); a rung that bounds it asks for it too.
_OPTIONAL_KEYS = frozenset({"rungs", "class_weight", "task", "target_scale", "roc_auc"})
CLASS_WEIGHTS = ("balanced",)
_UNIT_KEYS = frozenset({"inputs", "neurons", "activation"})
_STATUS_NAMES = {
    _kernel.STATUS_OK: "ok",
    _kernel.STATUS_TIMEOUT: "timeout",
    _kernel.STATUS_CANCELLED: "cancelled",
    _kernel.STATUS_NAN: "nan",
}


class SpecError(ValueError):
    """The network spec breaks the contract of docs/network-spec.md."""


@dataclass(frozen=True)
class UnitSpec:
    """One hidden unit: reads ``inputs`` (node ids), ``neurons`` wide."""

    inputs: tuple[int, ...]
    neurons: int
    activation: str


@dataclass(frozen=True)
class NetworkSpec:
    """A validated network spec; node 0 is the input, node i is units[i-1]."""

    n_inputs: int
    n_outputs: int
    units: tuple[UnitSpec, ...]
    output_inputs: tuple[int, ...]
    learning_rate: float
    weight_decay: float
    epochs: int
    batch_size: int
    seed: int
    # (epoch, bound name, bound), by epoch; empty: every epoch is trained.
    rungs: tuple[tuple[int, str, float], ...] = ()
    class_weight: str | None = None  # None: every training row alike
    task: str = "classification"
    target_scale: float = 1.0  # regression: the target's std (standardised -> own units)
    roc_auc: bool = False  # classification: val_roc_auc on every validation pass

    @property
    def regression(self) -> bool:
        return self.task == "regression"

    def widths(self) -> tuple[int, ...]:
        """Width of every node, by node id."""
        return (self.n_inputs, *(u.neurons for u in self.units))

    def layers(self) -> list[tuple[str, tuple[int, ...], int, str | None]]:
        """``(name, input ids, fan_out, activation)`` per layer; the output layer last."""
        out: list[tuple[str, tuple[int, ...], int, str | None]] = [
            (f"unit{i}", u.inputs, u.neurons, u.activation) for i, u in enumerate(self.units, 1)
        ]
        out.append(("output", self.output_inputs, self.n_outputs, None))
        return out


def _int(obj: dict[str, Any], key: str, lo: int, hi: int, where: str) -> int:
    value = obj.get(key)
    # bool is an int subclass; true/false is never a valid size.
    if type(value) is not int or not lo <= value <= hi:
        raise SpecError(f"{where}{key} must be an integer in {lo}..{hi}, got {value!r}")
    return value


def _float(obj: dict[str, Any], key: str, lo: float, hi: float, lo_open: bool) -> float:
    raw = obj.get(key)
    if not isinstance(raw, int | float) or isinstance(raw, bool) or not math.isfinite(raw):
        raise SpecError(f"{key} must be a finite number, got {raw!r}")
    value = float(raw)
    if value > hi or value < lo or (lo_open and value == lo):
        bound = "(" if lo_open else "["
        raise SpecError(f"{key} must be in {bound}{lo}, {hi}], got {value!r}")
    return value


def _ids(value: object, below: int, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not value:
        raise SpecError(f"{where} must be a non-empty list of node ids")
    if any(type(i) is not int for i in value):
        raise SpecError(f"{where} must hold integer node ids, got {value!r}")
    ids = tuple(value)
    if list(ids) != sorted(set(ids)):
        raise SpecError(f"{where} must be distinct and sorted, got {value!r}")
    if ids[0] < 0 or ids[-1] >= below:
        raise SpecError(f"{where} may only read nodes 0..{below - 1}, got {value!r}")
    return ids


def _rungs(value: object, epochs: int, task: str) -> tuple[tuple[int, str, float], ...]:
    if not isinstance(value, list):
        raise SpecError("rungs must be a list")
    rungs: list[tuple[int, str, float]] = []
    for index, rung in enumerate(value):
        where = f"rungs[{index}]."
        if not isinstance(rung, dict) or len(rung) != 2 or "epoch" not in rung:
            raise SpecError(f"rungs[{index}] must be an object: epoch and one bound")
        (bound,) = set(rung) - {"epoch"}
        if bound not in measures.RUNG_BOUNDS:
            raise SpecError(
                f"{where}bound must be one of {sorted(measures.RUNG_BOUNDS)}, got {bound!r}"
            )
        if measures.bounded_measure(bound) not in measures.TASK_MEASURES[task]:
            raise SpecError(f"{where}bound {bound!r} does not apply to a {task} network")
        epoch = _int(rung, "epoch", 1, max(1, epochs - 1), where)
        limit = _float(rung, bound, -1e30, 1e30, False)
        rungs.append((epoch, bound, limit))
    epochs_named = [r[0] for r in rungs]
    if epochs_named != sorted(set(epochs_named)):
        raise SpecError("rungs must be in increasing epoch order, one per epoch")
    return tuple(rungs)


def _class_weight(value: object) -> str | None:
    if value is not None and value not in CLASS_WEIGHTS:
        raise SpecError(f"class_weight must be one of {list(CLASS_WEIGHTS)} or null, got {value!r}")
    return None if value is None else str(value)


def _roc_auc_asked(raw: dict[str, Any], task: str) -> bool:
    """Whether validation passes measure ROC-AUC: the spec asks, or a rung bounds it."""
    asked = raw.get("roc_auc", False)
    if not isinstance(asked, bool):
        raise SpecError(f"roc_auc must be true or false, got {asked!r}")
    if asked and task != "classification":
        raise SpecError("roc_auc applies to classification only")
    bound = measures.rung_bound("val_roc_auc")
    rungs = raw.get("rungs") or ()
    return asked or any(isinstance(rung, dict) and bound in rung for rung in rungs)


def _task(raw: dict[str, Any], n_outputs: int) -> tuple[str, float]:
    """The spec's task and target scale, checked against its outputs and class weights."""
    task = raw.get("task", "classification")
    if task not in measures.TASKS:
        raise SpecError(f"task must be one of {list(measures.TASKS)}, got {task!r}")
    if task == "classification":
        if "target_scale" in raw:
            raise SpecError("target_scale applies to regression only")
        return task, 1.0
    if n_outputs != 1:
        raise SpecError(f"a regression network has n_outputs 1, got {n_outputs}")
    if raw.get("class_weight") is not None:
        raise SpecError("class_weight applies to classification only")
    scale = _float(raw, "target_scale", 0.0, 1e30, True) if "target_scale" in raw else 1.0
    return task, scale


def regression_figures(
    measured: tuple[float, float], n_val: int, total_squares: float, scale: float
) -> dict[str, Any]:
    """Validation measures from the squared and absolute error sums (standardised units).

    RMSE and MAE are scaled back to the target's units; R^2 is scale-free:
    1 - SSE / (sum of squares of the validation targets about their mean).
    """
    sse, sae = measured
    r2 = 1.0 - sse / total_squares if total_squares > 0 else None
    return {
        "val_loss": _finite(sse / n_val),
        "val_rmse": _finite(math.sqrt(sse / n_val) * scale),
        "val_mae": _finite(sae / n_val * scale),
        "val_r2": _finite(r2) if r2 is not None else None,
    }


def total_squares(y: Buffer) -> float:
    """Sum of squares of float32 targets about their mean (R^2's denominator)."""
    values = memoryview(y).cast("B").cast("f")
    mean = math.fsum(values) / len(values)
    return math.fsum((v - mean) * (v - mean) for v in values)


def balanced_class_weight(y: Buffer, n_outputs: int) -> "array[float]":
    """Per class, n / (classes present x rows of the class): float32 (1.0 for an absent class)."""
    labels = memoryview(y).cast("B").cast("i")
    counts = [0] * n_outputs
    for label in labels:
        counts[label] += 1
    present = sum(1 for c in counts if c)
    return array("f", [len(labels) / (present * c) if c else 1.0 for c in counts])


def _below_rung(rung: tuple[int, str, float], figures: dict[str, Any]) -> bool:
    """Whether a training measured at a rung's epoch (`figures`) stops there."""
    _, bound, limit = rung
    measure = measures.bounded_measure(bound)
    figure = figures.get(measure)
    if figure is None:
        return True
    return bool(figure < limit if measures.higher_is_better(measure) else figure > limit)


def _figures(
    measured: tuple[float, int], per_class: memoryview, n_val: int, n_outputs: int
) -> dict[str, Any]:
    """The validation measures of one evaluation: its loss sum, rows right, per-class counts."""
    loss_sum, correct = measured
    counts = per_class.tolist()
    balanced, macro_f1 = measures.class_figures(
        counts[:n_outputs], counts[n_outputs : 2 * n_outputs], counts[2 * n_outputs :]
    )
    return {
        "val_accuracy": correct / n_val,
        "val_loss": _finite(loss_sum / n_val),
        "val_balanced_accuracy": balanced,
        "val_macro_f1": macro_f1,
    }


def validation_roc_auc(net: Any, x: Buffer, y: Buffer, n: int, width: int) -> float | None:
    """One-vs-rest ROC-AUC of the net's class probabilities on the first n rows of `width`.

    As `measures.one_vs_rest_auc` defines it (scikit-learn's). The logits
    come from the kernel a chunk of `max_rows` at a time; the softmax and the
    ranking are plain Python, as numpy is not available here.
    """
    rows = memoryview(x).cast("B")
    logits: list[float] = []
    start = 0
    while start < n:
        chunk = min(net.max_rows, n - start)
        part = rows[start * width * 4 : (start + chunk) * width * 4]
        logits.extend(memoryview(net.forward_logits(part, chunk)).cast("f"))
        start += chunk
    classes = len(logits) // n if n else 0
    probabilities: list[list[float]] = [[] for _ in range(classes)]
    for i in range(n):
        row = logits[i * classes : (i + 1) * classes]
        top = max(row)
        exps = [math.exp(v - top) for v in row]
        total = sum(exps)
        for k in range(classes):
            probabilities[k].append(exps[k] / total)
    labels = list(memoryview(y).cast("B").cast("i")[:n])
    return measures.one_vs_rest_auc(probabilities, labels)


def parse_spec(network_json: str) -> NetworkSpec:
    """Parse and strictly validate a network spec; raises SpecError."""
    try:
        raw = json.loads(network_json)
    except (TypeError, ValueError) as exc:
        raise SpecError(f"network spec is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise SpecError("network spec must be a JSON object")
    missing = sorted(_SPEC_KEYS - raw.keys())
    unknown = sorted(raw.keys() - _SPEC_KEYS - _OPTIONAL_KEYS)
    if missing or unknown:
        raise SpecError(f"network spec: missing keys {missing}, unknown keys {unknown}")
    n_inputs = _int(raw, "n_inputs", 1, MAX_INPUTS, "")
    n_outputs = _int(raw, "n_outputs", 1, MAX_OUTPUTS, "")
    task, target_scale = _task(raw, n_outputs)
    if not isinstance(raw["units"], list) or len(raw["units"]) > MAX_UNITS:
        raise SpecError(f"units must be a list of at most {MAX_UNITS} units")
    units: list[UnitSpec] = []
    for index, unit in enumerate(raw["units"]):
        node = index + 1
        where = f"units[{index}]."
        if not isinstance(unit, dict) or set(unit) != _UNIT_KEYS:
            raise SpecError(f"units[{index}] must be an object with keys {sorted(_UNIT_KEYS)}")
        activation = unit["activation"]
        if activation not in ACTIVATIONS:
            raise SpecError(f"{where}activation must be one of {ACTIVATIONS}, got {activation!r}")
        units.append(
            UnitSpec(
                inputs=_ids(unit["inputs"], node, f"{where}inputs"),
                neurons=_int(unit, "neurons", 1, MAX_NEURONS, where),
                activation=activation,
            )
        )
    spec = NetworkSpec(
        n_inputs=n_inputs,
        n_outputs=n_outputs,
        units=tuple(units),
        output_inputs=_ids(raw["output_inputs"], len(units) + 1, "output_inputs"),
        learning_rate=_float(raw, "learning_rate", 0.0, MAX_LEARNING_RATE, True),
        weight_decay=_float(raw, "weight_decay", 0.0, MAX_WEIGHT_DECAY, False),
        epochs=_int(raw, "epochs", 1, MAX_EPOCHS, ""),
        batch_size=_int(raw, "batch_size", 1, MAX_BATCH, ""),
        seed=_int(raw, "seed", 0, 2**63 - 1, ""),
        rungs=_rungs(raw.get("rungs", []), _int(raw, "epochs", 1, MAX_EPOCHS, ""), task),
        class_weight=_class_weight(raw.get("class_weight")),
        task=task,
        target_scale=target_scale,
        roc_auc=_roc_auc_asked(raw, task),
    )
    if param_count(spec) > MAX_PARAMS:
        raise SpecError(f"network has {param_count(spec)} parameters, limit {MAX_PARAMS}")
    return spec


def tensor_shapes(spec: NetworkSpec) -> list[tuple[str, tuple[int, ...]]]:
    """Names and shapes of the parameter tensors in flat-vector (and export) order."""
    widths = spec.widths()
    shapes: list[tuple[str, tuple[int, ...]]] = []
    for name, inputs, fan_out, _ in spec.layers():
        fan_in = sum(widths[i] for i in inputs)
        shapes += [(f"{name}.W", (fan_out, fan_in)), (f"{name}.b", (fan_out,))]
    return shapes


def param_count(spec: NetworkSpec) -> int:
    """Total number of weights and biases."""
    return sum(math.prod(shape) for _, shape in tensor_shapes(spec))


def scratch_floats(spec: NetworkSpec, rows: int) -> int:
    """Floats of per-batch buffers the kernel allocates for ``rows`` rows."""
    widths = spec.widths()
    per_row = 0
    for _, inputs, fan_out, _ in spec.layers():
        per_row += 2 * sum(widths[i] for i in inputs) + 3 * fan_out + 1
    return rows * (per_row + 2 * sum(widths))


def make_rng(seed: int) -> random.Random:
    """The single random stream of a run: initial weights first, then shuffles."""
    return random.Random(seed)


def init_params(spec: NetworkSpec, rng: random.Random) -> array[float]:
    """Flat float32 initial parameters, drawn from ``rng`` in tensor order.

    Weights are uniform in +-sqrt(6 / fan_in) (He) for relu/elu/gelu units and
    +-sqrt(6 / (fan_in + fan_out)) (Glorot) for tanh/sigmoid units and the
    output layer; biases start at zero.
    """
    widths = spec.widths()
    flat = array("f")
    for _, inputs, fan_out, activation in spec.layers():
        fan_in = sum(widths[i] for i in inputs)
        if activation in _HE_ACTIVATIONS:
            limit = math.sqrt(6.0 / fan_in)
        else:
            limit = math.sqrt(6.0 / (fan_in + fan_out))
        draw = rng.random
        flat.extend([(2.0 * draw() - 1.0) * limit for _ in range(fan_out * fan_in)])
        flat.frombytes(bytes(4 * fan_out))
    return flat


def epoch_order(rng: random.Random, n: int) -> list[int]:
    """The row order of the next epoch (a fresh shuffle of 0..n-1)."""
    order = list(range(n))
    rng.shuffle(order)
    return order


def _rows(buf: Buffer, row_bytes: int, name: str) -> int:
    nbytes = memoryview(buf).nbytes
    if nbytes == 0 or nbytes % row_bytes:
        raise ValueError(f"{name} holds {nbytes} bytes, not a positive multiple of {row_bytes}")
    return nbytes // row_bytes


def _export(spec: NetworkSpec, flat: bytes) -> list[dict[str, Any]]:
    values = array("f", flat)
    if sys.byteorder != "little":
        values.byteswap()
    raw = values.tobytes()
    out: list[dict[str, Any]] = []
    offset = 0
    for name, shape in tensor_shapes(spec):
        size = 4 * math.prod(shape)
        data = base64.b64encode(raw[offset : offset + size]).decode("ascii")
        out.append({"name": name, "shape": list(shape), "data": data})
        offset += size
    return out


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def train_candidate(
    network_json: str,
    x_train: Buffer,
    y_train: Buffer,
    x_val: Buffer,
    y_val: Buffer,
    n_features: int,
    deadline: float,
    cancel: Buffer | None = None,
    export_weights: bool = False,
) -> str:
    """Train the network on the given data and return the result as JSON.

    ``x_*`` are C-contiguous row-major float32 buffers (``n x n_features``),
    ``y_*`` int32 labels (float32 standardised targets for a regression
    spec); raw byte views of them are accepted. ``deadline`` is
    a ``time.time()`` value and ``cancel`` an optional shared buffer whose first
    byte, once nonzero, stops training; both are checked between batches.
    Never raises: every failure becomes ``status: "error"``.
    """
    result: dict[str, Any] = {
        "status": "error",
        "val_accuracy": None,
        "val_loss": None,
        "val_balanced_accuracy": None,
        "val_macro_f1": None,
        "train_loss": None,
        "params": None,
        "epochs_run": 0,
        "started_at": time.time(),
        "ended_at": None,
        "error": None,
        "curve": [],
        "pruned_at": None,
    }
    try:
        spec = parse_spec(network_json)
        result["params"] = param_count(spec)
        if type(n_features) is not int or n_features != spec.n_inputs:
            raise SpecError(f"n_features {n_features!r} does not match n_inputs {spec.n_inputs}")
        n_train = _rows(x_train, 4 * n_features, "x_train")
        n_val = _rows(x_val, 4 * n_features, "x_val")
        if _rows(y_train, 4, "y_train") != n_train or _rows(y_val, 4, "y_val") != n_val:
            raise ValueError("label count does not match the number of rows")
        rows = max(spec.batch_size, EVAL_ROWS)
        if scratch_floats(spec, rows) > MAX_SCRATCH_FLOATS:
            raise SpecError("network is too large for its batch size (activation memory)")
        codes = {name: code for code, name in enumerate(ACTIVATIONS)}
        net = _kernel.Net(
            spec.n_inputs,
            spec.n_outputs,
            tuple(u.inputs for u in spec.units),
            tuple(u.neurons for u in spec.units),
            tuple(codes[u.activation] for u in spec.units),
            spec.output_inputs,
            rows,
            regression=spec.regression,
        )
        if spec.regression:
            # A regression result holds its own figures, not the classification ones.
            for measure in measures.TASK_MEASURES["classification"]:
                result.pop(measure, None)
            result.update(dict.fromkeys(measures.TASK_MEASURES["regression"]))
        rng = make_rng(spec.seed)
        net.set_params(init_params(spec, rng))
        status = _kernel.STATUS_OK
        rungs = {rung[0]: rung for rung in spec.rungs}
        class_weight = (
            None if spec.class_weight is None else balanced_class_weight(y_train, spec.n_outputs)
        )
        figures: dict[str, Any] | None = None  # the validation measures after the last epoch
        counts = bytearray(3 * spec.n_outputs * 8)  # per class: predicted, hits, rows
        per_class = memoryview(counts).cast("q")
        squares = total_squares(y_val) if spec.regression else 0.0
        for epoch in range(1, spec.epochs + 1):
            order = array("i", epoch_order(rng, n_train))
            status, loss_sum, done = net.train_epoch(
                x_train,
                y_train,
                order,
                n_train,
                spec.batch_size,
                spec.learning_rate,
                spec.weight_decay,
                float(deadline),
                cancel,
                class_weight,
            )
            if status != _kernel.STATUS_OK:
                break
            result["epochs_run"] += 1
            result["train_loss"] = _finite(loss_sum / done)
            # One validation pass per epoch: the learning curve, and the rung's
            # decision; the last one is the training's own validation figure.
            if spec.regression:
                figures = regression_figures(
                    net.evaluate(x_val, y_val, n_val), n_val, squares, spec.target_scale
                )
            else:
                figures = _figures(net.evaluate(x_val, y_val, n_val, counts), per_class, n_val,
                                   spec.n_outputs)  # fmt: skip
                if spec.roc_auc and (epoch in rungs or epoch == spec.epochs):
                    # Where a decision reads it: a rung, and the training's own figure.
                    auc = validation_roc_auc(net, x_val, y_val, n_val, n_features)
                    figures["val_roc_auc"] = auc
            point = {k: None if v is None else round(v, 6) for k, v in figures.items()}
            result["curve"].append({"epoch": epoch, **point, "at": time.time()})
            if epoch in rungs and _below_rung(rungs[epoch], figures):
                result["pruned_at"] = epoch
                break
        if status == _kernel.STATUS_OK:
            result.update(figures or {"val_accuracy": 0.0, "val_loss": 0.0})
            if result["val_loss"] is None:
                status = _kernel.STATUS_NAN
        result["status"] = _STATUS_NAMES[status]
        if status == _kernel.STATUS_NAN:
            for measure in measures.TASK_MEASURES[spec.task]:
                result[measure] = None
        if export_weights:
            result["weights"] = _export(spec, net.get_params())
    except Exception as exc:  # the interpreter must survive any bad input
        result["status"] = "error"
        result["error"] = f"{type(exc).__name__}: {exc}"
    result["ended_at"] = time.time()
    return json.dumps(result, allow_nan=False)
