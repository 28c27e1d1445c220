"""Post-training FxP8 quantization (owner of the FxP8 semantics in docs/ARCHITECTURE.md).

``calibrate(graph, x_calib, method="max"|"percentile") -> QuantModel``. The data classes below are the contract other
modules (emulate, energy, correction, predict, search) rely on; extend them, do not rename fields.

Semantics: only MAC-layer inputs are quantized. Activations: per-tensor scale ``s_a`` (float32 value), zero point 0,
unsigned [0, 255] when the tensor is >= 0 on all calibration images, else signed [-128, 127] with ``s_a = amax / 127``;
``q = clip(rint(float32(x) / float32(s_a)), qmin, qmax)`` (rint = round half to even). Weights: per output channel
``s_w[c] = float32(max|W_c| / 127)``, ``q = clip(rint(W / s_w), -127, 127)`` (int8). Layer output:
``float32((acc * s_a) * s_w[c]) + bias[c]`` with the products in float64 (:func:`dequantize`).
Calibration ``amax``: "max" = max |x|; "percentile" = the ``percentile``-th percentile of |x|.
"""
from dataclasses import dataclass, field

import numpy as np

from dse.errors import DseError


@dataclass
class MacLayer:
    """One MAC layer (Conv or Gemm/MatMul) as the accelerator sees it; per-image GEMM view M x K x N."""

    name: str                 # unique ONNX node name
    op: str                   # "conv" or "gemm"
    in_shape: tuple           # per image: (C, H, W) for conv, (K,) for gemm
    out_shape: tuple          # per image: (Cout, Ho, Wo) for conv, (N,) for gemm
    kernel: tuple = (1, 1)
    stride: tuple = (1, 1)
    pads: tuple = (0, 0, 0, 0)  # top, left, bottom, right
    dilation: tuple = (1, 1)
    groups: int = 1
    M: int = 1                # output positions per image (Ho*Wo, or 1 for gemm)
    K: int = 1                # MACs per output = Cin/groups*kh*kw
    N: int = 1                # output channels
    w_q: np.ndarray | None = None       # int8 weights [Cout, Cin/g, kh, kw] (conv) or [N, K] (gemm)
    w_scale: np.ndarray | None = None   # float32 [Cout]
    bias: np.ndarray | None = None      # float32 [Cout]
    a_scale: float = 1.0
    a_signed: bool = False
    act_hist: np.ndarray | None = None  # int64[256]: calibration histogram of activation patterns (incl. padding zeros)
    acc_std: float = 1.0      # std of the exact integer accumulators (pre-bias) over calibration, all channels
    acc_std_ch: np.ndarray | None = None  # float64[N]: the same per output channel
    input: str = ""           # graph tensor feeding the layer (shared tensors share one quantization)

    @property
    def macs(self) -> int:
        """MACs per image."""
        return self.M * self.K * self.N

    @property
    def n_weights(self) -> int:
        return self.K * self.N


@dataclass
class QuantModel:
    graph: object                              # dse.model.graph.Graph
    layers: list = field(default_factory=list)  # [MacLayer] in execution order
    input_name: str = ""
    # tensor name -> (scale, signed) for every quantized tensor (inputs of MAC layers)
    act_quant: dict = field(default_factory=dict)

    def layer(self, name: str) -> MacLayer:
        for l in self.layers:
            if l.name == name:
                return l
        raise KeyError(name)


CALIB_METHODS = ("max", "percentile")
DEFAULT_METHOD = "max"
DEFAULT_PERCENTILE = 99.99


def quantize_act(x: np.ndarray, scale: float, signed: bool) -> np.ndarray:
    """FxP8 activation values: int8 (signed) or uint8 array, ``clip(rint(x / scale), qmin, qmax)`` (one fused pass
    of dse._kernels.quantize; :func:`reference_quantize_act` is the numpy twin it is tested against)."""
    from dse.kernels import quantize_patterns

    return quantize_patterns(x, scale, signed).view(np.int8 if signed else np.uint8)


