"""Numeric primitives of the float executor: sliding windows, convolution and GEMMs, pooling, the sigmoid.

Convolutions, Gemms and MatMuls of float32 tensors run the compiled ``float_conv`` / ``float_matmul``
(``cy/float_gemm.h``): every output one chain of fused multiply-adds over its terms in a fixed order, then the bias,
so their bits depend on no BLAS, machine, ISA level, thread count or batch split (OpenMP threads of
``dse.threads.get_threads`` split the outputs only).

Max pooling of float32 tensors runs the compiled loop ``dse._kernels.max_pool`` (``cy/glue.h``: a leaf extension that
imports no dse module, so the model layer may use it) on one thread: a network run already splits its images over
the threads (``dse.kernels.map_split``). It gives the bits of :func:`reference_max_pool`, numpy's running maximum.
"""
from __future__ import annotations

import numpy as np

from dse.errors import DseError
from dse.threads import get_threads

try:
    from dse import _kernels
except ImportError:  # pragma: no cover - only when the extension was not built (dse.kernels says how to build it)
    _kernels = None


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
    views, Ho, Wo = window_views(x, kernel, stride, pads, dilation, fill, ceil)
    cols = np.empty(x.shape[:2] + tuple(kernel) + (Ho, Wo), dtype=x.dtype)
    for (i, j), v in views:
        cols[:, :, i, j] = v
    return cols, Ho, Wo


def out_hw(hw, kernel, stride, pads, dilation, ceil: bool = False) -> tuple[int, int]:
    """(Ho, Wo) of a 2-D sliding window over an H x W input (:func:`out_size` per axis); a window larger than the
    padded input -> DseError."""
    (H, W), (kh, kw), (dh, dw) = hw, kernel, dilation
    Ho = out_size(H, kh, stride[0], pads[0], pads[2], dh, ceil)
    Wo = out_size(W, kw, stride[1], pads[1], pads[3], dw, ceil)
    if Ho < 1 or Wo < 1:
        raise DseError(f"window {kh}x{kw} (dilation {dh}x{dw}) is larger than the padded input {H}x{W} "
                       f"(pads {list(pads)}); fix the model's kernel/pads")
    return Ho, Wo


def window_views(x: np.ndarray, kernel, stride, pads, dilation, fill: float = 0.0, ceil: bool = False):
    """The kh * kw strided views [B, C, Ho, Wo] of x padded with ``fill`` (element (i, j) of every window) as a list
    of ((i, j), view), Ho, Wo: windows without the copy into one array."""
    B, C, H, W = x.shape
    kh, kw = kernel
    sh, sw = stride
    dh, dw = dilation
    pt, pl, pb, pr = pads
    Ho, Wo = out_hw((H, W), kernel, stride, pads, dilation, ceil)
    eb = max(pb, (Ho - 1) * sh + dh * (kh - 1) + 1 - H - pt)  # extra end padding in ceil mode
    er = max(pr, (Wo - 1) * sw + dw * (kw - 1) + 1 - W - pl)
    if pt or pl or eb or er:
        xp = np.full((B, C, H + pt + eb, W + pl + er), fill, dtype=x.dtype)
        xp[:, :, pt:pt + H, pl:pl + W] = x
    else:
        xp = x
    views = [((i, j), xp[:, :, i * dh: i * dh + sh * (Ho - 1) + 1: sh, j * dw: j * dw + sw * (Wo - 1) + 1: sw])
             for i in range(kh) for j in range(kw)]
    return views, Ho, Wo


def _float32(*arrays) -> bool:
    """True when every array is float32 (None counts as such) and the compiled kernels exist."""
    return _kernels is not None and all(a is None or (isinstance(a, np.ndarray) and a.dtype == np.float32)
                                        for a in arrays)


