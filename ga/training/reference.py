"""numpy twin of the training kernel, for the main interpreter only.

The compiled kernel (``thunderhelm.ga.training._kernel``) is what trains candidates inside the
pool; this module implements the same network, loss, AdamW update, initial
weights and shuffle order in plain numpy so that the kernel can be checked
against it (forward values, gradients, whole training runs) and benchmarked
against it. It takes its spec parsing, initial weights and shuffles from
``thunderhelm.ga.training.candidate``, so both start from bit-identical parameters. ``dtype`` can be
float64 for finite-difference gradient checks.
"""

import math
import time
from typing import Any

import numpy as np
import numpy.typing as npt

from thunderhelm.ga.training.candidate import (
    NetworkSpec,
    balanced_class_weight,
    epoch_order,
    init_params,
    make_rng,
    parse_spec,
    tensor_shapes,
)

Array = npt.NDArray[np.floating[Any]]

LN_EPS = 1e-5
GELU_K = math.sqrt(2.0 / math.pi)
GELU_C = 0.044715
ADAM_B1 = 0.9
ADAM_B2 = 0.999
ADAM_EPS = 1e-8


def _activate(name: str, a: Array) -> Array:
    out: Array = _activate_any(name, a)
    return out


def _activate_any(name: str, a: Array) -> Any:
    if name == "relu":
        return np.maximum(a, 0)
    if name == "elu":
        return np.where(a > 0, a, np.expm1(np.minimum(a, 0)))
    if name == "gelu":
        return 0.5 * a * (1 + np.tanh(GELU_K * (a + GELU_C * a * a * a)))
    if name == "tanh":
        return np.tanh(a)
    # Stable sigmoid: exp of a non-positive argument only.
    e = np.exp(-np.abs(a))
    return np.where(a >= 0, 1 / (1 + e), e / (1 + e))


def _activation_grad(name: str, a: Array, h: Array) -> Array:
    """d activation / d a, given the pre-activation a and the output h."""
    out: Array = _activation_grad_any(name, a, h)
    return out


def _activation_grad_any(name: str, a: Array, h: Array) -> Any:
    if name == "relu":
        return (a > 0).astype(a.dtype)
    if name == "elu":
        return np.where(a > 0, 1, h + 1).astype(a.dtype)
    if name == "gelu":
        t = np.tanh(GELU_K * (a + GELU_C * a * a * a))
        return 0.5 * (1 + t) + 0.5 * a * (1 - t * t) * GELU_K * (1 + 3 * GELU_C * a * a)
    if name == "tanh":
        return 1 - h * h
    return h * (1 - h)


