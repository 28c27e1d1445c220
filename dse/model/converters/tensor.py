"""Constants, shape computations (folded at import) and layout ops: Constant, Identity, Dropout, Shape, Size,
Reshape, Flatten, Transpose, Squeeze, Unsqueeze, Concat, Split, Slice, Gather, Expand, ConstantOfShape, Range, Tile,
Pad, Resize (nearest).

On activations the batch axis may move (Transpose) or merge with another axis (Reshape to [N * heads, ...]); the
importer tracks it (``Importer.batch``). An op that would mix images (concatenating, slicing, gathering, padding or
tiling along the batch axis) is refused at import; ops that need [N, ...] (Flatten, Resize) say so.
"""
from __future__ import annotations

import numpy as np

from dse.model.converters.registry import OnnxNode, converter
from dse.model.graph import Node
from dse.model.ops import BATCH, BatchDim, static_dims


def _rank(imp, name: str) -> int:
    return imp.rank(name)


def _not_batch_axis(imp, n: OnnxNode, axes, what: str = "axis") -> None:
    """Refuse ``axes`` that touch the batch axis of an activation input."""
    imp.refuse_batch_axes(n, axes, what)


@converter("Constant")
def _constant(imp, n: OnnxNode) -> None:
    from onnx import numpy_helper

    a = n.attrs
    if "value" in a:
        v = numpy_helper.to_array(a["value"])
    elif "value_float" in a or "value_int" in a:
        v = np.array(a.get("value_float", a.get("value_int")))
    elif "value_floats" in a or "value_ints" in a:
        v = np.array(a.get("value_floats", a.get("value_ints")))
    else:
        raise imp.err(n.name, f"is a Constant with unsupported attribute(s) {sorted(a)}; use 'value'")
    imp.set_const(n.outputs[0], v)


@converter("Identity")
def _identity(imp, n: OnnxNode) -> None:
    imp.alias_of(n.outputs[0], n.inputs[0])


@converter("Dropout")
def _dropout(imp, n: OnnxNode) -> None:
    mode = imp.opt_const(n, 2, "training_mode")
    if mode is not None and bool(mode):
        raise imp.err(n.name, "is a Dropout in training mode; export the model in eval mode")
    if len(n.outputs) > 1 and n.outputs[1]:
        raise imp.err(n.name, "uses the Dropout mask output; export the model in eval mode")
    imp.alias_of(n.outputs[0], n.inputs[0])


@converter("Shape")
def _shape(imp, n: OnnxNode) -> None:
    start, end = n.attrs.get("start", 0), n.attrs.get("end")
    sl = slice(int(start), None if end is None else int(end))
    x = imp.t(n.inputs[0])
    if x in imp.sample:
        imp.probes[n.outputs[0]] = tuple(np.array(imp.lane_shape(x, b), np.int64)[sl] for b in imp.lanes)
    elif x in imp.probes:
        imp.set_const(n.outputs[0], np.array(imp.probes[x][0].shape, np.int64)[sl])
    else:
        imp.set_const(n.outputs[0], np.array(imp.need_const(n, n.inputs[0], "input").shape, np.int64)[sl])


@converter("Size")
def _size(imp, n: OnnxNode) -> None:
    x = imp.t(n.inputs[0])
    if x in imp.sample:
        imp.probes[n.outputs[0]] = tuple(np.array(int(np.prod(imp.lane_shape(x, b))), np.int64) for b in imp.lanes)
    else:
        imp.set_const(n.outputs[0], np.array(imp.need_const(n, n.inputs[0], "input").size, np.int64))


def _fits(target: tuple, shape: tuple, allowzero: int) -> bool:
    """Whether ONNX Reshape of a tensor of ``shape`` to ``target`` (0 = copy unless allowzero, one -1) is valid."""
    t = [shape[i] if d == 0 and not allowzero and i < len(shape) else d for i, d in enumerate(target)]
    if t.count(-1) > 1 or any(d < -1 for d in t) or (not allowzero and any(d == 0 and i >= len(shape)
                                                                          for i, d in enumerate(target))):
        return False
    total, rest = int(np.prod(shape)), int(np.prod([d for d in t if d != -1]))
    return rest == total if -1 not in t else rest > 0 and total % rest == 0


