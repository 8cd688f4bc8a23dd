"""The kernel's regression head (one linear output, mean squared error) against its reference.

Why: a regression network is trained by the same compiled kernel in the
pool, where nothing else checks the arithmetic, so its output, loss and
gradient are compared with the numpy reference (itself checked by finite
differences), and a tiny linear problem must be learned.
"""

import time

import numpy as np
import pytest

from tests.test_kernel import kernel_net, random_spec
from thunderhelm.ga.training import _kernel
from thunderhelm.ga.training.reference import initial_net


def regression_net(network_json: str, rows: int) -> _kernel.Net:
    """A kernel regression Net with the reference's initial weights."""
    return kernel_net(network_json, rows, regression=True)


def linear_rows(n: int, n_inputs: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """x ~ N(0, 1), t = x . w + small noise: a problem any network here can fit."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, n_inputs)).astype(np.float32)
    w = rng.normal(size=n_inputs)
    t = x @ w + 0.05 * rng.normal(size=n)
    return x, ((t - t.mean()) / t.std()).astype(np.float32)


@pytest.mark.parametrize("seed", range(6))
def test_output_loss_and_gradients_match_the_reference(seed: int) -> None:
    network_json = random_spec(seed, n_outputs=1)
    ref, _ = initial_net(network_json)
    net = regression_net(network_json, 32)
    x, t = linear_rows(23, 9, seed)
    out = np.frombuffer(net.forward_logits(x, 23), np.float32)
    np.testing.assert_allclose(out, ref.logits(x)[:, 0], rtol=1e-4, atol=1e-5)
    loss = net.forward_backward(x, t, 23)
    ref_loss, ref_grads = ref.squared_error_and_grads(x, t)
    # Mean squared error, not halved.
    assert ref_loss == pytest.approx(float(np.mean((ref.logits(x)[:, 0] - t) ** 2)), rel=1e-5)
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    grads = np.frombuffer(net.get_grads(), np.float32)
    scale = np.abs(ref_grads).max()
    np.testing.assert_allclose(grads, ref_grads, rtol=0, atol=1e-5 * max(scale, 1.0))


@pytest.mark.parametrize("seed", range(3))
def test_reference_gradient_matches_finite_differences(seed: int) -> None:
    ref, _ = initial_net(random_spec(100 + seed, n_outputs=1), np.float64)
    x, t = linear_rows(11, 9, seed)
    _, grads = ref.squared_error_and_grads(x, t)
    base = ref.params.copy()
    eps = 1e-6
    for i in np.random.default_rng(seed).choice(base.size, 40, replace=False):
        ref.params[:] = base
        ref.params[i] += eps
        plus, _ = ref.squared_error_and_grads(x, t)
        ref.params[:] = base
        ref.params[i] -= eps
        minus, _ = ref.squared_error_and_grads(x, t)
        assert (plus - minus) / (2 * eps) == pytest.approx(grads[i], abs=1e-7, rel=1e-5)


def test_kernel_gradient_matches_a_float64_directional_derivative() -> None:
    network_json = random_spec(7, n_outputs=1)
    net = regression_net(network_json, 32)
    ref64, _ = initial_net(network_json, np.float64)
    x, t = linear_rows(20, 9, 3)
    net.forward_backward(x, t, 20)
    grads = np.frombuffer(net.get_grads(), np.float32).astype(np.float64)
    direction = np.random.default_rng(1).normal(size=grads.size)
    base = ref64.params.copy()
    eps = 1e-5
    ref64.params[:] = base + eps * direction
    plus, _ = ref64.squared_error_and_grads(x, t)
    ref64.params[:] = base - eps * direction
    minus, _ = ref64.squared_error_and_grads(x, t)
    assert grads @ direction == pytest.approx((plus - minus) / (2 * eps), rel=1e-3)


def _train(net: _kernel.Net, x: np.ndarray, t: np.ndarray, epochs: int) -> list[float]:
    rng = np.random.default_rng(0)
    losses = []
    for _ in range(epochs):
        order = rng.permutation(len(t)).astype(np.int32)
        status, loss_sum, done = net.train_epoch(
            x, t, order, len(t), 32, 0.01, 0.0, time.time() + 60
        )
        assert status == _kernel.STATUS_OK and done == len(t)
        losses.append(loss_sum / done)
    return losses


def test_a_linear_problem_is_learned() -> None:
    network_json = random_spec(3, n_outputs=1)
    net = regression_net(network_json, 600)
    x, t = linear_rows(600, 9, 5)
    before, _ = net.evaluate(x, t, 600)
    _train(net, x, t, 30)
    sse, sae = net.evaluate(x, t, 600)
    # Loss falls far: from about the target's variance to a few percent of it.
    assert sse / 600 < 0.05 and sse < 0.05 * before
    out = np.frombuffer(net.forward_logits(x, 600), np.float32).astype(np.float64)
    assert sse == pytest.approx(float(np.sum((out - t) ** 2)), rel=1e-4)
    assert sae == pytest.approx(float(np.sum(np.abs(out - t))), rel=1e-4)


def test_training_is_deterministic() -> None:
    network_json = random_spec(4, n_outputs=1)
    x, t = linear_rows(200, 9, 1)
    first, second = regression_net(network_json, 64), regression_net(network_json, 64)
    assert _train(first, x, t, 3) == _train(second, x, t, 3)
    assert first.get_params() == second.get_params()


def test_bad_regression_input_is_refused_with_a_reason() -> None:
    with pytest.raises(ValueError, match="one output, not 3"):
        _kernel.Net(2, 3, (), (), (), (0,), 8, regression=True)
    net = _kernel.Net(2, 1, (), (), (), (0,), 8, regression=True)
    assert net.regression and not _kernel.Net(2, 3, (), (), (), (0,), 8).regression
    x = np.zeros((4, 2), np.float32)
    with pytest.raises(TypeError, match="float32"):
        net.forward_backward(x, np.zeros(4, np.int32), 4)
    with pytest.raises(ValueError, match="finite"):
        net.forward_backward(x, np.array([0, 1, np.nan, 2], np.float32), 4)
    with pytest.raises(ValueError, match="classification only"):
        net.forward_backward(x, np.zeros(4, np.float32), 4, np.ones(1, np.float32))
    with pytest.raises(ValueError, match="classification only"):
        net.evaluate(x, np.zeros(4, np.float32), 4, bytearray(24))