class ReferenceNet:
    """Parameters, optimiser state and forward/backward of one network in numpy."""

    def __init__(self, spec: NetworkSpec, params: npt.ArrayLike, dtype: type = np.float32):
        self.spec = spec
        self.dtype = np.dtype(dtype)
        self.params: Array = np.array(params, dtype=self.dtype).reshape(-1)
        self.m = np.zeros_like(self.params)
        self.v = np.zeros_like(self.params)
        self.step_count = 0
        self._layers = spec.layers()
        self._slices: list[tuple[slice, tuple[int, ...]]] = []
        offset = 0
        for _, shape in tensor_shapes(spec):
            size = math.prod(shape)
            self._slices.append((slice(offset, offset + size), shape))
            offset += size
        if offset != self.params.size:
            raise ValueError(f"expected {offset} parameters, got {self.params.size}")
        # Decoupled weight decay touches weights (even tensors), never biases.
        self._is_weight = np.zeros(offset, dtype=bool)
        for sl, _ in self._slices[0::2]:
            self._is_weight[sl] = True

    def _tensor(self, flat: Array, index: int) -> Array:
        sl, shape = self._slices[index]
        return flat[sl].reshape(shape)

    def _forward(self, x: npt.ArrayLike) -> tuple[Array, list[Any]]:
        nodes: list[Array] = [np.asarray(x, dtype=self.dtype)]
        cache: list[Any] = []
        for index, (_, inputs, _, activation) in enumerate(self._layers):
            z = np.concatenate([nodes[i] for i in inputs], axis=1)
            mean = z.mean(axis=1, keepdims=True)
            centred = z - mean
            inv = 1 / np.sqrt((centred * centred).mean(axis=1, keepdims=True) + LN_EPS)
            zn = centred * inv
            w = self._tensor(self.params, 2 * index)
            a = zn @ w.T + self._tensor(self.params, 2 * index + 1)
            cache.append((zn, inv, a))
            if activation is not None:
                nodes.append(_activate(activation, a))
        cache.append(nodes)
        return a, cache

    def logits(self, x: npt.ArrayLike) -> Array:
        """Output logits for the rows of x."""
        return self._forward(x)[0]

    def loss_and_grads(
        self, x: npt.ArrayLike, y: npt.ArrayLike, class_weight: npt.ArrayLike | None = None
    ) -> tuple[float, Array]:
        """Mean cross-entropy over the rows (each scaled by its class's weight) and its gradient."""
        labels = np.asarray(y, dtype=np.intp)
        logits, cache = self._forward(x)
        nb = logits.shape[0]
        shifted = logits - logits.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        total = exp.sum(axis=1, keepdims=True)
        rows = np.arange(nb)
        w = (
            np.ones(nb, dtype=logits.dtype)
            if class_weight is None
            else np.asarray(class_weight, dtype=logits.dtype)[labels]
        )
        loss = float(np.mean(w * (np.log(total[:, 0]) - shifted[rows, labels])))
        da = exp / total * w[:, None]
        da[rows, labels] -= w
        da /= nb
        return loss, self._backprop(da, cache)

    def squared_error_and_grads(self, x: npt.ArrayLike, t: npt.ArrayLike) -> tuple[float, Array]:
        """Regression head: mean squared error (not halved) of the one output, and its gradient."""
        out, cache = self._forward(x)
        diff = out[:, 0] - np.asarray(t, dtype=out.dtype)
        loss = float(np.mean(diff * diff))
        da = (2 * diff / len(diff))[:, None].astype(out.dtype)
        return loss, self._backprop(da, cache)

    def _backprop(self, da: Array, cache: list[Any]) -> Array:
        """Gradients of the parameters given dLoss/d(output) for the rows of `cache`."""
        nodes: list[Array] = cache[-1]
        grads = np.zeros_like(self.params)
        widths = self.spec.widths()
        dnode = [np.zeros_like(h) for h in nodes]
        for index in range(len(self._layers) - 1, -1, -1):
            _, inputs, _, activation = self._layers[index]
            zn, inv, a = cache[index]
            if activation is not None:
                da = dnode[index + 1] * _activation_grad(activation, a, nodes[index + 1])
            self._tensor(grads, 2 * index)[...] = da.T @ zn
            self._tensor(grads, 2 * index + 1)[...] = da.sum(axis=0)
            if inputs == (0,):
                continue
            dzn = da @ self._tensor(self.params, 2 * index)
            dz = inv * (
                dzn - dzn.mean(axis=1, keepdims=True) - zn * (dzn * zn).mean(axis=1, keepdims=True)
            )
            col = 0
            for i in inputs:
                if i:
                    dnode[i] += dz[:, col : col + widths[i]]
                col += widths[i]
        return grads

    def adamw_step(self, grads: Array, lr: float, wd: float) -> None:
        """One AdamW update (decay first, then the bias-corrected Adam step)."""
        self.step_count += 1
        bc1 = 1 - ADAM_B1**self.step_count
        bc2 = 1 - ADAM_B2**self.step_count
        p = self.params
        p[self._is_weight] *= self.dtype.type(1 - lr * wd)
        self.m *= ADAM_B1
        self.m += (1 - ADAM_B1) * grads
        self.v *= ADAM_B2
        self.v += (1 - ADAM_B2) * grads * grads
        p -= lr * (self.m / bc1) / (np.sqrt(self.v / bc2) + ADAM_EPS)

    def evaluate(self, x: npt.ArrayLike, y: npt.ArrayLike) -> tuple[float, int]:
        """``(loss_sum, correct)`` over all rows."""
        logits = self.logits(x)
        labels = np.asarray(y, dtype=np.intp)
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_total = np.log(np.exp(shifted).sum(axis=1))
        loss_sum = float(np.sum(log_total - shifted[np.arange(len(labels)), labels]))
        return loss_sum, int(np.sum(logits.argmax(axis=1) == labels))


def initial_net(network_json: str, dtype: type = np.float32) -> tuple[ReferenceNet, Any]:
    """The reference net with the kernel's initial weights, and the run's random stream."""
    spec = parse_spec(network_json)
    rng = make_rng(spec.seed)
    flat = np.frombuffer(init_params(spec, rng).tobytes(), dtype=np.float32)
    return ReferenceNet(spec, flat, dtype), rng


def train_reference(
    network_json: str,
    x_train: npt.ArrayLike,
    y_train: npt.ArrayLike,
    x_val: npt.ArrayLike,
    y_val: npt.ArrayLike,
    deadline: float = math.inf,
) -> dict[str, Any]:
    """Train like ``candidate.train_candidate`` (same batches) and return its fields."""
    started = time.time()
    net, rng = initial_net(network_json)
    spec = net.spec
    xt = np.asarray(x_train, dtype=np.float32)
    yt = np.asarray(y_train, dtype=np.int32)
    n = len(yt)
    weights = None if spec.class_weight is None else balanced_class_weight(yt, spec.n_outputs)
    status, epochs_run, train_loss = "ok", 0, None
    for _ in range(spec.epochs):
        order = np.asarray(epoch_order(rng, n), dtype=np.intp)
        loss_sum = 0.0
        for start in range(0, n, spec.batch_size):
            if time.time() >= deadline:
                status = "timeout"
                break
            idx = order[start : start + spec.batch_size]
            loss, grads = net.loss_and_grads(xt[idx], yt[idx], weights)
            if not math.isfinite(loss):
                status = "nan"
                break
            net.adamw_step(grads, spec.learning_rate, spec.weight_decay)
            loss_sum += loss * len(idx)
        if status != "ok":
            break
        epochs_run += 1
        train_loss = loss_sum / n
    result: dict[str, Any] = {
        "status": status,
        "val_accuracy": None,
        "val_loss": None,
        "train_loss": train_loss,
        "params": net.params.size,
        "epochs_run": epochs_run,
        "started_at": started,
        "error": None,
    }
    if status == "ok":
        loss_sum, correct = net.evaluate(x_val, y_val)
        result["val_loss"] = loss_sum / len(np.asarray(y_val))
        result["val_accuracy"] = correct / len(np.asarray(y_val))
    result["ended_at"] = time.time()
    return result
