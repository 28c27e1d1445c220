"""ONNX -> :class:`dse.model.graph.Graph` (BatchNormalization folded, per-tensor shapes known).

``load_onnx(path) -> Graph``. The model must have one float input [N, ...] (N = batch, symbolic or any size; the other
dims fixed) and one output [N, ...]. Each ONNX node goes to the handler registered for its op type in
:mod:`dse.model.converters` (``supported_ops()`` lists them). Constant subgraphs are folded at import, including the
Shape/Gather/Concat/... chains that compute reshape targets: a value that depends on the batch size is evaluated at
two probe batch sizes (:data:`LANES`) and a target entry equal to k times the batch size becomes
:class:`dse.model.ops.BatchDim` (k). Every runtime tensor is executed at batch sizes 1 and 2 as it is added, which
locates its batch axis (``Importer.batch``: the one axis of size k at batch 1 and 2k at batch 2): the batch may move
(attention's permute to [3, N, heads, tokens, d]) or merge with another axis ([N * heads, tokens, d] of
nn.MultiheadAttention); ops that would mix images (reducing, concatenating, padding along the batch axis) are refused,
and the finished graph is checked to compute every image independently. Anything else raises :class:`DseError` with
one line naming the file, the node and the fix.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from dse.errors import DseError
from dse.model.converters import OnnxNode, lookup, supported
from dse.model.graph import Graph, Node, params_f32, toposort
from dse.model.ops import IR_OPS, BatchDim

LANES = (2, 3)  # probe batch sizes for values computed from tensor shapes


def supported_ops() -> list[str]:
    """ONNX op types (default domain) the importer converts."""
    return supported()


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: _s(helper.get_attribute_value(a)) for a in node.attribute}


def _s(v):
    return v.decode() if isinstance(v, bytes) else v


class Importer:
    """Conversion state: constants, batch-dependent shape values (``probes``: one value per lane), runtime tensors
    (IR nodes, each executed as it is added on a one-image sample (``sample``) and a two-image one (``sample2``) so
    later nodes know its shape and its batch axis (``batch``: tensor -> (axis, k)))."""

    def __init__(self, path: str, input_name: str, input_shape: tuple):
        self.path = path
        self.input_name = input_name
        self.consts: dict[str, np.ndarray] = {}
        self.probes: dict[str, tuple] = {}
        self.alias: dict[str, str] = {}
        self.nodes: list[Node] = []
        self.lanes = LANES
        rng = np.random.default_rng(0)
        x2 = rng.standard_normal((2,) + tuple(input_shape)).astype(np.float32)
        self.sample = {input_name: x2[:1]}
        self.sample2 = {input_name: x2}
        self.batch: dict[str, tuple] = {input_name: (0, 1)}

    # ------------------------------------------------------------------ lookups
    def err(self, node_name: str, msg: str) -> DseError:
        return DseError(f"{self.path}: node '{node_name}' {msg}")

    def t(self, name: str) -> str:
        while name in self.alias:
            name = self.alias[name]
        return name

    def const(self, name: str):
        return self.consts.get(self.t(name)) if name else None

    def is_runtime(self, name: str) -> bool:
        return bool(name) and self.t(name) in self.sample

    def full(self, name: str) -> tuple:
        """Whole shape of a runtime tensor at batch size 1."""
        return tuple(self.sample[self.t(name)].shape)

    def rank(self, name: str) -> int:
        return self.sample[self.t(name)].ndim

    def shape(self, name: str) -> tuple:
        """Per-image shape of a runtime tensor: its batch-1 shape without the batch axis (kept, of size k, when the
        batch is merged with another axis)."""
        axis, k = self.batch[self.t(name)]
        full = self.full(name)
        return full[:axis] + full[axis + 1:] if k == 1 else full

    def batch_first(self, name: str) -> bool:
        return self.batch[self.t(name)] == (0, 1)

    def need_batch_first(self, n: OnnxNode, name: str) -> str:
        """The runtime tensor ``name`` if its batch is its first axis, else a one-line error."""
        x = self.t(name)
        if x not in self.sample:
            raise self.err(n.name, f"({n.op_type}) has a constant input '{name}'; it must read an activation")
        if not self.batch_first(x):
            where = self.where_batch(x)
            raise self.err(n.name, f"({n.op_type}) reads tensor '{name}' whose batch is not its first axis ({where}); "
                                   "dse runs this op on [N, ...] tensors only: transpose/reshape the batch back to "
                                   "axis 0 before it")
        return x

    def where_batch(self, name: str) -> str:
        axis, k = self.batch[self.t(name)]
        return f"axis {axis}" if k == 1 else f"axis {axis}, merged with another axis ({k} x batch)"

    def refuse_batch_axes(self, n: OnnxNode, axes, what: str = "axis") -> None:
        """One-line error if ``axes`` of the runtime input 0 include its batch axis (the op would mix images)."""
        x = self.t(n.inputs[0]) if n.inputs else ""
        if x not in self.sample:
            return
        nd, (b, _) = self.rank(x), self.batch[x]
        if any(int(a) % nd == b for a in axes):
            raise self.err(n.name, f"({n.op_type}) works on the batch axis {b} ({what} {list(map(int, axes))}); it "
                                   "would mix images: export the model so this op uses the other axes")

    def need_const(self, n: OnnxNode, name: str, what: str) -> np.ndarray:
        v = self.const(name)
        if v is None:
            why = "depends on the batch size" if self.t(name) in self.probes else "is computed at run time"
            raise self.err(n.name, f"needs a constant {what} (tensor '{name}' {why}); export the model with constant "
                                   "folding and a static shape for it")
        return v

    def opt_const(self, n: OnnxNode, i: int, what: str, default=None):
        """The constant ONNX input i, or ``default`` when the optional input is absent."""
        name = n.input(i)
        return self.need_const(n, name, what) if name else default

    def dims(self, n: OnnxNode, name: str, what: str) -> tuple:
        """A shape-like integer vector that is constant or has entries equal to k times the batch size
        (-> :class:`BatchDim` (k))."""
        c = self.const(name)
        if c is not None:
            return tuple(int(v) for v in np.asarray(c).reshape(-1))
        lanes = self.probes.get(self.t(name))
        if lanes is None:
            self.need_const(n, name, what)  # raises: neither constant nor a shape value
        out = []
        for i, vals in enumerate(zip(*(np.asarray(v).reshape(-1) for v in lanes))):
            vals = [int(v) for v in vals]
            k = vals[0] // LANES[0]
            if all(v == vals[0] for v in vals):
                out.append(vals[0])
            elif k > 0 and all(v == k * b for v, b in zip(vals, LANES)):
                out.append(BatchDim(k))
            else:
                raise self.err(n.name, f"has a {what} whose entry {i} depends on the batch size in a way that cannot "
                                       f"be folded (values {vals} at batch sizes {list(LANES)}); keep the batch "
                                       "dimension separate in the model")
        return tuple(out)

    def lane_shape(self, name: str, b: int) -> tuple:
        """Whole shape of a runtime tensor at batch size ``b``."""
        axis, k = self.batch[self.t(name)]
        full = list(self.full(name))
        full[axis] = k * b
        return tuple(full)

    # ------------------------------------------------------------------ emission
    def set_const(self, out: str, value) -> None:
        self.consts[out] = np.asarray(value)

    def add_node(self, node: Node) -> None:
        """Append a runtime IR node, run it at batch sizes 1 and 2 and locate its output's batch axis."""
        from dse.model.float_exec import exec_node

        params_f32(node)
        ys = []
        for b, sample in ((1, self.sample), (2, self.sample2)):
            try:
                ys.append(exec_node(node, [sample[t] for t in node.inputs]))
            except DseError as exc:
                raise DseError(f"{self.path}: {exc}") from None
            except Exception as exc:  # noqa: BLE001 - shape errors of a malformed but checker-valid model
                raise self.err(node.name, f"({node.onnx_op}) cannot run on its input shapes "
                                          f"{[list(sample[t].shape) for t in node.inputs]} at batch size {b} ({exc}); "
                                          "fix the model") from None
        y1, y2 = ys
        moved = [i for i, (a, b) in enumerate(zip(y1.shape, y2.shape)) if a != b] if y1.ndim == y2.ndim else None
        if moved is None or len(moved) != 1 or y2.shape[moved[0]] != 2 * y1.shape[moved[0]]:
            raise self.err(node.name, f"({node.onnx_op}) gives an output of shape {list(y1.shape)} at batch size 1 "
                                      f"and {list(y2.shape)} at batch size 2, so it has no batch axis; export the "
                                      "model so that every activation keeps a batch dimension")
        self.sample[node.output], self.sample2[node.output] = y1, y2
        self.batch[node.output] = (moved[0], int(y1.shape[moved[0]]))
        self.nodes.append(node)

    def emit(self, n: OnnxNode, op: str, inputs: list | None = None, attrs: dict | None = None,
             out: str | None = None, name: str | None = None) -> None:
        """IR op ``op`` over ONNX inputs (names, "" = absent): folded when no input is a runtime tensor, else a
        runtime node (named ``name``, default the ONNX node's) with its constant inputs as params."""
        inputs = list(n.inputs if inputs is None else inputs)
        out = n.outputs[0] if out is None else out
        attrs = dict(attrs or {})
        names = [self.t(i) if i else "" for i in inputs]
        if not any(i in self.sample for i in names):
            self._fold(n, op, names, attrs, out)
            return
        slots, runtime, params = [], [], {}
        for k, i in enumerate(names):
            if not i:
                slots.append(None)
            elif i in self.sample:
                slots.append(len(runtime))
                runtime.append(i)
            elif i in self.consts:
                slots.append(f"c{k}")
                params[f"c{k}"] = self.consts[i]
            else:
                self.need_const(n, inputs[k], f"input {k}")
        attrs["args"] = tuple(slots)
        self.add_node(Node(name or n.name, op, runtime, [out], attrs, params, n.op_type))

    def _fold(self, n: OnnxNode, op: str, names: list, attrs: dict, out: str) -> None:
        node = Node(n.name, op, [], [out], attrs, {}, n.op_type)
        fn = IR_OPS[op]
        lanes = [i for i in names if i in self.probes]
        try:
            if not lanes:
                self.consts[out] = np.asarray(fn(node, [self.consts[i] if i else None for i in names]))
                return
            vals = tuple(np.asarray(fn(node, [self.probes[i][k] if i in self.probes else self.consts[i] if i
                                              else None for i in names])) for k in range(len(LANES)))
        except KeyError as exc:
            raise self.err(n.name, f"reads tensor {exc} that no earlier node produces; fix the model") from None
        except Exception as exc:  # noqa: BLE001 - folding a malformed constant subgraph
            raise self.err(n.name, f"({n.op_type}) cannot be folded on its constant inputs ({exc}); fix the model") \
                from None
        if all(v.shape == vals[0].shape and np.array_equal(v, vals[0]) for v in vals):
            self.consts[out] = vals[0]
        else:
            self.probes[out] = vals

    def alias_of(self, out: str, src: str) -> None:
        src = self.t(src)
        if src in self.consts:
            self.consts[out] = self.consts[src]
        elif src in self.probes:
            self.probes[out] = self.probes[src]
        else:
            self.alias[out] = src

    # ------------------------------------------------------------------ conversion
    def convert(self, n: OnnxNode) -> None:
        fn = lookup(n.op_type, n.opset)
        if fn is None:
            raise self.err(n.name, f"has unsupported op type '{n.op_type}' (opset {n.opset}); replace it before "
                                   f"export or re-export with supported ops: {', '.join(supported_ops())}")
        fn(self, n)


