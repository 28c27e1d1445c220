"""Op patterns of EfficientNet/MobileNetV3/ShuffleNetV2/ConvNeXt/ViT exports: float path vs onnxruntime at opsets
13, 17 and 21 with a dynamic batch; FxP8 exact and an approximate multiplier vs the slow reference emulator;
batch-dependent shape subgraphs folded at import; one-line errors for what cannot be imported."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from dse.emulate import Emulator, LayerConfig
from dse.errors import DseError
from dse.model.float_exec import run_float
from dse.model.onnx_import import load_onnx
from dse.quant import calibrate
from tests.test_emulate import reference_run

ort = pytest.importorskip("onnxruntime")
RNG = np.random.default_rng(5)
I64 = TensorProto.INT64


def _w(*shape, s=0.3):
    return (RNG.standard_normal(shape) * s).astype(np.float32)


class G:
    """Tiny ONNX graph builder with a dynamic batch input 'x' and output 'y'."""

    def __init__(self, opset: int):
        self.opset, self.nodes, self.inits, self.k = opset, [], [], 0

    def c(self, v, dtype=None) -> str:
        self.k += 1
        name = f"c{self.k}"
        v = np.asarray(v, dtype=dtype or (np.float32 if np.asarray(v).dtype.kind == "f" else np.int64))
        self.inits.append(numpy_helper.from_array(v, name))
        return name

    def op(self, op_type, inputs, n_out=1, **attrs):
        self.k += 1
        outs = [f"t{self.k}_{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=f"{op_type.lower()}{self.k}", **attrs))
        return outs[0] if n_out == 1 else outs

    def axes_op(self, op_type, x, axes, **attrs):
        """Squeeze/Unsqueeze/Reduce* with axes as an attribute or (newer opsets) an input."""
        since = 18 if op_type.startswith("Reduce") else 13
        if self.opset >= since:
            return self.op(op_type, [x, self.c(axes)], **attrs)
        return self.op(op_type, [x], axes=axes, **attrs)

    def save(self, tmp_path, y, in_shape, name="m.onnx"):
        self.nodes.append(helper.make_node("Identity", [y], ["y"], name="out"))
        g = helper.make_graph(self.nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *in_shape])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", self.opset)])
        m.ir_version = 8
        m = onnx.shape_inference.infer_shapes(m)
        onnx.checker.check_model(m)
        p = tmp_path / name
        onnx.save(m, str(p))
        return p


def _ort(path, x):
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return s.run(None, {"x": x})[0]


def check_float(path, in_shape, n=3):
    g = load_onnx(path)
    x = RNG.standard_normal((n, *in_shape)).astype(np.float32)
    y, r = run_float(g, x), _ort(path, x)
    assert y.shape == r.shape and len({nd.name for nd in g.nodes}) == len(g.nodes)
    rng = max(float(r.max() - r.min()), 1e-6)
    assert np.abs(y - r).max() <= 1e-4 * rng, np.abs(y - r).max() / rng
    return g


def check_emulated(g, in_shape, mult="drum4"):
    """FxP8 exact and an approximate multiplier: the emulator equals the slow reference emulator bit-exactly."""
    qm = calibrate(g, RNG.standard_normal((8, *in_shape)).astype(np.float32))
    x = RNG.standard_normal((3, *in_shape)).astype(np.float32)
    emu = Emulator(qm)
    for m in ("exact", mult):
        cfg = {l.name: LayerConfig(m) for l in qm.layers}
        np.testing.assert_array_equal(emu.run(x, cfg), reference_run(qm, x, cfg))
    return qm


# ------------------------------------------------------------------------------------------------ builders
def _shape_dims(g: G, x, idx):
    """Shape(x) -> Gather(idx) -> Unsqueeze: a 1-element int64 tensor (the dynamic-batch reshape idiom)."""
    return g.axes_op("Unsqueeze", g.op("Gather", [g.op("Shape", [x]), g.c(np.array(idx))], axis=0), [0])


def se_block(g: G, x, C, use_reduce_mean):
    """EfficientNet MBConv squeeze-and-excitation: pool -> 1x1 -> SiLU (Sigmoid*Mul) -> 1x1 -> Sigmoid -> Mul."""
    s = g.axes_op("ReduceMean", x, [2, 3], keepdims=1) if use_reduce_mean else g.op("GlobalAveragePool", [x])
    s = g.op("Conv", [s, g.c(_w(C // 2, C, 1, 1)), g.c(_w(C // 2))])
    s = g.op("Mul", [s, g.op("Sigmoid", [s])])
    s = g.op("Sigmoid", [g.op("Conv", [s, g.c(_w(C, C // 2, 1, 1)), g.c(_w(C))])])
    return g.op("Mul", [x, s])


def hardswish(g: G, x):
    if g.opset >= 14:
        return g.op("HardSwish", [x])
    return g.op("Mul", [x, g.op("HardSigmoid", [x], alpha=1 / 6, beta=0.5)])  # what exporters emit before opset 14


def inverted_residual(g: G, x, C):
    """MobileNetV3: expand 1x1 + HardSwish, depthwise 3x3 + BN, SE with HardSigmoid, project, residual Add."""
    e = hardswish(g, g.op("Conv", [x, g.c(_w(2 * C, C, 1, 1)), g.c(_w(2 * C))]))
    d = g.op("Conv", [e, g.c(_w(2 * C, 1, 3, 3))], group=2 * C, pads=[1, 1, 1, 1])
    d = g.op("BatchNormalization", [d, g.c(_w(2 * C) + 1), g.c(_w(2 * C)), g.c(_w(2 * C)),
                                    g.c(np.abs(_w(2 * C)) + 0.5)])
    s = g.op("Relu", [g.op("Conv", [g.op("GlobalAveragePool", [d]), g.c(_w(C, 2 * C, 1, 1))])])
    s = g.op("HardSigmoid", [g.op("Conv", [s, g.c(_w(2 * C, C, 1, 1))])], alpha=1 / 6, beta=0.5)
    p = g.op("Conv", [g.op("Mul", [d, s]), g.c(_w(C, 2 * C, 1, 1))])
    return g.op("Add", [x, p])


def shuffle_block(g: G, x, C, H, W):
    """ShuffleNetV2: Split channels, branch conv, Concat, channel shuffle Reshape/Transpose/Reshape (batch taken from
    a Shape subgraph), then Slice half the channels back."""
    half = C // 2
    if g.opset >= 13:
        a, b = g.op("Split", [x, g.c([half, half])], n_out=2, axis=1)
    else:
        a, b = g.op("Split", [x], n_out=2, axis=1, split=[half, half])
    b = g.op("Relu", [g.op("Conv", [b, g.c(_w(half, half, 3, 3))], pads=[1, 1, 1, 1])])
    y = g.op("Concat", [a, b], axis=1)
    n = _shape_dims(g, x, 0)
    shp = g.op("Concat", [n, g.c([2, half, H, W])], axis=0)
    y = g.op("Reshape", [y, shp])
    y = g.op("Transpose", [y], perm=[0, 2, 1, 3, 4])
    y = g.op("Reshape", [y, g.c([-1, C, H, W])])
    return g.op("Slice", [y, g.c([0]), g.c([half]), g.c([1])])


def layernorm(g: G, x, D):
    if g.opset >= 17:
        return g.op("LayerNormalization", [x, g.c(_w(D) + 1), g.c(_w(D))], axis=-1, epsilon=1e-5)
    mu = g.axes_op("ReduceMean", x, [-1])
    d = g.op("Sub", [x, mu])
    var = g.axes_op("ReduceMean", g.op("Pow", [d, g.c(np.float32(2))]), [-1])
    y = g.op("Div", [d, g.op("Sqrt", [g.op("Add", [var, g.c(np.float32(1e-5))])])])
    return g.op("Add", [g.op("Mul", [y, g.c(_w(D) + 1)]), g.c(_w(D))])


def gelu(g: G, x):
    if g.opset >= 20:
        return g.op("Gelu", [x])
    e = g.op("Erf", [g.op("Div", [x, g.c(np.float32(np.sqrt(2)))])])
    return g.op("Mul", [g.op("Mul", [x, g.op("Add", [e, g.c(np.float32(1))])]), g.c(np.float32(0.5))])


def linear(g: G, x, K, N):
    return g.op("Add", [g.op("MatMul", [x, g.c(_w(K, N))]), g.c(_w(N))])


def mlp_block(g: G, x, D):
    """ConvNeXt/ViT MLP: LayerNorm -> Linear -> GELU -> Linear, residual."""
    return g.op("Add", [x, linear(g, gelu(g, linear(g, layernorm(g, x, D), D, 2 * D)), 2 * D, D)])


def attention(g: G, x, T, D, H):
    """Multi-head self-attention with the batch from a Shape subgraph: qkv Linear, Split, Reshape [N, T, H, d],
    Transpose, QK^T (MatMul of two activations), scale, Softmax, AV, Transpose back, Reshape [N, T, D], proj."""
    d = D // H
    qkv = linear(g, layernorm(g, x, D), D, 3 * D)
    if g.opset >= 13:
        q, k, v = g.op("Split", [qkv, g.c([D, D, D])], n_out=3, axis=2)
    else:
        q, k, v = g.op("Split", [qkv], n_out=3, axis=2, split=[D, D, D])
    n = _shape_dims(g, x, 0)
    heads = g.op("Concat", [n, g.c([T, H, d])], axis=0)
    q, k, v = (g.op("Transpose", [g.op("Reshape", [t, heads])], perm=[0, 2, 1, 3]) for t in (q, k, v))
    kt = g.op("Transpose", [k], perm=[0, 1, 3, 2])
    s = g.op("Mul", [g.op("MatMul", [q, kt]), g.c(np.float32(d ** -0.5))])
    a = g.op("MatMul", [g.op("Softmax", [s], axis=-1), v])
    a = g.op("Transpose", [a], perm=[0, 2, 1, 3])
    back = g.op("Concat", [n, _shape_dims(g, x, 1), g.c([D])], axis=0)
    return g.op("Add", [x, linear(g, g.op("Reshape", [a, back]), D, D)])


def timm_attention(g: G, x, T, D, H):
    """timm's Attention: qkv Linear, Reshape [N, T, 3, H, d], Transpose perm (2, 0, 3, 1, 4) to [3, N, H, T, d] (the
    batch on axis 1), q/k/v = Gather(axis 0), QK^T, Softmax, AV, Transpose back, Reshape [N, T, D], proj."""
    d = D // H
    qkv = linear(g, layernorm(g, x, D), D, 3 * D)
    n = _shape_dims(g, x, 0)
    qkv = g.op("Reshape", [qkv, g.op("Concat", [n, g.c([T, 3, H, d])], axis=0)])
    qkv = g.op("Transpose", [qkv], perm=[2, 0, 3, 1, 4])
    q, k, v = (g.op("Gather", [qkv, g.c(np.array(i))], axis=0) for i in range(3))
    s = g.op("MatMul", [g.op("Mul", [q, g.c(np.float32(d ** -0.5))]), g.op("Transpose", [k], perm=[0, 1, 3, 2])])
    a = g.op("MatMul", [g.op("Softmax", [s], axis=-1), v])
    a = g.op("Reshape", [g.op("Transpose", [a], perm=[0, 2, 1, 3]), g.op("Concat", [n, g.c([T, D])], axis=0)])
    return g.op("Add", [x, linear(g, a, D, D)])


def mha_attention(g: G, x, T, D, H):
    """torch.nn.MultiheadAttention (batch_first) as torch exports it: Transpose to [T, N, D], in-projection on that
    layout, [3, T, N, D] by Unsqueeze/Transpose/Squeeze, Gather q/k/v, Reshape [T, N * H, d] and Transpose to
    [N * H, T, d] (the batch merged with the heads), QK^T, Softmax, AV, back to [T * N, D] for the out-projection Gemm,
    Reshape [T, N, D], Transpose to [N, T, D]."""
    d = D // H
    t = g.op("Transpose", [layernorm(g, x, D)], perm=[1, 0, 2])
    qkv = linear(g, t, D, 3 * D)                                                  # [T, N, 3D]
    n = _shape_dims(g, t, 1)
    qkv = g.op("Reshape", [qkv, g.op("Concat", [g.c([T]), n, g.c([3, D])], axis=0)])
    qkv = g.op("Transpose", [g.axes_op("Unsqueeze", qkv, [0])], perm=[3, 1, 2, 0, 4])
    qkv = g.axes_op("Squeeze", qkv, [-2])                                         # [3, T, N, D]
    nh = g.op("Mul", [n, g.c([H])])
    heads = g.op("Concat", [g.c([T]), nh, g.c([d])], axis=0)
    q, k, v = (g.op("Transpose", [g.op("Reshape", [g.op("Gather", [qkv, g.c(np.array(i))], axis=0), heads])],
                    perm=[1, 0, 2]) for i in range(3))                            # [N * H, T, d]
    s = g.op("MatMul", [g.op("Mul", [q, g.c(np.float32(d ** -0.5))]), g.op("Transpose", [k], perm=[0, 2, 1])])
    a = g.op("MatMul", [g.op("Softmax", [s], axis=-1), v])
    a = g.op("Transpose", [a], perm=[1, 0, 2])                                    # [T, N * H, d]
    tn = g.op("Mul", [n, g.c([T])])
    a = g.op("Reshape", [a, g.op("Concat", [tn, g.c([D])], axis=0)])              # [T * N, D]
    o = g.op("Gemm", [a, g.c(_w(D, D)), g.c(_w(D))], transB=1)
    o = g.op("Reshape", [o, g.op("Concat", [g.c([T]), n, g.c([D])], axis=0)])
    return g.op("Add", [x, g.op("Transpose", [o], perm=[1, 0, 2])])


def head(g: G, x, C, classes=5):
    f = g.op("Flatten", [g.op("GlobalAveragePool", [x])])
    return g.op("Gemm", [f, g.c(_w(classes, C)), g.c(_w(classes))], transB=1)


def token_head(g: G, x, D, classes=5):
    """cls token via Gather(axis=1) + mean of tokens via ReduceMean, concatenated, classifier."""
    cls = g.op("Gather", [x, g.c(np.array(0))], axis=1)
    mean = g.axes_op("ReduceMean", x, [1], keepdims=0)
    return g.op("Gemm", [g.op("Concat", [cls, mean], axis=1), g.c(_w(classes, 2 * D)), g.c(_w(classes))], transB=1)


OPSETS = [13, 17, 21]


# ------------------------------------------------------------------------------------------------ patterns
@pytest.mark.parametrize("opset", OPSETS)
def test_efficientnet_se_block(tmp_path, opset):
    g = G(opset)
    x = g.op("Conv", ["x", g.c(_w(8, 3, 3, 3))], strides=[2, 2], pads=[1, 1, 1, 1])
    x = g.op("Mul", [x, g.op("Sigmoid", [x])])
    x = se_block(g, x, 8, use_reduce_mean=opset != 17)
    p = g.save(tmp_path, head(g, x, 8), [3, 10, 10])
    graph = check_float(p, [3, 10, 10])
    assert {"sigmoid", "mul"} <= {n.op for n in graph.nodes}
    check_emulated(graph, [3, 10, 10])


@pytest.mark.parametrize("opset", OPSETS)
def test_mobilenetv3_inverted_residual(tmp_path, opset):
    g = G(opset)
    x = hardswish(g, g.op("Conv", ["x", g.c(_w(4, 3, 3, 3))], pads=[1, 1, 1, 1]))
    x = inverted_residual(g, x, 4)
    x = g.op("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
    y = g.op("GlobalMaxPool", [x])
    p = g.save(tmp_path, g.op("Gemm", [g.op("Flatten", [y]), g.c(_w(5, 4)), g.c(_w(5))], transB=1), [3, 8, 8])
    graph = check_float(p, [3, 8, 8])
    assert {"hardsigmoid", "gmp"} <= {n.op for n in graph.nodes}
    assert ("hardswish" in {n.op for n in graph.nodes}) == (opset >= 14)
    check_emulated(graph, [3, 8, 8], "mitch_w6")


@pytest.mark.parametrize("opset", OPSETS)
def test_shufflenet_channel_shuffle(tmp_path, opset):
    g = G(opset)
    x = g.op("Relu", [g.op("Conv", ["x", g.c(_w(8, 3, 3, 3))], pads=[1, 1, 1, 1])])
    x = shuffle_block(g, x, 8, 6, 6)
    p = g.save(tmp_path, head(g, x, 4), [3, 6, 6])
    graph = check_float(p, [3, 6, 6])
    assert "transpose" in {n.op for n in graph.nodes} and not any(n.onnx_op == "Shape" for n in graph.nodes)
    check_emulated(graph, [3, 6, 6])


@pytest.mark.parametrize("opset", OPSETS)
def test_vit_block_mlp_and_attention(tmp_path, opset):
    T, D, H = 5, 8, 2
    g = G(opset)
    x = attention(g, "x", T, D, H)
    x = mlp_block(g, x, D)
    p = g.save(tmp_path, token_head(g, x, D), [T, D])
    graph = check_float(p, [T, D])
    ops = {n.op for n in graph.nodes}
    assert {"softmax", "matmul", "transpose"} <= ops and ("layernorm" in ops) == (opset >= 17)
    assert ("gelu" in ops) == (opset >= 20) and ("erf" in ops) == (opset < 20)
    qm = check_emulated(graph, [T, D], "perf_j1_k2")
    assert len(qm.layers) == 7  # qkv, proj, fc1, fc2 (1x1 convs over the tokens), QK^T, AV + classifier
    mm = [l for l in qm.layers if l.op == "matmul"]
    assert [(l.M, l.K, l.N, l.groups, l.a_signed) for l in mm] == [(T, D // H, T * H, H, True), (T, T, D, H, False)]


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("style", ["timm", "mha"])
def test_attention_with_the_batch_off_axis_0(tmp_path, opset, style):
    """timm's permute (batch on axis 1) and nn.MultiheadAttention's layouts ([T, N, D], [N * heads, T, d], [T * N, D])
    import, match onnxruntime, and emulate bit-exactly with quantized attention matmuls."""
    T, D, H = 5, 8, 2
    g = G(opset)
    x = (timm_attention if style == "timm" else mha_attention)(g, "x", T, D, H)
    p = g.save(tmp_path, token_head(g, mlp_block(g, x, D), D), [T, D])
    graph = check_float(p, [T, D])
    qm = check_emulated(graph, [T, D], "mitch_w6")
    mm = [l for l in qm.layers if l.op == "matmul"]
    assert [(l.M, l.K, l.N, l.groups) for l in mm] == [(T, D // H, T * H, H), (T, T, D, H)]
    assert [l.a_signed for l in mm] == [True, False]
    if style == "mha":
        rows = [l for l in qm.layers if l.op == "gemm" and l.M == T]
        assert [(l.K, l.N) for l in rows] == [(D, 3 * D), (D, D)]              # in-proj on [T, N, D], out-proj


@settings(max_examples=8, deadline=None)
@given(T=st.integers(1, 5), H=st.sampled_from([1, 2, 3]), d=st.integers(1, 3), n=st.integers(1, 4),
       style=st.sampled_from(["timm", "mha"]))
def test_moved_batch_attention_random_shapes(tmp_path_factory, T, H, d, n, style):
    D = H * d
    g = G(17)
    x = (timm_attention if style == "timm" else mha_attention)(g, "x", T, D, H)
    check_float(g.save(tmp_path_factory.mktemp("att"), token_head(g, x, D), [T, D]), [T, D], n=n)


def test_convnext_style_block(tmp_path):
    """Depthwise 7x7, permute to channels-last, LayerNorm, MLP on channels-last, permute back, Pad, Resize."""
    g = G(17)
    x = g.op("Conv", ["x", g.c(_w(8, 3, 2, 2))], strides=[2, 2])
    d = g.op("Conv", [x, g.c(_w(8, 1, 7, 7))], group=8, pads=[3, 3, 3, 3])
    t = g.op("Transpose", [d], perm=[0, 2, 3, 1])
    t = g.op("Transpose", [mlp_block(g, t, 8)], perm=[0, 3, 1, 2])
    y = g.op("Add", [x, t])
    y = g.op("Pad", [y, g.c([0, 0, 1, 0, 0, 0, 0, 1])], mode="constant")
    y = g.op("Resize", [y, "", g.c(np.array([1, 1, 2, 2], np.float32))], mode="nearest")
    p = g.save(tmp_path, head(g, y, 8), [3, 8, 8])
    graph = check_float(p, [3, 8, 8])
    check_emulated(graph, [3, 8, 8])


@pytest.mark.parametrize("opset", [13, 21])
@pytest.mark.parametrize("mode,ctm", [("asymmetric", "floor"), ("half_pixel", "round_prefer_floor"),
                                      ("align_corners", "round_prefer_ceil"), ("pytorch_half_pixel", "ceil")])
def test_resize_nearest_modes(tmp_path, opset, mode, ctm):
    g = G(opset)
    sizes = g.op("Concat", [g.op("Slice", [g.op("Shape", ["x"]), g.c([0]), g.c([2])]), g.c([7, 5])], axis=0)
    y = g.op("Resize", ["x", "", "", sizes], mode="nearest", coordinate_transformation_mode=mode, nearest_mode=ctm)
    check_float(g.save(tmp_path, g.op("Flatten", [y]), [2, 4, 3]), [2, 4, 3])


def test_misc_ops_vs_onnxruntime(tmp_path):
    """Tanh, Sub/Div with a constant on the left, Pow, Sqrt/Abs, Expand of a cls token to the batch, ConstantOfShape,
    Where/Equal shape arithmetic (the exporter's expand(-1) idiom), Unsqueeze/Squeeze, BN on tokens."""
    g = G(17)
    x = g.op("Tanh", ["x"])                                            # [N, 4, 6]
    x = g.op("Div", [g.c(np.float32(1.0)), g.op("Add", [g.op("Abs", [x]), g.c(np.float32(1.5))])])
    x = g.op("Sub", [g.c(_w(6)), g.op("Pow", [x, g.c(np.float32(3))])])
    x = g.op("Sqrt", [g.op("Mul", [x, x])])
    shp = g.op("Concat", [_shape_dims(g, "x", 0), g.c([-1, -1])], axis=0)           # [N, -1, -1]
    fixed = g.op("Where", [g.op("Equal", [shp, g.c([-1, -1, -1])]), g.op("ConstantOfShape", [g.c([3])],
                          value=helper.make_tensor("v", I64, [1], [1])), shp])      # [N, 1, 1]
    cls = g.op("Expand", [g.c(_w(1, 1, 6)), fixed])
    x = g.op("Concat", [cls, x], axis=1)                              # [N, 5, 6]
    z = g.op("ConstantOfShape", [g.op("Shape", [x])], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.5]))
    x = g.op("Add", [x, z])
    x = g.axes_op("Unsqueeze", x, [1])
    x = g.axes_op("Squeeze", x, [1])
    x = g.op("BatchNormalization", [x, g.c(_w(5) + 1), g.c(_w(5)), g.c(_w(5)), g.c(np.abs(_w(5)) + 0.5)])
    p = g.save(tmp_path, g.op("Flatten", [x]), [4, 6])
    graph = check_float(p, [4, 6])
    assert "expand" in {n.op for n in graph.nodes} and "affine" in {n.op for n in graph.nodes}


