"""Pooling and reductions: MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool, Reduce*."""
from __future__ import annotations

import numpy as np

from dse.model.converters.registry import OnnxNode, converter


def pads2d(imp, n: OnnxNode, kernel, stride, dilation) -> tuple:
    """(top, left, bottom, right) from ``pads`` or ``auto_pad`` (SAME_* resolved on the input's spatial shape)."""
    a = n.attrs
    auto = a.get("auto_pad", "NOTSET")
    if auto in ("NOTSET", ""):
        p = list(a.get("pads", [0, 0, 0, 0]))
        if len(p) != 4:
            raise imp.err(n.name, f"has pads {p}; only 2-D pads (top, left, bottom, right) are supported")
        return tuple(int(v) for v in p)
    if auto == "VALID":
        return (0, 0, 0, 0)
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        raise imp.err(n.name, f"has unknown auto_pad '{auto}'; use NOTSET, VALID, SAME_UPPER or SAME_LOWER")
    hw = imp.shape(n.inputs[0])[1:]
    begin, end = [], []
    for d in range(2):
        out = -(-hw[d] // stride[d])
        total = max((out - 1) * stride[d] + dilation[d] * (kernel[d] - 1) + 1 - hw[d], 0)
        small = total // 2
        b = small if auto == "SAME_UPPER" else total - small
        begin.append(b)
        end.append(total - b)
    return (begin[0], begin[1], end[0], end[1])


def need_4d(imp, n: OnnxNode) -> None:
    if not imp.is_runtime(n.inputs[0]) or imp.rank(n.inputs[0]) != 4:
        raise imp.err(n.name, f"({n.op_type}) needs an [N, C, H, W] activation input; only 2-D pooling is supported")
    imp.need_batch_first(n, n.inputs[0])


@converter("MaxPool", "AveragePool")
def _pool(imp, n: OnnxNode) -> None:
    a = n.attrs
    need_4d(imp, n)
    kernel = tuple(int(v) for v in a["kernel_shape"])
    if len(kernel) != 2:
        raise imp.err(n.name, f"has kernel_shape {kernel}; only 2-D pooling is supported")
    stride = tuple(int(v) for v in a.get("strides", (1, 1)))
    dilation = tuple(int(v) for v in a.get("dilations", (1, 1)))
    if len(n.outputs) > 1 and n.outputs[1]:
        raise imp.err(n.name, "uses the MaxPool Indices output; it is not supported")
    attrs = dict(kernel=kernel, stride=stride, dilation=dilation, ceil_mode=int(a.get("ceil_mode", 0)),
                 pads=pads2d(imp, n, kernel, stride, dilation))
    if n.op_type == "AveragePool":
        if dilation != (1, 1):
            raise imp.err(n.name, f"has dilations {dilation}; AveragePool supports only dilation 1")
        attrs["count_include_pad"] = int(a.get("count_include_pad", 0))
    imp.emit(n, "maxpool" if n.op_type == "MaxPool" else "avgpool", n.inputs[:1], attrs)


@converter("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(imp, n: OnnxNode) -> None:
    if n.op_type == "GlobalAveragePool":
        need_4d(imp, n)
    elif imp.is_runtime(n.inputs[0]):
        imp.need_batch_first(n, n.inputs[0])
    imp.emit(n, "gap" if n.op_type == "GlobalAveragePool" else "gmp", n.inputs[:1])


REDUCE_OPS = ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2", "ReduceSumSquare")


def _reduce(imp, n: OnnxNode, axes) -> None:
    if axes is not None and len(axes) == 0:
        axes = None
    if axes is None and int(n.attrs.get("noop_with_empty_axes", 0)):
        imp.alias_of(n.outputs[0], n.inputs[0])
        return
    if imp.is_runtime(n.inputs[0]):
        imp.refuse_batch_axes(n, range(imp.rank(n.inputs[0])) if axes is None else axes, "reduced axes")
    attrs = {"axes": None if axes is None else tuple(int(v) for v in axes), "keepdims": int(n.attrs.get("keepdims", 1))}
    imp.emit(n, n.op_type.lower(), n.inputs[:1], attrs)


@converter(*REDUCE_OPS, until=17)
def _reduce_attr(imp, n: OnnxNode) -> None:
    if n.op_type == "ReduceSum" and n.opset >= 13:  # ReduceSum took axes as an input from opset 13
        _reduce_input(imp, n)
        return
    _reduce(imp, n, n.attrs.get("axes"))


@converter(*REDUCE_OPS, since=18)
def _reduce_input(imp, n: OnnxNode) -> None:
    axes = imp.opt_const(n, 1, "axes")
    _reduce(imp, n, None if axes is None else np.asarray(axes).reshape(-1).tolist())
