"""MAC layers and BatchNormalization: Conv, Gemm, MatMul (constant weight -> conv/gemm MAC layer; two activations ->
matmul MAC layer), BatchNormalization (folded into a preceding MAC layer later, else a float affine op)."""
from __future__ import annotations

import numpy as np

from dse.model.converters.registry import OnnxNode, converter
from dse.model.converters.pool import pads2d
from dse.model.graph import Node
from dse.model.ops import BatchDim


def _runtime_input(imp, n: OnnxNode) -> str:
    return imp.need_batch_first(n, n.inputs[0])


def _rows_input(imp, n: OnnxNode) -> str:
    """A [rows, K] activation whose rows are images or tokens of images (batch on axis 0, possibly merged)."""
    x = imp.t(n.inputs[0])
    if x not in imp.sample:
        raise imp.err(n.name, f"({n.op_type}) has a constant input '{n.inputs[0]}'; it must read an activation")
    if imp.batch[x][0] != 0:
        imp.need_batch_first(n, x)  # raises
    return x


@converter("Conv")
def _conv(imp, n: OnnxNode) -> None:
    a = n.attrs
    x = _runtime_input(imp, n)
    W = imp.need_const(n, n.inputs[1], "weight")
    if W.ndim != 4:
        raise imp.err(n.name, f"is a {W.ndim - 2}-D convolution; only 2-D Conv is supported")
    kernel = tuple(int(v) for v in a.get("kernel_shape", W.shape[2:]))
    if kernel != tuple(W.shape[2:]):
        raise imp.err(n.name, f"has kernel_shape {kernel} but weights {W.shape}")
    stride = tuple(int(v) for v in a.get("strides", (1, 1)))
    dilation = tuple(int(v) for v in a.get("dilations", (1, 1)))
    groups = int(a.get("group", 1))
    pads = pads2d(imp, n, kernel, stride, dilation)
    b = imp.opt_const(n, 2, "bias", np.zeros(W.shape[0]))
    imp.add_node(Node(n.name, "conv", [x], [n.outputs[0]],
                      dict(stride=stride, pads=pads, dilation=dilation, groups=groups), dict(W=W, b=b), n.op_type))


@converter("Gemm")
def _gemm(imp, n: OnnxNode) -> None:
    a = n.attrs
    if int(a.get("transA", 0)):
        raise imp.err(n.name, "has transA=1; only activations as rows [batch, K] are supported (transA=0)")
    x = _rows_input(imp, n)
    B = imp.need_const(n, n.inputs[1], "weight (input B)")
    if B.ndim != 2:
        raise imp.err(n.name, f"has a weight of rank {B.ndim}; Gemm needs a 2-D B")
    W = float(a.get("alpha", 1.0)) * (B if int(a.get("transB", 0)) else B.T)
    N = W.shape[0]
    b = np.zeros(N)
    C = imp.opt_const(n, 2, "bias (input C)")
    if C is not None:
        if C.size not in (1, N) or (C.ndim == 2 and C.shape[0] != 1):
            raise imp.err(n.name, f"has a bias C of shape {C.shape}; only [N], [1, N] or scalar are supported")
        b = float(a.get("beta", 1.0)) * np.broadcast_to(C.reshape(-1), (N,))
    imp.add_node(Node(n.name, "gemm", [x], [n.outputs[0]], {}, dict(W=W, b=b), n.op_type))


