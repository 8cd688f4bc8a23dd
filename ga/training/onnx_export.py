"""The model artifact as an ONNX graph: raw inputs in, class probabilities out.

The graph repeats the numpy forward pass of `artifact.Model` node for node:
standardisation, then per layer a concatenation of its input nodes, a layer
norm without affine terms (as the kernel computes it), a Gemm and the
activation, and a softmax at the end; an ensemble's members' probabilities
are averaged with their weights. A regression model's graph has no
softmax: its output `prediction` (rows x 1) is each network's output times
`target_scale` plus `target_mean`, in the target's units, averaged with the
members' weights. It uses standard opset-17 operators only, so any ONNX
runtime can run it.

A table model's graph takes the raw columns, one input each, named as the
columns are (`table_inputs`): a number column as float32 [rows, 1] (NaN or
infinite: missing), a category column as text [rows, 1] (the empty string:
missing; a number category as its text, `3` for 3.0). The table's encoding
comes first in the graph, as `TableEncoding.encode` does it: a missing
number becomes the training median (and its 0/1 "was missing" column), a
category goes through ONNX-ML's `OneHotEncoder` over its levels, with one
more column for every other or unseen value. Names inside the graph start
with `NAME_PREFIX`, so no column name can collide with them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from thunderhelm.ga.training.artifact import Ensemble, Model, Predictor
from thunderhelm.ga.training.reference import GELU_C, GELU_K, LN_EPS
from thunderhelm.ga.training.tables import MISSING, CategoricalColumn, TableEncoding

OPSET = 17
ML_OPSET = 1  # ai.onnx.ml: OneHotEncoder
INPUT, OUTPUT = "input", "probabilities"
REGRESSION_OUTPUT = "prediction"
NAME_PREFIX = "thunderhelm/"


def to_onnx(model: Predictor) -> Any:
    """The ONNX ModelProto of `model` (input `input`: float32 [rows, n_features]).

    An ensemble is one graph: the standardisation once, each member's layers
    and softmax, and the members' probabilities summed with their weights.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    counter = iter(range(1_000_000))

    def const(value: np.ndarray, name: str) -> str:
        name = NAME_PREFIX + name
        array = np.asarray(value)
        array = array.astype(np.float32) if array.dtype.kind == "f" else array  # ints: axes
        inits.append(numpy_helper.from_array(array, name))
        return name

    def node(op: str, inputs: list[str], **attrs: Any) -> str:
        out = f"{NAME_PREFIX}{op.lower()}_{next(counter)}"
        nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    members = model.members if isinstance(model, Ensemble) else (model,)
    weights = model.weights if isinstance(model, Ensemble) else (1.0,)
    first = members[0]
    output = REGRESSION_OUTPUT if model.regression else OUTPUT
    if first.table is not None:
        inputs = table_inputs(first.table)
        taken = sorted(i.name for i in inputs if i.name == output or i.name.startswith(NAME_PREFIX))
        if taken:
            raise ValueError(f"column names the ONNX graph uses itself: {taken}")
        raw = _table_encoding(node, const, first.table)
    else:
        features: list[str | int | None] = ["rows", model.n_features]
        inputs = [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, features)]
        raw = INPUT
    eps = const(np.array(LN_EPS), "ln_eps")
    x = node("Sub", [raw, const(first.mean, "mean")])
    x = node("Div", [x, const(first.scale, "scale")])
    width = 1 if model.regression else len(model.labels)
    if model.regression:
        shares = []
        for i, (member, weight) in enumerate(zip(members, weights, strict=True)):
            # The network's output in the target's units: output * scale + mean.
            out = _network(node, const, member, x, eps, f"m{i}/")
            mean, scale = member.target_units()
            value = node("Add", [node("Mul", [out, const(np.array(scale), f"m{i}/target_scale")]),
                                 const(np.array(mean), f"m{i}/target_mean")])  # fmt: skip
            shares.append(node("Mul", [value, const(np.array(weight), f"m{i}/weight")]))
        nodes.append(helper.make_node("Sum", shares, [output]))
    elif len(members) == 1:
        last = _network(node, const, first, x, eps, "")
        nodes.append(helper.make_node("Softmax", [last], [OUTPUT], axis=1))
    else:
        shares = []
        for i, (member, weight) in enumerate(zip(members, weights, strict=True)):
            probs = node("Softmax", [_network(node, const, member, x, eps, f"m{i}/")], axis=1)
            shares.append(node("Mul", [probs, const(np.array(weight), f"m{i}/weight")]))
        nodes.append(helper.make_node("Sum", shares, [OUTPUT]))
    graph = helper.make_graph(
        nodes,
        "thunderhelm_model",
        inputs,
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["rows", width])],
        inits,
    )
    opsets = [helper.make_opsetid("", OPSET)]
    if first.table is not None:
        opsets.append(helper.make_opsetid("ai.onnx.ml", ML_OPSET))
    proto = helper.make_model(graph, opset_imports=opsets, producer_name="thunderhelm")
    proto.ir_version = 8  # readable by onnxruntime releases of the last years
    labels = ",".join(model.labels) if all("," not in label for label in model.labels) else ""
    props = {"labels": labels, "members": str(len(members))}
    if model.regression:  # classification's props stay as they were
        props["task"] = "regression"
    helper.set_model_props(proto, props)
    onnx.checker.check_model(proto)
    return proto


