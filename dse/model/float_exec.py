"""Float32 reference executor of the IR (numpy; convolutions as im2col + matmul).

``run_float(graph, x, batch_size=256) -> float32 logits``; :func:`exec_node` runs one node on float32 inputs and is
shared with the FxP8 emulator for every non-MAC op.
"""
from __future__ import annotations

import numpy as np

from dse.errors import DseError
from dse.model.graph import Graph, Node


def out_size(n: int, k: int, s: int, p0: int, p1: int, d: int = 1, ceil: bool = False) -> int:
    """Output length of a sliding window (ONNX/PyTorch rule; in ceil mode the last window starts inside the input
    or the leading padding)."""
    ek = d * (k - 1) + 1
    span = n + p0 + p1 - ek
    o = (-(-span // s) if ceil else span // s) + 1
    if ceil and (o - 1) * s >= n + p0:
        o -= 1
    return o


def windows(x: np.ndarray, kernel, stride, pads, dilation, fill: float = 0.0, ceil: bool = False):
    """x [B, C, H, W] -> cols [B, C, kh, kw, Ho, Wo] (padded with ``fill``), Ho, Wo."""
    B, C, H, W = x.shape
    kh, kw = kernel
    sh, sw = stride
    dh, dw = dilation
    pt, pl, pb, pr = pads
    Ho = out_size(H, kh, sh, pt, pb, dh, ceil)
    Wo = out_size(W, kw, sw, pl, pr, dw, ceil)
    if Ho < 1 or Wo < 1:
        raise DseError(f"window {kh}x{kw} (dilation {dh}x{dw}) is larger than the padded input {H}x{W} "
                       f"(pads {list(pads)}); fix the model's kernel/pads")
    eb = max(pb, (Ho - 1) * sh + dh * (kh - 1) + 1 - H - pt)  # extra end padding in ceil mode
    er = max(pr, (Wo - 1) * sw + dw * (kw - 1) + 1 - W - pl)
    if pt or pl or eb or er:
        xp = np.full((B, C, H + pt + eb, W + pl + er), fill, dtype=x.dtype)
        xp[:, :, pt:pt + H, pl:pl + W] = x
    else:
        xp = x
    cols = np.empty((B, C, kh, kw, Ho, Wo), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = xp[:, :, i * dh: i * dh + sh * (Ho - 1) + 1: sh, j * dw: j * dw + sw * (Wo - 1) + 1: sw]
    return cols, Ho, Wo


def conv2d(x: np.ndarray, W: np.ndarray, b: np.ndarray | None, stride, pads, dilation, groups: int) -> np.ndarray:
    """Float32 convolution (ONNX Conv semantics) via im2col + batched matmul."""
    B, C = x.shape[:2]
    Cout, Cg, kh, kw = W.shape
    cols, Ho, Wo = windows(x, (kh, kw), stride, pads, dilation)
    g, og = groups, Cout // groups
    cols = cols.reshape(B, g, Cg * kh * kw, Ho * Wo)
    out = np.matmul(W.reshape(g, og, Cg * kh * kw), cols)  # [B, g, og, HoWo]
    out = out.reshape(B, Cout, Ho, Wo)
    if b is not None:
        out += b.reshape(1, Cout, 1, 1)
    return out


def _pool(x: np.ndarray, a: dict, kind: str) -> np.ndarray:
    H, W = x.shape[2:]
    pt, pl, pb, pr = a["pads"]
    ceil = bool(a.get("ceil_mode", 0))
    if kind == "max":
        cols, Ho, Wo = windows(x, a["kernel"], a["stride"], a["pads"], a.get("dilation", (1, 1)), -np.inf, ceil)
        return cols.max(axis=(2, 3))
    cols, Ho, Wo = windows(x, a["kernel"], a["stride"], a["pads"], (1, 1), 0.0, ceil)
    s = cols.sum(axis=(2, 3), dtype=np.float32)
    cnt = []
    for n, k, st, p0, p1, o in ((H, a["kernel"][0], a["stride"][0], pt, pb, Ho),
                                (W, a["kernel"][1], a["stride"][1], pl, pr, Wo)):
        start = np.arange(o) * st - p0
        end = start + k
        if a.get("count_include_pad", 0):
            c = np.minimum(end, n + p1) - np.maximum(start, -p0)
        else:
            c = np.minimum(end, n) - np.maximum(start, 0)
        cnt.append(c)
    div = (cnt[0][:, None] * cnt[1][None, :]).astype(np.float32)
    return s / div


def exec_node(node: Node, args: list, shapes: dict | None = None) -> np.ndarray:
    """Run one IR node on float32 inputs (full batch shapes). ``shapes`` (dry run only) records per-image shapes and
    resolves reshape targets."""
    op, a, p = node.op, node.attrs, node.params
    x = args[0]
    if op == "conv":
        y = conv2d(x, p["W"], p["b"], a["stride"], a["pads"], a["dilation"], a["groups"])
    elif op == "gemm":
        if x.ndim != 2:
            raise DseError(f"node '{node.name}' ({node.onnx_op}) gets a rank-{x.ndim} input; flatten it to [N, K] "
                           "before the Gemm/MatMul")
        y = x @ p["W"].T + p["b"]
    elif op == "affine":
        sh = (1, -1) + (1,) * (x.ndim - 2)
        y = x * p["scale"].reshape(sh) + p["shift"].reshape(sh)
    elif op == "relu":
        y = np.maximum(x, np.float32(0))
    elif op == "clip":
        y = np.clip(x, np.float32(a["min"]), np.float32(a["max"]))
    elif op == "maxpool":
        y = _pool(x, a, "max")
    elif op == "avgpool":
        y = _pool(x, a, "avg")
    elif op == "gap":
        y = x.mean(axis=(2, 3), keepdims=True, dtype=np.float32)
    elif op == "add":
        y = x + (p["c"] if "c" in p else args[1])
    elif op == "flatten":
        y = x.reshape(x.shape[0], -1)
    elif op == "reshape":
        if "shape" not in a:
            a["shape"] = _reshape_target(node, x.shape)
        y = x.reshape((x.shape[0],) + tuple(a["shape"]))
    elif op == "concat":
        ax = a["axis"] if a["axis"] >= 0 else a["axis"] + x.ndim
        if ax <= 0:
            raise DseError(f"node '{node.name}' concatenates along the batch axis; use axis >= 1")
        y = np.concatenate(args, axis=ax)
    else:  # pragma: no cover - the importer produces only the ops above
        raise DseError(f"node '{node.name}': unknown IR op '{op}'")
    y = np.asarray(y, dtype=np.float32)
    if shapes is not None:
        shapes[node.output] = tuple(y.shape[1:])
    return y


def _reshape_target(node: Node, in_shape: tuple) -> tuple:
    """Per-image target of an ONNX Reshape (0 copies the input dim, one -1 is inferred); the batch dim must stay."""
    full = (1,) + tuple(in_shape[1:])
    shape = list(node.attrs["onnx_shape"])
    for i, v in enumerate(shape):
        if v == 0:
            if i >= len(full):
                raise DseError(f"node '{node.name}': Reshape shape {shape} copies dim {i} the input does not have")
            shape[i] = full[i]
    total = int(np.prod(full))
    if shape.count(-1) > 1 or any(v < -1 for v in shape):
        raise DseError(f"node '{node.name}': Reshape shape {node.attrs['onnx_shape']} is invalid")
    if -1 in shape:
        rest = int(np.prod([v for v in shape if v != -1]))
        if rest == 0 or total % rest:
            raise DseError(f"node '{node.name}': Reshape shape {node.attrs['onnx_shape']} does not fit input "
                           f"{list(in_shape[1:])}")
        shape[shape.index(-1)] = total // rest
    if int(np.prod(shape)) != total or not shape or shape[0] != 1:
        raise DseError(f"node '{node.name}': Reshape shape {node.attrs['onnx_shape']} does not keep the batch "
                       f"dimension of input [N, {', '.join(map(str, in_shape[1:]))}]; use [-1, ...] or [0, ...]")
    return tuple(shape[1:])


def run_float_all(graph: Graph, x: np.ndarray, shapes: dict | None = None, keep: set | None = None) -> dict:
    """Execute the graph on one batch; return {tensor: float32 array} for the tensors in ``keep`` (all if None)
    plus the output."""
    env = {graph.input_name: np.asarray(x, dtype=np.float32)}
    last_use = {}
    for i, n in enumerate(graph.nodes):
        for t in n.inputs:
            last_use[t] = i
    for i, n in enumerate(graph.nodes):
        env[n.output] = exec_node(n, [env[t] for t in n.inputs], shapes)
        if keep is not None:
            for t in n.inputs:
                if last_use[t] == i and t not in keep and t != graph.output_name:
                    env.pop(t, None)
    return env


def check_input(graph: Graph, x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.shape[1:] != tuple(graph.input_shape):
        raise DseError(f"input images have shape {list(x.shape[1:])} but model {graph.source or 'graph'} expects "
                       f"{list(graph.input_shape)}; check the data set and preprocessing")
    return x


def run_float(graph: Graph, x, batch_size: int = 256) -> np.ndarray:
    """Float32 logits [B, ...] of the graph on preprocessed input ``x`` [B, *graph.input_shape]."""
    x = check_input(graph, x)
    outs = [run_float_all(graph, x[i:i + batch_size], keep=set())[graph.output_name]
            for i in range(0, len(x), batch_size)]
    return np.concatenate(outs) if outs else np.zeros((0,) + graph.shapes[graph.output_name], np.float32)