@converter("MatMul")
def _matmul(imp, n: OnnxNode) -> None:
    """x @ W with a constant 2-D W is a MAC layer: a gemm on [N, K] inputs; on [N, ..., K] inputs (tokens, channels-
    last) a 1x1 conv over the positions, between two transposes. Two activations (attention): a matmul MAC layer."""
    A, B = imp.t(n.inputs[0]), imp.t(n.inputs[1])
    W = imp.const(B)
    if A in imp.sample and B in imp.sample:
        _act_matmul(imp, n, A, B)
        return
    if W is None or A not in imp.sample:
        imp.emit(n, "matmul_float" if B in imp.sample else "matmul")
        return
    if W.ndim != 2:
        raise imp.err(n.name, f"has a constant right operand of rank {W.ndim}; only x @ W with a 2-D W is supported")
    if not imp.batch_first(A):
        _rows_matmul(imp, n, A, W)
        return
    shape = imp.shape(A)
    K, N = W.shape
    if len(shape) == 1:
        imp.add_node(Node(n.name, "gemm", [A], [n.outputs[0]], {}, dict(W=W.T, b=np.zeros(N)), n.op_type))
        return
    inner = shape[:-1]
    M = int(np.prod(inner))
    perm = (0, len(shape)) + tuple(range(1, len(shape)))
    t_in, r_in, conv_out, r_out = (f"{n.outputs[0]}/{s}" for s in ("channels_first", "nchw", "conv", "positions"))
    imp.add_node(Node(f"{n.name}/to_nchw", "transpose", [A], [t_in], dict(perm=perm), {}, n.op_type))
    imp.add_node(Node(f"{n.name}/as_image", "reshape", [t_in], [r_in], dict(shape=(0, K, M, 1)), {}, n.op_type))
    imp.add_node(Node(n.name, "conv", [r_in], [conv_out], dict(stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1),
                                                               groups=1), dict(W=W.T.reshape(N, K, 1, 1),
                                                                               b=np.zeros(N)), n.op_type))
    imp.add_node(Node(f"{n.name}/from_image", "reshape", [conv_out], [r_out], dict(shape=(0, N) + inner), {},
                      n.op_type))
    back = (0,) + tuple(range(2, len(shape) + 1)) + (1,)
    imp.add_node(Node(f"{n.name}/to_channels_last", "transpose", [r_out], [n.outputs[0]], dict(perm=back), {},
                      n.op_type))


def _rows_matmul(imp, n: OnnxNode, A: str, W: np.ndarray) -> None:
    """x @ W on an input whose batch is not its first axis ([tokens, N, d] of nn.MultiheadAttention): a gemm over
    the rows [-1, K], reshaped back (the batch entry of the leading axes kept symbolic)."""
    K, N = W.shape
    axis, k = imp.batch[A]
    if axis == imp.rank(A) - 1:
        imp.need_batch_first(n, A)  # the batch is the contracted axis: raises
    lead = tuple(BatchDim(k) if i == axis else d for i, d in enumerate(imp.full(A)[:-1]))
    rows, flat = (f"{n.outputs[0]}/{s}" for s in ("rows", "gemm"))
    imp.add_node(Node(f"{n.name}/as_rows", "reshape", [A], [rows], dict(shape=(-1, K), batch=imp.batch[A]), {},
                      n.op_type))
    imp.add_node(Node(n.name, "gemm", [rows], [flat], {}, dict(W=W.T, b=np.zeros(N)), n.op_type))
    imp.add_node(Node(f"{n.name}/from_rows", "reshape", [flat], [n.outputs[0]],
                      dict(shape=lead + (N,), batch=imp.batch[flat]), {}, n.op_type))


def _act_matmul(imp, n: OnnxNode, A: str, B: str) -> None:
    """Activation x activation: both operands [..., M, K] and [..., K, N'] of the same rank (>= 3) with the batch on
    the same leading axis, so that numpy's broadcasting over the leading axes never pairs rows of different
    images."""
    ra, rb = imp.rank(A), imp.rank(B)
    if ra != rb or ra < 3 or imp.batch[A] != imp.batch[B] or imp.batch[A][0] >= ra - 2:
        raise imp.err(n.name, f"(MatMul) multiplies two activations of shapes {list(imp.full(A))} and "
                              f"{list(imp.full(B))} (batch axes {imp.batch[A][0]} and {imp.batch[B][0]}); dse needs "
                              "both [..., rows, cols] of the same rank >= 3 with the batch on the same leading axis: "
                              "reshape them before the MatMul")
    imp.add_node(Node(n.name, "matmul", [A, B], [n.outputs[0]], {}, {}, n.op_type))


@converter("BatchNormalization")
def _batchnorm(imp, n: OnnxNode) -> None:
    if int(n.attrs.get("training_mode", 0)) or len(n.outputs) > 1 and any(n.outputs[1:]):
        raise imp.err(n.name, "is a BatchNormalization in training mode; export the model in eval mode")
    sc, bi, mean, var = (imp.need_const(n, n.inputs[i], w).astype(np.float64)
                         for i, w in ((1, "scale"), (2, "bias"), (3, "mean"), (4, "var")))
    scale = sc / np.sqrt(var + float(n.attrs.get("epsilon", 1e-5)))
    x = _runtime_input(imp, n)
    imp.add_node(Node(n.name, "affine", [x], [n.outputs[0]], {}, dict(scale=scale, shift=bi - mean * scale),
                      n.op_type))