def table_inputs(encoding: TableEncoding) -> list[Any]:
    """The graph's inputs for a table model: one per raw column, [rows, 1] each."""
    from onnx import TensorProto, helper

    return [
        helper.make_tensor_value_info(
            c.name,
            TensorProto.STRING if isinstance(c, CategoricalColumn) else TensorProto.FLOAT,
            ["rows", 1],
        )
        for c in encoding.columns
    ]


def _table_encoding(
    node: Callable[..., str],
    const: Callable[[np.ndarray, str], str],
    encoding: TableEncoding,
) -> str:
    """The raw column inputs encoded as the network's feature columns (rows x width)."""
    from onnx import TensorProto, helper

    parts: list[str] = []
    for i, c in enumerate(encoding.columns):
        if isinstance(c, CategoricalColumn):
            # An empty string is how a missing category comes in as text.
            cats = ["" if level == MISSING and "" not in c.levels else level for level in c.levels]
            if not cats:  # every value is "other"
                ones = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])
                parts.append(node("ConstantOfShape", [node("Shape", [c.name])], value=ones))
                continue
            hot = node("OneHotEncoder", [c.name], domain="ai.onnx.ml", cats_strings=cats, zeros=1)
            axis = const(np.array([1], dtype=np.int64), f"col{i}/axis")
            hot = node("Squeeze", [hot, axis])
            seen = node("ReduceSum", [hot, axis], keepdims=1)
            parts += [hot, node("Sub", [const(np.ones((1, 1)), f"col{i}/one"), seen])]
            continue
        gaps = node("Or", [node("IsNaN", [c.name]), node("IsInf", [c.name])])
        parts.append(node("Where", [gaps, const(np.array([[c.median]]), f"col{i}/median"), c.name]))
        if c.indicator:
            parts.append(node("Cast", [gaps], to=TensorProto.FLOAT))
    return node("Concat", parts, axis=1)


def _network(
    node: Callable[..., str],
    const: Callable[[np.ndarray, str], str],
    model: Model,
    x: str,
    eps: str,
    prefix: str,
) -> str:
    """One network's layers on the standardised input `x`; its logits' name."""
    values = [x]
    last = x
    for name, inputs, _, activation in model.spec.layers():
        z = (
            values[inputs[0]]
            if len(inputs) == 1
            else node("Concat", [values[i] for i in inputs], axis=1)
        )
        mean = node("ReduceMean", [z], axes=[1], keepdims=1)
        centred = node("Sub", [z, mean])
        var = node("ReduceMean", [node("Mul", [centred, centred])], axes=[1], keepdims=1)
        zn = node("Div", [centred, node("Sqrt", [node("Add", [var, eps])])])
        w = const(model.tensors[f"{name}.W"], f"{prefix}{name}.W")
        b = const(model.tensors[f"{name}.b"], f"{prefix}{name}.b")
        a = node("Gemm", [zn, w, b], transB=1)
        last = a if activation is None else _activation(node, const, activation, a)
        if activation is not None:
            values.append(last)
    return last


def _activation(
    node: Callable[..., str],
    const: Callable[[np.ndarray, str], str],
    name: str,
    a: str,
) -> str:
    if name == "relu":
        return node("Relu", [a])
    if name == "elu":
        return node("Elu", [a], alpha=1.0)
    if name == "tanh":
        return node("Tanh", [a])
    if name == "sigmoid":
        return node("Sigmoid", [a])
    # gelu, tanh form: 0.5 * a * (1 + tanh(k * (a + c * a^3)))
    cube = node("Mul", [node("Mul", [a, a]), a])
    inner = node("Add", [a, node("Mul", [cube, const(np.array(GELU_C), f"gelu_c_{a}")])])
    t = node("Tanh", [node("Mul", [inner, const(np.array(GELU_K), f"gelu_k_{a}")])])
    half, one = const(np.array(0.5), f"half_{a}"), const(np.array(1.0), f"one_{a}")
    return node("Mul", [node("Mul", [a, half]), node("Add", [t, one])])


def export_onnx(model: Predictor, path: Path) -> Path:
    """Write `model` as an ONNX file at `path`."""
    import onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(to_onnx(model), str(path))
    return path
