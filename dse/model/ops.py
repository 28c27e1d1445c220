"""The IR ops: one numpy function per op, registered by name (``IR_OPS``), full-batch tensors, ONNX semantics.

Every function is ``fn(node, xs) -> ndarray`` with ``xs`` the operator's arguments in ONNX input order (runtime
tensors and the node's constant params; None for an absent optional input). The same functions fold constant
subgraphs at import (on integer shape tensors too), so they keep the input dtype; the executor casts to float32.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dse.errors import DseError
from dse.model.graph import Node
from dse.model.nn import (HARDSWISH_ALPHA, HARDSWISH_BETA, conv2d, gemm, global_avg_pool, hardsigmoid, layernorm,
                          matmul, pool, sigmoid, softmax)

IR_OPS: dict = {}


def ir_op(*names: str):
    """Register ``fn(node, xs) -> ndarray`` as the executor of IR op(s) ``names``; ``xs`` are the operator's
    arguments in ONNX order (runtime tensors and the node's constant params, see :func:`arguments`; None = absent)."""
    def deco(fn):
        for n in names:
            IR_OPS[n] = fn
        return fn
    return deco


def arguments(node: Node, args: list) -> list:
    """The operator's full argument list: ``node.attrs["args"]`` says per ONNX input position whether it is runtime
    input i (int), constant param key (str) or absent (None); nodes without it take their runtime inputs as is."""
    slots = node.attrs.get("args")
    if slots is None:
        return list(args)
    return [args[s] if isinstance(s, int) else None if s is None else node.params[s] for s in slots]



@ir_op("conv")
def _conv(node, xs):
    a, p = node.attrs, node.params
    return conv2d(xs[0], p["W"], p["b"], a["stride"], a["pads"], a["dilation"], a["groups"])


@ir_op("gemm")
def _gemm(node, xs):
    x = xs[0]
    if x.ndim != 2:
        raise DseError(f"node '{node.name}' ({node.onnx_op}) gets a rank-{x.ndim} input; flatten it to [N, K] "
                       "before the Gemm/MatMul")
    return gemm(x, node.params["W"], node.params["b"])


@ir_op("affine")
def _affine(node, xs):
    x = xs[0]
    sh = (1, -1) + (1,) * (x.ndim - 2)
    return x * node.params["scale"].reshape(sh) + node.params["shift"].reshape(sh)


@ir_op("clip")
def _clip(node, xs):
    return np.clip(xs[0], np.float32(node.attrs["min"]), np.float32(node.attrs["max"]))


@ir_op("maxpool", "avgpool")
def _pool_op(node, xs):
    return pool(xs[0], node.attrs, "max" if node.op == "maxpool" else "avg")


@ir_op("gap")
def _gap(node, xs):
    return global_avg_pool(xs[0])


@ir_op("gmp")
def _gmp(node, xs):
    return xs[0].max(axis=tuple(range(2, xs[0].ndim)), keepdims=True)


@ir_op("flatten")
def _flatten(node, xs):
    return xs[0].reshape(xs[0].shape[0], -1)


@dataclass(frozen=True)
class BatchDim:
    """A reshape/expand target entry that is ``k`` times the batch size (folded from a Shape subgraph; ``k`` > 1 when
    the batch is merged with another axis, as in attention's [batch * heads, tokens, d])."""

    k: int = 1

    def __str__(self) -> str:
        return "N" if self.k == 1 else f"{self.k}N"


BATCH = BatchDim(1)


def static_dims(dims, batch: int) -> tuple:
    """Target dims with the batch entries (:class:`BatchDim`) replaced by multiples of the batch size ``batch``."""
    return tuple(int(d.k * batch) if isinstance(d, BatchDim) else int(d) for d in dims)


def batch_size(node, x) -> int:
    """The batch size of a run, from ``x``'s batch axis: ``node.attrs["batch"]`` = (axis, k), the axis of size
    k * batch (default (0, 1))."""
    axis, k = node.attrs.get("batch", (0, 1))
    return int(np.shape(x)[axis]) // int(k)


@ir_op("reshape")
def _reshape(node, xs):
    x = xs[0]
    shape = list(static_dims(node.attrs["shape"], batch_size(node, x)))
    if not node.attrs.get("allowzero", 0):
        shape = [x.shape[i] if v == 0 else v for i, v in enumerate(shape)]
    return x.reshape(shape)


@ir_op("expand")
def _expand(node, xs):
    x = xs[0]
    shape = static_dims(node.attrs["shape"], xs[1].shape[0] if len(xs) > 1 and xs[1] is not None else
                        batch_size(node, x))
    return x * np.ones(shape, dtype=x.dtype)


@ir_op("concat")
def _concat(node, xs):
    return np.concatenate(xs, axis=node.attrs["axis"])




# ------------------------------------------------------------------------------------------ elementwise
def _erf(x):
    from dse.model.nn import erf

    return erf(x)


def _gelu(x, approximate: str):
    x = np.asarray(x)
    if approximate == "tanh":
        c = x.dtype.type(np.sqrt(2 / np.pi))
        return x.dtype.type(0.5) * x * (1 + np.tanh(c * (x + x.dtype.type(0.044715) * x * x * x)))
    return x.dtype.type(0.5) * x * (1 + _erf(x / x.dtype.type(np.sqrt(2))))


UNARY = {
    "relu": lambda x, a: np.maximum(x, x.dtype.type(0)),
    "sigmoid": lambda x, a: sigmoid(x),
    "hardsigmoid": lambda x, a: hardsigmoid(x, a.get("alpha", 0.2), a.get("beta", 0.5)),
    "hardswish": lambda x, a: hardsigmoid(x, HARDSWISH_ALPHA, HARDSWISH_BETA, times_x=True),
    "tanh": lambda x, a: np.tanh(x),
    "erf": lambda x, a: _erf(x).astype(x.dtype),
    "gelu": lambda x, a: _gelu(x, a.get("approximate", "none")),
    "sqrt": lambda x, a: np.sqrt(x),
    "exp": lambda x, a: np.exp(x),
    "log": lambda x, a: np.log(x),
    "neg": lambda x, a: -x,
    "abs": lambda x, a: np.abs(x),
    "reciprocal": lambda x, a: (1 / x).astype(x.dtype),
    "floor": lambda x, a: np.floor(x),
    "ceil": lambda x, a: np.ceil(x),
    "leakyrelu": lambda x, a: np.where(x >= 0, x, x * x.dtype.type(a.get("alpha", 0.01))),
    "softplus": lambda x, a: np.logaddexp(x.dtype.type(0), x),
    "not": lambda x, a: np.logical_not(x),
    "cast": lambda x, a: x.astype(a["to"]),
    "identity": lambda x, a: x,
}


def _unary(node, xs):
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return UNARY[node.op](np.asarray(xs[0]), node.attrs)


for _name in UNARY:
    ir_op(_name)(_unary)


def _div(a, b):
    if a.dtype.kind in "iu" and b.dtype.kind in "iu":
        return np.trunc(a / b).astype(np.result_type(a, b))
    return a / b


BINARY = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "div": _div,
    "pow": lambda a, b: np.power(a, b.astype(a.dtype)) if a.dtype.kind == "f" else np.power(a, b),
    "equal": np.equal, "less": np.less, "greater": np.greater, "and": np.logical_and, "or": np.logical_or,
    "mod": np.mod,
}