@settings(max_examples=12, deadline=None)
@given(T=st.integers(1, 6), H=st.sampled_from([1, 2, 4]), d=st.integers(1, 4), opset=st.sampled_from(OPSETS),
       n=st.integers(1, 4))
def test_attention_random_shapes(tmp_path_factory, T, H, d, opset, n):
    D = H * d
    g = G(opset)
    p = g.save(tmp_path_factory.mktemp("att"), token_head(g, attention(g, "x", T, D, H), D), [T, D])
    check_float(p, [T, D], n=n)


# ------------------------------------------------------------------------------------------------ errors
def _err(path, match):
    with pytest.raises(DseError, match=match) as e:
        load_onnx(path)
    assert "\n" not in str(e.value)


def test_unfoldable_batch_expression_is_one_line_error(tmp_path):
    g = G(17)
    n = _shape_dims(g, "x", 0)
    grown = g.op("Add", [n, g.c([1])])                               # N + 1: not a multiple of the batch size
    y = g.op("Reshape", ["x", g.op("Concat", [grown, g.c([-1])], axis=0)])
    _err(g.save(tmp_path, y, [4, 3]), r"node 'reshape\d+' has a shape whose entry 0 depends on the batch size in a "
                                      r"way that cannot be folded \(values \[3, 4\]")