def reference_quantize_act(x: np.ndarray, scale: float, signed: bool) -> np.ndarray:
    """numpy twin of :func:`quantize_act`."""
    lo, hi = (-128, 127) if signed else (0, 255)
    q = np.rint(np.asarray(x, dtype=np.float32) / np.float32(scale))
    return np.clip(q, lo, hi).astype(np.int8 if signed else np.uint8)


def quantize_weights(W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-output-channel symmetric int8 weights: (w_q int8 same shape, s_w float32[Cout])."""
    W = np.asarray(W, dtype=np.float32)
    amax = np.abs(W.reshape(W.shape[0], -1)).max(axis=1)
    s = np.where(amax > 0, amax / np.float32(127), np.float32(1)).astype(np.float32)
    q = np.clip(np.rint(W / s.reshape((-1,) + (1,) * (W.ndim - 1))), -127, 127).astype(np.int8)
    return q, s


def dequantize(acc: np.ndarray, layer: MacLayer) -> np.ndarray:
    """``float32((acc * s_a) * s_w[c]) + bias[c]`` (float64 products); ``acc`` [B, N] or [B, N, Ho, Wo]. int64
    accumulators take the fused pass dse._kernels.dequantize, float ones (after CV correction) the numpy twin."""
    from dse.kernels import scale_accumulators

    if acc.dtype == np.int64:
        return scale_accumulators(acc, layer.a_scale, layer.w_scale, layer.bias)
    return reference_dequantize(acc, layer)


def reference_dequantize(acc: np.ndarray, layer: MacLayer) -> np.ndarray:
    """numpy twin of :func:`dequantize` (any numeric acc)."""
    sh = (1, -1) + (1,) * (acc.ndim - 2)
    y = (np.asarray(acc, dtype=np.float64) * float(layer.a_scale)) * layer.w_scale.astype(np.float64).reshape(sh)
    return y.astype(np.float32) + layer.bias.reshape(sh)


def _act_scale(stats: dict, method: str, percentile: float) -> tuple[float, bool]:
    signed = stats["min"] < 0
    if method == "max":
        amax = max(abs(stats["min"]), abs(stats["max"]))
    else:
        a = np.abs(np.concatenate(stats["values"]))
        amax = float(np.percentile(a, percentile)) if a.size else 0.0
    qmax = 127 if signed else 255
    scale = float(np.float32(amax / qmax)) if amax > 0 else 1.0
    return scale, bool(signed)


def _int_patterns(q: np.ndarray, layer: MacLayer) -> np.ndarray:
    """Operand matrix seen by the multipliers for one batch: conv -> [B, g, Cg*kh*kw, Ho*Wo] (padding zeros
    included), gemm -> [B, K]."""
    from dse.model.float_exec import windows

    if layer.op == "gemm":
        return q
    cols, Ho, Wo = windows(q, layer.kernel, layer.stride, layer.pads, layer.dilation)
    B, C = q.shape[:2]
    return cols.reshape(B, layer.groups, (C // layer.groups) * layer.kernel[0] * layer.kernel[1], Ho * Wo)


def exact_acc(q: np.ndarray, layer: MacLayer) -> np.ndarray:
    """Exact integer accumulators sum_k a_k * w_k (int64, [B, N] or [B, N, Ho, Wo]) via float64 GEMM (exact:
    |acc| < 2^53)."""
    A = _int_patterns(q, layer).astype(np.float64)
    if layer.op == "gemm":
        return np.rint(A @ layer.w_q.astype(np.float64).T).astype(np.int64)
    g, N = layer.groups, layer.N
    Wm = layer.w_q.astype(np.float64).reshape(g, N // g, -1)
    out = np.matmul(Wm, A)  # [B, g, N/g, HoWo]
    return np.rint(out).astype(np.int64).reshape((q.shape[0],) + tuple(layer.out_shape))


def calibrate(graph, x_calib, method: str = DEFAULT_METHOD, percentile: float = DEFAULT_PERCENTILE,
              batch_size: int = 250) -> QuantModel:
    """Post-training FxP8 quantization of ``graph`` from preprocessed calibration images ``x_calib``.

    Fills every MacLayer (geometry, int8 weights and scales, activation scale/signedness, ``act_hist`` = counts of
    the activation patterns in the multiplier operand matrix incl. padding zeros, ``acc_std``/``acc_std_ch`` of the
    exact accumulators on calibration with float-path inputs).
    """
    from dse.model.float_exec import check_input, run_float_all

    if method not in CALIB_METHODS:
        raise DseError(f"calibration method '{method}' is unknown; use one of {', '.join(CALIB_METHODS)}")
    if not 0 < percentile <= 100:
        raise DseError(f"calibration percentile {percentile} must be in (0, 100]")
    x = check_input(graph, x_calib)
    if len(x) == 0:
        raise DseError("calibration set is empty; give at least one image (e.g. fashion-mnist:calib)")
    macs = graph.mac_nodes
    if not macs:
        raise DseError(f"{graph.source}: the model has no Conv/Gemm/MatMul layer to quantize")
    tensors = {n.inputs[0] for n in macs}
    stats = {t: {"min": np.inf, "max": -np.inf, "values": []} for t in tensors}
    for i in range(0, len(x), batch_size):
        env = run_float_all(graph, x[i:i + batch_size], keep=tensors)
        for t in tensors:
            v = env[t]
            st = stats[t]
            st["min"] = min(st["min"], float(v.min()))
            st["max"] = max(st["max"], float(v.max()))
            if method == "percentile":
                st["values"].append(v.ravel().copy())
    act_quant = {t: _act_scale(stats[t], method, percentile) for t in tensors}
    stats.clear()

    layers = []
    for n in macs:
        t = n.inputs[0]
        s_a, signed = act_quant[t]
        w_q, s_w = quantize_weights(n.params["W"])
        in_shape, out_shape = tuple(graph.shapes[t]), tuple(graph.shapes[n.output])
        if n.op == "conv":
            Cout, Cg, kh, kw = w_q.shape
            layer = MacLayer(name=n.name, op="conv", in_shape=in_shape, out_shape=out_shape, kernel=(kh, kw),
                             stride=tuple(n.attrs["stride"]), pads=tuple(n.attrs["pads"]),
                             dilation=tuple(n.attrs["dilation"]), groups=int(n.attrs["groups"]),
                             M=int(out_shape[1] * out_shape[2]), K=int(Cg * kh * kw), N=int(Cout))
        else:
            layer = MacLayer(name=n.name, op="gemm", in_shape=in_shape, out_shape=out_shape, M=1,
                             K=int(w_q.shape[1]), N=int(w_q.shape[0]))
        layer.w_q, layer.w_scale = w_q, s_w
        layer.bias = np.asarray(n.params["b"], dtype=np.float32)
        layer.a_scale, layer.a_signed, layer.input = s_a, signed, t
        layers.append(layer)

    # second pass: operand histograms and exact accumulator statistics
    hist = {l.name: np.zeros(256, np.int64) for l in layers}
    s1 = {l.name: np.zeros(l.N) for l in layers}
    s2 = {l.name: np.zeros(l.N) for l in layers}
    cnt = {l.name: 0 for l in layers}
    for i in range(0, len(x), batch_size):
        env = run_float_all(graph, x[i:i + batch_size], keep=tensors)
        qcache = {t: quantize_act(env[t], *act_quant[t]) for t in tensors}
        for l in layers:
            q = qcache[l.input]
            pat = _int_patterns(q, l)
            hist[l.name] += np.bincount((pat.astype(np.int64) & 0xFF).ravel(), minlength=256)
            acc = exact_acc(q, l).astype(np.float64)
            red = (0,) if acc.ndim == 2 else (0, 2, 3)
            s1[l.name] += acc.sum(axis=red)
            s2[l.name] += (acc * acc).sum(axis=red)
            cnt[l.name] += acc.size // l.N
    for l in layers:
        c = cnt[l.name]
        m1, m2 = s1[l.name] / c, s2[l.name] / c
        l.act_hist = hist[l.name]
        l.acc_std_ch = np.sqrt(np.maximum(m2 - m1 * m1, 0.0))
        mu = m1.mean()
        l.acc_std = float(np.sqrt(max(m2.mean() - mu * mu, 0.0)))
    return QuantModel(graph=graph, layers=layers, input_name=graph.input_name, act_quant=act_quant)