def _fold_into_mac(nodes: list, output: str, sample: dict) -> list:
    """Fold affine (BN) and constant-add nodes into a preceding conv/gemm that has no other consumer; a constant bias
    Add also where reshapes and transposes lie between (a MatMul's 1x1 conv and its channels-last transposes:
    _channels_last_mac). ``sample``: a batch-1 tensor of every runtime tensor (the chains' shapes)."""
    changed = True
    while changed:
        changed = False
        for n in nodes:
            if n.op not in ("affine", "add") or len(n.inputs) != 1 or len(n.params) != (2 if n.op == "affine" else 1):
                continue
            prod = next((p for p in nodes if p.output == n.inputs[0]), None)
            last = prod
            if prod is not None and prod.op in ("reshape", "transpose") and n.op == "add":
                prod, last = _channels_last_mac(nodes, n, output, sample)
            if prod is None or prod.op not in ("conv", "gemm") or prod.output == output:
                continue
            if sum(n.inputs[0] in c.inputs for c in nodes) != 1:
                continue
            N = prod.params["W"].shape[0]
            if n.op == "affine":
                if n.params["scale"].shape != (N,):
                    continue
                s = n.params["scale"].astype(np.float64)
                W = prod.params["W"].astype(np.float64)
                prod.params["W"] = (W * s.reshape((N,) + (1,) * (W.ndim - 1))).astype(np.float32)
                prod.params["b"] = (prod.params["b"].astype(np.float64) * s + n.params["shift"]).astype(np.float32)
            else:
                c = next(iter(n.params.values()))
                if last is not prod:
                    ok = c.size == N and c.shape[-1] == N and c.ndim <= sample[n.inputs[0]].ndim
                else:
                    ok = (c.shape in ((N,), (1, N)) if prod.op == "gemm" else c.shape in ((N, 1, 1), (1, N, 1, 1)))
                if not ok:
                    continue
                prod.params["b"] = (prod.params["b"] + c.reshape(N)).astype(np.float32)
            last.outputs = list(n.outputs)
            nodes.remove(n)
            changed = True
            break
    return nodes