def test_batch_merged_output_refused(tmp_path):
    g = G(17)
    merged = g.op("Mul", [_shape_dims(g, "x", 0), g.c([4])])        # [N * 4, 3]: fine inside, not as logits
    y = g.op("Reshape", ["x", g.op("Concat", [merged, g.c([3])], axis=0)])
    _err(g.save(tmp_path, y, [4, 3]), r"output '\w+' has its batch on axis 0, merged with another axis \(4 x batch\)")


def test_batch_moved_output_refused(tmp_path):
    g = G(17)
    y = g.op("Transpose", ["x"], perm=[1, 0, 2])
    _err(g.save(tmp_path, y, [4, 3]), r"output '\w+' has its batch on axis 1 \(shape \[4, 1, 3\] at batch size 1\)")


@pytest.mark.parametrize("case", ["softmax", "reduce", "concat", "gather"])
def test_ops_mixing_a_moved_batch_axis_refused(tmp_path, case):
    """After a Transpose moves the batch to axis 1, an op along that axis would mix images: refused, node named."""
    g = G(17)
    t = g.op("Transpose", ["x"], perm=[1, 0, 2])                      # [4, N, 3]
    if case == "softmax":
        y = g.op("Softmax", [t], axis=1)
    elif case == "reduce":
        y = g.axes_op("ReduceMean", t, [1])
    elif case == "concat":
        y = g.op("Concat", [t, t], axis=1)
    else:
        y = g.op("Gather", [t, g.c(np.array(0))], axis=1)
    _err(g.save(tmp_path, g.op("Transpose", [y], perm=[1, 0, 2]) if case != "gather" else y, [4, 3]),
         r"node '\w+' \(\w+\) works on the batch axis 1")


