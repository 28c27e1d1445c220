"""Run a QuantModel with a per-layer multiplier configuration (the FxP8 emulator).

Contract:
* ``LayerConfig(multiplier="exact", cv=False)`` (``dse.layer_config``); a network configuration is ``dict[str, LayerConfig]`` keyed by MAC
  layer name; missing layers are exact.
* ``Emulator(qmodel).run(x, config=None, batch_size=256) -> float32 logits``; ``x`` preprocessed float32 NCHW.
* ``Emulator(qmodel).predict(x, config)`` -> int labels; ``accuracy(x, y, config)`` -> float in [0, 1].
* ``Emulator(qmodel).accumulators(x, config)`` -> {layer: int64 accumulators} (before correction/scaling; tests).
* ``Emulator(qmodel).layer_accumulator(name, q, lc)`` -> one layer's accumulators (after CV) from its quantized input.
* ``run(..., hook=h)``: an :class:`AccumulatorHook` sees every integer-domain MAC layer's accumulators (after CV,
  before scaling) with a :class:`MacCall` (layer, image indices, quantized input) and returns the accumulators the
  run continues with (a model of a multiplier's error injected into the exact path, or a recorder).

MAC layers with an integer-domain multiplier: inputs quantized per dse.quant (each tensor once per batch, shared by
its consumers), ``acc = dse.kernels.conv2d_int/gemm_int`` with the multiplier's table; with ``cv`` the control-variate
correction ``acc - alpha[n] * X - beta[n]`` (float64; ``X`` = exact sum of the K activation values feeding the output,
``(alpha, beta) = dse.correction.cv_correction(layer, mult)``), then ``dse.quant.dequantize``. Float-domain
multipliers (e.g. bf16) run ``dse.kernels.conv2d_float/gemm_float`` on the unquantized float32 input and weights, plus
bias. A ``matmul`` layer (two activations) quantizes both operands (the right one signed, scale ``w_scale[0]``),
``acc = dse.kernels.matmul_int``, CV with per-column terms from the live right operand
(``dse.correction.matmul_cv_terms``), ``y = float32((acc * s_a) * s_b)``. Every other op runs in float32 exactly as
``dse.model.float_exec``. A Relu/Clip right after a MAC layer, the only consumer of its output, runs inside the
layer's scaling pass (``dse.kernels.OutputAct``), and so does a SiLU pair (Sigmoid + Mul) that alone reads a conv
layer's output where the conv takes ``conv2d_scaled`` (an OutputAct "silu": numpy's own Sigmoid loops on the
scaled values, the same bits; the conv's float32 output is never stored); a conv layer without CV takes ``dse.kernels.conv2d_scaled`` (the
same bits, no int64 tensor). A conv/gemm output (after that Relu/Clip) read only by conv/gemm layers that all run
integer tables is emitted by the scaling pass as their quantized input (``dse.kernels.OutputQuant``, the same values
as quantizing the float32 tensor), so that tensor never exists; runs through a prefix cache keep the float32 tensors
that live across a cut they store. An Add of two runtime tensors of one shape runs as one pass with its Relu/Clip and
the quantized input of its conv/gemm readers (``dse.kernels.add_act``); where its operand is the output of the conv
right before it, read by nothing else, and that conv takes ``conv2d_scaled`` (no CV, no hook, no recorded
accumulators), the Add runs inside the conv's scaling pass instead (``dse.kernels.Scaling.add``: the same float32
operations, the conv's output never stored). A float32 MaxPool right after such a conv (and its Relu/Clip), the
only reader of its output, runs with it (``dse.kernels.conv2d_scaled_max_pool``: on the broadcast conv kernel the
conv's output is pooled from the cache, never stored) and emits the quantized input of the pool's conv/gemm readers
too where they all quantize it alike; the pool's float32 output stays for its other readers (ResNet's stem and the
first block's identity shortcut).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Protocol

import numpy as np

from dse.errors import DseError, SettingError
from dse.layer_config import LayerConfig, check_layers, config_to_dict

if TYPE_CHECKING:
    from dse.kernels import MaxPoolStep, OutputQuant
    from dse.quant import MacLayer
    from dse.session import DataRef


@dataclass(frozen=True)
class MacCall:
    """One integer-domain MAC layer's call as an :class:`AccumulatorHook` sees it: the layer, the indices (into the
    ``x`` given to :meth:`Emulator.run`) of the images of this call, and the layer's quantized input patterns (the left
    operand of a ``matmul`` layer)."""

    layer: "MacLayer"
    images: range
    q: np.ndarray


class AccumulatorHook(Protocol):
    """``hook(call, acc) -> acc``: the accumulators (int64, or float64 after CV) the run continues with; same shape.
    Called from the run's worker threads, one call per (layer, slice of images): anything it records must be
    thread-safe (appending to a list is)."""

    def __call__(self, call: MacCall, acc: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class _QuantFusion:
    """A MAC layer's output ``tensor`` (last read by node ``last_use``) that only the conv/gemm layers ``consumers``
    read, each quantizing it as ``quant``."""

    tensor: str
    last_use: int
    consumers: tuple
    quant: "OutputQuant"


@dataclass(frozen=True)
class _PoolFusion:
    """The MaxPool at node ``pool`` that alone reads a conv layer's output (after its Relu/Clip), writing ``out``;
    ``quant``: the quantization of ``out``'s conv/gemm readers ``consumers`` (last reader: node ``last_use``), or None
    where they differ (or there are none)."""

    pool: int
    step: "MaxPoolStep"
    out: str
    consumers: tuple
    quant: "OutputQuant | None"
    last_use: int


@dataclass(frozen=True)
class _AddFusion:
    """The runtime Add at node ``add`` (right after a conv layer) of the conv's output, which only it reads, and the
    float32 tensor ``other`` of the same shape, computed before the conv: the pair writes tensor ``out`` (the Add's
    output, after its fused Relu/Clip) in the conv's scaling pass (``dse.kernels.Scaling.add``). ``macs_only``:
    ``out`` is not the graph's output and only conv/gemm layers read it (then a run whose readers all take its
    quantized input from the pass need not store the float32 sum, :meth:`Emulator._step_residual`)."""

    add: int
    other: str
    out: str
    macs_only: bool = False


class Emulator:
    """Bit-exact FxP8 emulation of a QuantModel under a per-layer multiplier configuration."""

    def __init__(self, qmodel):
        self.qmodel = qmodel
        self.graph = qmodel.graph
        self.layers = {l.name: l for l in qmodel.layers}
        nodes = self.graph.nodes
        self._readers: dict[str, list[int]] = {}  # tensor -> the indices of the nodes reading it, in order
        for i, n in enumerate(nodes):
            for t in n.inputs:
                self._readers.setdefault(t, []).append(i)
        self._last = {t: r[-1] for t, r in self._readers.items()}
        self._layouts: dict = {}  # _channels_last's answers per (conv node, output shape)
        mac_pos = [i for i, n in enumerate(nodes) if n.is_mac]
        self._macs = [nodes[i].name for i in mac_pos]
        # cut j (1 .. number of MAC layers): the node index a run continues at once MAC layers 0 .. j-1 are done
        self._cut_pos = [0] + mac_pos[1:] + [len(nodes)]
        per_image = [self.layers[n].macs for n in self._macs]
        self._cum_macs = [int(sum(per_image[:j])) for j in range(len(per_image) + 1)]
        self._live = None  # dse.prefix_cache.live_tensors, built on the first cached run
        self._plan = FusionPlan(self)

    def _fused_acts(self, p) -> dict:
        """{MAC or Add node index: OutputAct of the Relu/Clip right after it} where that node is the output's only
        consumer: the pair runs as one step (the activation applied in the scaling pass, or in the Add's pass), so
        the pre-activation tensor is never stored. It lives across no cut (cuts sit at MAC nodes), so the prefix
        cache is unaffected."""
        from dse.kernels import OutputAct

        nodes, out = self.graph.nodes, {}
        for i, (n, a) in enumerate(zip(nodes, nodes[1:])):
            if not (n.is_mac or self._runtime_add(n)) or a.inputs != [n.output] or self._last[n.output] != i + 1 \
                    or n.output == self.graph.output_name:
                continue
            if a.op == "relu":
                out[i] = OutputAct("relu")
            elif a.op == "clip" and not np.isnan([a.attrs["min"], a.attrs["max"]]).any():
                out[i] = OutputAct("clip", float(np.float32(a.attrs["min"])), float(np.float32(a.attrs["max"])))
        return out

    def _fused_quants(self, p) -> dict:
        """{MAC, Sigmoid, Mul or HardSwish node index: _QuantFusion} for conv/gemm layers whose output (after a fused
        Relu/Clip), SiLU pairs (:meth:`_fused_silus`) and per-channel Muls (:meth:`_plane_mul`) whose product, and
        HardSwish nodes whose result feeds only conv/gemm layers, all quantizing it alike: the producer's pass (the
        layer's scaling pass, the SiLU's or HardSwish's compiled pass, ``dse.kernels.mul_quantized``) can emit those
        layers' quantized input instead of the float32 tensor (decided per run by :meth:`_emit_quantized`)."""
        nodes, g = self.graph.nodes, self.graph
        out = {}
        for i, n in enumerate(nodes):
            if n.is_mac and self.layers[n.name].op != "matmul":
                t = nodes[i + 1].output if i in p["acts"] else n.output
            elif i in p["silus"]:
                t = nodes[i + 1].output
            elif n.op == "hardswish" or (i - 1 not in p["silus"] and self._plane_mul(n)):  # not a SiLU's product
                t = n.output
            else:
                continue
            consumers = g.consumers(t)
            if t == g.output_name or not consumers or \
                    any(not c.is_mac or self.layers[c.name].op == "matmul" or c.inputs != [t] for c in consumers):
                continue
            quants = {self.layers[c.name].input_quant for c in consumers}
            if len(quants) == 1:
                out[i] = _QuantFusion(t, self._last[t], tuple(c.name for c in consumers), quants.pop())
        return out

    def _plane_mul(self, n) -> bool:
        """A float Mul of two runtime tensors, one of the output's shape [C, H, W] and one [C, 1, 1] (per image): each
        channel's plane times its scalar, as squeeze-and-excitation scales its input."""
        if n.op != "mul" or n.is_mac or len(n.inputs) != 2 or n.attrs.get("args", (0, 1)) != (0, 1):
            return False
        out, shapes = self.graph.shapes.get(n.output), [self.graph.shapes.get(t) for t in n.inputs]
        return out is not None and len(out) == 3 and sorted(shapes, key=str) == sorted([out, (out[0], 1, 1)], key=str)

    @staticmethod
    def _glue_quantized(n, env, quant):
        """Node ``n`` of a glue fusion of :meth:`_fused_quants` (a per-channel Mul, :meth:`_plane_mul`, or a HardSwish)
        as its readers' quantized input, or None where the operands are not float32 (of shapes [B, C, H, W] and [B, C,
        1, 1] for the Mul): the node then runs on its own."""
        from dse.kernels import mul_quantized
        from dse.model.nn import HARDSWISH_ALPHA, HARDSWISH_BETA, hardsigmoid_quantized

        args = [env[t] for t in n.inputs]
        if not all(isinstance(v, np.ndarray) and v.dtype == np.float32 and v.ndim == 4 for v in args):
            return None
        if n.op == "hardswish":
            return hardsigmoid_quantized(args[0], HARDSWISH_ALPHA, HARDSWISH_BETA, True, quant)
        a, b = args
        x, s = (a, b) if b.shape[2:] == (1, 1) else (b, a)
        if s.shape != x.shape[:2] + (1, 1):
            return None
        return mul_quantized(x, s, quant)

    @staticmethod
    def _runtime_add(n) -> bool:
        """An Add of two runtime tensors (no constant operand)."""
        return n.op == "add" and len(n.inputs) == 2 and all(isinstance(a, int) for a in n.attrs.get("args", (0, 1)))

    def _fused_adds(self, p) -> dict:
        """{Add node index: _QuantFusion} for Adds of two runtime tensors whose result (after a fused Relu/Clip) is
        read by conv/gemm layers, all quantizing it alike, and by no matmul layer: the Add's pass also writes those
        layers' quantized input (``dse.kernels.add_act``), the float32 result stays for its other readers."""
        nodes, g = self.graph.nodes, self.graph
        out = {}
        for i, n in enumerate(nodes):
            if not self._runtime_add(n):
                continue
            t = nodes[i + 1].output if i in p["acts"] else n.output
            macs = [c for c in g.consumers(t) if c.is_mac]
            if t == g.output_name or not macs or any(self.layers[c.name].op == "matmul" or c.inputs[0] != t
                                                     for c in macs):
                continue
            quants = {self.layers[c.name].input_quant for c in macs}
            if len(quants) == 1:
                out[i] = _QuantFusion(t, self._last[t], tuple(c.name for c in macs), quants.pop())
        return out

    def _fused_residuals(self, p) -> dict:
        """{MAC node index: _AddFusion} for conv layers whose output is read only by the runtime Add right after
        them, whose other operand (another tensor, of the same shape) exists before the conv runs: the Add (with
        its fused Relu/Clip and quantized emission, :meth:`_add_quant`) runs in the conv's scaling pass when the
        run scales the conv there (decided per run by :meth:`_fuse_residuals`). The conv's output lives across no
        cut (cuts sit at MAC nodes; the Add is the next node), so the prefix cache is unaffected."""
        nodes, g, out = self.graph.nodes, self.graph, {}
        for i, (n, a) in enumerate(zip(nodes, nodes[1:])):
            if not n.is_mac or self.layers[n.name].op != "conv" or not self._runtime_add(a) or \
                    self._last[n.output] != i + 1 or n.output == g.output_name or a.inputs.count(n.output) != 1:
                continue
            other = a.inputs[1 - a.inputs.index(n.output)]
            shape = g.shapes.get(n.output)
            if shape is None or g.shapes.get(other) != shape:
                continue
            t = nodes[i + 2].output if i + 1 in p["acts"] else a.output
            out[i] = _AddFusion(i + 1, other, t, t != g.output_name and all(c.is_mac for c in g.consumers(t)))
        return out

    # float glue whose result is a new array (the IR op's numpy expression) when the node runs on its own
    _FRESH = frozenset({"sigmoid", "hardsigmoid", "hardswish", "erf", "add", "sub", "mul", "div"})

    def _donor_operands(self, p) -> dict:
        """{node index: input tensor} for float Add/Sub/Mul/Div nodes that run on their own and may write their
        result into that operand (``dse.model.ops.binary_into``): the operand is the result of a node that made it
        as a new array (``_FRESH``, itself run on its own), this node is its last reader and reads it once, and no
        MAC node lies between the two, so no prefix-cache cut (they sit at MAC nodes) holds it; it has the result's
        shape (per image). Whether the arrays fit (float32, that shape, owning their memory) is checked per call. SiLU's x * sigmoid(x), the GELU
        chain, HardSwish-style products: one pass less and no new array per node."""
        nodes, g = self.graph.nodes, self.graph
        fused = set(p["acts"]) | set(p["adds"]) | {f.add for f in p["residuals"].values()} | \
            {i + 1 for i in p["acts"]}
        made = {n.output: i for i, n in enumerate(nodes)}
        out = {}
        for i, n in enumerate(nodes):
            if n.op not in ("add", "sub", "mul", "div") or n.is_mac or i in fused:
                continue
            for t in n.inputs:
                p = made.get(t)
                if p is None or nodes[p].op not in self._FRESH or nodes[p].is_mac or p in fused or \
                        self._last[t] != i or n.inputs.count(t) != 1 or t == g.output_name or \
                        g.shapes.get(t, ()) != g.shapes.get(n.output, ()) or \
                        any(nodes[j].is_mac for j in range(p + 1, i)):
                    continue
                out[i] = t
                break
        return out

    def _fused_silus(self, p) -> dict:
        """{Sigmoid node index: 1 or 2} where the node right after it is the Mul x * sigmoid(x) (1) or sigmoid(x) * x
        (2) of the Sigmoid's own input, that Mul is the Sigmoid output's only reader and the two have one shape: the
        pair (SiLU / Swish) runs as one compiled pass (``dse.model.nn.sigmoid``; the sigmoid tensor is never
        stored). Neither node is a MAC node, so no prefix-cache cut falls between them."""
        nodes, g, out = self.graph.nodes, self.graph, {}
        for i, (n, m) in enumerate(zip(nodes, nodes[1:])):
            if n.op != "sigmoid" or m.op != "mul" or len(m.inputs) != 2 or \
                    not all(isinstance(a, int) for a in m.attrs.get("args", (0, 1))):
                continue
            x, s = n.inputs[0], n.output
            if sorted(m.inputs) != sorted([x, s]) or x == s or self._last[s] != i + 1 or s == g.output_name or \
                    g.shapes.get(x) is None or g.shapes.get(x) != g.shapes.get(s):
                continue
            out[i] = 1 if m.inputs[0] == x else 2
        return out

    def _fused_conv_silus(self, p) -> dict:
        """{MAC node index: (Sigmoid node index, OutputAct)} for conv layers whose output only a SiLU pair
        (:meth:`_fused_silus`) right after them reads: the SiLU runs in the conv's output step (an OutputAct "silu",
        ``dse.kernels.Scaling``) when the run scales the conv by conv2d_scaled (decided per run by
        :meth:`_fuse_conv_silus`), which then writes the pair's product (or its readers' quantized input, where the
        Sigmoid's fusion emits it, :meth:`_emit_quantized`); the conv's output is never stored. Neither it nor the
        Sigmoid is live across a cut (cuts sit at MAC nodes; the pair follows the conv)."""
        from dse.kernels import OutputAct

        nodes, g, out = self.graph.nodes, self.graph, {}
        for i, n in enumerate(nodes):
            s = i + 1
            if not n.is_mac or self.layers[n.name].op != "conv" or s not in p["silus"] or \
                    nodes[s].inputs != [n.output] or self._last[n.output] != s + 1 or n.output == g.output_name or \
                    len(g.consumers(n.output)) != 2:
                continue
            out[i] = (s, OutputAct("silu", times_x=p["silus"][s]))
        return out

    def _fuse_conv_silus(self, fusions, r) -> dict:
        """{MAC node index: (Sigmoid node index, OutputAct)} of the conv-SiLU fusions this run takes: the conv runs on
        an integer table without CV, and neither accumulators are recorded nor a hook sees them (the conv2d_scaled
        pass; else the conv writes its output and the pair runs on its own)."""
        if r.accs is not None or r.hook is not None:
            return {}
        return {i: f for i, f in fusions.items() if f[0] in self._plan["silus"] and
                r.resolved[self.graph.nodes[i].name][1].domain == "int" and
                not r.resolved[self.graph.nodes[i].name][0].cv}

    def _fused_gelus(self, p) -> dict:
        """{Div node index: (cdiv, cadd, cmul, order)} where nodes i .. i+4 are GELU as exported, Div(x, cdiv), Erf,
        Add(e, cadd), Mul(x, a), Mul(p, cmul) (the constants float32 scalars, either operand order of the Add and
        Muls: ``order`` bits as :func:`dse.model.nn.gelu_chain` takes them), each intermediate read only by the next
        node and not the graph's output, one shape throughout, no node of another fusion: the chain runs as one
        compiled pass (the intermediates never stored). None is a MAC node, so no prefix-cache cut falls inside."""
        nodes, g, out = self.graph.nodes, self.graph, {}
        taken = p.nodes_of("acts", "adds", "residuals", "silus")

        def const(n, k):  # (value, position) of node n's one float32 scalar constant, its runtime slot being k
            slots = n.attrs.get("args")
            if slots is None or len(slots) != 2 or len(n.inputs) != 1 or slots.count(0) != 1:
                return None
            c = n.params.get(slots[1 - slots.index(0)])
            if not isinstance(c, np.ndarray) or c.dtype != np.float32 or c.ndim != 0:
                return None
            return float(c), slots.index(0) != k

        for i in range(len(nodes) - 4):
            d, e, a, m, p = nodes[i:i + 5]
            if [n.op for n in (d, e, a, m, p)] != ["div", "erf", "add", "mul", "mul"] or \
                    any(n.is_mac or j in taken for j, n in enumerate((d, e, a, m, p), i)):
                continue
            cd, ca, cm = const(d, 0), const(a, 0), const(p, 0)
            x = d.inputs[0]
            if cd is None or cd[1] or ca is None or cm is None or e.inputs != [d.output] or a.inputs != [e.output] or \
                    p.inputs != [m.output] or len(m.inputs) != 2 or m.attrs.get("args", (0, 1)) != (0, 1) or \
                    sorted(m.inputs) != sorted([x, a.output]) or x == a.output:
                continue
            mids = [d.output, e.output, a.output, m.output]
            shape = g.shapes.get(x)
            if shape is None or any(self._last[t] != j for j, t in enumerate(mids, i + 1)) or \
                    any(t == g.output_name or g.shapes.get(t) != shape for t in mids + [p.output]):
                continue
            out[i] = (cd[0], ca[0], cm[0], int(ca[1]) | 2 * int(m.inputs[0] == a.output) | 4 * int(cm[1]))
        return out

    def _fused_pools(self, p) -> dict:
        """{MAC node index: _PoolFusion} for conv layers whose output (after a fused Relu/Clip) only a MaxPool right
        after them reads: the pair runs as one step when the run scales the conv by conv2d_scaled (decided per run by
        :meth:`_fuse_pools`). The conv's output lives across no cut (cuts sit at MAC nodes)."""
        from dse.kernels import MaxPoolStep

        nodes, g, out = self.graph.nodes, self.graph, {}
        for i, n in enumerate(nodes):
            if not n.is_mac or self.layers[n.name].op != "conv" or i in p["quants"] or i in p["residuals"]:
                continue
            j = i + 2 if i in p["acts"] else i + 1
            t = nodes[j - 1].output if i in p["acts"] else n.output
            if j >= len(nodes) or nodes[j].op != "maxpool" or nodes[j].inputs != [t] or self._last[t] != j or \
                    t == g.output_name:
                continue
            a, u = nodes[j].attrs, nodes[j].output
            step = MaxPoolStep(tuple(a["kernel"]), tuple(a["stride"]), tuple(a["pads"]),
                               tuple(a.get("dilation", (1, 1))), bool(a.get("ceil_mode", 0)))
            macs = [c for c in g.consumers(u) if c.is_mac]
            quants = {self.layers[c.name].input_quant for c in macs}
            quant = quants.pop() if len(quants) == 1 and u != g.output_name and \
                all(self.layers[c.name].op != "matmul" and c.inputs[0] == u for c in macs) else None
            out[i] = _PoolFusion(j, step, u, tuple(c.name for c in macs) if quant else (), quant, self._last.get(u, j))
        return out

    def _fuse_pools(self, fusions, r) -> dict:
        """{MAC node index: _PoolFusion} of the pool fusions this run takes: the conv runs on an integer table without
        CV, neither accumulators are recorded nor a hook sees them; the step emits the readers' quantized input where
        one of them runs an integer table and no prefix-cache cut stored by this run lies where it is live (stored
        states hold the quantized inputs a run made before the cut, as an unfused run would)."""
        from dataclasses import replace

        if r.accs is not None or r.hook is not None:
            return {}
        out = {}
        for i, f in fusions.items():
            lc, mult = r.resolved[self.graph.nodes[i].name]
            if mult.domain != "int" or lc.cv:
                continue
            emit = f.quant is not None and any(r.resolved[c][1].domain == "int" for c in f.consumers) and \
                not any(i < p <= f.last_use for p in r.store_at)
            out[i] = replace(f, step=replace(f.step, quant=f.quant if emit else None))
        return out

    def _fuse_residuals(self, fusions, r) -> dict:
        """{MAC node index: _AddFusion} of the fusions this run takes: the conv runs on an integer table without CV,
        and neither accumulators are recorded nor a hook sees them (the scaling pass is then the conv2d_scaled
        one; else the conv writes its output and the Add runs on its own)."""
        if r.accs is not None or r.hook is not None:
            return {}
        return {i: f for i, f in fusions.items()
                if r.resolved[self.graph.nodes[i].name][1].domain == "int" and
                not r.resolved[self.graph.nodes[i].name][0].cv}

    def _emit_quantized(self, fusions, r) -> dict:
        """{MAC, Sigmoid or Mul node index: OutputQuant} of the fusions this run takes: the producer (a MAC one) and
        every consumer run on integer tables (a float-domain consumer needs the float32 tensor), and no prefix-cache
        cut stored by this run lies where the tensor is live (stored states keep float32 tensors, as any
        configuration may need them)."""
        out = {}
        for i, f in fusions.items():
            n = self.graph.nodes[i]
            if (n.is_mac and r.resolved[n.name][1].domain != "int") or not self._patterns_suffice(i, f, r):
                continue
            out[i] = f.quant
        return out

    @staticmethod
    def _patterns_suffice(i, f, r) -> bool:
        """Whether the quantized input a fused pass at node ``i`` emits can stand in for fusion ``f``'s float32 tensor
        in this run: every consumer runs on an integer table (a float-domain consumer needs the float32 tensor), and
        no prefix-cache cut stored by this run lies where the tensor is live (stored states keep float32 tensors, as
        any configuration may need them)."""
        return all(r.resolved[c][1].domain == "int" for c in f.consumers) and \
            not any(i < p <= f.last_use for p in r.store_at)

    def _add_quant(self, i, r) -> "OutputQuant | None":
        """The quantized input that Add node ``i``'s pass also emits: that of its conv/gemm readers
        (``_fused_adds``) when one of them runs an integer table, else None."""
        f = r.fusions["adds"].get(i)
        return f.quant if f is not None and any(r.resolved[c][1].domain == "int" for c in f.consumers) else None

    # ------------------------------------------------------------------ fused steps (FUSION_KINDS' run)
    def _step_residual(self, i, n, f: _AddFusion, r) -> bool:
        """Conv node ``i`` with the Add after it in its scaling pass. The float32 sum is not stored (None in the
        run's tensors) where only conv/gemm layers read it, all of them on integer tables, which take the quantized
        input the pass emits, and no prefix-cache cut stored by this run lies where it is live (stored states keep
        float32 tensors), as for the MAC layers' own quantized emission (:meth:`_emit_quantized`)."""
        lc, mult = r.resolved[n.name]
        quant = self._add_quant(f.add, r)
        fa = r.fusions["adds"].get(f.add)
        keep_sum = quant is None or fa is None or not f.macs_only or not self._patterns_suffice(i, fa, r)
        y = self._mac(n, [r.env[n.inputs[0]]], r.qcache, lc, mult, r.accs, r.hook, r.images,
                      r.fusions["acts"].get(f.add), quant, np.ascontiguousarray(r.env[f.other]), keep_sum)
        if quant is not None:
            r.env[f.out], r.qcache[f.out] = y
        else:
            r.env[f.out] = y
        return True

    def _step_pool(self, i, n, f: _PoolFusion, r) -> bool:
        """Conv node ``i`` with the MaxPool after it (and its Relu/Clip)."""
        from dse import kernels

        layer = self.layers[n.name]
        q = self._quantized(layer.input, r.env[n.inputs[0]], layer.a_scale, layer.a_signed, r.qcache)
        r.env[f.out], qp = kernels.conv2d_scaled_max_pool(
            q, layer.w_q, r.resolved[n.name][1], layer.a_signed, layer.scaling(r.fusions["acts"].get(i)), f.step,
            layer.stride, layer.pads, layer.dilation, layer.groups)
        if qp is not None:
            r.qcache[f.out] = qp
        return True

    def _step_conv_silu(self, i, n, f, r) -> bool:
        """Conv node ``i`` with the SiLU pair after it: the pair's product, or its readers' quantized input."""
        s, act = f
        lc, mult = r.resolved[n.name]
        quants, out = r.fusions["quants"], self.graph.nodes[s + 1].output
        y = self._mac(n, [r.env[n.inputs[0]]], r.qcache, lc, mult, r.accs, r.hook, r.images, act, quants.get(s))
        if s in quants:  # only its integer-domain consumers read it, from qcache
            r.env[out], r.qcache[out] = None, y
        else:
            r.env[out] = y
        return True

    def _step_add(self, i, n, f, r) -> bool:
        """Runtime Add node ``i`` with its Relu/Clip and its readers' quantized input (a MAC node's Relu/Clip: no,
        the layer's step applies it)."""
        if n.is_mac:
            return False
        self._add(i, n, [r.env[t] for t in n.inputs], r)
        return True

    def _fused_softmax_scales(self, p) -> dict:
        """{Mul node index: its float32 scalar constant (not NaN)} where the next node is a Softmax reading only the
        Mul's product (attention's scores times 1/sqrt(d)), the product read by nothing else and not
        the graph's output, no node of another fusion: the Softmax takes the product in its own pass
        (:func:`dse.model.nn.softmax` with ``scale``; x * c and c * x are the same float32 for a c that is not NaN)."""
        nodes, g, out = self.graph.nodes, self.graph, {}
        taken = p.nodes_of("acts", "adds", "residuals", "silus", "gelus")
        for i in range(len(nodes) - 1):
            m, s = nodes[i:i + 2]
            slots = m.attrs.get("args")
            if m.op != "mul" or s.op != "softmax" or m.is_mac or i in taken or i + 1 in taken or slots is None or \
                    len(slots) != 2 or len(m.inputs) != 1 or slots.count(0) != 1 or s.inputs != [m.output]:
                continue
            c = m.params.get(slots[1 - slots.index(0)])
            shape = g.shapes.get(m.inputs[0])
            if not isinstance(c, np.ndarray) or c.dtype != np.float32 or c.ndim != 0 or np.isnan(c) or \
                    shape is None or g.shapes.get(m.output) != shape or m.output == g.output_name or \
                    self._last[m.output] != i + 1:
                continue
            out[i] = float(c)
        return out

    def _step_softmax_scale(self, i, n, c, r) -> bool:
        """The Softmax after Mul node ``i`` on the Mul's input times ``c``, in one pass."""
        from dse.model.nn import softmax

        s = self.graph.nodes[i + 1]
        r.env[s.output] = softmax(r.env[n.inputs[0]], int(s.attrs["axis"]), scale=c)
        return True

    def _step_gelu(self, i, n, f, r) -> bool:
        """The GELU chain headed by Div node ``i`` in one compiled pass."""
        from dse.model.float_exec import exec_node
        from dse.model.nn import gelu_chain

        x, p = r.env[n.inputs[0]], self.graph.nodes[i + 4]
        if isinstance(x, np.ndarray) and x.dtype == np.float32:
            r.env[p.output] = gelu_chain(x, *f)
        else:  # pragma: no cover - every float tensor of a run is float32
            for m in self.graph.nodes[i:i + 5]:
                r.env[m.output] = exec_node(m, [r.env[t] for t in m.inputs])
        return True

    def _step_silu(self, i, n, f, r) -> bool:
        """The SiLU pair headed by Sigmoid node ``i`` in one compiled pass (its readers' quantized input, where the
        run emits it)."""
        from dse.model.float_exec import exec_node
        from dse.model.nn import sigmoid, sigmoid_quantized

        x, m, quants = r.env[n.inputs[0]], self.graph.nodes[i + 1], r.fusions["quants"]
        if isinstance(x, np.ndarray) and x.dtype == np.float32 and i in quants:
            # only its integer-domain consumers read it, from qcache
            r.env[m.output], r.qcache[m.output] = None, sigmoid_quantized(x, f, quants[i])
        elif isinstance(x, np.ndarray) and x.dtype == np.float32:
            r.env[m.output] = sigmoid(x, f)
        else:  # pragma: no cover - every float tensor of a run is float32
            r.env[n.output] = exec_node(n, [x])
            r.env[m.output] = exec_node(m, [r.env[t] for t in m.inputs])
        return True

    def _step_glue_quant(self, i, n, quant, r) -> bool:
        """A per-channel Mul or HardSwish node as its readers' quantized input (the kind's MAC and Sigmoid heads emit
        it in the layer's or the SiLU's step; operands that do not fit: the node runs on its own)."""
        if n.op not in ("mul", "hardswish") or (q := self._glue_quantized(n, r.env, quant)) is None:
            return False
        r.env[n.output], r.qcache[n.output] = None, q  # only its integer-domain consumers read it
        return True

    def _channels_last(self, out: str, shape: tuple) -> bool:
        """Whether a conv's float32 output tensor ``out`` of ``shape`` [B, C, H, W] is better written channels-last
        (``dse.kernels.conv2d_scaled``'s channels_last): its readers are one chain of reshapes and transposes, each
        the only reader of the one before, which leaves that memory C-contiguous and the channels-first one not (the
        importer's token MatMul: the from_image reshape and the to_channels_last transpose), and a runtime Add reads
        the chain's end (a residual Add, whose other operand is C-contiguous: it then reads both in order). Other
        readers gain nothing measurable and pass the layout on: on the ViT the GELU after fc1 then hands fc2 a
        channels-last input to quantize (fc2 0.82-0.94x), the qkv slices hand the attention MatMuls operands read in
        runs of one head's width (0.75-0.81x). Decided on empty arrays of that shape."""
        from dse.model.float_exec import exec_node

        key = (out, shape)
        if key not in self._layouts:
            b, c = shape[:2]
            ys = [np.empty((b,) + tuple(shape[2:]) + (c,), np.float32).transpose(0, 3, 1, 2),
                  np.empty(shape, np.float32)]
            t, steps = out, 0
            while t != self.graph.output_name and len(self._readers.get(t, ())) == 1:
                m = self.graph.nodes[self._readers[t][0]]
                if m.op not in ("reshape", "transpose") or len(m.inputs) != 1:
                    break
                ys = [exec_node(m, [y]) for y in ys]
                t, steps = m.output, steps + 1
            added = any(self._runtime_add(self.graph.nodes[j]) for j in self._readers.get(t, ()))
            self._layouts[key] = steps > 0 and added and ys[0].flags.c_contiguous and not ys[1].flags.c_contiguous
        return self._layouts[key]

    def _run_layer(self, i, n, r) -> None:
        """MAC node ``i`` on its own (with its fused Relu/Clip; its readers' quantized input where the run emits it;
        a conv's float32 output channels-last where its readers take it so, :meth:`_channels_last`)."""
        acts, quants = r.fusions["acts"], r.fusions["quants"]
        lc, mult = r.resolved[n.name]
        act = acts.get(i)
        out = self.graph.nodes[i + 1].output if act is not None else n.output
        y = self._mac(n, [r.env[t] for t in n.inputs], r.qcache, lc, mult, r.accs, r.hook, r.images, act,
                      quants.get(i), out=out)
        if i in quants:  # only its integer-domain consumers read it, from qcache
            r.env[out], r.qcache[out] = None, y
        else:
            r.env[out] = y

    def _run_glue(self, i, n, r) -> None:
        """Float node ``i`` on its own (into its donor operand's memory where it has one and the array fits; an Add
        with a transposed operand by ``dse.kernels.add_act``, which reads it in place)."""
        from dse.kernels import transposed_operand
        from dse.model.float_exec import exec_node
        from dse.model.ops import arguments, binary_into

        args = [r.env[t] for t in n.inputs]
        if self._runtime_add(n) and transposed_operand(*args) is not None:  # no contiguous copy of that operand
            self._add(i, n, args, r)
            return
        y, t = None, r.fusions["donors"].get(i)
        if t is not None:
            d = r.env[t]
            if isinstance(d, np.ndarray) and d.base is None and d.flags.writeable and d.flags.c_contiguous:
                y = binary_into(n, arguments(n, args), d)
        r.env[n.output] = exec_node(n, args) if y is None else y

    def _add(self, i, n, args, r) -> None:
        """Add node ``i`` (with its fused Relu/Clip): its float32 result into ``r.env`` and, when a consumer runs an
        integer table, its quantized value into ``r.qcache`` from the same pass; operands of unequal shapes take
        numpy."""
        from dse.kernels import add_act
        from dse.model.float_exec import exec_node

        act = r.fusions["acts"].get(i)
        out = self.graph.nodes[i + 1].output if act is not None else n.output
        a, b = args
        if a.shape != b.shape or a.dtype != np.float32 or b.dtype != np.float32:  # broadcasting: the IR ops
            y = exec_node(n, args)
            r.env[out] = y if act is None else act.apply(y)
            return
        r.env[out], q = add_act(a, b, act, self._add_quant(i, r))
        if q is not None:
            r.qcache[out] = q

    # ------------------------------------------------------------------ configuration
    def resolve(self, config: dict | None) -> dict:
        """{layer name: (LayerConfig, Multiplier)} for every MAC layer; unknown layers/multipliers -> DseError."""
        from dse.arith.multipliers import get_multiplier

        config = dict(config or {})
        check_layers(sorted(config), list(self.layers), "configuration")
        out = {}
        for name in self.layers:
            lc = config.get(name) or LayerConfig()
            mult = get_multiplier(lc.multiplier)
            if lc.cv and mult.domain != "int":
                raise DseError(f"layer '{name}': cv=true needs an 8-bit integer multiplier, '{mult.name}' is "
                               "floating-point; set cv = false")
            out[name] = (lc, mult)
        return out

    # ------------------------------------------------------------------ execution
    @staticmethod
    def _quantized(t, x, scale, signed, qcache):
        from dse.quant import quantize_act

        q = qcache.get(t)
        if q is None:
            q = qcache[t] = quantize_act(x, scale, signed)
        return q

    def _mac(self, node, args, qcache, lc, mult, accs, hook=None, images=None, act=None, quant=None, add=None,
             keep_sum=True, out=None):
        """The MAC layer's float32 output, followed by ``act`` (a fused Relu/Clip) if given; with ``quant`` (an
        integer-domain conv/gemm layer only) the next layers' quantized input instead. ``add`` (a conv run by
        conv2d_scaled only, :meth:`_fuse_residuals`): the other operand of the fused Add, which comes before ``act``;
        the output is then the float32 sum, or with ``quant`` the pair (sum, quantized input), the sum None with
        ``keep_sum`` False (not stored: ``dse.kernels.Scaling.keep_sum``). ``out``: the name of the output tensor
        (given by a run of the layer on its own): a conv's float32 output may then go to memory channels-last
        (:meth:`_channels_last`)."""
        from dse.quant import dequantize

        layer = self.layers[node.name]
        if layer.op == "matmul" or mult.domain != "int":
            y = self._matmul(layer, args, qcache, lc, mult, accs, hook, images) if layer.op == "matmul" else \
                self._float_mac(node, layer, args[0], mult)
            return y if act is None else act.apply(y)
        q = self._quantized(layer.input, args[0], layer.a_scale, layer.a_signed, qcache)
        if layer.op == "conv" and accs is None and hook is None and not lc.cv:  # no int64 tensor: scaled by slices
            from dse import kernels

            last = out is not None and quant is None and add is None and \
                self._channels_last(out, (q.shape[0], layer.w_q.shape[0]) + kernels.conv_out_hw(
                    *q.shape[2:], *layer.w_q.shape[2:], layer.stride, layer.pads, layer.dilation))
            return kernels.conv2d_scaled(q, layer.w_q, mult, layer.a_signed, layer.scaling(act, quant, add, keep_sum),
                                         layer.stride, layer.pads, layer.dilation, layer.groups, channels_last=last)
        if add is not None:
            raise ValueError(f"layer '{layer.name}': a fused Add needs the conv2d_scaled pass")
        acc = self._accumulate(layer, q, lc, mult, accs)
        if hook is not None:
            acc = hook(MacCall(layer, images, q), acc)
        return dequantize(acc, layer, act, quant)

    @staticmethod
    def _float_mac(node, layer, x, mult):
        from dse import kernels

        if layer.op == "conv":
            y = kernels.conv2d_float(x, node.params["W"], mult, layer.stride, layer.pads, layer.dilation,
                                     layer.groups)
            return (y + layer.bias.reshape(1, -1, 1, 1)).astype(np.float32)
        return (kernels.gemm_float(x, node.params["W"], mult) + layer.bias).astype(np.float32)

    @staticmethod
    def _accumulate(layer, q, lc, mult, accs=None):
        """A conv/gemm layer's accumulators from its quantized input ``q`` (int64; float64 after CV)."""
        from dse import kernels

        if layer.op == "conv":
            acc = kernels.conv2d_int(q, layer.w_q, mult, layer.a_signed, layer.stride, layer.pads, layer.dilation,
                                     layer.groups)
        else:
            acc = kernels.gemm_int(q, layer.w_q, mult, layer.a_signed)
        if accs is not None:
            accs[layer.name] = acc
        if lc.cv:
            from dse import correction

            alpha, beta = correction.cv_correction(layer, mult)
            acc = correction.apply_cv(acc, correction.activation_sums(layer, q), alpha, beta)
        return acc

    def layer_accumulator(self, name: str, q: np.ndarray, lc: LayerConfig) -> np.ndarray:
        """The accumulators (after CV, before scaling) of conv/gemm layer ``name`` under ``lc`` on its quantized input
        ``q`` (as a :class:`MacCall` carries it): the layer alone, as a run computes it."""
        layer = self.layers.get(name)
        if layer is None or layer.op == "matmul":
            raise DseError(f"layer '{name}': not a conv/gemm layer of this model; use one of its MAC layers")
        lc_, mult = self.resolve({name: lc})[name]
        if mult.domain != "int":
            raise DseError(f"layer '{name}': multiplier '{mult.name}' has no 8-bit table; accumulators exist only "
                           "for integer multipliers")
        return self._accumulate(layer, q, lc_, mult)

    def _matmul(self, layer, args, qcache, lc, mult, accs, hook=None, images=None):
        from dse import kernels
        from dse.quant import dequantize

        if mult.domain != "int":
            return kernels.matmul_float(args[0], args[1], mult)
        qa = self._quantized(layer.input, args[0], layer.a_scale, layer.a_signed, qcache)
        qb = self._quantized(layer.b_input, args[1], float(layer.w_scale[0]), True, qcache)
        if accs is None and hook is None and not lc.cv:  # no int64 tensor: scaled from the kernel's int32 tiles
            return kernels.matmul_scaled(qa, qb, mult, layer.a_signed, layer.scaling())
        acc = kernels.matmul_int(qa, qb, mult, layer.a_signed)
        if accs is not None:
            accs[layer.name] = acc
        if lc.cv:
            from dse import correction

            alpha, beta = correction.matmul_cv_terms(layer, mult, qb)
            acc = correction.apply_cv_matmul(acc, qa, alpha, beta)
        if hook is not None:
            acc = hook(MacCall(layer, images, qa), acc)
        return dequantize(acc.reshape(1, 1, -1), layer).reshape(acc.shape)  # one per-tensor scale s_b

    def _run_batch(self, x, resolved, accs=None, cache=None, batch=None, hook=None, images=None):
        """Logits of one batch. With ``cache`` (a dse.prefix_cache.PrefixCache) and ``batch`` (a key naming these
        images), continue from the deepest cut whose configuration prefix is stored and store the cut the cache
        asks for. ``hook``: see :class:`AccumulatorHook`; ``images``: the indices of these images in the run. Each
        node runs in the step of the fusion that heads it (:data:`FUSION_KINDS`, the first whose step takes it),
        not at all where a fusion this run takes absorbs it, else on its own."""
        g = self.graph
        env = {g.input_name: x}
        qcache: dict = {}
        start, store_at, keys = 0, {}, None
        if cache is not None:
            from dse.prefix_cache import live_tensors

            if self._live is None:
                self._live = live_tensors(g.nodes, g.input_name, g.output_name)
            keys = self._prefix_keys(resolved)
            plan = cache.plan(batch, keys)
            if plan.state is not None:
                env, qcache = dict(plan.state.tensors), dict(plan.state.quantized)
                start = self._cut_pos[plan.hit]
            store_at = {self._cut_pos[j]: (j, False) for j in plan.speculate}
            store_at.update({self._cut_pos[j]: (j, True) for j in plan.store})
            cache.count_macs(self._cum_macs[-1] * len(x), self._cum_macs[plan.hit] * len(x))
        r = _Run(resolved, accs, hook, images, store_at, env, qcache)
        self._plan.select(self, r)
        for i in range(start, len(g.nodes)):
            if i in store_at:
                self._store(cache, batch, keys, *store_at[i], env, qcache)
            n = g.nodes[i]
            if i not in r.absorbed and not any(step(self, i, n, f, r) for step, f in r.steps.get(i, ())):
                (self._run_layer if n.is_mac else self._run_glue)(i, n, r)
            for t in n.inputs:
                if self._last[t] == i and t != g.output_name:
                    env.pop(t, None)
                    qcache.pop(t, None)
        if len(g.nodes) in store_at:
            self._store(cache, batch, keys, *store_at[len(g.nodes)], env, qcache)
        return env[g.output_name]

    def _prefix_keys(self, resolved) -> list[tuple]:
        """``keys[j - 1]``: the configuration ``(multiplier, cv)`` of MAC layers 0 .. j-1 in execution order."""
        cfg = tuple((resolved[n][0].multiplier, bool(resolved[n][0].cv)) for n in self._macs)
        return [cfg[:j] for j in range(1, len(cfg) + 1)]

    def _store(self, cache, batch, keys, cut: int, shared: bool, env, qcache) -> None:
        """Offer the state at ``cut`` to the cache: ``shared`` (its prefix was requested before) or speculatively."""
        from dse.prefix_cache import snapshot

        state = snapshot(env, qcache, self._live[self._cut_pos[cut]])
        cache.store(batch, keys[cut - 1], state, speculative=not shared)

    def run(self, x, config: dict | None = None, batch_size: int = 256, cache=None, tag=None,
            hook: AccumulatorHook | None = None) -> np.ndarray:
        """float32 logits of preprocessed images ``x`` under ``config`` (None/{} = all exact FxP8). ``cache``: a
        dse.prefix_cache.PrefixCache shared by runs on the same images, ``tag`` (hashable) names the images of ``x``
        (e.g. ``("search", start, stop)``); the logits are bit-identical to a run without the cache. ``hook``: an
        :class:`AccumulatorHook` that may change every integer-domain MAC layer's accumulators (not with a cache,
        whose stored prefixes know nothing of it)."""
        from dse.model.float_exec import check_input

        if batch_size < 1:
            raise DseError(f"batch size {batch_size} must be >= 1")
        from dse.kernels import get_threads, map_split
        from dse.quant import stream_batch_size

        x = check_input(self.graph, x)
        resolved = self.resolve(config)
        batch_size = stream_batch_size(self.graph, batch_size)  # large inputs: a memory-bounded batch
        if cache is not None and tag is None:
            raise ValueError("a prefix cache needs a tag naming the images")
        if cache is not None and hook is not None:
            raise ValueError("an accumulator hook cannot run through the prefix cache")
        outs = []
        for i in range(0, len(x), batch_size):  # images are independent: one slice of the batch per thread
            parts = np.array_split(x[i:i + batch_size], min(get_threads(), len(x[i:i + batch_size])))
            starts = np.cumsum([i] + [len(p) for p in parts])
            outs += map_split(lambda k: self._run_batch(parts[k], resolved, None, cache,
                                                        (tag, int(starts[k]), int(starts[k + 1])), hook,
                                                        range(int(starts[k]), int(starts[k + 1]))),
                              list(range(len(parts))))
        if not outs:
            return np.zeros((0,) + tuple(self.graph.shapes[self.graph.output_name]), np.float32)
        return np.concatenate(outs)

    def accumulators(self, x, config: dict | None = None) -> dict:
        """{layer: int64 accumulators [B, N] or [B, N, Ho, Wo]} of integer-domain layers (before CV and scaling),
        one batch."""
        from dse.model.float_exec import check_input

        accs: dict = {}
        self._run_batch(check_input(self.graph, x), self.resolve(config), accs)
        return accs

    def dataset_accuracy(self, data, config: dict | None = None, batch_size: int = 256) -> float:
        """Top-1 accuracy in [0, 1] on a :class:`dse.data.Dataset`, read and run batch by batch."""
        if len(data) == 0:
            raise DseError("no images to evaluate; give at least one")
        hits = sum(int((self.predict(x, config, batch_size) == y).sum()) for x, y in data.batches(batch_size))
        return hits / len(data)

    def predict(self, x, config: dict | None = None, batch_size: int = 256, cache=None, tag=None) -> np.ndarray:
        return self.run(x, config, batch_size, cache, tag).argmax(axis=1)

    def accuracy(self, x, y, config: dict | None = None, batch_size: int = 256) -> float:
        """Top-1 accuracy in [0, 1]."""
        y = np.asarray(y)
        if len(y) != len(x):
            raise DseError(f"{len(x)} images but {len(y)} labels; the counts must match")
        if len(y) == 0:
            raise DseError("no images to evaluate; give at least one")
        return float((self.predict(x, config, batch_size) == y).mean())



@dataclass(frozen=True)
class _Kind:
    """One kind of fusion. ``plan(emu, plan) -> {head node index: fusion}``: the graph's fusions of this kind, planned
    once per Emulator (reading the kinds it builds on from ``plan``); ``select(emu, fusions, run)``: those a run
    (:class:`_Run`) takes, given its configuration, recorded accumulators, hook and stored prefix-cache cuts (None:
    all); ``absorbs(i, fusion)``: the nodes after head ``i`` that run in its step (none of their own); ``step(emu, i,
    node, fusion, run) -> bool``: run head ``i`` with its fusion, False where it runs on its own instead (None: the
    kind is data for other steps)."""

    name: str
    plan: Callable
    select: Callable | None = None
    absorbs: Callable | None = None
    step: Callable | None = None


@dataclass
class _Run:
    """One batch's run as the steps see it: ``resolved`` configuration, ``accs`` (recorded accumulators or None),
    ``hook`` and the ``images`` it sees, ``store_at`` (the prefix-cache cuts the run stores, by node index),
    ``env``/``qcache`` (float32 tensors / quantized inputs by tensor name); and from :meth:`FusionPlan.select`:
    ``fusions`` (kind -> {head: fusion} this run takes), ``absorbed`` (their nodes that run in a head's step) and
    ``steps`` (head -> [(step, fusion)] in :data:`FUSION_KINDS` order)."""

    resolved: dict
    accs: dict | None
    hook: AccumulatorHook | None
    images: range | None
    store_at: dict
    env: dict
    qcache: dict
    fusions: dict = field(default_factory=dict)
    absorbed: set = field(default_factory=set)
    steps: dict = field(default_factory=dict)


class FusionPlan(dict):
    """{kind name: {head node index: fusion}}: which nodes of an Emulator's graph run fused with which, planned once
    by every kind of :data:`FUSION_KINDS` (a kind's planning reads those it builds on, planned first on demand)."""

    def __init__(self, emu: Emulator):
        super().__init__()
        self._emu = emu
        for k in FUSION_KINDS:
            self[k.name]
        del self._emu

    def __missing__(self, name):
        emu = getattr(self, "_emu", None)
        if emu is None:
            raise KeyError(name)
        fusions = self[name] = _KINDS[name].plan(emu, self)
        return fusions

    def nodes_of(self, *names: str) -> set:
        """The nodes the named kinds' fusions head or absorb (a kind planning around them: no node in two fusions)."""
        out = set()
        for name in names:
            absorbs = _KINDS[name].absorbs
            for i, f in self[name].items():
                out.add(i)
                if absorbs is not None:
                    out.update(absorbs(i, f))
        return out

    def select(self, emu: Emulator, r: _Run) -> None:
        """The fusions run ``r`` takes (each kind's ``select``), the nodes they absorb and the heads' steps."""
        for k in FUSION_KINDS:
            taken = r.fusions[k.name] = self[k.name] if k.select is None else k.select(emu, self[k.name], r)
            for i, f in taken.items():
                if k.absorbs is not None:
                    r.absorbed.update(k.absorbs(i, f))
                if k.step is not None:
                    r.steps.setdefault(i, []).append((k.step, f))


# the emulator's fusions; a node heading several takes the first step that runs it
FUSION_KINDS = (
    _Kind("residuals", Emulator._fused_residuals, Emulator._fuse_residuals, lambda i, f: (f.add,),
          Emulator._step_residual),
    _Kind("pools", Emulator._fused_pools, Emulator._fuse_pools, lambda i, f: (f.pool,), Emulator._step_pool),
    _Kind("conv_silus", Emulator._fused_conv_silus, Emulator._fuse_conv_silus, lambda i, f: (f[0],),
          Emulator._step_conv_silu),
    _Kind("acts", Emulator._fused_acts, None, lambda i, f: (i + 1,), Emulator._step_add),
    _Kind("adds", Emulator._fused_adds, None, None, Emulator._step_add),
    _Kind("gelus", Emulator._fused_gelus, None, lambda i, f: range(i + 1, i + 5), Emulator._step_gelu),
    _Kind("softmax_scales", Emulator._fused_softmax_scales, None, lambda i, f: (i + 1,),
          Emulator._step_softmax_scale),
    _Kind("silus", Emulator._fused_silus, None, lambda i, f: (i + 1,), Emulator._step_silu),
    _Kind("quants", Emulator._fused_quants, Emulator._emit_quantized, None, Emulator._step_glue_quant),
    _Kind("donors", Emulator._donor_operands),
)
_KINDS = {k.name: k for k in FUSION_KINDS}


def float_hits(graph, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> int:
    """Images of one batch ``x`` the float32 reference executor classifies as ``y``, run at most ``batch_size``
    images at a time and fewer where the graph's tensors are large (the emulator's memory-bounded streaming batch)."""
    from dse.model.float_exec import run_float
    from dse.quant import stream_batch_size

    return int((run_float(graph, x, stream_batch_size(graph, batch_size)).argmax(axis=1) == y).sum())


def evaluate(model: str, data: DataRef | None = None, config_path: str | None = None,
             calib: DataRef | None = None, images: int | None = None, batch_size: int = 256,
             threads: int | None = None, preprocess=None, preprocess_hint: str | None = None) -> dict:
    """What ``dse evaluate`` reports: float, FxP8 exact and (with a config) configured top-1 accuracy, and the run's
    preprocessing (``preprocess``: a dse.data.Preprocess from the caller; else the configuration's recorded one; else
    dse.session's defaults). ``data``/``calib`` name the data sets as the caller's user gave them (default: the bundled
    hold-out and calibration splits); ``preprocess_hint`` says how that user states the preprocessing. One pass over
    the data computes all three accuracies. ``threads``: kernel threads (None = every available core)."""
    from dse.config import META_CALIBRATION, load_config_meta, validate_config
    from dse.data import Preprocess
    from dse.session import PREPROCESS_SETTINGS, DataRef, RunInputs, open_session

    from dse.kernels import set_threads

    set_threads(threads)
    data = data or DataRef.setting("data", "fashion-mnist:holdout")
    calib = calib or DataRef.setting("calib", "fashion-mnist:calib")
    if batch_size < 1:
        raise SettingError("batch_size", batch_size, "must be >= 1")
    if images is not None and images < 1:
        raise SettingError("images", images, "must be a positive number of images")
    config, meta = load_config_meta(config_path) if config_path else ({}, {})
    if preprocess is None and config_path:
        preprocess = Preprocess.from_meta(meta, str(config_path))
    s = open_session(RunInputs(model, calib, (data,), preprocess, preprocess_hint or PREPROCESS_SETTINGS))
    if config_path:
        validate_config(config, s.qmodel.layer_names, str(config_path))
    ds = s.data[0].head(images)
    emu = Emulator(s.qmodel)
    hits = {"float": 0, "fxp8": 0, "configured": 0}
    for x, y in ds.batches(batch_size):
        hits["float"] += float_hits(s.graph, x, y, batch_size)
        hits["fxp8"] += int((emu.predict(x, None, batch_size) == y).sum())
        if config_path:
            hits["configured"] += int((emu.predict(x, config, batch_size) == y).sum())
    res = {**s.info(), "data": ds.name, "images": int(len(ds)), "float": hits["float"] / len(ds),
           "fxp8": hits["fxp8"] / len(ds)}
    if config_path:
        res["config"] = str(config_path)
        res["layers"] = config_to_dict({l.name: config.get(l.name, LayerConfig()) for l in s.qmodel.layers})
        res["configured"] = hits["configured"] / len(ds)
        if meta:
            res["meta"] = meta
        if META_CALIBRATION in meta:  # dse export: the search's calibration; is this run's the same?
            here = s.qmodel.state().digest()
            res["calibration_check"] = {"matches": here == str(meta[META_CALIBRATION]),
                                        "search": str(meta[META_CALIBRATION]), "here": here,
                                        "search_calib": meta.get("calib")}
    return res