@converter("Reshape")
def _reshape(imp, n: OnnxNode) -> None:
    """The target keeps its batch entries symbolic (:class:`BatchDim`); the node runs at batch sizes 1 and 2 as it is
    added, so a target that does not fit the input fails there with the node named."""
    allowzero = int(bool(int(n.attrs.get("allowzero", 0))))
    x = imp.t(n.inputs[0])
    dims = imp.dims(n, n.inputs[1], "shape")
    if x not in imp.sample:
        imp.emit(n, "reshape", n.inputs[:1], dict(shape=dims, allowzero=allowzero))
        return
    for b in (1, 2):
        if not _fits(static_dims(dims, b), imp.lane_shape(x, b), allowzero):
            shown = ", ".join(map(str, dims))
            full = ", ".join(map(str, imp.lane_shape(x, 1)))
            raise imp.err(n.name, f"(Reshape) target [{shown}] does not fit its input [{full}] (batch size 1) at batch "
                                  f"size {b}; compute the batch entry from the input's shape, or use -1 or 0 for it")
    imp.add_node(Node(n.name, "reshape", [x], [n.outputs[0]], dict(shape=dims, allowzero=allowzero,
                                                                    batch=imp.batch[x]), {}, n.op_type))


@converter("Flatten")
def _flatten(imp, n: OnnxNode) -> None:
    axis = int(n.attrs.get("axis", 1))
    x = imp.t(n.inputs[0])
    if x in imp.sample:
        if axis != 1:
            raise imp.err(n.name, f"has axis={axis}; only Flatten(axis=1) keeps the batch dimension")
        imp.need_batch_first(n, x)
        imp.emit(n, "flatten", n.inputs[:1])
        return
    v = imp.need_const(n, n.inputs[0], "input")
    axis %= max(v.ndim, 1)
    imp.set_const(n.outputs[0], v.reshape(int(np.prod(v.shape[:axis])), -1))


@converter("Transpose")
def _transpose(imp, n: OnnxNode) -> None:
    x = imp.t(n.inputs[0])
    nd = _rank(imp, x) if x in imp.sample else np.asarray(imp.consts.get(x, np.zeros(()))).ndim
    perm = tuple(int(p) for p in n.attrs.get("perm", range(nd - 1, -1, -1)))
    imp.emit(n, "transpose", n.inputs[:1], {"perm": perm})


def _axes(imp, n: OnnxNode, name: str):
    if n.opset >= 13:
        v = imp.opt_const(n, 1, name)
        return None if v is None else [int(a) for a in np.asarray(v).reshape(-1)]
    v = n.attrs.get(name)
    return None if v is None else [int(a) for a in v]


@converter("Squeeze")
def _squeeze(imp, n: OnnxNode) -> None:
    axes = _axes(imp, n, "axes")
    if imp.is_runtime(n.inputs[0]):
        if axes is None:  # resolved now: at run time a batch of one must not lose its batch axis
            b = imp.batch[imp.t(n.inputs[0])][0]
            axes = [i for i, d in enumerate(imp.full(n.inputs[0])) if d == 1 and i != b]
        _not_batch_axis(imp, n, axes, "axes")
    imp.emit(n, "squeeze", n.inputs[:1], {"axes": None if axes is None else tuple(axes)})


@converter("Unsqueeze")
def _unsqueeze(imp, n: OnnxNode) -> None:
    axes = _axes(imp, n, "axes")
    if axes is None:
        raise imp.err(n.name, "(Unsqueeze) has no axes; give the axes")
    imp.emit(n, "unsqueeze", n.inputs[:1], {"axes": tuple(axes)})


@converter("Concat")
def _concat(imp, n: OnnxNode) -> None:
    axis = int(n.attrs["axis"])
    runtime = [i for i in n.inputs if imp.is_runtime(i)]
    if runtime:
        imp.refuse_batch_axes(OnnxNode(n.name, n.op_type, runtime[:1], n.outputs), [axis])
        if len({imp.batch[imp.t(i)] for i in runtime}) > 1:
            raise imp.err(n.name, "(Concat) joins activations whose batch axes differ; transpose them alike first")
    imp.emit(n, "concat", n.inputs, {"axis": axis})