def _channels_last_mac(nodes: list, add, output: str, sample: dict) -> tuple:
    """(mac, last) for a constant Add whose input is a conv/gemm's output carried by reshape/transpose nodes (``last``
    the one the Add reads; each tensor on the way read by the next node only, none the graph's output) that put the
    MAC's output channels on the last axis, as the importer lays out x @ W on [N, ..., K] tokens; (None, None)
    otherwise. The MAC must have no bias of its own: its output stage adds float32(p) + 0, the Add then the bias c,
    and float32(p) + c is the same float32 for every c (x + 0 differs from x only at x = -0.0, where c + 0.0 = c + -0.0
    for every c, and x + -0.0 = x), so the folded graph computes the unfolded one's bits."""
    chain, t = [], add.inputs[0]
    while True:
        p = next((q for q in nodes if q.output == t), None)
        if p is None or t == output or sum(t in c.inputs for c in nodes) != 1:
            return None, None
        if p.op in ("conv", "gemm"):
            break
        if p.op not in ("reshape", "transpose") or len(p.inputs) != 1:
            return None, None
        chain.append(p)
        t = p.inputs[0]
    if np.any(p.params["b"]) or t not in sample or sample[t].ndim < 2:
        return None, None
    N = p.params["W"].shape[0]
    y = sample[t]
    if y.shape[1] != N:
        return None, None
    from dse.model.float_exec import exec_node

    y = np.broadcast_to(np.arange(N, dtype=np.float32).reshape((1, N) + (1,) * (y.ndim - 2)), y.shape)
    for q in reversed(chain):
        y = exec_node(q, [y])
    if y.ndim == 0 or y.shape[-1] != N or \
            not np.array_equal(y, np.broadcast_to(np.arange(N, dtype=np.float32), y.shape)):
        return None, None
    return p, chain[0]


