"""ONNX -> :class:`dse.model.graph.Graph` (BatchNormalization folded, per-tensor shapes known).

``load_onnx(path) -> Graph``. Supported ONNX ops: see :data:`SUPPORTED`. The model must have one float input
[N, ...] (N = batch, symbolic or any size; the other dims fixed) and one output. Everything else raises
:class:`DseError` with one line naming the file and the node.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dse.errors import DseError
from dse.model.graph import Graph, Node, params_f32, toposort

SUPPORTED = ("Conv", "Gemm", "MatMul", "BatchNormalization", "Relu", "Clip", "MaxPool", "AveragePool",
             "GlobalAveragePool", "Add", "Flatten", "Reshape", "Concat", "Identity", "Constant", "Dropout")


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _s(v):
    return v.decode() if isinstance(v, bytes) else v


class _Importer:
    def __init__(self, path: str, model):
        self.path = path
        self.model = model
        self.consts: dict[str, np.ndarray] = {}
        self.alias: dict[str, str] = {}
        self.nodes: list[Node] = []
        self.shapes: dict[str, tuple] = {}  # full shapes from onnx shape inference (batch dim may be None)

    # ------------------------------------------------------------------ helpers
    def err(self, node_name: str, msg: str) -> DseError:
        return DseError(f"{self.path}: node '{node_name}' {msg}")

    def t(self, name: str) -> str:
        while name in self.alias:
            name = self.alias[name]
        return name

    def const(self, name: str):
        return self.consts.get(self.t(name))

    def need_const(self, node_name: str, name: str, what: str) -> np.ndarray:
        v = self.const(name)
        if v is None:
            raise self.err(node_name, f"needs a constant {what} (tensor '{name}' is computed at run time); export "
                                      "the model with constant folding")
        return v

    def spatial(self, node_name: str, tensor: str) -> tuple:
        s = self.shapes.get(self.t(tensor)) or self.shapes.get(tensor)
        if s is None or len(s) != 4 or any(d is None for d in s[1:]):
            raise self.err(node_name, f"needs a known NCHW shape of input '{tensor}' to resolve auto_pad; export "
                                      "with explicit pads or a fixed input shape")
        return s[2:]

    def pads2d(self, name: str, a: dict, kernel, stride, dilation, x: str) -> tuple:
        auto = _s(a.get("auto_pad", "NOTSET"))
        if auto in ("NOTSET", ""):
            p = list(a.get("pads", [0, 0, 0, 0]))
            if len(p) != 4:
                raise self.err(name, f"has pads {p}; only 2-D pads (top, left, bottom, right) are supported")
            return tuple(int(v) for v in p)
        if auto == "VALID":
            return (0, 0, 0, 0)
        if auto not in ("SAME_UPPER", "SAME_LOWER"):
            raise self.err(name, f"has unknown auto_pad '{auto}'; use NOTSET, VALID, SAME_UPPER or SAME_LOWER")
        hw = self.spatial(name, x)
        begin, end = [], []
        for d in range(2):
            out = -(-hw[d] // stride[d])
            total = max((out - 1) * stride[d] + dilation[d] * (kernel[d] - 1) + 1 - hw[d], 0)
            small = total // 2
            b = small if auto == "SAME_UPPER" else total - small
            begin.append(b)
            end.append(total - b)
        return (begin[0], begin[1], end[0], end[1])

    def add(self, node: Node) -> None:
        params_f32(node)
        self.nodes.append(node)

    # ------------------------------------------------------------------ op translation
    def convert(self, n, name: str) -> None:
        op = n.op_type
        a = _attrs(n)
        ins = [i for i in n.input]
        out = n.output[0] if n.output else ""
        if op == "Constant":
            from onnx import numpy_helper

            if "value" in a:
                v = numpy_helper.to_array(a["value"])
            elif "value_float" in a or "value_int" in a:
                v = np.array(a.get("value_float", a.get("value_int")))
            elif "value_floats" in a or "value_ints" in a:
                v = np.array(a.get("value_floats", a.get("value_ints")))
            else:
                raise self.err(name, f"is a Constant with unsupported attribute(s) {sorted(a)}; use 'value'")
            self.consts[out] = v
            return
        if op in ("Identity", "Dropout"):
            if op == "Dropout" and len(ins) > 2 and ins[2] and self.const(ins[2]) is not None \
                    and bool(self.const(ins[2])):
                raise self.err(name, "is a Dropout in training mode; export the model in eval mode")
            src = self.t(ins[0])
            if src in self.consts:
                self.consts[out] = self.consts[src]
            else:
                self.alias[out] = src
            return
        x = self.t(ins[0]) if ins else ""
        if op == "Conv":
            W = self.need_const(name, ins[1], "weight")
            if W.ndim != 4:
                raise self.err(name, f"is a {W.ndim - 2}-D convolution; only 2-D Conv is supported")
            kernel = tuple(int(v) for v in a.get("kernel_shape", W.shape[2:]))
            if kernel != tuple(W.shape[2:]):
                raise self.err(name, f"has kernel_shape {kernel} but weights {W.shape}")
            stride = tuple(int(v) for v in a.get("strides", (1, 1)))
            dilation = tuple(int(v) for v in a.get("dilations", (1, 1)))
            groups = int(a.get("group", 1))
            pads = self.pads2d(name, a, kernel, stride, dilation, ins[0])
            b = self.need_const(name, ins[2], "bias") if len(ins) > 2 and ins[2] else np.zeros(W.shape[0])
            self.add(Node(name, "conv", [x], [out], dict(stride=stride, pads=pads, dilation=dilation, groups=groups),
                          dict(W=W, b=b), op))
        elif op == "Gemm":
            if int(a.get("transA", 0)):
                raise self.err(name, "has transA=1; only activations as rows [batch, K] are supported (transA=0)")
            B = self.need_const(name, ins[1], "weight (input B)")
            if B.ndim != 2:
                raise self.err(name, f"has a weight of rank {B.ndim}; Gemm needs a 2-D B")
            W = float(a.get("alpha", 1.0)) * (B if int(a.get("transB", 0)) else B.T)
            N = W.shape[0]
            b = np.zeros(N)
            if len(ins) > 2 and ins[2]:
                C = self.need_const(name, ins[2], "bias (input C)")
                if C.size not in (1, N) or (C.ndim == 2 and C.shape[0] != 1):
                    raise self.err(name, f"has a bias C of shape {C.shape}; only [N], [1, N] or scalar are supported")
                b = float(a.get("beta", 1.0)) * np.broadcast_to(C.reshape(-1), (N,))
            self.add(Node(name, "gemm", [x], [out], {}, dict(W=W, b=b), op))
        elif op == "MatMul":
            B = self.const(ins[1])
            if B is None or B.ndim != 2:
                raise self.err(name, "is a MatMul without a constant 2-D right operand; only x @ W (weights) is "
                                     "supported")
            self.add(Node(name, "gemm", [x], [out], {}, dict(W=B.T, b=np.zeros(B.shape[1])), op))
        elif op == "BatchNormalization":
            if int(a.get("training_mode", 0)) or len(n.output) > 1 and any(n.output[1:]):
                raise self.err(name, "is a BatchNormalization in training mode; export the model in eval mode")
            sc, bi, mean, var = (self.need_const(name, ins[i], w).astype(np.float64)
                                 for i, w in ((1, "scale"), (2, "bias"), (3, "mean"), (4, "var")))
            scale = sc / np.sqrt(var + float(a.get("epsilon", 1e-5)))
            self.add(Node(name, "affine", [x], [out], {}, dict(scale=scale, shift=bi - mean * scale), op))
        elif op == "Relu":
            self.add(Node(name, "relu", [x], [out], {}, {}, op))
        elif op == "Clip":
            lo, hi = a.get("min", -np.inf), a.get("max", np.inf)
            if len(ins) > 1 and ins[1]:
                lo = self.need_const(name, ins[1], "min")
            if len(ins) > 2 and ins[2]:
                hi = self.need_const(name, ins[2], "max")
            self.add(Node(name, "clip", [x], [out], dict(min=float(lo), max=float(hi)), {}, op))
        elif op in ("MaxPool", "AveragePool"):
            kernel = tuple(int(v) for v in a["kernel_shape"])
            if len(kernel) != 2:
                raise self.err(name, f"has kernel_shape {kernel}; only 2-D pooling is supported")
            stride = tuple(int(v) for v in a.get("strides", (1, 1)))
            dilation = tuple(int(v) for v in a.get("dilations", (1, 1)))
            if len(n.output) > 1 and n.output[1]:
                raise self.err(name, "uses the MaxPool Indices output; it is not supported")
            attrs = dict(kernel=kernel, stride=stride, dilation=dilation, ceil_mode=int(a.get("ceil_mode", 0)),
                         pads=self.pads2d(name, a, kernel, stride, dilation, ins[0]))
            if op == "AveragePool":
                if dilation != (1, 1):
                    raise self.err(name, f"has dilations {dilation}; AveragePool supports only dilation 1")
                attrs["count_include_pad"] = int(a.get("count_include_pad", 0))
            self.add(Node(name, "maxpool" if op == "MaxPool" else "avgpool", [x], [out], attrs, {}, op))
        elif op == "GlobalAveragePool":
            self.add(Node(name, "gap", [x], [out], {}, {}, op))
        elif op == "Add":
            c0, c1 = self.const(ins[0]), self.const(ins[1])
            if c0 is not None and c1 is not None:
                self.consts[out] = c0 + c1
            elif c0 is not None or c1 is not None:
                c, other = (c0, ins[1]) if c0 is not None else (c1, ins[0])
                self.add(Node(name, "add", [self.t(other)], [out], {}, dict(c=c), op))
            else:
                self.add(Node(name, "add", [x, self.t(ins[1])], [out], {}, {}, op))
        elif op == "Flatten":
            if int(a.get("axis", 1)) != 1:
                raise self.err(name, f"has axis={a.get('axis')}; only Flatten(axis=1) keeps the batch dimension")
            self.add(Node(name, "flatten", [x], [out], {}, {}, op))
        elif op == "Reshape":
            shape = [int(v) for v in self.need_const(name, ins[1], "shape")]
            if int(a.get("allowzero", 0)) and 0 in shape:
                raise self.err(name, "uses allowzero=1 with a 0 in the shape; it is not supported")
            self.add(Node(name, "reshape", [x], [out], dict(onnx_shape=shape), {}, op))
        elif op == "Concat":
            self.add(Node(name, "concat", [self.t(i) for i in ins], [out], dict(axis=int(a["axis"])), {}, op))
        else:
            raise self.err(name, f"has unsupported op type '{op}'; supported: {', '.join(SUPPORTED)}")


def _fold(nodes: list, output: str) -> list:
    """Fold affine (BN) and constant-add nodes into a preceding conv/gemm that has no other consumer."""
    changed = True
    while changed:
        changed = False
        for n in nodes:
            if n.op not in ("affine", "add") or len(n.inputs) != 1:
                continue
            prod = next((p for p in nodes if p.output == n.inputs[0]), None)
            if prod is None or not prod.is_mac or prod.output == output:
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
                c = n.params["c"]
                ok = (c.shape in ((N,), (1, N)) if prod.op == "gemm" else c.shape in ((N, 1, 1), (1, N, 1, 1)))
                if not ok:
                    continue
                prod.params["b"] = (prod.params["b"] + c.reshape(N)).astype(np.float32)
            prod.outputs = list(n.outputs)
            nodes.remove(n)
            changed = True
            break
    return nodes


def _prune(nodes: list, output: str) -> list:
    live, keep = {output}, []
    for n in reversed(nodes):
        if n.output in live:
            keep.append(n)
            live.update(n.inputs)
    return keep[::-1]


def load_onnx(path) -> Graph:
    """Load an ONNX file into a :class:`Graph` (BN folded into conv/gemm where possible, shapes filled)."""
    import onnx
    from onnx import numpy_helper, shape_inference

    path = str(path)
    if not Path(path).is_file():
        raise DseError(f"{path}: model file not found; give an .onnx path or a bundled name (lenet5, resnet8)")
    try:
        model = onnx.load(path)
        onnx.checker.check_model(model)
        model = shape_inference.infer_shapes(model, strict_mode=True)
    except Exception as exc:  # noqa: BLE001 - any parser/checker failure is bad input
        msg = str(exc).strip().splitlines()
        raise DseError(f"{path}: not a valid ONNX model ({type(exc).__name__}: {msg[0] if msg else ''}); "
                       "re-export it with torch.onnx.export or onnx.save") from None
    g = model.graph
    imp = _Importer(path, model)
    for init in g.initializer:
        imp.consts[init.name] = numpy_helper.to_array(init)
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        tt = vi.type.tensor_type
        if tt.HasField("shape"):
            imp.shapes[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim)
    inputs = [i for i in g.input if i.name not in imp.consts]
    if len(inputs) != 1 or len(g.output) != 1:
        raise DseError(f"{path}: the model has {len(inputs)} input(s) and {len(g.output)} output(s); dse needs "
                       "exactly one image input and one logits output")
    in_name = inputs[0].name
    in_shape = imp.shapes.get(in_name)
    if not in_shape or len(in_shape) < 2 or any(d is None or d < 1 for d in in_shape[1:]):
        raise DseError(f"{path}: input '{in_name}' has shape {in_shape}; dse needs [N, C, H, W] (or [N, F]) with "
                       "fixed non-batch dimensions")
    if inputs[0].type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        raise DseError(f"{path}: input '{in_name}' is not float32; export the model with a float input")
    names: set = set()
    for i, n in enumerate(g.node):
        name = n.name or f"{n.op_type}_{i}"
        base, k = name, 1
        while name in names:
            name, k = f"{base}_{k}", k + 1
        names.add(name)
        if n.domain not in ("", "ai.onnx"):
            raise imp.err(name, f"has unsupported op type '{n.domain}.{n.op_type}'; supported: {', '.join(SUPPORTED)}")
        imp.convert(n, name)
    out_name = imp.t(g.output[0].name)
    if out_name in imp.consts or out_name == in_name:
        raise DseError(f"{path}: output '{g.output[0].name}' does not depend on the input")
    try:
        nodes = toposort(imp.nodes, {in_name})
    except ValueError as exc:
        raise DseError(f"{path}: {exc}; the graph is incomplete") from None
    nodes = _prune(_fold(nodes, out_name), out_name)
    graph = Graph(nodes=nodes, input_name=in_name, input_shape=tuple(int(d) for d in in_shape[1:]),
                  output_name=out_name, metadata={p.key: p.value for p in model.metadata_props}, source=path)
    _resolve_shapes(graph)
    return graph


def _resolve_shapes(graph: Graph) -> None:
    """Fill per-node static attributes that need shapes (reshape targets) and ``graph.shapes`` by a dry run."""
    from dse.model.float_exec import run_float_all

    src = graph.source
    for n in graph.nodes:
        if n.op == "concat" and n.attrs["axis"] == 0:
            raise DseError(f"{src}: node '{n.name}' concatenates along the batch axis 0; use axis >= 1")
    shapes = {graph.input_name: graph.input_shape}
    x = np.zeros((1,) + graph.input_shape, dtype=np.float32)
    try:
        run_float_all(graph, x, shapes=shapes)
    except DseError:
        raise
    except Exception as exc:  # noqa: BLE001 - shape errors in a malformed but checker-valid model
        raise DseError(f"{src}: the graph cannot be executed with input shape {graph.input_shape} ({exc})") from None
    graph.shapes = shapes


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