def _binary(node, xs):
    a, b = (np.asarray(v) for v in xs)
    if a.dtype.kind == "f" and b.dtype.kind == "f" and a.dtype != b.dtype:
        b = b.astype(a.dtype)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return BINARY[node.op](a, b)


for _name in BINARY:
    ir_op(_name)(_binary)

_INTO = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.true_divide}


def binary_into(node, xs, out: np.ndarray) -> np.ndarray | None:
    """Float32 Add/Sub/Mul/Div node on its full argument list ``xs`` written into ``out``, one of the operands
    (a float32 array of the result's shape that no one reads after this node): the ufunc :func:`_binary` calls on the
    same operands, so the same bits, without allocating the result (where two NaNs meet the result is one of them,
    as in numpy's own loops, which pick the first or the second by array length and aliasing). None (nothing written)
    when the node is not such a call."""
    fn = _INTO.get(node.op)
    if fn is None or len(xs) != 2 or not all(isinstance(v, np.ndarray) and v.dtype == np.float32 for v in xs) or \
            not any(v is out for v in xs) or np.broadcast_shapes(xs[0].shape, xs[1].shape) != out.shape:
        return None
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return fn(xs[0], xs[1], out=out)


@ir_op("max", "min", "sum", "mean")
def _variadic(node, xs):
    fn = {"max": np.maximum, "min": np.minimum, "sum": np.add, "mean": np.add}[node.op]
    y = xs[0]
    for v in xs[1:]:
        y = fn(y, v)
    return y / len(xs) if node.op == "mean" else y