def _prune(nodes: list, output: str) -> list:
    live, keep = {output}, []
    for n in reversed(nodes):
        if n.output in live:
            keep.append(n)
            live.update(n.inputs)
    return keep[::-1]


def _read(path: str):
    import onnx
    from onnx import shape_inference

    if not Path(path).is_file():
        raise DseError(f"{path}: model file not found; give an .onnx path or a bundled name (lenet5, resnet8)")
    try:
        model = onnx.load(path)
        onnx.checker.check_model(model)
        return shape_inference.infer_shapes(model, strict_mode=True)
    except Exception as exc:  # noqa: BLE001 - any parser/checker failure is bad input
        msg = str(exc).strip().splitlines()
        raise DseError(f"{path}: not a valid ONNX model ({type(exc).__name__}: {msg[0] if msg else ''}); "
                       "re-export it with torch.onnx.export or onnx.save") from None


def _input(path: str, g, consts: set) -> tuple[str, tuple]:
    import onnx

    inputs = [i for i in g.input if i.name not in consts]
    if len(inputs) != 1 or len(g.output) != 1:
        raise DseError(f"{path}: the model has {len(inputs)} input(s) and {len(g.output)} output(s); dse needs "
                       "exactly one image input and one logits output")
    tt = inputs[0].type.tensor_type
    shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim) if tt.HasField("shape") \
        else None
    if not shape or len(shape) < 2 or any(d is None or d < 1 for d in shape[1:]):
        raise DseError(f"{path}: input '{inputs[0].name}' has shape {shape}; dse needs [N, C, H, W] (or [N, F]) "
                       "with fixed non-batch dimensions")
    if tt.elem_type != onnx.TensorProto.FLOAT:
        raise DseError(f"{path}: input '{inputs[0].name}' is not float32; export the model with a float input")
    return inputs[0].name, tuple(int(d) for d in shape[1:])


