"""The compiled training kernel against its numpy reference, and inside sub-interpreters.

Why these tests exist: candidates are trained by ``thunderhelm.ga.training._kernel`` in isolated
sub-interpreters where nothing else can check the arithmetic, so here the
kernel's forward values, gradients and whole training runs are compared with
``thunderhelm.ga.training.reference`` (itself checked by finite differences), the cooperative
deadline/cancel and error paths are exercised, and the kernel is run in two
interpreters at once.
"""

import base64
import itertools
import json
import math
import os
import random
import sys
import threading
import time
from typing import Any

import numpy as np
import pytest

import thunderhelm.ga
from thunderhelm.ga.training import _kernel
from thunderhelm.ga.training.candidate import (
    ACTIVATIONS,
    balanced_class_weight,
    parse_spec,
    train_candidate,
)
from thunderhelm.ga.training.reference import initial_net, train_reference

_interpreters = pytest.importorskip("_interpreters")


def random_spec(seed: int, n_inputs: int = 9, n_outputs: int = 4, **overrides: Any) -> str:
    """A random DAG using every activation, with skip and lateral inputs."""
    rnd = random.Random(seed)
    units = []
    for node in range(1, rnd.randint(3, 7) + 1):
        inputs = sorted(rnd.sample(range(node), rnd.randint(1, min(node, 3))))
        if node > 1 and node - 1 not in inputs:
            inputs = sorted({*inputs, node - 1})  # a lateral from the previous unit
        units.append(
            {
                "inputs": inputs,
                "neurons": rnd.randint(1, 9),
                "activation": ACTIVATIONS[(node - 1) % len(ACTIVATIONS)],
            }
        )
    spec = {
        "n_inputs": n_inputs,
        "n_outputs": n_outputs,
        "units": units,
        "output_inputs": sorted({len(units), *rnd.sample(range(len(units) + 1), 2)}),
        "learning_rate": 0.01,
        "weight_decay": 0.01,
        "epochs": 3,
        "batch_size": 16,
        "seed": seed,
    }
    spec.update(overrides)
    return json.dumps(spec)


def kernel_net(network_json: str, rows: int, *, regression: bool = False) -> _kernel.Net:
    """A kernel Net with the same initial weights as the reference (`regression`: one
    linear output trained on squared error)."""
    spec = parse_spec(network_json)
    ref, _ = initial_net(network_json)
    codes = {name: code for code, name in enumerate(ACTIVATIONS)}
    net = _kernel.Net(
        spec.n_inputs,
        spec.n_outputs,
        tuple(u.inputs for u in spec.units),
        tuple(u.neurons for u in spec.units),
        tuple(codes[u.activation] for u in spec.units),
        spec.output_inputs,
        rows,
        regression=regression,
    )
    net.set_params(ref.params.astype(np.float32))
    return net