@converter("Split")
def _split(imp, n: OnnxNode) -> None:
    """One slice per output."""
    axis = int(n.attrs.get("axis", 0))
    x = imp.t(n.inputs[0])
    if x in imp.sample:
        _not_batch_axis(imp, n, [axis])
        length = imp.full(x)[axis % _rank(imp, x)]
    else:
        length = np.asarray(imp.consts[x] if x in imp.consts else imp.probes[x][0]).shape[axis]
    split = imp.opt_const(n, 1, "split") if n.opset >= 13 else n.attrs.get("split")
    k = len(n.outputs)
    if split is not None:
        sizes = [int(s) for s in np.asarray(split).reshape(-1)]
    else:
        part = -(-length // k)  # opset 18 num_outputs: the last chunk may be smaller
        sizes = [min(part, length - i * part) for i in range(k)]
    if sum(sizes) != length or len(sizes) != k:
        raise imp.err(n.name, f"(Split) sizes {sizes} do not split length {length} into {k} outputs; fix the model")
    start = 0
    for out, size in zip(n.outputs, sizes):
        if out:
            imp.emit(n, "slice", n.inputs[:1], dict(starts=(start,), ends=(start + size,), axes=(axis,), steps=(1,)),
                     out=out, name=f"{n.name}/{out}")
        start += size


@converter("Slice", since=10)
def _slice(imp, n: OnnxNode) -> None:
    starts = imp.need_const(n, n.inputs[1], "starts").reshape(-1)
    ends = imp.need_const(n, n.inputs[2], "ends").reshape(-1)
    axes = imp.opt_const(n, 3, "axes", np.arange(len(starts))).reshape(-1)
    steps = imp.opt_const(n, 4, "steps", np.ones(len(starts), np.int64)).reshape(-1)
    if imp.is_runtime(n.inputs[0]):
        nd, b = _rank(imp, n.inputs[0]), imp.batch[imp.t(n.inputs[0])][0]
        for a, s, e, st in zip(axes, starts, ends, steps):
            if int(a) % nd == b and not (s == 0 and st == 1 and e >= 2 ** 31 - 1):
                _not_batch_axis(imp, n, [a])
    attrs = dict(starts=tuple(map(int, starts)), ends=tuple(int(min(e, 2 ** 62)) for e in ends),
                 axes=tuple(map(int, axes)), steps=tuple(map(int, steps)))
    imp.emit(n, "slice", n.inputs[:1], attrs)


@converter("Gather")
def _gather(imp, n: OnnxNode) -> None:
    axis = int(n.attrs.get("axis", 0))
    if imp.is_runtime(n.inputs[0]):
        _not_batch_axis(imp, n, [axis])
        imp.need_const(n, n.inputs[1], "indices")
    imp.emit(n, "gather", n.inputs[:2], {"axis": axis})


def _batch_sized(imp, n: OnnxNode, value_input: str, dims: tuple, out: str) -> None:
    """A constant broadcast to ``dims`` that contain the batch size: a runtime expand reading the graph input for the
    batch size."""
    if dims[0] != BATCH or any(isinstance(d, BatchDim) for d in dims[1:]):
        raise imp.err(n.name, f"({n.op_type}) builds a tensor of shape {[str(d) for d in dims]}; "
                              "only the first axis may be the batch size")
    c = imp.consts[imp.t(value_input)]
    imp.add_node(Node(n.name, "expand", [imp.input_name], [out], dict(shape=dims, args=("c0", 0)), dict(c0=c),
                      n.op_type))


@converter("Expand")
def _expand(imp, n: OnnxNode) -> None:
    dims = imp.dims(n, n.inputs[1], "shape")
    x = imp.t(n.inputs[0])
    if x in imp.sample:
        imp.add_node(Node(n.name, "expand", [x], [n.outputs[0]], dict(shape=dims, batch=imp.batch[x]), {}, n.op_type))
    elif any(isinstance(d, BatchDim) for d in dims):
        imp.need_const(n, n.inputs[0], "input")
        _batch_sized(imp, n, n.inputs[0], dims, n.outputs[0])
    else:
        imp.emit(n, "expand", n.inputs[:1], dict(shape=dims))


@converter("ConstantOfShape")
def _constant_of_shape(imp, n: OnnxNode) -> None:
    from onnx import numpy_helper

    value = numpy_helper.to_array(n.attrs["value"]).reshape(-1)[0] if "value" in n.attrs else np.float32(0)
    dims = imp.dims(n, n.inputs[0], "shape")
    if any(isinstance(d, BatchDim) for d in dims):
        key = f"{n.outputs[0]}/value"
        imp.set_const(key, np.full((1,) * len(dims), value))
        _batch_sized(imp, n, key, dims, n.outputs[0])
        return
    imp.set_const(n.outputs[0], np.full(dims, value))


@converter("Range")
def _range(imp, n: OnnxNode) -> None:
    imp.emit(n, "range")


@converter("Tile")
def _tile(imp, n: OnnxNode) -> None:
    if imp.is_runtime(n.inputs[0]):
        reps = imp.need_const(n, n.inputs[1], "repeats").reshape(-1)
        b = imp.batch[imp.t(n.inputs[0])][0]
        if int(reps[b]) != 1:
            raise imp.err(n.name, f"(Tile) repeats the batch axis {b} ({reps.tolist()}); use repeats[{b}] = 1")
    imp.emit(n, "tile", n.inputs[:2])


@converter("Pad", since=11)
def _pad(imp, n: OnnxNode) -> None:
    pads = [int(p) for p in imp.need_const(n, n.inputs[1], "pads").reshape(-1)]
    value = imp.opt_const(n, 2, "constant_value", np.zeros(()))
    value = float(np.asarray(value).reshape(-1)[0]) if np.asarray(value).size else 0.0
    x = imp.t(n.inputs[0])
    nd = _rank(imp, x) if x in imp.sample else np.asarray(imp.consts[x]).ndim
    axes = imp.opt_const(n, 3, "axes")
    if axes is not None:  # opset 18: pads only for the listed axes
        full = [0] * (2 * nd)
        axes = [int(a) % nd for a in np.asarray(axes).reshape(-1)]
        for i, a in enumerate(axes):
            full[a], full[a + nd] = pads[i], pads[i + len(axes)]
        pads = full
    if x in imp.sample and (pads[imp.batch[x][0]] or pads[imp.batch[x][0] + nd]):
        raise imp.err(n.name, f"(Pad) pads the batch axis {imp.batch[x][0]} (pads {pads}); pad only the other axes")
    mode = n.attrs.get("mode", "constant")
    if mode not in ("constant", "reflect", "edge", "wrap"):
        raise imp.err(n.name, f"(Pad) has unknown mode '{mode}'; use constant, reflect, edge or wrap")
    imp.emit(n, "pad", n.inputs[:1], dict(pads=tuple(pads), mode=mode, value=value))


@converter("Resize", since=11)
def _resize(imp, n: OnnxNode) -> None:
    a = n.attrs
    if a.get("mode", "nearest") != "nearest":
        raise imp.err(n.name, f"(Resize) has mode '{a.get('mode')}'; only mode 'nearest' is supported: export with "
                              "nearest-neighbour upsampling")
    x = imp.need_batch_first(n, n.inputs[0])
    nd = _rank(imp, x)
    scales = imp.opt_const(n, 2, "scales")
    sizes = list(imp.dims(n, n.input(3), "sizes")) if n.input(3) else None
    scales = None if scales is None or scales.size == 0 else [float(s) for s in scales.reshape(-1)]
    sizes = None if not sizes else sizes
    axes = a.get("axes")
    if axes is not None:  # opset 18: scales/sizes of the listed axes only
        axes = [int(v) % nd for v in axes]
        full_scale, full_size = [1.0] * nd, [1] + list(imp.shape(x))
        for i, ax in enumerate(axes):
            if scales is not None:
                full_scale[ax] = scales[i]
            if sizes is not None:
                full_size[ax] = sizes[i]
        scales, sizes = (full_scale if scales is not None else None), (full_size if sizes is not None else None)
    if sizes is not None:
        sizes[0] = 1 if len(sizes) == nd and sizes[0] == BATCH else -1  # the batch must stay
    if (scales is None) == (sizes is None):
        raise imp.err(n.name, "(Resize) needs exactly one of constant scales or sizes; export with a fixed scale")
    keep = [1.0, 1.0] if scales is not None else [1, imp.shape(x)[0]]
    got = scales[:2] if scales is not None else sizes[:2]
    if got != keep or int(a.get("antialias", 0)) or a.get("keep_aspect_ratio_policy", "stretch") != "stretch":
        raise imp.err(n.name, "(Resize) resizes the batch or channel axis or uses antialias/keep_aspect_ratio; only "
                              "spatial nearest resizing is supported")
    imp.emit(n, "resize", n.inputs[:1], dict(scales=scales, sizes=sizes,
                                            ctm=a.get("coordinate_transformation_mode", "half_pixel"),
                                            nearest_mode=a.get("nearest_mode", "round_prefer_floor")))