def load_onnx(path) -> Graph:
    """Load an ONNX file into a :class:`Graph` (BN folded into conv/gemm where possible, shapes filled)."""
    from onnx import numpy_helper

    path = str(path)
    model = _read(path)
    g = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
    inits = {init.name: numpy_helper.to_array(init) for init in g.initializer}
    in_name, in_shape = _input(path, g, set(inits))
    imp = Importer(path, in_name, in_shape)
    imp.consts.update(inits)
    names: set = set()
    for i, n in enumerate(g.node):
        name = n.name or f"{n.op_type}_{i}"
        base, k = name, 1
        while name in names:
            name, k = f"{base}_{k}", k + 1
        names.add(name)
        if n.domain not in ("", "ai.onnx"):
            raise imp.err(name, f"has unsupported op type '{n.domain}.{n.op_type}'; re-export the model with "
                                "standard ONNX ops only")
        imp.convert(OnnxNode(name, n.op_type, list(n.input), list(n.output), _attrs(n), opset))
    out_name = imp.t(g.output[0].name)
    if out_name not in imp.sample or out_name == in_name:
        raise DseError(f"{path}: output '{g.output[0].name}' does not depend on the input")
    try:
        nodes = toposort(imp.nodes, {in_name})
    except ValueError as exc:
        raise DseError(f"{path}: {exc}; the graph is incomplete") from None
    nodes = _prune(_fold_into_mac(nodes, out_name, imp.sample), out_name)
    graph = Graph(nodes=nodes, input_name=in_name, input_shape=in_shape, output_name=out_name,
                  metadata={p.key: p.value for p in model.metadata_props}, source=path)
    graph.shapes = {t: imp.shape(t) for t in imp.sample}
    _check_batch(graph, imp)
    return graph


def _check_batch(graph: Graph, imp: Importer) -> None:
    """The output must be [N, ...], and every image must be computed independently of the others: the graph on two
    images gives each image's result alone (a one-line error naming the output otherwise)."""
    from dse.model.float_exec import run_float_all

    out = graph.output_name
    if not imp.batch_first(out):
        raise DseError(f"{graph.source}: output '{out}' has its batch on {imp.where_batch(out)} (shape "
                       f"{list(imp.full(out))} at batch size 1); dse needs logits [N, ...]: transpose/reshape the "
                       "batch back to axis 0 in the model")
    x = np.random.default_rng(1).standard_normal((2,) + graph.input_shape).astype(np.float32)
    both = run_float_all(graph, x, keep=set())[out]
    alone = np.concatenate([run_float_all(graph, x[i:i + 1], keep=set())[out] for i in range(2)])
    scale = max(float(np.abs(alone).max()), 1e-6)
    if both.shape != alone.shape or not np.allclose(both, alone, rtol=1e-4, atol=1e-5 * scale, equal_nan=True):
        raise DseError(f"{graph.source}: output '{out}' of an image depends on the other images of the batch (an op "
                       "mixes the batch axis with another one); export the model so that images stay independent")


def preprocess_from_metadata(graph: Graph) -> dict | None:
    """The ``dse.preprocess`` metadata (JSON dict: scale, mean, std) or None."""
    raw = graph.metadata.get("dse.preprocess")
    if raw is None:
        return None
    try:
        v = json.loads(raw)
        if not isinstance(v, dict):
            raise ValueError("not a JSON object")
    except ValueError as exc:
        raise DseError(f"{graph.source}: metadata 'dse.preprocess' is not a JSON object ({exc}); fix the export") \
            from None
    num = (int, float)
    for k, val in v.items():
        vals = val if isinstance(val, list) and k != "scale" else [val]
        if k not in ("scale", "mean", "std") or not vals or not all(
                isinstance(e, num) and not isinstance(e, bool) for e in vals) or (k == "std" and 0 in vals):
            raise DseError(f"{graph.source}: metadata 'dse.preprocess' key {k!r} = {val!r} is invalid; use a number "
                           "'scale' and numbers or lists 'mean', 'std' (std non-zero), or fix the export")
    return v


BUNDLED_MODELS = ("lenet5", "resnet8")


def model_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a model file's bytes (read in chunks): the identity of a model in study names and caches."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def resolve_model(model: str) -> Path:
    """A model path, or the bundled file for a bundled name (lenet5, resnet8)."""
    p = Path(model)
    if p.is_file():
        return p
    if model in BUNDLED_MODELS:
        b = Path(__file__).resolve().parent.parent / "data" / f"{model}.onnx"
        if b.is_file():
            return b
        raise DseError(f"{b}: bundled model missing; reinstall dse or run scripts/train_models.py")
    raise DseError(f"model '{model}': no such file and not a bundled model ({', '.join(BUNDLED_MODELS)}); "
                   "pass an ONNX path")