def test_image_mixing_graph_refused(tmp_path):
    """A reshape that interleaves images ([N, 4, 3] -> [4, N, 3] without a transpose) is caught by the final check
    that each image is computed alone."""
    g = G(17)
    n = _shape_dims(g, "x", 0)
    y = g.op("Reshape", ["x", g.op("Concat", [g.c([4]), n, g.c([3])], axis=0)])     # [4, N, 3]: mixes images
    y = g.op("Transpose", [y], perm=[1, 0, 2])
    _err(g.save(tmp_path, g.op("Flatten", [y]), [4, 3]), r"depends on the other images of the batch")


def test_resize_linear_refused(tmp_path):
    g = G(17)
    y = g.op("Resize", ["x", "", g.c(np.array([1, 1, 2, 2], np.float32))], mode="linear")
    _err(g.save(tmp_path, g.op("Flatten", [y]), [2, 3, 3]), r"\(Resize\) has mode 'linear'; only mode 'nearest'")


def test_runtime_value_where_constant_needed(tmp_path):
    g = G(17)
    y = g.op("Cast", [g.op("Cast", [g.op("Abs", ["x"])], to=I64)], to=TensorProto.FLOAT)
    _err(g.save(tmp_path, y, [2]), r"node 'cast\d+' casts an activation to int64; only float casts")


