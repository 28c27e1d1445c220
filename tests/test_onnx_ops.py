"""Op patterns of EfficientNet/MobileNetV3/ShuffleNetV2/ConvNeXt/ViT exports: float path vs onnxruntime at opsets
13, 17 and 21 with a dynamic batch; FxP8 exact and an approximate multiplier vs the slow reference emulator;
batch-dependent shape subgraphs folded at import; one-line errors for what cannot be imported."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from dse.emulate import Emulator, LayerConfig
from dse.errors import DseError
from dse.model.float_exec import run_float
from dse.model.onnx_import import load_onnx
from dse.quant import calibrate
from tests.onnx_graphs import (I64, RNG, G, attention, hardswish, head, inverted_residual, mbv2_block, mha_attention,
                               mlp_block,
                               rand_w, se_block, shape_dims, shuffle_block, timm_attention, token_head)
from tests.reference import reference_run

ort = pytest.importorskip("onnxruntime")


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
    """FxP8 exact and an approximate multiplier: the emulator equals the slow reference emulator bit-exactly, and so
    does the integer input of every conv/gemm layer (the emulator's producers may emit it from their scaling pass,
    the reference quantizes every float32 input on its own)."""
    qm = calibrate(g, RNG.standard_normal((8, *in_shape)).astype(np.float32))
    x = RNG.standard_normal((3, *in_shape)).astype(np.float32)
    emu = Emulator(qm)
    for m in ("exact", mult):
        cfg = {l.name: LayerConfig(m) for l in qm.layers}
        np.testing.assert_array_equal(emu.run(x, cfg), reference_run(qm, x, cfg))
        ref_q: dict = {}
        reference_run(qm, x, cfg, record=ref_q)
        got_q = kernel_inputs(emu, x, cfg)
        assert sorted(got_q) == sorted(ref_q)
        for name, q in ref_q.items():
            assert got_q[name].dtype == q.dtype and np.array_equal(got_q[name], q), name
    return qm


def kernel_inputs(emu, x, cfg) -> dict:
    """{conv/gemm layer: the integer input its kernel got} in a one-thread run of ``emu`` (the kernels wrapped)."""
    from dse import kernels

    by_w = {id(l.w_q): l.name for l in emu.qmodel.layers if l.op != "matmul"}
    seen: dict = {}

    def wrapped(fn):
        def call(q, w, *args, **kw):
            if id(w) in by_w:
                seen[by_w[id(w)]] = np.array(q)
            return fn(q, w, *args, **kw)
        return call

    with pytest.MonkeyPatch.context() as mp:
        for name in ("conv2d_scaled", "conv2d_int", "gemm_int"):
            mp.setattr(kernels, name, wrapped(getattr(kernels, name)))
        with kernels.using_threads(1):
            emu.run(x, cfg)
    return seen


OPSETS = [13, 17, 21]


# ------------------------------------------------------------------------------------------------ patterns
@pytest.mark.parametrize("opset", OPSETS)
def test_efficientnet_se_block(tmp_path, opset):
    g = G(opset)
    x = g.op("Conv", ["x", g.c(rand_w(8, 3, 3, 3))], strides=[2, 2], pads=[1, 1, 1, 1])
    x = g.op("Mul", [x, g.op("Sigmoid", [x])])
    x = se_block(g, x, 8, use_reduce_mean=opset != 17)
    p = g.save(tmp_path, head(g, x, 8), [3, 10, 10])
    graph = check_float(p, [3, 10, 10])
    assert {"sigmoid", "mul"} <= {n.op for n in graph.nodes}
    qm = check_emulated(graph, [3, 10, 10])
    assert len(Emulator(qm)._plan["silus"]) == 2  # both SiLUs in one compiled pass each
    check_donors(qm, [3, 10, 10], 2)  # the same two products (in place where the pair does not run as one)


@pytest.mark.parametrize("threads", [1, 2])
def test_efficientnet_mbconv_silu_quantized(tmp_path, threads):
    """MBConv blocks (stem + SiLU, expand 1x1 + SiLU, depthwise 3x3 / 5x5 + SiLU, SE, project): the SiLU pairs read
    only by conv layers (the stem's, the expands', the SE's inner one) emit those layers' quantized input from their
    compiled pass, not the float32 tensor, and so do the SE's per-channel scale products (read by the project
    conv); the depthwise SiLUs (read by the SE's pool and Mul) do not. Runs equal the
    slow reference (logits and every layer's integer input) with integer and float multipliers on the consumers
    (these take the float32 tensor), through a prefix cache, and with the fusion switched off."""
    from dse.kernels import using_threads

    def silu(v):
        return g.op("Mul", [v, g.op("Sigmoid", [v])])

    g = G(13)
    x = silu(g.op("Conv", ["x", g.c(rand_w(4, 3, 3, 3))], strides=[2, 2], pads=[1, 1, 1, 1]))
    cin = 4
    for C, k, s in ((4, 3, 1), (6, 5, 2)):
        e = silu(g.op("Conv", [x, g.c(rand_w(2 * C, cin, 1, 1)), g.c(rand_w(2 * C))]))
        d = silu(g.op("Conv", [e, g.c(rand_w(2 * C, 1, k, k)), g.c(rand_w(2 * C))], group=2 * C,
                      pads=[k // 2] * 4, strides=[s, s]))
        se = se_block(g, d, 2 * C, use_reduce_mean=True, gate_first=C == 6)
        x, cin = g.op("Conv", [se, g.c(rand_w(6, 2 * C, 1, 1, s=0.5))]), 6
    p = g.save(tmp_path, head(g, x, 6), [3, 13, 13])
    graph = check_float(p, [3, 13, 13])
    with using_threads(threads):
        qm = check_emulated(graph, [3, 13, 13])
        emu = Emulator(qm)
        sig = sorted(i for i in emu._plan["quants"] if graph.nodes[i].op == "sigmoid")
        # stem, expand and the SE's inner SiLU of each block; not the depthwise ones nor the SE's gate
        assert len(sig) == 5 and all(i in emu._plan["silus"] for i in sig)
        assert len([i for i in emu._plan["quants"] if graph.nodes[i].op == "mul"]) == 2  # the SE's scale products
        check_donors(qm, [3, 13, 13], 2)
        # every conv before a SiLU pair: the stem, each block's expand, depthwise and SE inner conv
        assert len(emu._plan["conv_silus"]) == 7
        silus = []
        calls = check_fused_glue(qm, emu, "mitch_w6", silus)
        assert sorted(set(calls)) == [8, 12]  # both SE products (gate second, then first) take the fused pass
        # the exact run scales those 7 with their SiLU (x * sigmoid(x)), the other 4 convs without (per image slice)
        assert set(silus) == {0, 1} and 4 * silus.count(1) == 7 * silus.count(0)


def check_fused_glue(qm, emu, table: str, silus: list | None = None) -> list:
    """On 4 random 3 x 13 x 13 images: ``emu``'s all-exact run (returns the channel counts of its mul_quantized
    calls; appends the SiLU of each conv2d_scaled call's scaling to ``silus``), then its logits on a mixed exact /
    bf16 and an all-``table`` configuration equal the reference emulator's, also with the float glue's quantized
    outputs off (only the MAC layers' fusions kept) and with the convs' SiLU output steps off."""
    from dse import kernels

    graph, x = emu.graph, RNG.standard_normal((4, 3, 13, 13)).astype(np.float32)
    names = [l.name for l in qm.layers]
    calls, silus = [], [] if silus is None else silus
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(kernels, "mul_quantized", lambda *a, f=kernels.mul_quantized: calls.append(a[0].shape[1]) or f(*a))
        mp.setattr(kernels, "conv2d_scaled", lambda *a, f=kernels.conv2d_scaled, **k: silus.append(a[4].silu) or
                   f(*a, **k))
        emu.run(x, {nm: LayerConfig("exact") for nm in names})
    for cfg in ({nm: LayerConfig("bf16" if i % 2 else "exact") for i, nm in enumerate(names)},
                {nm: LayerConfig(table) for nm in names}):
        want = reference_run(qm, x, cfg)
        np.testing.assert_array_equal(emu.run(x, cfg), want)
        off = Emulator(qm)
        off._plan["quants"] = {i: f for i, f in off._plan["quants"].items() if graph.nodes[i].is_mac}
        np.testing.assert_array_equal(off.run(x, cfg), want)
        off = Emulator(qm)
        off._plan["conv_silus"] = {}
        np.testing.assert_array_equal(off.run(x, cfg), want)
    return calls


def check_donors(qm, in_shape, n_donors):
    """The emulator writes at least ``n_donors`` float results into a dying operand (Emulator._donor_operands); runs through
    a prefix cache (later configurations continue from stored cuts) equal the slow reference, and so do runs with
    the SiLU pairs and then the donors switched off."""
    from dse.prefix_cache import PrefixCache

    emu = Emulator(qm)
    assert len(emu._plan["donors"]) >= n_donors
    x = RNG.standard_normal((4, *in_shape)).astype(np.float32)
    cache = PrefixCache(1 << 26)
    names = [l.name for l in qm.layers]
    for k in range(len(names) + 1):  # the first k layers exact, the rest mitch_w6: each run shares a prefix
        cfg = {nm: LayerConfig("exact" if i < k else "mitch_w6") for i, nm in enumerate(names)}
        want = reference_run(qm, x, cfg)
        np.testing.assert_array_equal(emu.run(x, cfg, cache=cache, tag="x"), want)
        np.testing.assert_array_equal(emu.run(x, cfg, cache=cache, tag="x"), want)
    emu._plan["silus"] = emu._plan["gelus"] = {}
    np.testing.assert_array_equal(emu.run(x, cfg), want)  # the products in place
    emu._plan["donors"] = {}
    np.testing.assert_array_equal(emu.run(x, cfg), want)  # every op on its own


@pytest.mark.parametrize("opset", OPSETS)
def test_mobilenetv3_inverted_residual(tmp_path, opset):
    g = G(opset)
    x = hardswish(g, g.op("Conv", ["x", g.c(rand_w(4, 3, 3, 3))], pads=[1, 1, 1, 1]))
    x = inverted_residual(g, x, 4)
    x = g.op("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
    y = g.op("GlobalMaxPool", [x])
    p = g.save(tmp_path, g.op("Gemm", [g.op("Flatten", [y]), g.c(rand_w(5, 4)), g.c(rand_w(5))], transB=1), [3, 8, 8])
    graph = check_float(p, [3, 8, 8])
    assert {"hardsigmoid", "gmp"} <= {n.op for n in graph.nodes}
    assert ("hardswish" in {n.op for n in graph.nodes}) == (opset >= 14)
    check_emulated(graph, [3, 8, 8], "mitch_w6")


@pytest.mark.parametrize("opset,threads", [(14, 1), (21, 2)])
def test_mobilenetv3_hardswish_quantized(tmp_path, opset, threads):
    """MobileNetV3 blocks: the HardSwish nodes read only by conv layers (the stem's, the expand's) emit those layers'
    quantized input from their compiled pass, and the SE's per-channel HardSigmoid product (read by the project conv)
    from dse.kernels.mul_quantized; the depthwise HardSwish (read by the SE's pool and Mul) does not. Runs equal the
    slow reference (logits and every layer's integer input), also with float multipliers and with the fusions off."""
    from dse.kernels import using_threads

    g = G(opset)
    x = g.op("HardSwish", [g.op("Conv", ["x", g.c(rand_w(4, 3, 3, 3))], strides=[2, 2], pads=[1, 1, 1, 1])])
    e = g.op("HardSwish", [g.op("Conv", [x, g.c(rand_w(8, 4, 1, 1)), g.c(rand_w(8))])])
    d = g.op("HardSwish", [g.op("Conv", [e, g.c(rand_w(8, 1, 5, 5))], group=8, pads=[2, 2, 2, 2], strides=[2, 2])])
    s = g.op("Relu", [g.op("Conv", [g.op("GlobalAveragePool", [d]), g.c(rand_w(4, 8, 1, 1))])])
    s = g.op("HardSigmoid", [g.op("Conv", [s, g.c(rand_w(8, 4, 1, 1))])], alpha=1 / 6, beta=0.5)
    p = g.op("Conv", [g.op("Mul", [d, s]), g.c(rand_w(6, 8, 1, 1))])
    p = g.save(tmp_path, head(g, p, 6), [3, 13, 13])
    graph = check_float(p, [3, 13, 13])
    with using_threads(threads):
        qm = check_emulated(graph, [3, 13, 13], "mitch_w6")
        emu = Emulator(qm)
        fused = sorted(graph.nodes[i].op for i in emu._plan["quants"] if not graph.nodes[i].is_mac)
        assert fused == ["hardswish", "hardswish", "mul"]
        assert check_fused_glue(qm, emu, "drum6")


@pytest.mark.parametrize("mult", ["mitch_w6", "perf_j1_k2", "axbxp_k2_w2_a2_dynamic"])
def test_mobilenetv2_blocks_fused_quantization(tmp_path, mult):
    """Inverted residuals (stride 2 without, stride 1 with a residual): the stem, expand and depthwise layers emit
    their consumer's quantized input from their scaling pass; the logits and every layer's integer input equal the
    reference's, which quantizes each float32 tensor on its own."""
    g = G(13)
    x = g.op("Clip", [g.op("Conv", ["x", g.c(rand_w(4, 3, 3, 3))], pads=[1, 1, 1, 1]), g.c(np.float32(0)),
                      g.c(np.float32(6))])
    x = mbv2_block(g, x, 4, 6, 2)
    x = mbv2_block(g, x, 6, 6, 1)
    p = g.save(tmp_path, head(g, x, 6), [3, 9, 9])
    graph = check_float(p, [3, 9, 9])
    qm = check_emulated(graph, [3, 9, 9], mult)
    macs = [i for i, n in enumerate(graph.nodes) if n.is_mac]
    # stem, expand 1, depthwise 1, expand 2, depthwise 2; not the projections (the first one's output is also the
    # residual Add's input, the second's feeds only the Add) nor the classifier
    assert sorted(Emulator(qm)._plan["quants"]) == [macs[i] for i in (0, 1, 2, 4, 5)] and len(macs) == 8


@pytest.mark.parametrize("opset", OPSETS)
def test_shufflenet_channel_shuffle(tmp_path, opset):
    g = G(opset)
    x = g.op("Relu", [g.op("Conv", ["x", g.c(rand_w(8, 3, 3, 3))], pads=[1, 1, 1, 1])])
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
    assert len(Emulator(qm)._plan["gelus"]) == (opset < 20)  # the exported GELU chain in one compiled pass
    assert len(Emulator(qm)._plan["softmax_scales"]) == 1  # the scores' 1/sqrt(d) Mul in the Softmax's pass
    check_donors(qm, [T, D], 2 if opset < 20 else 0)  # GELU's x * (1 + erf) and its 0.5 x product, LayerNorm's
    assert len(qm.layers) == 7  # qkv, proj, fc1, fc2 (1x1 convs over the tokens), QK^T, AV + classifier
    mm = [l for l in qm.layers if l.op == "matmul"]
    assert [(l.M, l.K, l.N, l.groups, l.a_signed) for l in mm] == [(T, D // H, T * H, H, True), (T, T, D, H, False)]


@pytest.mark.parametrize("case", ["fused", "constant first", "second reader", "nan constant", "tensor"])
def test_softmax_of_a_scaled_product(tmp_path, case):
    """A Mul by a float32 scalar before a Softmax runs in the Softmax's pass (either operand order); not where the
    product has another reader, the constant is NaN or the other operand is a tensor; the emulator's logits are the
    reference's bits either way."""
    T, D = 6, 8
    g = G(17)
    h = g.op("MatMul", ["x", g.c(rand_w(D, T))])
    c = g.c(np.float32("nan") if case == "nan constant" else rand_w(T) if case == "tensor" else np.float32(0.35))
    m = g.op("Mul", [c, h] if case == "constant first" else [h, c])
    y = g.op("Softmax", [m], axis=-1)
    if case == "second reader":
        y = g.op("Add", [y, m])
    p = g.save(tmp_path, g.op("MatMul", [y, g.c(rand_w(T, 3))]), [T, D])
    graph = load_onnx(p)
    qm = check_emulated(graph, [T, D], "mitch_w6")
    assert len(Emulator(qm)._plan["softmax_scales"]) == (case in ("fused", "constant first"))


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
    x = g.op("Conv", ["x", g.c(rand_w(8, 3, 2, 2))], strides=[2, 2])
    d = g.op("Conv", [x, g.c(rand_w(8, 1, 7, 7))], group=8, pads=[3, 3, 3, 3])
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
    x = g.op("Sub", [g.c(rand_w(6)), g.op("Pow", [x, g.c(np.float32(3))])])
    x = g.op("Sqrt", [g.op("Mul", [x, x])])
    shp = g.op("Concat", [shape_dims(g, "x", 0), g.c([-1, -1])], axis=0)           # [N, -1, -1]
    fixed = g.op("Where", [g.op("Equal", [shp, g.c([-1, -1, -1])]), g.op("ConstantOfShape", [g.c([3])],
                          value=helper.make_tensor("v", I64, [1], [1])), shp])      # [N, 1, 1]
    cls = g.op("Expand", [g.c(rand_w(1, 1, 6)), fixed])
    x = g.op("Concat", [cls, x], axis=1)                              # [N, 5, 6]
    z = g.op("ConstantOfShape", [g.op("Shape", [x])], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.5]))
    x = g.op("Add", [x, z])
    x = g.axes_op("Unsqueeze", x, [1])
    x = g.axes_op("Squeeze", x, [1])
    x = g.op("BatchNormalization", [x, g.c(rand_w(5) + 1), g.c(rand_w(5)), g.c(rand_w(5)), g.c(np.abs(rand_w(5)) + 0.5)])
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
    n = shape_dims(g, "x", 0)
    grown = g.op("Add", [n, g.c([1])])                               # N + 1: not a multiple of the batch size
    y = g.op("Reshape", ["x", g.op("Concat", [grown, g.c([-1])], axis=0)])
    _err(g.save(tmp_path, y, [4, 3]), r"node 'reshape\d+' has a shape whose entry 0 depends on the batch size in a "
                                      r"way that cannot be folded \(values \[3, 4\]")


def test_batch_merged_output_refused(tmp_path):
    g = G(17)
    merged = g.op("Mul", [shape_dims(g, "x", 0), g.c([4])])        # [N * 4, 3]: fine inside, not as logits
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
    n = shape_dims(g, "x", 0)
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
    names = em.models_for(opset)
    assert "resnet18" in names and "vit_small" in names and ("vit_mha" in names) == (opset >= 14)
    for name in names:
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
    """reference_conv2d splits the batch so each im2col matrix stays within COLS_BYTES; the result has the same bits."""
    from dse.model import nn
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, 4, 7, 6)).astype(np.float32)
    W = rng.standard_normal((6, 4 // groups, k, k)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    args = (W, b, (stride, stride), (pad,) * 4, (1, 1), groups)
    whole = nn.reference_conv2d(x, *args)
    saved = nn.COLS_BYTES
    nn.COLS_BYTES = 4 * 4 * k * k * 7 * 6  # about one image per chunk
    try:
        assert np.array_equal(nn.reference_conv2d(x, *args), whole)
    finally:
        nn.COLS_BYTES = saved


@settings(deadline=None, max_examples=40)
@given(B=st.integers(1, 2), C=st.integers(1, 3), H=st.integers(1, 12), W=st.integers(1, 12),
       k=st.tuples(st.integers(1, 4), st.integers(1, 4)), stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       dil=st.tuples(st.integers(1, 2), st.integers(1, 2)), pads=st.tuples(*[st.integers(0, 2)] * 4),
       ceil=st.booleans(), seed=st.integers(0, 2 ** 32 - 1))
def test_maxpool_running_maximum_equals_window_max(B, C, H, W, k, stride, dil, pads, ceil, seed):
    """Max pooling as a running maximum over the window's strided views equals the maximum over the materialised
    windows (nn.windows), bit for bit, with padding, strides, dilations and ceil mode."""
    from dse.model import nn

    pads = tuple(min(p, kk - 1) for p, kk in zip(pads, k + k))  # ONNX: pads smaller than the kernel
    x = np.random.default_rng(seed).standard_normal((B, C, H, W)).astype(np.float32)
    try:
        cols, _, _ = nn.windows(x, k, stride, pads, dil, -np.inf, ceil)
    except DseError:
        return
    got = nn.pool(x, {"kernel": k, "stride": stride, "pads": pads, "dilation": dil, "ceil_mode": int(ceil)}, "max")
    assert got.dtype == x.dtype and np.array_equal(got, cols.max(axis=(2, 3)))
