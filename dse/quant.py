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

import itertools
import time
from typing import Callable, Iterator, Protocol, runtime_checkable

import numpy as np

from dse.errors import DseError

if TYPE_CHECKING:
    from dse.kernels import OutputAct, OutputQuant, Scaling


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

    def scaling(self, act: OutputAct | None = None, quant: OutputQuant | None = None,
                add: np.ndarray | None = None, keep_sum: bool = True) -> Scaling:
        """The layer's output stage ``float32((acc * s_a) * s_w[c]) + bias[c]``, then ``add`` (the other operand of
        a fused Add), then ``act`` (a fused Relu/Clip), then ``quant`` (the next layer's input quantization, fused);
        ``keep_sum`` False: the add's float32 sum is not stored, only the quantized input (``Scaling.keep_sum``)."""
        from dse.kernels import Scaling

        return Scaling(self.a_scale, self.w_scale, self.bias, act, quant, add, keep_sum)

    @property
    def input_quant(self) -> OutputQuant:
        """How this layer quantizes its (left) input: what a producer emits when it fuses that quantization."""
        from dse.kernels import OutputQuant

        return OutputQuant(self.a_scale, self.a_signed)


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

    def digest(self) -> str:
        """SHA-256 of the calibration: its JSON meta, then every array (name, dtype, shape, bytes) by name (what a
        shared search's processes and ``dse evaluate --config`` compare, dse.search.identity)."""
        import hashlib
        import json

        h = hashlib.sha256(json.dumps(self.meta, sort_keys=True).encode())
        for name in sorted(self.arrays):
            a = np.ascontiguousarray(self.arrays[name])
            h.update(f"\0{name}\0{a.dtype.str}\0{a.shape}\0".encode())
            h.update(a)
        return h.hexdigest()


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
    with np.errstate(over="ignore"):  # x / scale beyond float32 is inf, clipped like any other large value
        q = np.rint(np.asarray(x, dtype=np.float32) / np.float32(scale))
    return np.clip(q, lo, hi).astype(np.int8 if signed else np.uint8)