@ir_op("where")
def _where(node, xs):
    return np.where(xs[0], xs[1], xs[2])


# ------------------------------------------------------------------------------------------ normalisation, reductions
@ir_op("softmax", "logsoftmax")
def _softmax(node, xs):
    x = xs[0]
    ax = node.attrs["axis"]
    if node.op == "softmax":
        return softmax(x, ax)
    m = x.max(axis=ax, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=ax, keepdims=True))


@ir_op("layernorm")
def _layernorm(node, xs):
    return layernorm(xs[0], xs[1], xs[2] if len(xs) > 2 else None, node.attrs["axis"], node.attrs["epsilon"])


REDUCE = {"reducemean": np.mean, "reducesum": np.sum, "reducemax": np.max, "reducemin": np.min,
          "reduceprod": np.prod, "reducel2": lambda x, axis, keepdims: np.sqrt(np.sum(x * x, axis, keepdims=keepdims)),
          "reducesumsquare": lambda x, axis, keepdims: np.sum(x * x, axis, keepdims=keepdims)}


def _reduce(node, xs):
    x = xs[0]
    axes = node.attrs["axes"]
    axes = tuple(range(x.ndim)) if axes is None else tuple(int(v) % x.ndim for v in axes)
    if node.op == "reducemean" and x.dtype == np.float32 and x.ndim == 4 and sorted(axes) == [2, 3]:
        y = global_avg_pool(x)  # the spatial mean (squeeze-excitation's pool): the compiled pass, the same bits
        return y if node.attrs["keepdims"] else y.reshape(x.shape[:2])
    y = REDUCE[node.op](x, axis=axes, keepdims=bool(node.attrs["keepdims"]))
    return np.asarray(y, dtype=x.dtype)


for _name in REDUCE:
    ir_op(_name)(_reduce)


# ------------------------------------------------------------------------------------------ layout
@ir_op("transpose")
def _transpose(node, xs):
    return np.transpose(xs[0], node.attrs["perm"])


@ir_op("squeeze")
def _squeeze(node, xs):
    x = xs[0]
    axes = node.attrs["axes"]
    return np.squeeze(x, axis=None if axes is None else tuple(int(a) % x.ndim for a in axes))


@ir_op("unsqueeze")
def _unsqueeze(node, xs):
    x = xs[0]
    n = x.ndim + len(node.attrs["axes"])
    return np.expand_dims(x, tuple(int(a) % n for a in node.attrs["axes"]))