def conv2d(x: np.ndarray, W: np.ndarray, b: np.ndarray | None, stride, pads, dilation, groups: int) -> np.ndarray:
    """Float32 convolution (ONNX Conv semantics). float32 operands take the compiled ``float_conv``
    (``cy/float_gemm.h``): each output is one chain of fused multiply-adds over its terms (input channel, kernel row,
    kernel column) in that order from +0, padding as zero terms, then + bias -- the same bits on every x86-64 machine,
    ISA level, thread count and batch split, no im2col matrix, no BLAS. Other dtypes (constant folding at import) by
    :func:`reference_conv2d`."""
    if not _float32(x, W, b) or x.ndim != 4:
        return reference_conv2d(x, W, b, stride, pads, dilation, groups)
    hw = out_hw(x.shape[2:], W.shape[2:], stride, pads, dilation)
    return _kernels.float_conv(np.ascontiguousarray(x), np.ascontiguousarray(W),
                               None if b is None else np.ascontiguousarray(b), stride, pads, dilation, groups, hw,
                               None, get_threads())[0]


def gemm(x: np.ndarray, W: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    """``x @ W.T + b`` (x [M, K], W [N, K], b [N] or None): float32 by the compiled ``float_matmul`` (each output one
    chain of fused multiply-adds over ascending k from +0, then + b, as :func:`conv2d`), else numpy."""
    if not _float32(x, W, b) or x.ndim != 2 or W.ndim != 2 or x.shape[1] != W.shape[1]:
        y = x @ W.T
        return y if b is None else y + b
    return _kernels.float_matmul(np.ascontiguousarray(x)[None], np.ascontiguousarray(W)[None],
                                 None if b is None else np.ascontiguousarray(b), True, None, get_threads())[0][0]


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``np.matmul(a, b)`` (leading axes broadcast, 1-D operands as numpy takes them): float32 by the compiled
    ``float_matmul`` (each output one chain of fused multiply-adds over ascending k from +0, as :func:`conv2d`), else
    numpy."""
    if not _float32(a, b) or a.ndim == 0 or b.ndim == 0:
        return np.matmul(a, b)
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    if a2.shape[-1] != b2.shape[-2]:
        return np.matmul(a, b)  # numpy's own error
    lead = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])

    def flat(t):  # [L or 1, rows, cols]: an operand without leading extent is shared by every product
        if int(np.prod(t.shape[:-2], dtype=np.int64)) == 1:
            return np.ascontiguousarray(t.reshape((1,) + t.shape[-2:]))
        return np.ascontiguousarray(np.broadcast_to(t, lead + t.shape[-2:])).reshape((-1,) + t.shape[-2:])
    y = _kernels.float_matmul(flat(a2), flat(b2), None, False, None, get_threads())[0]
    y = y.reshape(lead + y.shape[1:])
    if b.ndim == 1:
        y = y[..., 0]
    if a.ndim == 1:
        y = y[..., 0, :] if b.ndim > 1 else y[..., 0]
    return y


COLS_BYTES = 64 << 20  # im2col matrix of one chunk of images in reference_conv2d


def reference_conv2d(x: np.ndarray, W: np.ndarray, b: np.ndarray | None, stride, pads, dilation,
                     groups: int) -> np.ndarray:
    """Convolution (ONNX Conv semantics) of any dtype via im2col + batched np.matmul (BLAS, whose summation order
    depends on the machine's kernel), over chunks of images whose im2col matrix stays within COLS_BYTES."""
    B, C, H, Wd = x.shape
    kh, kw = W.shape[2:]
    Ho = out_size(H, kh, stride[0], pads[0], pads[2], dilation[0])
    Wo = out_size(Wd, kw, stride[1], pads[1], pads[3], dilation[1])
    step = max(1, COLS_BYTES // max(1, C * kh * kw * max(Ho, 1) * max(Wo, 1) * x.itemsize))
    if step >= B:
        return _conv2d_chunk(x, W, b, stride, pads, dilation, groups)
    out = np.empty((B, W.shape[0], Ho, Wo), dtype=np.result_type(x, W))  # each chunk's matmul writes its slice
    for i in range(0, B, step):
        _conv2d_chunk(x[i:i + step], W, b, stride, pads, dilation, groups, out[i:i + step])
    return out


def _conv2d_chunk(x: np.ndarray, W: np.ndarray, b: np.ndarray | None, stride, pads, dilation, groups: int,
                  out: np.ndarray | None = None):
    B, C = x.shape[:2]
    Cout, Cg, kh, kw = W.shape
    cols, Ho, Wo = windows(x, (kh, kw), stride, pads, dilation)
    g, og = groups, Cout // groups
    cols = cols.reshape(B, g, Cg * kh * kw, Ho * Wo)
    if out is None:
        out = np.empty((B, Cout, Ho, Wo), dtype=np.result_type(W, cols))
    np.matmul(W.reshape(g, og, Cg * kh * kw), cols, out=out.reshape(B, g, og, Ho * Wo))  # [B, g, og, HoWo]
    if b is not None:
        out += b.reshape(1, Cout, 1, 1)
    return out


def pool(x: np.ndarray, a: dict, kind: str) -> np.ndarray:
    H, W = x.shape[2:]
    pt, pl, pb, pr = a["pads"]
    ceil = bool(a.get("ceil_mode", 0))
    if kind == "max":
        return max_pool(x, a["kernel"], a["stride"], a["pads"], a.get("dilation", (1, 1)), ceil)
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


# GlobalAveragePool planes and Softmax / LayerNorm rows up to this many values take the compiled passes (numpy's
# reduction runs each such row in one inner-loop call, whose pairwise order the passes follow; it is not relied on
# beyond)
MAX_REDUCED_ROW = 8192


def global_avg_pool(x: np.ndarray) -> np.ndarray:
    """ONNX GlobalAveragePool of x [B, C, H, W] (float32 mean over each plane): float32 planes of 1 to
    MAX_REDUCED_ROW values by the compiled pass (one thread, as :func:`max_pool`), else numpy's mean; the same bits."""
    if x.dtype != np.float32 or x.ndim != 4 or _kernels is None or not 0 < x.shape[2] * x.shape[3] <= MAX_REDUCED_ROW:
        return reference_global_avg_pool(x)
    return _kernels.global_avg_pool(np.ascontiguousarray(x))


def sigmoid(x: np.ndarray, times_x: int = 0) -> np.ndarray:
    """Sigmoid 1 / (1 + exp(-x)) of a float32 array (``times_x`` 1 / 2: SiLU, x * that / that * x) as a new array:
    numpy's own float32 loops run chunk by chunk in cache by the compiled ``float_sigmoid`` (one pass over memory,
    the same bits; a product of two NaNs is one of them, which one numpy's multiply itself picks by array length and
    aliasing), else :func:`reference_sigmoid`."""
    if x.dtype != np.float32 or x.ndim == 0 or _kernels is None or not _kernels.numpy_loops_found():
        return reference_sigmoid(x, times_x)
    x = np.ascontiguousarray(x)
    out = np.empty_like(x)
    _kernels.float_sigmoid(x.reshape(-1), out.reshape(-1), times_x)
    return out


def sigmoid_quantized(x: np.ndarray, times_x: int, quant) -> np.ndarray:
    """The next layers' quantized input from :func:`sigmoid`'s result without that float32 tensor: ``quant`` (with
    ``scale`` and ``signed``, as dse.kernels.OutputQuant) quantizes it as dse.quant.quantize_act does (the compiled
    ``quantize``'s patterns, viewed as int8 or uint8), each chunk of the compiled pass while it is in cache; the
    float32 result is never stored. Where the compiled pass does not run, :func:`sigmoid` and then the same
    quantization."""
    return _glue_quantized(x, quant, lambda: sigmoid(x, times_x), "float_sigmoid", times_x)


def hardsigmoid_quantized(x: np.ndarray, alpha: float, beta: float, times_x: bool, quant) -> np.ndarray:
    """:func:`hardsigmoid`'s result (HardSwish with ``times_x``) as the next layers' quantized input, as
    :func:`sigmoid_quantized` gives the Sigmoid's."""
    return _glue_quantized(x, quant, lambda: hardsigmoid(x, alpha, beta, times_x), "float_hardsigmoid",
                           float(np.float32(alpha)), float(np.float32(beta)), int(times_x))


def _glue_quantized(x, quant, whole, loop: str, *args) -> np.ndarray:
    """The compiled glue pass ``loop`` (``_kernels.float_sigmoid`` / ``float_hardsigmoid``, called with ``args``)
    emitting only the quantized result; where it does not run, ``whole()`` and then the quantization."""
    if _kernels is None:
        raise DseError("the compiled kernels dse._kernels are missing; build them with 'python setup.py build_ext "
                       "--inplace'")
    if x.dtype != np.float32 or x.ndim == 0 or not _kernels.numpy_loops_found():
        y = np.ascontiguousarray(whole(), np.float32)
        q = _kernels.quantize(y.reshape(-1), np.float32(quant.scale), bool(quant.signed))
        return q.view(quant.dtype).reshape(x.shape)
    x = np.ascontiguousarray(x)
    q = np.empty(x.shape, np.uint8)
    getattr(_kernels, loop)(x.reshape(-1), None, *args, q=q.reshape(-1), qs=np.float32(quant.scale),
                            q_signed=bool(quant.signed))
    return q.view(quant.dtype)


def reference_sigmoid(x: np.ndarray, times_x: int = 0) -> np.ndarray:
    """numpy twin of :func:`sigmoid`: its ufuncs in place on one new buffer (any float dtype; 0-d arrays and other
    dtypes by the plain expression)."""
    if not (isinstance(x, np.ndarray) and x.dtype.kind == "f" and x.ndim > 0):
        s = (1 / (1 + np.exp(-x))).astype(x.dtype)
    else:
        s = np.negative(x)
        np.exp(s, out=s)
        np.add(1, s, out=s)
        np.divide(1, s, out=s)
    return s if not times_x else x * s if times_x == 1 else s * x


def erf(x: np.ndarray) -> np.ndarray:
    """scipy.special.erf of an array as a new array: float32 by the compiled ``float_erf`` (scipy's float32 loop's
    bits: |x| <= 1 by cephes' rational function in compiled code, the rest by the loop), else scipy's ufunc."""
    if x.dtype != np.float32 or x.ndim == 0 or _kernels is None or not _kernels.erf_loop_found():
        from scipy.special import erf as sp_erf

        return sp_erf(x)
    flat, out, flat_out = _elementwise_io(x)
    _kernels.float_erf(flat, flat_out)
    return out


def _elementwise_io(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x's values as a 1-D array, a new float32 array of x's shape, its values as a 1-D view) for a compiled
    elementwise kernel: a tensor whose axes are a permutation of a C-contiguous block (a transposed view, e.g. a
    MatMul's channels-last output of its 1x1 conv) is read in its memory order, no copy, and the output is laid out
    the same way (its consumer's transpose back is then contiguous); any other layout is copied contiguous first.
    Elementwise results do not depend on the order the values are visited in."""
    perm = np.argsort([-s for s in x.strides], kind="stable")
    xt = x.transpose(perm)
    if not xt.flags.c_contiguous:
        xt, perm = np.ascontiguousarray(x), np.arange(x.ndim)
    out = np.empty(xt.shape, np.float32)
    return xt.reshape(-1), out.transpose(np.argsort(perm)), out.reshape(-1)


def gelu_chain(x: np.ndarray, cdiv, cadd, cmul, order: int = 0) -> np.ndarray:
    """GELU as exported in five nodes, ((erf(x / cdiv) + cadd) * x) * cmul (``order`` bits: 1 the Add's constant
    first, 2 the product a * x, 4 the last Mul's constant first), of a float32 array with float32 scalar constants,
    as a new array: numpy's and scipy.special.erf's own float32 loops run chunk by chunk in cache by the compiled
    ``float_gelu`` (one pass over memory, the same bits; where x is NaN and so is erf's chain, the product of the
    two NaNs is one of them, as numpy's multiply itself picks), else :func:`reference_gelu_chain`."""
    if x.dtype != np.float32 or x.ndim == 0 or _kernels is None or not _kernels.numpy_loops_found() or \
            not _kernels.erf_loop_found():
        return reference_gelu_chain(x, cdiv, cadd, cmul, order)
    flat, out, flat_out = _elementwise_io(x)
    _kernels.float_gelu(flat, flat_out, cdiv, cadd, cmul, order)
    return out


def softmax(x: np.ndarray, axis: int, scale: float | None = None) -> np.ndarray:
    """Softmax of x along ``axis`` (with ``scale``, a float32 constant not NaN: of x * scale, the float32 product of a
    Mul before it) as a new array: float32 C-contiguous x along its last axis (rows of 1 to MAX_REDUCED_ROW values)
    by the compiled ``float_softmax`` (one pass over the rows, numpy's own loops for its max, exp and sum; one
    thread, as :func:`max_pool`), else :func:`reference_softmax`; the same bits."""
    if x.dtype != np.float32 or x.ndim == 0 or axis % x.ndim != x.ndim - 1 or not x.flags.c_contiguous or \
            x.size == 0 or not 0 < x.shape[-1] <= MAX_REDUCED_ROW or _kernels is None or \
            not _kernels.numpy_loops_found():
        return reference_softmax(x if scale is None else x * np.float32(scale), axis)
    out = np.empty_like(x)
    _kernels.float_softmax(x.reshape(-1, x.shape[-1]), out.reshape(-1, x.shape[-1]), scale=scale)
    return out


def reference_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    """numpy twin of :func:`softmax`: e = exp(x - max), e / sum(e) along ``axis``."""
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def layernorm(x: np.ndarray, scale: np.ndarray, bias, axis: int, epsilon: float) -> np.ndarray:
    """ONNX LayerNormalization of x over its axes from ``axis`` on (float32 mean and variance, then
    (x - mean) / sqrt(var + epsilon) * scale (+ bias; None: none)) as a new array: float32 C-contiguous x over its last
    axis (rows of 1 to MAX_REDUCED_ROW values) with float32 scale and bias of the row length by the compiled
    ``float_layernorm`` (one pass over each row, numpy's own add loop for its sums; one thread, as :func:`max_pool`),
    else :func:`reference_layernorm`; the same bits (where a NaN of scale or bias meets a NaN value, one of the two,
    as numpy's own loops pick either)."""
    n = x.shape[-1] if x.ndim else 0
    if x.dtype != np.float32 or x.ndim == 0 or axis % x.ndim != x.ndim - 1 or not x.flags.c_contiguous or \
            x.size == 0 or not 0 < n <= MAX_REDUCED_ROW or _kernels is None or not _kernels.numpy_loops_found() or \
            not all(isinstance(v, np.ndarray) and v.dtype == np.float32 and v.shape == (n,)
                    for v in ((scale,) if bias is None else (scale, bias))):
        return reference_layernorm(x, scale, bias, axis, epsilon)
    out = np.empty_like(x)
    _kernels.float_layernorm(x.reshape(-1, n), np.ascontiguousarray(scale),
                             None if bias is None else np.ascontiguousarray(bias), float(np.float32(epsilon)),
                             out.reshape(-1, n))
    return out


def reference_layernorm(x: np.ndarray, scale: np.ndarray, bias, axis: int, epsilon: float) -> np.ndarray:
    """numpy twin of :func:`layernorm`."""
    axes = tuple(range(axis % x.ndim, x.ndim))
    mu = x.mean(axis=axes, keepdims=True, dtype=np.float32)
    d = x - mu
    var = (d * d).mean(axis=axes, keepdims=True, dtype=np.float32)
    y = d / np.sqrt(var + np.float32(epsilon)) * scale
    return y + bias if bias is not None else y


def reference_gelu_chain(x: np.ndarray, cdiv, cadd, cmul, order: int = 0) -> np.ndarray:
    """numpy twin of :func:`gelu_chain`: the nodes' ufuncs as the emulator runs them (the quotient and erf as new
    arrays, the Add and both Muls in place on erf's result)."""
    from scipy.special import erf

    c = [np.asarray(v, np.float32) for v in (cdiv, cadd, cmul)]
    with np.errstate(all="ignore"):
        e = erf(x / c[0]).astype(x.dtype)
        np.add(c[1], e, out=e) if order & 1 else np.add(e, c[1], out=e)
        np.multiply(e, x, out=e) if order & 2 else np.multiply(x, e, out=e)
        np.multiply(c[2], e, out=e) if order & 4 else np.multiply(e, c[2], out=e)
    return e


# ONNX HardSwish is x * HardSigmoid(x) with these alpha and beta
HARDSWISH_ALPHA, HARDSWISH_BETA = 1 / 6, 0.5


def hardsigmoid(x: np.ndarray, alpha: float, beta: float, times_x: bool = False) -> np.ndarray:
    """HardSigmoid clip(x * alpha + beta, 0, 1) in x's dtype (``times_x``: HardSwish, x times that) as a new array:
    float32 by the compiled ``float_hardsigmoid`` (numpy's own loops chunk by chunk in cache, the same bits), else
    :func:`reference_hardsigmoid`."""
    if x.dtype != np.float32 or x.ndim == 0 or _kernels is None or not _kernels.numpy_loops_found():
        return reference_hardsigmoid(x, alpha, beta, times_x)
    x = np.ascontiguousarray(x)
    out = np.empty_like(x)
    _kernels.float_hardsigmoid(x.reshape(-1), out.reshape(-1), float(np.float32(alpha)), float(np.float32(beta)),
                               int(times_x))
    return out


def reference_hardsigmoid(x: np.ndarray, alpha: float, beta: float, times_x: bool = False) -> np.ndarray:
    """numpy twin of :func:`hardsigmoid`: its ufuncs in place on one new buffer (0-d arrays and non-float dtypes by
    the plain expression)."""
    if not (isinstance(x, np.ndarray) and x.dtype.kind == "f" and x.ndim > 0):
        y = np.clip(x * x.dtype.type(alpha) + x.dtype.type(beta), 0, 1).astype(x.dtype)
        return x * y if times_x else y
    t = np.multiply(x, x.dtype.type(alpha))
    np.add(t, x.dtype.type(beta), out=t)
    np.clip(t, 0, 1, out=t)
    return np.multiply(x, t, out=t) if times_x else t


def reference_global_avg_pool(x: np.ndarray) -> np.ndarray:
    """numpy twin of :func:`global_avg_pool`."""
    return x.mean(axis=(2, 3), keepdims=True, dtype=np.float32)


def max_pool(x: np.ndarray, kernel, stride, pads, dilation, ceil: bool = False) -> np.ndarray:
    """ONNX MaxPool of x [B, C, H, W]: float32 by the compiled loop (one thread), other dtypes (constant folding) by
    :func:`reference_max_pool`; the same bits either way."""
    if x.dtype != np.float32 or _kernels is None:
        return reference_max_pool(x, kernel, stride, pads, dilation, ceil)
    hw = out_hw(x.shape[2:], kernel, stride, pads, dilation, ceil)
    return _kernels.max_pool(np.ascontiguousarray(x), kernel, stride, pads, dilation, hw)[0]


def reference_max_pool(x: np.ndarray, kernel, stride, pads, dilation, ceil: bool = False) -> np.ndarray:
    """numpy twin of :func:`max_pool`: a running np.maximum over the window's strided views (padded with -inf) in
    row-major tap order, no [B, C, kh, kw, Ho, Wo] copy."""
    views, Ho, Wo = window_views(x, kernel, stride, pads, dilation, -np.inf, ceil)
    out = np.array(views[0][1])
    for _, v in views[1:]:
        np.maximum(out, v, out=out)
    return out