def blobs(n: int, n_inputs: int, n_outputs: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Separable Gaussian blobs: a task a short run can learn."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_outputs, n).astype(np.int32)
    centres = rng.normal(0, 2, (n_outputs, n_inputs))
    x = (centres[y] + rng.normal(0, 1, (n, n_inputs))).astype(np.float32)
    return x, y


def run(network_json: str, x: np.ndarray, y: np.ndarray, **kw: Any) -> dict[str, Any]:
    deadline = kw.pop("deadline", time.time() + 60)
    out = train_candidate(network_json, x, y, x, y, x.shape[1], deadline, **kw)
    result: dict[str, Any] = json.loads(out)
    return result


def test_evaluate_counts_each_class_rows_predictions_and_hits() -> None:
    network_json = random_spec(3)
    net = kernel_net(network_json, 16)  # fewer rows than the data: counted over chunks
    x, y = blobs(61, 9, 4, 3)
    predicted = np.concatenate(
        [
            np.frombuffer(net.forward_logits(x[i : i + 16], len(x[i : i + 16])), np.float32)
            .reshape(-1, 4)
            .argmax(axis=1)
            for i in range(0, 61, 16)
        ]
    )
    counts = bytearray(3 * 4 * 8)
    _, correct = net.evaluate(x, y, 61, counts)
    per_class = np.frombuffer(bytes(counts), np.int64).reshape(3, 4)
    np.testing.assert_array_equal(per_class[0], np.bincount(predicted, minlength=4))
    np.testing.assert_array_equal(per_class[1], np.bincount(y[predicted == y], minlength=4))
    np.testing.assert_array_equal(per_class[2], np.bincount(y, minlength=4))
    assert per_class[1].sum() == correct
    with pytest.raises(ValueError, match="12 int64"):
        net.evaluate(x, y, 61, bytearray(8))


@pytest.mark.parametrize("seed", range(8))
def test_forward_and_gradients_match_reference(seed: int) -> None:
    network_json = random_spec(seed)
    ref, _ = initial_net(network_json)
    net = kernel_net(network_json, 32)
    x, y = blobs(23, 9, 4, seed)
    logits = np.frombuffer(net.forward_logits(x, 23), np.float32).reshape(23, 4)
    np.testing.assert_allclose(logits, ref.logits(x), rtol=1e-4, atol=1e-5)
    loss = net.forward_backward(x, y, 23)
    ref_loss, ref_grads = ref.loss_and_grads(x, y)
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    grads = np.frombuffer(net.get_grads(), np.float32)
    scale = np.abs(ref_grads).max()
    np.testing.assert_allclose(grads, ref_grads, rtol=0, atol=1e-5 * max(scale, 1.0))


@pytest.mark.parametrize("seed", range(4))
def test_reference_gradient_matches_finite_differences(seed: int) -> None:
    network_json = random_spec(100 + seed)
    ref, _ = initial_net(network_json, np.float64)
    x, y = blobs(11, 9, 4, seed)
    _, grads = ref.loss_and_grads(x, y)
    base = ref.params.copy()
    eps = 1e-6
    for i in np.random.default_rng(seed).choice(base.size, 40, replace=False):
        ref.params[:] = base
        ref.params[i] += eps
        plus, _ = ref.loss_and_grads(x, y)
        ref.params[:] = base
        ref.params[i] -= eps
        minus, _ = ref.loss_and_grads(x, y)
        assert (plus - minus) / (2 * eps) == pytest.approx(grads[i], abs=1e-7, rel=1e-5)


def test_kernel_gradient_matches_float64_reference_direction() -> None:
    # float32 finite differences are too noisy per parameter; a directional
    # derivative over all parameters at once is a meaningful check.
    network_json = random_spec(7)
    net = kernel_net(network_json, 32)
    ref64, _ = initial_net(network_json, np.float64)
    x, y = blobs(20, 9, 4, 3)
    net.forward_backward(x, y, 20)
    grads = np.frombuffer(net.get_grads(), np.float32).astype(np.float64)
    direction = np.random.default_rng(1).normal(size=grads.size)
    base = ref64.params.copy()
    eps = 1e-5
    ref64.params[:] = base + eps * direction
    plus, _ = ref64.loss_and_grads(x, y)
    ref64.params[:] = base - eps * direction
    minus, _ = ref64.loss_and_grads(x, y)
    assert grads @ direction == pytest.approx((plus - minus) / (2 * eps), rel=1e-3)


@pytest.mark.parametrize("seed", range(3))
def test_training_improves_and_matches_reference(seed: int) -> None:
    network_json = random_spec(seed, epochs=4, learning_rate=0.005)
    x, y = blobs(400, 9, 4, seed)
    kernel = run(network_json, x, y)
    ref = train_reference(network_json, x, y, x, y)
    assert kernel["status"] == "ok" and ref["status"] == "ok"
    assert kernel["epochs_run"] == 4
    assert kernel["params"] == ref["params"]
    ref0, _ = initial_net(network_json)
    start_loss = ref0.evaluate(x, y)[0] / len(y)
    assert kernel["val_loss"] < 0.8 * start_loss
    assert kernel["val_loss"] == pytest.approx(ref["val_loss"], rel=2e-3)
    assert kernel["train_loss"] == pytest.approx(ref["train_loss"], rel=2e-3)
    assert abs(kernel["val_accuracy"] - ref["val_accuracy"]) <= 0.01


def test_class_weights_scale_each_rows_loss_and_gradient_as_the_reference_does() -> None:
    network_json = random_spec(2)
    ref, _ = initial_net(network_json)
    net = kernel_net(network_json, 32)
    x, y = blobs(23, 9, 4, 2)
    weights = np.array([0.5, 2.0, 1.0, 3.0], np.float32)
    loss = net.forward_backward(x, y, 23, weights)
    ref_loss, ref_grads = ref.loss_and_grads(x, y, weights)
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    grads = np.frombuffer(net.get_grads(), np.float32)
    scale = np.abs(ref_grads).max()
    np.testing.assert_allclose(grads, ref_grads, rtol=0, atol=1e-5 * max(scale, 1.0))
    assert net.forward_backward(x, y, 23) != pytest.approx(loss)  # the weights count


def test_a_balanced_training_matches_the_reference_and_weighs_the_rare_class() -> None:
    x, y = blobs(400, 9, 4, 8)
    keep = (y != 0) | (np.arange(len(y)) % 8 == 0)  # class 0 is rare
    x, y = np.ascontiguousarray(x[keep]), np.ascontiguousarray(y[keep])
    network_json = random_spec(8, epochs=3, learning_rate=0.005, class_weight="balanced")
    kernel = run(network_json, x, y)
    ref = train_reference(network_json, x, y, x, y)
    assert kernel["status"] == "ok"
    assert kernel["train_loss"] == pytest.approx(ref["train_loss"], rel=2e-3)
    plain = run(random_spec(8, epochs=3, learning_rate=0.005), x, y)
    assert kernel["train_loss"] != pytest.approx(plain["train_loss"], rel=1e-3)
    counts = np.bincount(y, minlength=4)
    weights = np.frombuffer(
        balanced_class_weight(memoryview(y.astype(np.int32)), 4).tobytes(), np.float32
    )
    np.testing.assert_allclose(weights, len(y) / (4 * counts), rtol=1e-6)
    refused = run(random_spec(8, class_weight="rare"), x, y)
    assert refused["status"] == "error" and "class_weight" in refused["error"]


def test_training_is_deterministic() -> None:
    network_json = random_spec(3)
    x, y = blobs(200, 9, 4, 0)
    a, b = (
        run(network_json, x, y, export_weights=True),
        run(network_json, x, y, export_weights=True),
    )
    assert a["val_loss"] == b["val_loss"] and a["weights"] == b["weights"]


def test_export_weights_order_and_shapes() -> None:
    network_json = random_spec(5, epochs=1)
    x, y = blobs(50, 9, 4, 0)
    result = run(network_json, x, y, export_weights=True)
    spec = parse_spec(network_json)
    widths = spec.widths()
    expected = []
    for node, unit in enumerate(spec.units, 1):
        fan_in = sum(widths[i] for i in unit.inputs)
        expected += [(f"unit{node}.W", [unit.neurons, fan_in]), (f"unit{node}.b", [unit.neurons])]
    fan_in = sum(widths[i] for i in spec.output_inputs)
    expected += [("output.W", [4, fan_in]), ("output.b", [4])]
    assert [(w["name"], w["shape"]) for w in result["weights"]] == expected
    total = sum(len(base64.b64decode(w["data"])) // 4 for w in result["weights"])
    assert total == result["params"]
    first = np.frombuffer(base64.b64decode(result["weights"][0]["data"]), "<f4")
    assert first.size == math.prod(expected[0][1]) and np.isfinite(first).all()


def test_past_deadline_times_out_without_training() -> None:
    x, y = blobs(100, 9, 4, 0)
    result = run(random_spec(1), x, y, deadline=time.time() - 1)
    assert result["status"] == "timeout" and result["epochs_run"] == 0
    assert result["val_accuracy"] is None and result["error"] is None


def test_deadline_stops_a_long_run() -> None:
    x, y = blobs(2000, 9, 4, 0)
    network_json = random_spec(1, epochs=10_000, batch_size=4)
    started = time.time()
    result = run(network_json, x, y, deadline=started + 0.3)
    assert result["status"] == "timeout"
    assert result["ended_at"] - started < 2.0


def test_cancel_flag_stops_training_from_another_thread() -> None:
    x, y = blobs(2000, 9, 4, 0)
    flag = bytearray(1)
    timer = threading.Timer(0.2, lambda: flag.__setitem__(0, 1))
    timer.start()
    started = time.time()
    result = run(random_spec(2, epochs=10_000, batch_size=4), x, y, cancel=memoryview(flag))
    timer.join()
    assert result["status"] == "cancelled"
    assert time.time() - started < 2.0


def test_non_finite_data_reports_nan() -> None:
    x, y = blobs(64, 9, 4, 0)
    x[5, 2] = np.inf
    result = run(random_spec(4), x, y)
    assert result["status"] == "nan" and result["val_loss"] is None


def test_every_epoch_adds_a_point_to_the_learning_curve() -> None:
    network_json = random_spec(5, epochs=4, learning_rate=0.005)
    x, y = blobs(300, 9, 4, 5)
    result = run(network_json, x, y)
    curve = result["curve"]
    assert [p["epoch"] for p in curve] == [1, 2, 3, 4] and result["pruned_at"] is None
    last = curve[-1]
    assert last["val_accuracy"] == pytest.approx(result["val_accuracy"], abs=1e-6)
    assert last["val_loss"] == pytest.approx(result["val_loss"], rel=1e-5)
    assert curve[0]["val_loss"] > curve[-1]["val_loss"]  # it learns
    assert all(a["at"] <= b["at"] for a, b in itertools.pairwise(curve))


def test_a_training_below_its_rung_stops_there_with_the_rungs_figures() -> None:
    x, y = blobs(300, 9, 4, 6)
    free = run(random_spec(6, epochs=4), x, y, export_weights=True)
    at_two = free["curve"][1]
    stopped = run(random_spec(6, epochs=4, rungs=[{"epoch": 2, "min_val_accuracy": 1.01}]), x, y)
    assert stopped["status"] == "ok" and stopped["pruned_at"] == 2
    assert stopped["epochs_run"] == 2 and len(stopped["curve"]) == 2
    # The epochs before the rung are the free training's own, to the bit.
    assert stopped["val_accuracy"] == pytest.approx(at_two["val_accuracy"], abs=1e-6)
    passed = run(
        random_spec(6, epochs=4, rungs=[{"epoch": 2, "max_val_loss": 1e9}]),
        x,
        y,
        export_weights=True,
    )
    assert passed["pruned_at"] is None and passed["epochs_run"] == 4
    assert passed["weights"] == free["weights"]  # a rung passed changes nothing


def test_a_training_reports_the_class_balanced_measures_and_stops_at_their_rungs() -> None:
    # How they are computed from the kernel's counts: test_measures.py.
    x, y = blobs(300, 9, 4, 7)
    keep = (y != 3) | (np.arange(len(y)) % 6 == 0)  # class 3 is rare
    x, y = np.ascontiguousarray(x[keep]), np.ascontiguousarray(y[keep])
    free = run(random_spec(7, epochs=4), x, y)
    last = free["curve"][-1]
    for measure in ("val_balanced_accuracy", "val_macro_f1"):
        assert 0.0 < free[measure] <= 1.0
        assert last[measure] == pytest.approx(free[measure], abs=1e-6)
    assert free["val_balanced_accuracy"] != pytest.approx(free["val_accuracy"])
    bound = free["curve"][1]["val_balanced_accuracy"] + 1e-3
    stopped = run(
        random_spec(7, epochs=4, rungs=[{"epoch": 2, "min_val_balanced_accuracy": bound}]), x, y
    )
    assert stopped["pruned_at"] == 2 and stopped["epochs_run"] == 2
    assert stopped["val_macro_f1"] == pytest.approx(free["curve"][1]["val_macro_f1"], abs=1e-6)


def _mutations() -> list[tuple[str, Any]]:
    good = json.loads(random_spec(0))
    cases: list[tuple[str, Any]] = [("not json", "{nope"), ("array", "[]")]
    edits: list[tuple[str, Any]] = [
        ("n_inputs", 0),
        ("n_inputs", True),
        ("n_outputs", -1),
        ("epochs", 0),
        ("batch_size", 1.5),
        ("learning_rate", 0),
        ("learning_rate", float("nan")),
        ("weight_decay", -0.1),
        ("seed", "1"),
        ("output_inputs", []),
        ("output_inputs", [99]),
        ("output_inputs", [1, 0]),
        ("units", {}),
        ("extra", 1),
    ]
    for key, value in edits:
        spec = dict(good, **{key: value})
        cases.append((f"{key}={value!r}", json.dumps(spec)))
    for key, value in [("inputs", [1]), ("inputs", [0, 0]), ("neurons", 0),
                       ("activation", "swish"), ("inputs", ["0"])]:  # fmt: skip
        spec = json.loads(random_spec(0))
        spec["units"][0][key] = value
        cases.append((f"unit {key}={value!r}", json.dumps(spec)))
    spec = json.loads(random_spec(0))
    spec["units"][0] = dict(spec["units"][0], bias=True)
    cases.append(("unit extra key", json.dumps(spec)))
    cases.append(("too many params", random_spec(0, n_inputs=60_000, n_outputs=1_000)))
    for label, rungs in [
        ("rungs not a list", {"epoch": 1}),
        ("rung without bound", [{"epoch": 1}]),
        ("rung unknown bound", [{"epoch": 1, "min_train_loss": 0.5}]),
        ("rung at the last epoch", [{"epoch": 3, "min_val_accuracy": 0.5}]),
        ("rungs out of order", [{"epoch": 2, "max_val_loss": 1}, {"epoch": 1, "max_val_loss": 1}]),
        ("rung bound not finite", [{"epoch": 1, "min_val_accuracy": float("inf")}]),
    ]:
        cases.append((label, json.dumps(dict(good, rungs=rungs))))
    return cases


@pytest.mark.parametrize(("label", "network_json"), _mutations(), ids=lambda v: str(v)[:30])
def test_invalid_specs_report_error(label: str, network_json: str) -> None:
    x, y = blobs(20, 9, 4, 0)
    result = json.loads(train_candidate(network_json, x, y, x, y, 9, time.time() + 10))
    assert result["status"] == "error", label
    assert isinstance(result["error"], str) and result["error"]


def test_bad_data_reports_error() -> None:
    network_json = random_spec(0)
    x, y = blobs(20, 9, 4, 0)
    deadline = time.time() + 10
    bad_label = y.copy()
    bad_label[3] = 4
    cases = [
        (x, y, x, y, 8),  # n_features does not match n_inputs
        (x[:, :8].copy(), y, x, y, 9),  # row size
        (x, y[:10], x, y, 9),  # label count
        (x, bad_label, x, y, 9),  # label out of range
        (x.astype(np.float64), y, x, y, 9),  # wrong dtype
        (x, y, b"", b"", 9),  # empty validation set
    ]
    for xt, yt, xv, yv, nf in cases:
        result = json.loads(train_candidate(network_json, xt, yt, xv, yv, nf, deadline))
        assert result["status"] == "error", result


_SUB_CODE = """
import sys
sys.path[:0] = list(paths)
import json, time
from thunderhelm.ga.training.candidate import train_candidate
out = train_candidate(spec, xt, yt, xv, yv, n_features, time.time() + deadline_s, cancel)
data = out.encode()
result[4:4 + len(data)] = data
result[:4] = len(data).to_bytes(4, "little")
"""


def _run_in_interpreter(interp: int, shared: dict[str, Any], errors: list[Any]) -> None:
    _interpreters.exec(interp, "import _interpreters")  # needed before passing memoryviews
    _interpreters.set___main___attrs(interp, shared)
    failure = _interpreters.exec(interp, _SUB_CODE)
    if failure is not None:
        errors.append(failure.formatted)


def test_kernel_trains_in_two_subinterpreters_at_once() -> None:
    network_json = random_spec(11, epochs=3, batch_size=8)
    long_json = random_spec(12, epochs=10_000, batch_size=2)
    x, y = blobs(600, 9, 4, 0)
    xb, yb = memoryview(x).cast("B"), memoryview(y).cast("B")
    flag = bytearray(1)
    results = [bytearray(1 << 16) for _ in range(3)]
    root = os.path.dirname(os.path.dirname(os.path.abspath(thunderhelm.ga.__file__)))
    common = {"paths": (root, *sys.path), "n_features": 9, "xt": xb, "yt": yb,
              "xv": xb, "yv": yb}  # fmt: skip
    jobs = [
        dict(common, spec=network_json, deadline_s=60.0, cancel=None),
        dict(common, spec=network_json, deadline_s=60.0, cancel=None),
        dict(common, spec=long_json, deadline_s=20.0, cancel=memoryview(flag)),
    ]
    interps = [_interpreters.create() for _ in jobs]
    errors: list[Any] = []
    try:
        threads = []
        for interp, job, out in zip(interps, jobs, results, strict=True):
            job["result"] = memoryview(out)
            threads.append(threading.Thread(target=_run_in_interpreter, args=(interp, job, errors)))
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        flag[0] = 1  # cancels the long run in the third interpreter
        for thread in threads:
            thread.join(30)
        assert not any(t.is_alive() for t in threads)
    finally:
        for job in jobs:
            job.clear()
        for interp in interps:
            _interpreters.destroy(interp)
    assert not errors, errors
    decoded = [json.loads(r[4 : 4 + int.from_bytes(r[:4], "little")]) for r in results]
    in_main = run(network_json, x, y)
    for result in decoded[:2]:
        assert result["status"] == "ok"
        # Same code and data: bit-identical to a run in the main interpreter.
        assert result["val_loss"] == in_main["val_loss"]
        assert result["train_loss"] == in_main["train_loss"]
    assert decoded[2]["status"] == "cancelled", decoded[2]["error"]
