"""Elementwise ops, activations and normalisations (float32 between MAC layers; folded on constants)."""
from __future__ import annotations

import numpy as np

from dse.model.converters.registry import OnnxNode, converter

UNARY = {"Relu": "relu", "Sigmoid": "sigmoid", "HardSigmoid": "hardsigmoid", "HardSwish": "hardswish",
         "Tanh": "tanh", "Erf": "erf", "Sqrt": "sqrt", "Exp": "exp", "Log": "log", "Neg": "neg", "Abs": "abs",
         "Reciprocal": "reciprocal", "Floor": "floor", "Ceil": "ceil", "LeakyRelu": "leakyrelu",
         "Softplus": "softplus", "Not": "not"}
BINARY = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div", "Pow": "pow", "Equal": "equal", "Less": "less",
          "Greater": "greater", "And": "and", "Or": "or", "Mod": "mod"}


@converter(*UNARY)
def _unary(imp, n: OnnxNode) -> None:
    attrs = {k: float(v) for k, v in n.attrs.items() if k in ("alpha", "beta")}
    imp.emit(n, UNARY[n.op_type], n.inputs[:1], attrs)


@converter("Gelu", since=20)
def _gelu(imp, n: OnnxNode) -> None:
    imp.emit(n, "gelu", n.inputs[:1], {"approximate": n.attrs.get("approximate", "none")})


@converter(*BINARY)
def _binary(imp, n: OnnxNode) -> None:
    if n.op_type == "Mod" and int(n.attrs.get("fmod", 0)):
        raise imp.err(n.name, "is a Mod with fmod=1; only integer Mod is supported")
    imp.emit(n, BINARY[n.op_type], n.inputs[:2])


@converter("Max", "Min", "Sum", "Mean")
def _variadic(imp, n: OnnxNode) -> None:
    imp.emit(n, n.op_type.lower())


@converter("Where")
def _where(imp, n: OnnxNode) -> None:
    imp.emit(n, "where")


@converter("Clip")
def _clip(imp, n: OnnxNode) -> None:
    lo = float(imp.opt_const(n, 1, "min", n.attrs.get("min", -np.inf)))
    hi = float(imp.opt_const(n, 2, "max", n.attrs.get("max", np.inf)))
    imp.emit(n, "clip", n.inputs[:1], dict(min=lo, max=hi))


@converter("Cast")
def _cast(imp, n: OnnxNode) -> None:
    from onnx import helper

    to = np.dtype(helper.tensor_dtype_to_np_dtype(int(n.attrs["to"])))
    if imp.is_runtime(n.inputs[0]):
        if to.kind != "f":
            raise imp.err(n.name, f"casts an activation to {to}; only float casts of activations are supported")
        imp.alias_of(n.outputs[0], n.inputs[0])  # activations stay float32
        return
    imp.emit(n, "cast", n.inputs[:1], {"to": to})


@converter("Softmax", "LogSoftmax", since=13)
def _softmax(imp, n: OnnxNode) -> None:
    axis = int(n.attrs.get("axis", -1))
    imp.refuse_batch_axes(n, [axis])
    imp.emit(n, n.op_type.lower(), n.inputs[:1], {"axis": axis})


@converter("LayerNormalization", since=17)
def _layernorm(imp, n: OnnxNode) -> None:
    if len(n.outputs) > 1 and any(n.outputs[1:]):
        raise imp.err(n.name, "uses the LayerNormalization Mean/InvStdDev outputs; they are not supported")
    axis = int(n.attrs.get("axis", -1))
    if imp.is_runtime(n.inputs[0]):
        nd = imp.rank(n.inputs[0])
        imp.refuse_batch_axes(n, range(axis % nd, nd), "normalised axes")
    imp.emit(n, "layernorm", n.inputs[:3], {"axis": axis, "epsilon": float(n.attrs.get("epsilon", 1e-5))})