def test_resize_of_batch_refused(tmp_path):
    g = G(17)
    y = g.op("Resize", ["x", "", "", g.c([1, 2, 6, 6])], mode="nearest")
    _err(g.save(tmp_path, g.op("Flatten", [y]), [2, 3, 3]), r"\(Resize\) resizes the batch or channel axis")


# ------------------------------------------------------------------------------------------------ real exports
@pytest.mark.slow
@pytest.mark.parametrize("opset", [13, 17, 21])
def test_exported_architectures_import_and_match(tmp_path, opset):
    """scripts/export_models.py (needs torch): every architecture imports, matches onnxruntime, and runs FxP8."""
    pytest.importorskip("torch")
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("export_models",
                                                  Path(__file__).resolve().parent.parent / "scripts/export_models.py")
    em = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(em)
    for name in em.MODELS:
        path = em.export(name, tmp_path, opset, 32)
        res = em.check(path, 32, n=3)
        assert res["rel_diff"] <= 1e-4, (name, res)
        g = load_onnx(path)
        qm = calibrate(g, RNG.standard_normal((4, 3, 32, 32)).astype(np.float32))
        x = RNG.standard_normal((2, 3, 32, 32)).astype(np.float32)
        assert Emulator(qm).run(x).shape == (2, 10) and len(qm.layers) == res["mac_layers"]


@settings(deadline=None, max_examples=20)
@given(B=st.integers(1, 5), groups=st.sampled_from([1, 2]), k=st.integers(1, 3), stride=st.integers(1, 2),
       pad=st.integers(0, 1), seed=st.integers(0, 2 ** 32 - 1))
def test_float_conv_chunks_bound_im2col_memory(B, groups, k, stride, pad, seed):
    """conv2d splits the batch so each im2col matrix stays within COLS_BYTES; the result has the same bits."""
    from dse.model import nn
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, 4, 7, 6)).astype(np.float32)
    W = rng.standard_normal((6, 4 // groups, k, k)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    args = (W, b, (stride, stride), (pad,) * 4, (1, 1), groups)
    whole = nn.conv2d(x, *args)
    saved = nn.COLS_BYTES
    nn.COLS_BYTES = 4 * 4 * k * k * 7 * 6  # about one image per chunk
    try:
        assert np.array_equal(nn.conv2d(x, *args), whole)
    finally:
        nn.COLS_BYTES = saved