def quantize_weights(W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-output-channel symmetric int8 weights: (w_q int8 same shape, s_w float32[Cout])."""
    W = np.asarray(W, dtype=np.float32)
    amax = np.abs(W.reshape(W.shape[0], -1)).max(axis=1)
    s = np.where(amax > 0, amax / np.float32(127), np.float32(1)).astype(np.float32)
    q = np.clip(np.rint(W / s.reshape((-1,) + (1,) * (W.ndim - 1))), -127, 127).astype(np.int8)
    return q, s


def dequantize(acc: np.ndarray, layer: MacLayer, act: OutputAct | None = None,
               quant: OutputQuant | None = None) -> np.ndarray:
    """``float32((acc * s_a) * s_w[c]) + bias[c]`` (float64 products), then ``act`` (the layer's Relu/Clip, if it is
    fused), then ``quant`` (the next layer's input quantization, if it is fused: int8/uint8 values);
    ``acc`` [B, N] or [B, N, Ho, Wo]. int64 accumulators take the fused pass dse._kernels.dequantize, float ones
    (after CV correction) the numpy twin."""
    from dse.kernels import scale_accumulators

    if acc.dtype == np.int64:
        return scale_accumulators(acc, layer.scaling(act, quant))
    y = reference_dequantize(acc, layer)
    y = y if act is None else act.apply(y)
    return y if quant is None else quantize_act(y, quant.scale, quant.signed)


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


def _tap_counts(n: int, k: int, s: int, d: int, p: int, n_out: int) -> np.ndarray:
    """int64[n]: along one axis of length ``n``, how many kernel taps (of ``k``, stride ``s``, dilation ``d``, leading
    padding ``p``, ``n_out`` outputs) read each input position."""
    c = np.zeros(n, np.int64)
    for i in range(k):
        pos = np.arange(n_out) * s + i * d - p  # input position read by tap i at every output
        np.add.at(c, pos[(pos >= 0) & (pos < n)], 1)
    return c


def _index_runs(c: np.ndarray) -> list:
    """[(count, index)] grouping the positions of ``c`` by their nonzero value; ``index`` a slice where the positions
    are an arithmetic progression (a view, no copy), else an index array."""
    out = []
    for v in np.unique(c):
        if v == 0:
            continue
        idx = np.flatnonzero(c == v)
        step = int(idx[1] - idx[0]) if len(idx) > 1 else 1
        if np.array_equal(idx, np.arange(idx[0], idx[-1] + 1, step)):
            out.append((int(v), slice(int(idx[0]), int(idx[-1]) + 1, step)))
        else:
            out.append((int(v), idx))
    return out


def operand_histogram(q: np.ndarray, layer: MacLayer) -> np.ndarray:
    """int64[256] counts of the activation patterns in the layer's operand matrix for one batch (every window
    position of every kernel tap, padding zeros included; all groups), without building the im2col matrix.

    Each input pixel appears in the operand matrix as often as the taps that read it, a product of a row count and
    a column count; so the pixels are grouped by those counts (a few blocks, each read once) and weighted, and the
    padding zeros are what the pixels leave of the matrix's size."""
    if layer.op in ("gemm", "matmul"):
        return np.bincount(q.view(np.uint8).ravel(), minlength=256).astype(np.int64)
    B, C, H, W = q.shape
    (kh, kw), (sh, sw), (dh, dw), (pt, pl, _, _) = layer.kernel, layer.stride, layer.dilation, layer.pads
    Ho, Wo = layer.out_shape[1], layer.out_shape[2]
    rc, cc = _tap_counts(H, kh, sh, dh, pt, Ho), _tap_counts(W, kw, sw, dw, pl, Wo)
    u = q.view(np.uint8)
    hist = np.zeros(256, np.int64)
    for a, ri in _index_runs(rc):
        rows = u[:, :, ri]
        for b, ci in _index_runs(cc):
            block = rows[:, :, :, ci] if isinstance(ci, slice) else rows[..., ci]
            hist += (a * b) * np.bincount(block.ravel(), minlength=256)
    hist[0] += B * C * (kh * kw * Ho * Wo - int(rc.sum()) * int(cc.sum()))
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


@runtime_checkable
class BatchesFrom(Protocol):
    """A re-iterable of batches that can start at any batch without reading the ones before it (e.g.
    dse.data.ImageBatches): what lets a resumed calibration skip the batches it had done."""

    def __len__(self) -> int: ...

    def from_batch(self, k: int) -> Iterator[np.ndarray]: ...


class _Source:
    """Calibration batches (float32, checked against the graph) from batch ``k`` on: :meth:`from_batch`; ``n``: how
    many batches there are (None: unknown)."""

    def __init__(self, x_calib, graph, batch_size: int):
        from dse.model.float_exec import check_input

        self.graph, self.n, self.slices, self.source = graph, None, None, x_calib
        if isinstance(x_calib, np.ndarray):
            x = check_input(graph, x_calib)
            self.slices = [x[i:i + batch_size] for i in range(0, len(x), batch_size)]
            self.n = len(self.slices)
        elif isinstance(x_calib, (list, tuple, BatchesFrom)):
            self.n = len(x_calib)
        elif iter(x_calib) is x_calib:
            raise DseError("[data] calib: calibration reads the images twice; give an array or a re-iterable of "
                           "batches (a list or a data set), not a one-shot iterator")

    def from_batch(self, k: int) -> Iterator[np.ndarray]:
        from dse.model.float_exec import check_input

        if self.slices is not None:
            yield from self.slices[k:]
            return
        if isinstance(self.source, (list, tuple)):
            batches = iter(self.source[k:])
        elif isinstance(self.source, BatchesFrom):
            batches = self.source.from_batch(k)
        else:
            batches = itertools.islice(self.source, k, None)
        for b in batches:
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


class _OperandStats:
    """Running sums of the operand pass (act_hist, act_mean, accumulator moments of every layer; a matmul layer's
    weight sample), batch by batch; :meth:`arrays` / :meth:`load` for a checkpoint, :meth:`finish` fills the layers."""

    def __init__(self, layers: list, act_quant: dict):
        self.layers, self.act_quant = layers, act_quant
        self.by_tensor: dict = {}
        for l in layers:
            self.by_tensor.setdefault(l.input, []).append(l)
            if l.b_input:
                self.by_tensor.setdefault(l.b_input, [])
        self.operands = {t for l in layers if l.op == "matmul" for t in (l.input, l.b_input)}
        stat_n = [l.N // l.groups if l.op == "matmul" else l.N for l in layers]
        self.hist = [np.zeros(256, np.int64) for _ in layers]
        self.vsum = [np.zeros((1 if l.op == "matmul" else l.groups, l.K)) for l in layers]
        self.s1 = [np.zeros(n) for n in stat_n]
        self.s2 = [np.zeros(n) for n in stat_n]
        self.cnt = np.zeros(len(layers), np.int64)
        self.index = {l.name: j for j, l in enumerate(layers)}
        self.held: dict = {}  # quantized operands of matmul layers in the current batch

    def arrays(self) -> dict:
        out = {"op.cnt": self.cnt.copy()}
        for j, l in enumerate(self.layers):
            out.update({f"op.{j}.hist": self.hist[j].copy(), f"op.{j}.vsum": self.vsum[j].copy(),
                        f"op.{j}.s1": self.s1[j].copy(), f"op.{j}.s2": self.s2[j].copy()})
            if l.op == "matmul" and l.w_q is not None:
                out[f"op.{j}.w_q"] = l.w_q.copy()
        return out

    def load(self, arrays: dict) -> None:
        self.cnt = np.array(arrays["op.cnt"], np.int64)
        for j, l in enumerate(self.layers):
            self.hist[j], self.vsum[j] = np.array(arrays[f"op.{j}.hist"]), np.array(arrays[f"op.{j}.vsum"])
            self.s1[j], self.s2[j] = np.array(arrays[f"op.{j}.s1"]), np.array(arrays[f"op.{j}.s2"])
            if f"op.{j}.w_q" in arrays:
                l.w_q = np.array(arrays[f"op.{j}.w_q"])

    def _moments(self, l, acc) -> None:
        j = self.index[l.name]
        acc = acc.astype(np.float64)
        acc = acc.reshape(-1, l.N // l.groups)[:, :, None] if l.op == "matmul" else acc.reshape(acc.shape[0], l.N, -1)
        self.s1[j] += acc.sum(axis=(0, 2))
        self.s2[j] += np.einsum("bns,bns->n", acc, acc)
        self.cnt[j] += acc.size // acc.shape[1]

    def _visit(self, t, v) -> None:
        q = quantize_act(v, *self.act_quant[t])
        for l in self.by_tensor[t]:
            j = self.index[l.name]
            self.hist[j] += operand_histogram(q, l)
            self.vsum[j] += operand_sums(q, l)
            if l.op != "matmul":
                self._moments(l, exact_acc(q, l))
        if t not in self.operands:
            return
        self.held[t] = q
        for l in self.layers:
            if l.op == "matmul" and t in (l.input, l.b_input) and l.input in self.held and l.b_input in self.held:
                qa, qb = self.held[l.input], self.held[l.b_input].view(np.int8)
                self._moments(l, exact_acc(qa, l, qb))
                if l.w_q is None:
                    l.w_q = np.ascontiguousarray(np.swapaxes(qb, -1, -2).reshape(-1, l.K)[:W_SAMPLE_ROWS])

    def batch(self, graph, xb) -> None:
        self.held.clear()
        _walk(graph, xb, set(self.by_tensor), self._visit)
        self.held.clear()

    def finish(self) -> None:
        for j, l in enumerate(self.layers):
            c = int(self.cnt[j])
            m1, m2 = self.s1[j] / c, self.s2[j] / c
            l.act_hist = self.hist[j]
            l.act_mean = self.vsum[j] / c
            l.acc_std_ch = np.tile(np.sqrt(np.maximum(m2 - m1 * m1, 0.0)), l.N // len(m1))
            mu = m1.mean()
            l.acc_std = float(np.sqrt(max(m2.mean() - mu * mu, 0.0)))


@dataclass(frozen=True)
class CalibrationProgress:
    """An unfinished calibration's statistics so far (JSON values in ``meta``, numpy arrays in ``arrays``, like
    :class:`CalibrationState`): its pass, the batches of that pass done, the running min/max, tails and sums. A
    calibration resumed from it ends with the same bits as one never interrupted (same batches, same order)."""

    meta: dict
    arrays: dict

    def describe(self) -> str:
        """``"pass 2 of 3, 12 of 40 batches"`` (batches unknown: ``"12 batches"``)."""
        m = self.meta
        of = f" of {m['batches']}" if m["batches"] is not None else ""
        return f"pass {m['passes'].index(m['pass']) + 1} of {len(m['passes'])}, {m['next']}{of} batches"


class CalibrationStopped(Exception):
    """``Checkpoints.stop`` said stop before a batch: ``progress`` holds every statistic so far (it was handed to
    ``Checkpoints.save`` too)."""

    def __init__(self, progress: CalibrationProgress):
        super().__init__(f"calibration stopped at {progress.describe()}")
        self.progress = progress


@dataclass
class Checkpoints:
    """How :func:`calibrate` may be stopped and resumed: ``stop()`` is asked before every batch (True: save and
    raise :class:`CalibrationStopped`); ``save(progress)`` is called then and every ``every_s`` seconds of work;
    ``resume``: the progress of an earlier, stopped calibration of the same graph, images and method."""

    stop: Callable[[], bool]
    save: Callable[[CalibrationProgress], None]
    resume: CalibrationProgress | None = None
    every_s: float = 30.0


class _Calibration:
    """One calibration as passes over the batches ("range", "tail" for percentiles, "operand"), each resumable at any
    batch: the statistics so far are :meth:`progress`, and :meth:`load` continues from them."""

    def __init__(self, graph, source: _Source, method: str, percentile: float, progress_cb):
        self.graph, self.source, self.method, self.percentile = graph, source, method, percentile
        macs = graph.mac_nodes
        self.right = {n.inputs[1] for n in macs if n.op == "matmul"}
        self.tensors = sorted({n.inputs[0] for n in macs} | self.right)
        self.passes = ["range"] + (["tail"] if method == "percentile" else []) + ["operand"]
        self.pass_, self.next = self.passes[0], 0
        T = len(self.tensors)
        self.lo, self.hi, self.count = np.full(T, np.inf), np.full(T, -np.inf), np.zeros(T, np.int64)
        self.tails: list = []
        self.amax = None
        self.ops: _OperandStats | None = None
        self.progress_cb = progress_cb

    # -- state ----------------------------------------------------------------------------------------------
    def progress(self) -> CalibrationProgress:
        meta = {"method": self.method, "percentile": self.percentile, "tensors": self.tensors,
                "passes": self.passes, "pass": self.pass_, "next": self.next, "batches": self.source.n}
        arrays = {"range.lo": self.lo.copy(), "range.hi": self.hi.copy(), "range.count": self.count.copy()}
        arrays.update({f"tail.{i}": t.vals.copy() for i, t in enumerate(self.tails)})
        if self.amax is not None:
            arrays["amax"] = self.amax.copy()
        if self.ops is not None:
            arrays.update(self.ops.arrays())
        return CalibrationProgress(meta, arrays)

    def load(self, p: CalibrationProgress) -> bool:
        """Continue from ``p``; False (and nothing changed) when ``p`` is of another calibration (method, percentile,
        the graph's calibrated tensors or the number of batches)."""
        m = p.meta
        mine = {"method": self.method, "percentile": self.percentile, "tensors": self.tensors, "passes": self.passes,
                "batches": self.source.n}
        if {k: m.get(k) for k in mine} != mine:
            return False
        self.lo, self.hi = np.array(p.arrays["range.lo"]), np.array(p.arrays["range.hi"])
        self.count = np.array(p.arrays["range.count"], np.int64)
        self.pass_, self.next = m["pass"], int(m["next"])
        if self.pass_ == "tail":
            self._start_tails()
            for i, t in enumerate(self.tails):
                t.vals = np.array(p.arrays[f"tail.{i}"])
        if "amax" in p.arrays:
            self.amax = np.array(p.arrays["amax"])
        if self.pass_ == "operand":
            self._start_operands()
            self.ops.load(p.arrays)
        return True

    # -- passes ---------------------------------------------------------------------------------------------
    def _start_tails(self) -> None:
        self.tails = []
        for n in self.count:
            lo = int(np.floor((int(n) - 1) * self.percentile / 100.0))
            self.tails.append(_Tail(max(1, int(n) - lo)))

    def _start_operands(self) -> None:
        act_quant = self.act_quant()
        self.layers = [_make_layer(self.graph, n, act_quant) for n in self.graph.mac_nodes]
        self.ops = _OperandStats(self.layers, act_quant)

    def act_quant(self) -> dict:
        return {t: _act_scale(float(self.lo[i]), float(self.hi[i]), float(self.amax[i]), t in self.right)
                for i, t in enumerate(self.tensors)}

    def _range_batch(self, xb) -> None:
        idx = {t: i for i, t in enumerate(self.tensors)}

        def visit(t, v):
            i = idx[t]
            self.lo[i], self.hi[i] = min(self.lo[i], float(v.min())), max(self.hi[i], float(v.max()))
            self.count[i] += v.size
        _walk(self.graph, xb, set(self.tensors), visit)

    def _tail_batch(self, xb) -> None:
        idx = {t: i for i, t in enumerate(self.tensors)}
        _walk(self.graph, xb, set(self.tensors), lambda t, v: self.tails[idx[t]].add(v))

    def _end_pass(self) -> None:
        """The statistics the pass just finished gives the next one."""
        if self.pass_ == "range":
            if np.any(self.count == 0):
                raise DseError("calibration set is empty; give at least one image (e.g. fashion-mnist:calib)")
            if self.method == "max":
                self.amax = np.maximum(np.abs(self.lo), np.abs(self.hi))
            else:
                self._start_tails()
        elif self.pass_ == "tail":
            self.amax = np.array([t.percentile(int(n), self.percentile) for t, n in zip(self.tails, self.count)])
            self.tails = []
        k = self.passes.index(self.pass_) + 1
        if k < len(self.passes):
            self.pass_, self.next = self.passes[k], 0
            if self.pass_ == "operand":
                self._start_operands()

    def run(self, checkpoints: Checkpoints | None) -> None:
        steps = {"range": self._range_batch, "tail": self._tail_batch,
                 "operand": lambda xb: self.ops.batch(self.graph, xb)}
        saved = time.monotonic()
        while True:
            for xb in self.source.from_batch(self.next):
                if checkpoints is not None and checkpoints.stop():
                    p = self.progress()
                    checkpoints.save(p)
                    raise CalibrationStopped(p)
                steps[self.pass_](xb)
                self.next += 1
                self._report()
                if checkpoints is not None and time.monotonic() - saved >= checkpoints.every_s:
                    checkpoints.save(self.progress())
                    saved = time.monotonic()
            last = self.pass_ == self.passes[-1]
            self._end_pass()
            if last:
                return

    def _report(self) -> None:
        n = self.source.n
        if self.progress_cb is not None and n:
            self.progress_cb(self.passes.index(self.pass_) * n + self.next, len(self.passes) * n)

    def quant_model(self) -> QuantModel:
        self.ops.finish()
        return QuantModel(graph=self.graph, layers=self.layers, input_name=self.graph.input_name,
                          act_quant=self.ops.act_quant)


def calibrate(graph, x_calib, method: str = DEFAULT_METHOD, percentile: float = DEFAULT_PERCENTILE,
              batch_size: int | None = None, checkpoints: Checkpoints | None = None,
              progress: Callable[[int, int], None] | None = None) -> QuantModel:
    """Post-training FxP8 quantization of ``graph`` from preprocessed calibration images ``x_calib``: an array
    [N, *input_shape], or a re-iterable of such batches (read two or three times; a :class:`BatchesFrom` is not read
    before the batch a resumed calibration continues from).

    Streams: batches of at most ``batch_size`` images (default and cap: :func:`stream_batch_size`), running
    min/max (and, for "percentile", the tail of |x| above the wanted order statistic), running histograms and
    accumulator moments; no activation outlives its batch. Fills every MacLayer (geometry, int8 weights and scales,
    activation scale/signedness, ``act_hist`` = counts of the activation patterns in the multiplier operand matrix
    incl. padding zeros, ``act_mean`` = mean activation value per reduction position, ``acc_std``/``acc_std_ch`` of
    the exact accumulators on calibration with float-path inputs). ``checkpoints``: stop before any batch and resume
    there (:class:`Checkpoints`; raises :class:`CalibrationStopped`); ``progress(done, total)`` after every batch
    (batches of every pass; only when their number is known).
    """
    if method not in CALIB_METHODS:
        raise DseError(f"calibration method '{method}' is unknown; use one of {', '.join(CALIB_METHODS)}")
    if not 0 < percentile <= 100:
        raise DseError(f"calibration percentile {percentile} must be in (0, 100]")
    if not graph.mac_nodes:
        raise DseError(f"{graph.source}: the model has no Conv/Gemm/MatMul layer to quantize")
    cal = _Calibration(graph, _Source(x_calib, graph, stream_batch_size(graph, batch_size)), method, percentile,
                       progress)
    if checkpoints is not None and checkpoints.resume is not None:
        cal.load(checkpoints.resume)  # progress of another calibration: started afresh (and overwritten)
    cal.run(checkpoints)
    return cal.quant_model()