@ir_op("slice")
def _slice(node, xs):
    x = xs[0]
    idx = [slice(None)] * x.ndim
    for st, en, ax, sp in zip(node.attrs["starts"], node.attrs["ends"], node.attrs["axes"], node.attrs["steps"]):
        ax = int(ax) % x.ndim
        n = x.shape[ax]
        st, en = int(st), int(en)
        if sp > 0:
            st = min(max(st + n if st < 0 else st, 0), n)
            en = min(max(en + n if en < 0 else en, 0), n)
        else:
            st = min(max(st + n if st < 0 else st, -1), n - 1)
            en = min(max(en + n if en < 0 else en, -1), n - 1)
        idx[ax] = slice(st, None if (sp < 0 and en < 0) else en, int(sp))
    return x[tuple(idx)]


@ir_op("gather")
def _gather(node, xs):
    x, ind = xs[0], np.asarray(xs[1]).astype(np.int64)
    ax = node.attrs["axis"] % x.ndim
    ind = np.where(ind < 0, ind + x.shape[ax], ind)
    return np.take(x, ind, axis=ax)


@ir_op("tile")
def _tile(node, xs):
    return np.tile(xs[0], np.asarray(xs[1]).astype(np.int64))


@ir_op("matmul", "matmul_float")
def _matmul(node, xs):
    return matmul(xs[0], xs[1])


@ir_op("constantofshape")
def _constantofshape(node, xs):
    v = node.attrs["value"]
    return np.full(tuple(int(d) for d in np.asarray(xs[0]).reshape(-1)), v, dtype=v.dtype)


@ir_op("range")
def _range(node, xs):
    start, limit, delta = (np.asarray(v).reshape(()) for v in xs)
    return np.arange(start, limit, delta, dtype=start.dtype)


@ir_op("pad")
def _pad(node, xs):
    x = xs[0]
    p = node.attrs["pads"]  # ONNX order: begins of every axis, then ends
    n = x.ndim
    width = [(int(p[i]), int(p[i + n])) for i in range(n)]
    if any(b < 0 or e < 0 for b, e in width):
        idx = tuple(slice(max(-b, 0), x.shape[i] - max(-e, 0)) for i, (b, e) in enumerate(width))
        x = x[idx]
        width = [(max(b, 0), max(e, 0)) for b, e in width]
    mode = node.attrs["mode"]
    if mode == "constant":
        return np.pad(x, width, mode="constant", constant_values=node.attrs["value"])
    return np.pad(x, width, mode={"reflect": "reflect", "edge": "edge", "wrap": "wrap"}[mode])


def _nearest_index(n_in: int, n_out: int, scale: float, ctm: str, mode: str) -> np.ndarray:
    """Source index of every output position of an ONNX Resize (nearest) along one axis."""
    o = np.arange(n_out, dtype=np.float64)
    if ctm == "asymmetric":
        x = o / scale
    elif ctm == "align_corners":
        x = o * (n_in - 1) / (n_out - 1) if n_out > 1 else np.zeros_like(o)
    elif ctm == "pytorch_half_pixel":
        x = (o + 0.5) / scale - 0.5 if n_out > 1 else np.zeros_like(o)
    else:  # half_pixel (and tf_half_pixel_for_nn, which has no -0.5)
        x = (o + 0.5) / scale - (0.0 if ctm == "tf_half_pixel_for_nn" else 0.5)
    if mode == "floor":
        i = np.floor(x)
    elif mode == "ceil":
        i = np.ceil(x)
    elif mode == "round_prefer_ceil":
        i = np.floor(x + 0.5)
    else:  # round_prefer_floor
        i = np.ceil(x - 0.5)
    return np.clip(i, 0, n_in - 1).astype(np.int64)


@ir_op("resize")
def _resize(node, xs):
    x = xs[0]
    a = node.attrs
    y = x
    for ax in range(2, x.ndim):
        n_in = x.shape[ax]
        n_out = a["sizes"][ax] if a["sizes"] is not None else int(np.floor(n_in * a["scales"][ax]))
        scale = a["scales"][ax] if a["scales"] is not None else n_out / n_in
        y = np.take(y, _nearest_index(n_in, n_out, scale, a["ctm"], a["nearest_mode"]), axis=ax)
    return y
