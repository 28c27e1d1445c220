"""Post-training FxP8 quantization (owner of the FxP8 semantics in docs/ARCHITECTURE.md).

``calibrate(graph, x_calib, method="max"|"percentile") -> QuantModel``. The data classes below are the contract other
modules (emulate, energy, correction, predict, search) rely on; extend them, do not rename fields.

Semantics: only MAC-layer inputs are quantized. Activations: per-tensor scale ``s_a`` (float32 value), zero point 0,
unsigned [0, 255] when the tensor is >= 0 on all calibration images, else signed [-128, 127] with ``s_a = amax / 127``;
``q = clip(rint(float32(x) / float32(s_a)), qmin, qmax)`` (rint = round half to even). Weights: per output channel
``s_w[c] = float32(max|W_c| / 127)``, ``q = clip(rint(W / s_w), -127, 127)`` (int8). Layer output:
``float32((acc * s_a) * s_w[c]) + bias[c]`` with the products in float64 (:func:`dequantize`).
A ``matmul`` layer (activation x activation, attention's QK^T and AV) quantizes both operands per tensor: the left
one as any activation (on the multiplier's activation port), the right one always signed int8 (``s_b = amax / 127``,
the multiplier's signed weight port; a tensor read there is quantized signed for all its consumers); its output is
``float32((acc * s_a) * s_b)``, no bias.
Calibration ``amax``: "max" = max |x|; "percentile" = the ``percentile``-th percentile of |x| (numpy's linear
interpolation). Calibration streams batches (see :func:`calibrate`).
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

import numpy as np

from dse.errors import DseError

if TYPE_CHECKING:
    from dse.kernels import OutputAct, Scaling


@dataclass
class MacLayer:
    """One MAC layer (Conv or Gemm/MatMul) as the accelerator sees it; per-image GEMM view M x K x N.

    A ``matmul`` layer (two activations, ``A`` [..., M, K] @ ``B`` [..., K, N']) is ``S`` independent GEMMs per image
    (S = heads, the broadcast leading axes): ``M`` rows, ``K``, ``N = S * N'`` and ``groups = S``, so ``macs`` and the
    PE-array mapping count them like grouped convolutions. Its "weights" are the operand ``B`` (``b_input``), loaded
    per image: ``w_q`` holds ``B``'s int8 values on the first calibration images as rows [n, K] (a sample for the
    error statistics of the predictor), ``w_scale`` = [s_b], ``bias`` = [0].
    """

    name: str                 # unique ONNX node name
    op: str                   # "conv", "gemm" or "matmul"
    in_shape: tuple           # per image: (C, H, W) for conv, (K,) for gemm, the left operand's for matmul
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
    act_mean: np.ndarray | None = None  # float64[G, K]: calibration mean activation VALUE at each reduction position
    #                                     (per group, padding zeros included); None = positions assumed alike
    acc_std: float = 1.0      # std of the exact integer accumulators (pre-bias) over calibration, all channels
    acc_std_ch: np.ndarray | None = None  # float64[N]: the same per output channel
    input: str = ""           # graph tensor feeding the layer (shared tensors share one quantization)
    b_input: str = ""         # matmul: the right operand's tensor (quantized signed, scale w_scale[0])

    @property
    def dynamic_weights(self) -> bool:
        """True for a matmul layer: its weight-port operand is an activation, loaded per image."""
        return self.op == "matmul"

    @property
    def macs(self) -> int:
        """MACs per image."""
        return self.M * self.K * self.N

    @property
    def n_weights(self) -> int:
        return self.K * self.N

    def scaling(self, act: OutputAct | None = None) -> Scaling:
        """The layer's output stage ``float32((acc * s_a) * s_w[c]) + bias[c]``, then ``act`` (a fused Relu/Clip)."""
        from dse.kernels import Scaling

        return Scaling(self.a_scale, self.w_scale, self.bias, act)


@dataclass
class QuantModel:
    graph: object                              # dse.model.graph.Graph
    layers: list = field(default_factory=list)  # [MacLayer] in execution order
    input_name: str = ""
    # tensor name -> (scale, signed) for every quantized tensor (inputs of MAC layers)
    act_quant: dict = field(default_factory=dict)

    @property
    def layer_names(self) -> list[str]:
        """MAC layer names in execution order."""
        return [l.name for l in self.layers]

    def layer(self, name: str) -> MacLayer:
        for l in self.layers:
            if l.name == name:
                return l
        raise KeyError(name)

    def state(self) -> "CalibrationState":
        """Everything calibration computed (not the graph), as JSON values and numpy arrays."""
        layers, arrays = [], {}
        for i, l in enumerate(self.layers):
            d = {}
            for f in fields(MacLayer):
                v = getattr(l, f.name)
                if isinstance(v, np.ndarray):
                    arrays[f"{i}.{f.name}"] = v
                elif isinstance(v, tuple):
                    d[f.name] = [int(x) for x in v]
                elif isinstance(v, np.generic):
                    d[f.name] = v.item()
                else:
                    d[f.name] = v
            layers.append(d)
        act = {t: [float(s), bool(signed)] for t, (s, signed) in self.act_quant.items()}
        return CalibrationState({"input_name": self.input_name, "layers": layers, "act_quant": act}, arrays)

    @classmethod
    def from_state(cls, graph, state: "CalibrationState") -> "QuantModel":
        """The QuantModel of ``graph`` whose calibration is ``state`` (from :meth:`state`)."""
        layers = []
        for i, d in enumerate(state.meta["layers"]):
            kw = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
            kw.update({f.name: state.arrays[f"{i}.{f.name}"] for f in fields(MacLayer)
                       if f"{i}.{f.name}" in state.arrays})
            layers.append(MacLayer(**kw))
        act = {t: (float(s), bool(signed)) for t, (s, signed) in state.meta["act_quant"].items()}
        return cls(graph=graph, layers=layers, input_name=state.meta["input_name"], act_quant=act)


@dataclass(frozen=True)
class CalibrationState:
    """A QuantModel's calibration without its graph: ``meta`` holds JSON values only, ``arrays`` numpy arrays (so a
    cache stores it as .npz + JSON, never a pickle)."""

    meta: dict
    arrays: dict


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


def dequantize(acc: np.ndarray, layer: MacLayer, act: OutputAct | None = None) -> np.ndarray:
    """``float32((acc * s_a) * s_w[c]) + bias[c]`` (float64 products), then ``act`` (the layer's Relu/Clip, if it is
    fused); ``acc`` [B, N] or [B, N, Ho, Wo]. int64 accumulators take the fused pass dse._kernels.dequantize, float
    ones (after CV correction) the numpy twin."""
    from dse.kernels import scale_accumulators

    if acc.dtype == np.int64:
        return scale_accumulators(acc, layer.scaling(act))
    y = reference_dequantize(acc, layer)
    return y if act is None else act.apply(y)


def reference_dequantize(acc: np.ndarray, layer: MacLayer) -> np.ndarray:
    """numpy twin of :func:`dequantize` without an activation (any numeric acc)."""
    sh = (1, -1) + (1,) * (acc.ndim - 2)
    y = (np.asarray(acc, dtype=np.float64) * float(layer.a_scale)) * layer.w_scale.astype(np.float64).reshape(sh)
    return y.astype(np.float32) + layer.bias.reshape(sh)


def _act_scale(vmin: float, vmax: float, amax: float, force_signed: bool = False) -> tuple[float, bool]:
    signed = vmin < 0 or force_signed
    qmax = 127 if signed else 255
    scale = float(np.float32(amax / qmax)) if amax > 0 else 1.0
    return scale, bool(signed)


def operand_histogram(q: np.ndarray, layer: MacLayer) -> np.ndarray:
    """int64[256] counts of the activation patterns in the layer's operand matrix for one batch (every window
    position of every kernel tap, padding zeros included; all groups), without building the im2col matrix."""
    if layer.op in ("gemm", "matmul"):
        return np.bincount(q.view(np.uint8).ravel(), minlength=256).astype(np.int64)
    B, C, H, W = q.shape
    (kh, kw), (sh, sw), (dh, dw), (pt, pl, pb, pr) = layer.kernel, layer.stride, layer.dilation, layer.pads
    Ho, Wo = layer.out_shape[1], layer.out_shape[2]
    xp = np.zeros((B, C, H + pt + pb, W + pl + pr), dtype=np.uint8)
    xp[:, :, pt:pt + H, pl:pl + W] = q.view(np.uint8)
    hist = np.zeros(256, np.int64)
    for i in range(kh):
        for j in range(kw):
            tap = xp[:, :, i * dh: i * dh + sh * (Ho - 1) + 1: sh, j * dw: j * dw + sw * (Wo - 1) + 1: sw]
            hist += np.bincount(np.ascontiguousarray(tap).ravel(), minlength=256)
    return hist


def operand_sums(q: np.ndarray, layer: MacLayer) -> np.ndarray:
    """float64[G, K] sums of the activation VALUES at each reduction position of the layer's operand matrix for one
    batch (K in the weights' order: input channel of the group, kernel row, kernel column; padding zeros included),
    summed over images and output positions, without building the im2col matrix."""
    q = np.asarray(q)
    if layer.op == "matmul":  # the left operand [..., M, K]: one group
        return q.reshape(-1, layer.K).sum(axis=0, dtype=np.int64).astype(np.float64)[None, :]
    if layer.op == "gemm":
        return q.reshape(q.shape[0], -1).sum(axis=0, dtype=np.int64).astype(np.float64)[None, :]
    (kh, kw), (sh, sw), (dh, dw), (pt, pl, pb, pr) = layer.kernel, layer.stride, layer.dilation, layer.pads
    Ho, Wo = layer.out_shape[1], layer.out_shape[2]
    # the window sums commute with the sum over images: sum the batch first (exact integers), then slide on [C, H, W]
    xp = np.pad(q.sum(axis=0, dtype=np.int64), ((0, 0), (pt, pb), (pl, pr)))
    out = np.zeros((q.shape[1], kh, kw))
    for i in range(kh):
        for j in range(kw):
            out[:, i, j] = xp[:, i * dh: i * dh + sh * (Ho - 1) + 1: sh,
                              j * dw: j * dw + sw * (Wo - 1) + 1: sw].sum(axis=(1, 2))
    return out.reshape(layer.groups, -1)


def exact_acc(q: np.ndarray, layer: MacLayer, qb: np.ndarray | None = None) -> np.ndarray:
    """Exact integer accumulators sum_k a_k * w_k (int64, [B, N] or [B, N, Ho, Wo]; matmul: [..., M, N'] of the
    operands ``q`` and ``qb``) via dse.kernels (exact path)."""
    from dse import kernels
    from dse.arith.multipliers import EXACT

    if layer.op == "matmul":
        return kernels.matmul_int(q, qb, EXACT, layer.a_signed)
    if layer.op == "gemm":
        return kernels.gemm_int(q, layer.w_q, EXACT, layer.a_signed)
    return kernels.conv2d_int(q, layer.w_q, EXACT, layer.a_signed, layer.stride, layer.pads, layer.dilation,
                              layer.groups)


# Working memory one calibration/evaluation batch may take (bytes): bounds the batch size of large inputs.
STREAM_BUDGET = 384 << 20


def stream_batch_size(graph, requested: int | None = None) -> int:
    """Images per batch so that one batch's live tensors stay within STREAM_BUDGET: per image, the largest MAC layer
    working set (float input, uint8 operand matrix, int64 accumulators and float32 output) and the graph input.
    ``requested`` (if given) caps it."""
    per = 4 * int(np.prod(graph.input_shape))
    for n in graph.mac_nodes:
        cin = sum(int(np.prod(graph.shapes[t])) for t in n.inputs)
        out = int(np.prod(graph.shapes[n.output]))
        if n.op == "matmul":
            per = max(per, 5 * cin + 16 * out)
            continue
        W = n.params["W"]
        k = int(np.prod(W.shape[1:]))
        per = max(per, 5 * cin + k * out // max(1, W.shape[0]) + 16 * out)
    b = max(1, STREAM_BUDGET // max(1, per))
    return b if requested is None else max(1, min(b, int(requested)))


def _batches(x_calib, graph, batch_size: int):
    """Re-iterable over float32 batches: slices of an array, or the batches of a re-iterable (list, Dataset, ...)."""
    from dse.model.float_exec import check_input

    if isinstance(x_calib, np.ndarray):
        x = check_input(graph, x_calib)
        return [x[i:i + batch_size] for i in range(0, len(x), batch_size)]
    if iter(x_calib) is x_calib:
        raise DseError("[data] calib: calibration reads the images twice; give an array or a re-iterable of batches "
                       "(a list or a data set), not a one-shot iterator")
    return _Rebatch(x_calib, graph)


class _Rebatch:
    def __init__(self, source, graph):
        self.source, self.graph = source, graph

    def __iter__(self):
        from dse.model.float_exec import check_input

        for b in self.source:
            yield check_input(self.graph, b)


def _walk(graph, x: np.ndarray, watch: set, visit) -> None:
    """Run the float graph on one batch; ``visit(tensor, array)`` for each watched tensor as soon as it exists. Tensors
    are freed after their last use, so a batch holds only its live tensors."""
    from dse.model.float_exec import exec_node

    last = {}
    for i, n in enumerate(graph.nodes):
        for t in n.inputs:
            last[t] = i
    env = {graph.input_name: np.asarray(x, dtype=np.float32)}
    if graph.input_name in watch:
        visit(graph.input_name, env[graph.input_name])
    for i, n in enumerate(graph.nodes):
        env[n.output] = exec_node(n, [env[t] for t in n.inputs])
        for t in n.inputs:
            if last[t] == i:
                env.pop(t, None)
        if n.output in watch:
            visit(n.output, env[n.output])


class _Tail:
    """The largest ``size`` values of |x| seen so far (for an exact percentile without keeping every value)."""

    def __init__(self, size: int):
        self.size = size
        self.vals = np.zeros(0, np.float32)

    def add(self, v: np.ndarray) -> None:
        a = np.abs(v.ravel())
        if a.size > self.size:
            a = np.partition(a, a.size - self.size)[a.size - self.size:]
        a = np.concatenate([self.vals, a])
        if a.size > self.size:
            a = np.partition(a, a.size - self.size)[a.size - self.size:]
        self.vals = a

    def percentile(self, n: int, p: float) -> float:
        """numpy's default (linear) percentile of all n values of |x|, from the retained tail."""
        h = (n - 1) * p / 100.0
        lo = int(np.floor(h))
        tail = np.sort(self.vals)  # tail[j] = sorted(|x|)[n - size + j]
        base = n - tail.size
        a = float(tail[lo - base])
        b = float(tail[min(lo + 1, n - 1) - base])
        return a + (h - lo) * (b - a)


def _range_pass(graph, batches, tensors: set) -> dict:
    """{tensor: [min, max, count]} over every calibration image."""
    st = {t: [np.inf, -np.inf, 0] for t in tensors}

    def visit(t, v):
        s = st[t]
        s[0], s[1], s[2] = min(s[0], float(v.min())), max(s[1], float(v.max())), s[2] + v.size
    for xb in batches:
        _walk(graph, xb, tensors, visit)
    return st


def _percentile_amax(graph, batches, rng: dict, percentile: float) -> dict:
    """{tensor: percentile of |x|}: one more pass keeping only the tail above the wanted order statistic."""
    tails = {}
    for t, (_, _, n) in rng.items():
        lo = int(np.floor((n - 1) * percentile / 100.0))
        tails[t] = _Tail(max(1, n - lo))
    for xb in batches:
        _walk(graph, xb, set(tails), lambda t, v: tails[t].add(v))
    return {t: tails[t].percentile(rng[t][2], percentile) for t in tails}


def _make_matmul(graph, n, act_quant: dict) -> MacLayer:
    a, b = n.inputs
    in_shape, out_shape = tuple(graph.shapes[a]), tuple(graph.shapes[n.output])
    M, K, Nb = int(in_shape[-2]), int(in_shape[-1]), int(graph.shapes[b][-1])
    S = int(np.prod(out_shape)) // (M * Nb)
    s_a, signed = act_quant[a]
    return MacLayer(name=n.name, op="matmul", in_shape=in_shape, out_shape=out_shape, M=M, K=K, N=S * Nb, groups=S,
                    w_scale=np.array([act_quant[b][0]], np.float32), bias=np.zeros(1, np.float32), a_scale=s_a,
                    a_signed=signed, input=a, b_input=b)


def _make_layer(graph, n, act_quant: dict) -> MacLayer:
    if n.op == "matmul":
        return _make_matmul(graph, n, act_quant)
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
        K = int(w_q.shape[1])  # rows per image: 1, or the tokens of a batch-merged [N * tokens, K] input
        layer = MacLayer(name=n.name, op="gemm", in_shape=in_shape, out_shape=out_shape,
                         M=int(np.prod(in_shape)) // K, K=K, N=int(w_q.shape[0]))
    layer.w_q, layer.w_scale = w_q, s_w
    layer.bias = np.asarray(n.params["b"], dtype=np.float32)
    layer.a_scale, layer.a_signed, layer.input = s_a, signed, t
    return layer


W_SAMPLE_ROWS = 4096  # rows of a matmul layer's right operand kept as its weight sample (w_q)


def _operand_pass(graph, batches, layers: list, act_quant: dict) -> None:
    """Fill act_hist, act_mean, acc_std_ch and acc_std of every layer (running sums over the batches); matmul layers
    also get their weight sample ``w_q`` (the right operand on the first batch)."""
    by_tensor: dict = {}
    for l in layers:
        by_tensor.setdefault(l.input, []).append(l)
        if l.b_input:
            by_tensor.setdefault(l.b_input, [])
    stat_n = {l.name: l.N // l.groups if l.op == "matmul" else l.N for l in layers}
    hist = {l.name: np.zeros(256, np.int64) for l in layers}
    vsum = {l.name: np.zeros((1 if l.op == "matmul" else l.groups, l.K)) for l in layers}
    s1 = {l.name: np.zeros(stat_n[l.name]) for l in layers}
    s2 = {l.name: np.zeros(stat_n[l.name]) for l in layers}
    cnt = {l.name: 0 for l in layers}
    held: dict = {}  # quantized operands of matmul layers in the current batch
    operands = {t for l in layers if l.op == "matmul" for t in (l.input, l.b_input)}

    def moments(l, acc):
        acc = acc.astype(np.float64)
        acc = acc.reshape(-1, l.N // l.groups)[:, :, None] if l.op == "matmul" else acc.reshape(acc.shape[0], l.N, -1)
        s1[l.name] += acc.sum(axis=(0, 2))
        s2[l.name] += np.einsum("bns,bns->n", acc, acc)
        cnt[l.name] += acc.size // acc.shape[1]

    def visit(t, v):
        q = quantize_act(v, *act_quant[t])
        for l in by_tensor[t]:
            hist[l.name] += operand_histogram(q, l)
            vsum[l.name] += operand_sums(q, l)
            if l.op != "matmul":
                moments(l, exact_acc(q, l))
        if t not in operands:
            return
        held[t] = q
        for l in layers:
            if l.op == "matmul" and t in (l.input, l.b_input) and l.input in held and l.b_input in held:
                qa, qb = held[l.input], held[l.b_input].view(np.int8)
                moments(l, exact_acc(qa, l, qb))
                if l.w_q is None:
                    l.w_q = np.ascontiguousarray(np.swapaxes(qb, -1, -2).reshape(-1, l.K)[:W_SAMPLE_ROWS])
    for xb in batches:
        held.clear()
        _walk(graph, xb, set(by_tensor), visit)
    held.clear()
    for l in layers:
        c = cnt[l.name]
        m1, m2 = s1[l.name] / c, s2[l.name] / c
        l.act_hist = hist[l.name]
        l.act_mean = vsum[l.name] / c
        l.acc_std_ch = np.tile(np.sqrt(np.maximum(m2 - m1 * m1, 0.0)), l.N // len(m1))
        mu = m1.mean()
        l.acc_std = float(np.sqrt(max(m2.mean() - mu * mu, 0.0)))


def calibrate(graph, x_calib, method: str = DEFAULT_METHOD, percentile: float = DEFAULT_PERCENTILE,
              batch_size: int | None = None) -> QuantModel:
    """Post-training FxP8 quantization of ``graph`` from preprocessed calibration images ``x_calib``: an array
    [N, *input_shape], or a re-iterable of such batches (read two or three times).

    Streams: batches of at most ``batch_size`` images (default and cap: :func:`stream_batch_size`), running
    min/max (and, for "percentile", the tail of |x| above the wanted order statistic), running histograms and
    accumulator moments; no activation outlives its batch. Fills every MacLayer (geometry, int8 weights and scales,
    activation scale/signedness, ``act_hist`` = counts of the activation patterns in the multiplier operand matrix
    incl. padding zeros, ``act_mean`` = mean activation value per reduction position, ``acc_std``/``acc_std_ch`` of
    the exact accumulators on calibration with float-path inputs).
    """
    if method not in CALIB_METHODS:
        raise DseError(f"calibration method '{method}' is unknown; use one of {', '.join(CALIB_METHODS)}")
    if not 0 < percentile <= 100:
        raise DseError(f"calibration percentile {percentile} must be in (0, 100]")
    macs = graph.mac_nodes
    if not macs:
        raise DseError(f"{graph.source}: the model has no Conv/Gemm/MatMul layer to quantize")
    batches = _batches(x_calib, graph, stream_batch_size(graph, batch_size))
    right = {n.inputs[1] for n in macs if n.op == "matmul"}
    tensors = {n.inputs[0] for n in macs} | right
    rng = _range_pass(graph, batches, tensors)
    if any(c == 0 for _, _, c in rng.values()):
        raise DseError("calibration set is empty; give at least one image (e.g. fashion-mnist:calib)")
    if method == "max":
        amax = {t: max(abs(lo), abs(hi)) for t, (lo, hi, _) in rng.items()}
    else:
        amax = _percentile_amax(graph, batches, rng, percentile)
    act_quant = {t: _act_scale(rng[t][0], rng[t][1], amax[t], t in right) for t in tensors}
    layers = [_make_layer(graph, n, act_quant) for n in macs]
    _operand_pass(graph, batches, layers, act_quant)
    return QuantModel(graph=graph, layers=layers, input_name=graph.input_name, act_quant=act_quant)
