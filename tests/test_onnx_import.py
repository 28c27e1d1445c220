"""ONNX import + float executor vs onnxruntime: bundled models and small graphs covering every op/attribute."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from dse.errors import DseError
from dse.model.float_exec import run_float
from dse.model.onnx_import import load_onnx, preprocess_from_metadata, resolve_model

TOL = 1e-4
RNG = np.random.default_rng(0)


def _ort(path, x):
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def _check(path, in_shape, n=3):
    x = RNG.standard_normal((n, *in_shape)).astype(np.float32)
    g = load_onnx(path)
    y, r = run_float(g, x), _ort(path, x)
    assert y.shape == r.shape
    assert np.abs(y - r).max() <= TOL * max(1.0, np.abs(r).max())
    return g


def _w(*shape):
    return RNG.standard_normal(shape).astype(np.float32) * 0.3


# ------------------------------------------------------------------------------------------------ bundled models
@pytest.mark.parametrize("name", ["lenet5", "resnet8"])
def test_bundled_models_match_onnxruntime(name):
    from dse.data import load_dataset

    path = resolve_model(name)
    g = load_onnx(path)
    x = load_dataset("fashion-mnist:holdout").images(0, 64)
    diff = np.abs(run_float(g, x) - _ort(path, x)).max()
    assert diff <= TOL
    assert g.shapes[g.output_name] == (10,)
    assert preprocess_from_metadata(g)["std"] == [0.353]
    assert [n.op for n in g.nodes if n.op in ("affine",)] == []  # BN folded by export or importer


# ------------------------------------------------------------------------------------------------ conv variants
CONV_CASES = [
    dict(strides=[2, 2], pads=[1, 0, 2, 1], dilations=[1, 1], group=1, bias=True, k=3),    # stride + asym pads
    dict(strides=[1, 2], pads=[2, 2, 2, 2], dilations=[2, 2], group=1, bias=False, k=3),   # dilation, no bias
    dict(strides=[1, 1], pads=[1, 1, 1, 1], dilations=[1, 1], group=2, bias=True, k=3),    # groups
    dict(strides=[2, 2], pads=[1, 1, 1, 1], dilations=[1, 1], group=4, bias=True, k=3),    # depthwise (C=4)
    dict(strides=[1, 1], pads=[0, 0, 0, 0], dilations=[1, 1], group=1, bias=True, k=1),    # 1x1
    dict(strides=[2, 2], auto_pad="SAME_UPPER", dilations=[1, 1], group=1, bias=True, k=4),
    dict(strides=[2, 2], auto_pad="SAME_LOWER", dilations=[1, 1], group=1, bias=True, k=4),
    dict(strides=[2, 1], auto_pad="VALID", dilations=[1, 1], group=1, bias=False, k=3),
]


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_variants(tmp_path, case, onnx_builder):
    C, cout, k, grp = 4, 8, case["k"], case["group"]
    attrs = {kk: v for kk, v in case.items() if kk not in ("bias", "k")}
    inits = {"W": _w(cout, C // grp, k, k)}
    ins = ["x", "W"]
    if case["bias"]:
        inits["B"] = _w(cout)
        ins.append("B")
    p = onnx_builder(tmp_path, [helper.make_node("Conv", ins, ["y"], **attrs)], inits, [C, 9, 11])
    g = _check(p, [C, 9, 11])
    n = g.nodes[0]
    assert n.op == "conv" and n.attrs["groups"] == grp
    if "pads" in case:
        assert n.attrs["pads"] == (case["pads"][0], case["pads"][1], case["pads"][2], case["pads"][3])


@settings(max_examples=25, deadline=None)
@given(C=st.integers(1, 4), cpg=st.integers(1, 3), g=st.integers(1, 3), k=st.integers(1, 4), s=st.integers(1, 3),
       d=st.integers(1, 2), pads=st.lists(st.integers(0, 3), min_size=4, max_size=4), H=st.integers(5, 10),
       W=st.integers(5, 10))
def test_conv_random_shapes_vs_onnxruntime(tmp_path_factory, C, cpg, g, k, s, d, pads, H, W, onnx_builder):
    span = d * (k - 1) + 1  # the dilated window must fit in the padded input (else the model itself is invalid)
    assume(span <= H + pads[0] + pads[2] and span <= W + pads[1] + pads[3])
    cin = C * g
    tmp = tmp_path_factory.mktemp("h")
    p = onnx_builder(tmp, [helper.make_node("Conv", ["x", "W", "B"], ["y"], strides=[s, s], pads=pads, dilations=[d, d],
                                     group=g)], {"W": _w(cpg * g, C, k, k), "B": _w(cpg * g)}, [cin, H, W])
    _check(p, [cin, H, W], n=2)


# ------------------------------------------------------------------------------------------------ BN folding
def test_batchnorm_folded_into_conv_and_gemm(tmp_path, onnx_builder):
    inits = {"W": _w(6, 3, 3, 3), "Wg": _w(6 * 25, 5)}
    for p, n in (("c", 6), ("g", 5)):
        inits.update({f"{p}s": _w(n) + 1, f"{p}b": _w(n), f"{p}m": _w(n), f"{p}v": np.abs(_w(n)) + 0.5})
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("BatchNormalization", ["c", "cs", "cb", "cm", "cv"], ["bn"], epsilon=1e-3),
             helper.make_node("Relu", ["bn"], ["r"]),
             helper.make_node("Flatten", ["r"], ["f"]),
             helper.make_node("Gemm", ["f", "Wg"], ["gm"]),
             helper.make_node("BatchNormalization", ["gm", "gs", "gb", "gm_", "gv"], ["y"])]
    inits["gm_"] = inits.pop("gm")
    g = _check(onnx_builder(tmp_path, nodes, inits, [3, 10, 10]), [3, 10, 10])
    assert [n.op for n in g.nodes] == ["conv", "relu", "flatten", "gemm"]


def test_batchnorm_kept_as_affine_when_not_foldable(tmp_path, onnx_builder):
    """BN on the input and BN after a conv output that is also used elsewhere stay float affine ops."""
    inits = {"W": _w(3, 3, 3, 3)}
    for p in ("a", "b"):
        inits.update({f"{p}s": _w(3) + 1, f"{p}b": _w(3), f"{p}m": _w(3), f"{p}v": np.abs(_w(3)) + 0.5})
    nodes = [helper.make_node("BatchNormalization", ["x", "as", "ab", "am", "av"], ["n0"]),
             helper.make_node("Conv", ["n0", "W"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "bs", "bb", "bm", "bv"], ["n1"]),
             helper.make_node("Add", ["n1", "c"], ["y"])]
    g = _check(onnx_builder(tmp_path, nodes, inits, [3, 6, 6]), [3, 6, 6])
    assert [n.op for n in g.nodes] == ["affine", "conv", "affine", "add"]


# ------------------------------------------------------------------------------------------------ other ops
def test_gemm_variants_and_matmul_add(tmp_path, onnx_builder):
    inits = {"B0": _w(12, 7), "C0": _w(7), "B1": _w(5, 7), "C1": _w(1, 5), "M": _w(5, 4), "A": _w(4)}
    nodes = [helper.make_node("Gemm", ["x", "B0", "C0"], ["g0"], alpha=0.7, beta=1.3),            # transB=0
             helper.make_node("Relu", ["g0"], ["r0"]),
             helper.make_node("Gemm", ["r0", "B1", "C1"], ["g1"], transB=1, alpha=1.5, beta=0.5),
             helper.make_node("MatMul", ["g1", "M"], ["mm"]),
             helper.make_node("Add", ["mm", "A"], ["y"])]
    g = _check(onnx_builder(tmp_path, nodes, inits, [12]), [12])
    assert [n.op for n in g.nodes] == ["gemm", "relu", "gemm", "gemm"]  # MatMul + Add(bias) folded


def _token_linear(tmp_path, onnx_builder, case, T=7, K=5, N=7):
    """x [T, K] tokens -> MatMul W [K, N] (a 1x1 conv between channels-last transposes) -> Add of a bias-like
    constant (or, by ``case``, something the fold must leave) -> Relu -> y."""
    c = {"bias": _w(N), "bias 1xN": _w(1, N), "bias 1x1xN": _w(1, 1, N), "per token": _w(T, N),
         "transposed": _w(T), "two readers": _w(N), "conv bias": _w(N), "inner reader": _w(N),
         "activation": None}[case]
    if case in ("bias", "two readers"):
        c[:3] = [0.0, -0.0, -0.0]  # signed zeros in the bias: the fold must keep their sums' bits
    inits = {"W": _w(K, N)} | ({} if c is None else {"c": c})
    nodes = [helper.make_node("MatMul", ["x", "W"], ["mm"])]
    if case == "transposed":  # the channels on axis 1, the T = N tokens last: the bias runs along the tokens
        nodes += [helper.make_node("Transpose", ["mm"], ["mt"], perm=[0, 2, 1]), helper.make_node("Add", ["mt", "c"],
                                                                                                    ["s"])]
    elif case in ("conv bias", "inner reader"):  # the same layout from a Conv: with a bias of its own (two float32
        # adds) or with its reshaped output read by another node as well: not folded
        inits |= {"Wc": _w(N, K, 1, 1), "bc": _w(N) if case == "conv bias" else np.zeros(N, np.float32),
                  "shp": np.array([0, N, T]), "shp2": np.array([0, K, T, 1])}
        nodes = [helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 2, 1]),
                 helper.make_node("Reshape", ["xt", "shp2"], ["xi"]),
                 helper.make_node("Conv", ["xi", "Wc", "bc"], ["cv"]),
                 helper.make_node("Reshape", ["cv", "shp"], ["cr"]),
                 helper.make_node("Transpose", ["cr"], ["mm"], perm=[0, 2, 1]),
                 helper.make_node("Add", ["mm", "c"], ["s"])]
    elif case == "activation":
        nodes += [helper.make_node("Add", ["mm", "mm"], ["s"])]
    else:
        nodes += [helper.make_node("Add", ["mm", "c"], ["s"])]
    nodes += [helper.make_node("Relu", ["s"], ["r"])]
    if case == "two readers":
        nodes += [helper.make_node("Mul", ["r", "mm"], ["y"])]
    elif case == "inner reader":
        nodes += [helper.make_node("Transpose", ["cr"], ["cr2"], perm=[0, 2, 1]),
                  helper.make_node("Mul", ["r", "cr2"], ["y"])]
    else:
        nodes += [helper.make_node("Identity", ["r"], ["y"])]
    return onnx_builder(tmp_path, nodes, inits, [T, K])


@pytest.mark.parametrize("case", ["bias", "bias 1xN", "bias 1x1xN", "per token", "transposed", "two readers",
                                  "conv bias", "inner reader", "activation"])
def test_matmul_bias_add_folded_through_channels_last_transposes(tmp_path, onnx_builder, monkeypatch, case):
    """x @ W + b on tokens: the bias Add folds into the 1x1 conv through the MatMul's reshape and transpose back to
    channels last (the conv's own bias zero), and the folded graph gives the unfolded one's bits in float and in the
    emulator (exact and a table multiplier); an Add whose constant varies along another axis, a layout whose last
    axis is not the channels, a MatMul output with a second reader, a conv with its own bias or a runtime operand
    stays an Add."""
    from dse.emulate import Emulator
    from dse.layer_config import LayerConfig
    from dse.model import onnx_import as oi
    from dse.quant import calibrate

    p = _token_linear(tmp_path, onnx_builder, case)
    g = _check(p, [7, 5])
    folded = case.startswith("bias")
    monkeypatch.setattr(oi, "_channels_last_mac", lambda *a: (None, None))
    g0 = load_onnx(p)
    monkeypatch.undo()
    assert [n.op for n in g0.nodes].count("add") == 1
    assert [n.op for n in g.nodes].count("add") == (0 if folded else 1)
    x = RNG.standard_normal((5, 7, 5)).astype(np.float32)
    x[0] = 0.0  # a zero token: the conv's sums 0, its outputs +-0.0 before the bias
    np.testing.assert_array_equal(run_float(g, x).view(np.uint32), run_float(g0, x).view(np.uint32))
    if not folded:
        return
    cal = RNG.standard_normal((16, 7, 5)).astype(np.float32)
    q, q0 = calibrate(g, cal), calibrate(g0, cal)
    for m in ("exact", "mitch_w6"):
        y = Emulator(q).run(x, {l.name: LayerConfig(m) for l in q.layers})
        y0 = Emulator(q0).run(x, {l.name: LayerConfig(m) for l in q0.layers})
        np.testing.assert_array_equal(y.view(np.uint32), y0.view(np.uint32))


@pytest.mark.parametrize("opset", [10, 17])
def test_clip_attrs_and_inputs(tmp_path, opset, onnx_builder):
    if opset == 10:
        nodes = [helper.make_node("Clip", ["x"], ["y"], min=-0.5, max=0.75)]
        inits = {}
    else:
        nodes = [helper.make_node("Clip", ["x", "lo", "hi"], ["c"]), helper.make_node("Clip", ["c", "", "hi2"], ["y"])]
        inits = {"lo": np.array(-0.5, np.float32), "hi": np.array(0.75, np.float32), "hi2": np.array(0.5, np.float32)}
    g = _check(onnx_builder(tmp_path, nodes, inits, [2, 4, 4], opset=opset), [2, 4, 4])
    assert g.nodes[-1].op == "clip"


POOL_CASES = [
    ("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 1, 2])),
    ("MaxPool", dict(kernel_shape=[2, 3], strides=[2, 2], ceil_mode=1)),
    ("MaxPool", dict(kernel_shape=[2, 2], strides=[1, 1], dilations=[2, 2], pads=[1, 1, 0, 0])),
    ("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER")),
    ("AveragePool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 2, 1], count_include_pad=1)),
    ("AveragePool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 2, 1], count_include_pad=0)),
    ("AveragePool", dict(kernel_shape=[3, 2], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=1)),
    ("AveragePool", dict(kernel_shape=[2, 2], strides=[2, 2])),
    ("AveragePool", dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)),
]


@pytest.mark.parametrize("op,attrs", POOL_CASES)
def test_pooling(tmp_path, op, attrs, onnx_builder):
    g = _check(onnx_builder(tmp_path, [helper.make_node(op, ["x"], ["y"], **attrs)], {}, [3, 9, 10]), [3, 9, 10])
    assert g.nodes[0].op == ("maxpool" if op == "MaxPool" else "avgpool")


def test_residual_concat_reshape_and_harmless_ops(tmp_path, onnx_builder):
    """Residual Add, Concat, Reshape (0 / -1), GAP, Identity, Dropout, Constant, constant-shape paths."""
    inits = {"W1": _w(4, 4, 3, 3), "W2": _w(4, 4, 1, 1), "Wf": _w(8, 5), "shp": np.array([0, -1], np.int64)}
    shape2 = helper.make_tensor("s2", TensorProto.INT64, [4], [-1, 8, 1, 1])
    nodes = [helper.make_node("Identity", ["x"], ["xi"]),
             helper.make_node("Conv", ["xi", "W1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Add", ["r1", "xi"], ["res"]),                       # residual
             helper.make_node("Conv", ["res", "W2"], ["c2"]),
             helper.make_node("Concat", ["res", "c2"], ["cat"], axis=1),
             helper.make_node("Dropout", ["cat"], ["dr"]),
             helper.make_node("GlobalAveragePool", ["dr"], ["gap"]),
             helper.make_node("Constant", [], ["s2c"], value=shape2),
             helper.make_node("Reshape", ["gap", "s2c"], ["gap2"]),
             helper.make_node("Reshape", ["gap2", "shp"], ["flat"]),
             helper.make_node("Gemm", ["flat", "Wf"], ["y"])]
    g = _check(onnx_builder(tmp_path, nodes, inits, [4, 6, 6]), [4, 6, 6], n=4)
    assert [n.op for n in g.nodes] == ["conv", "relu", "add", "conv", "concat", "gap", "reshape", "reshape", "gemm"]
    assert g.shapes["cat"] == (8, 6, 6) and g.shapes["flat"] == (8,)


def test_names_made_unique(tmp_path, onnx_builder):
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Relu", ["a"], ["b"], name="r"),
             helper.make_node("Relu", ["b"], ["y"], name="r")]
    g = load_onnx(onnx_builder(tmp_path, nodes, {}, [3]))
    assert [n.name for n in g.nodes] == ["Relu_0", "r", "r_1"]


# ------------------------------------------------------------------------------------------------ errors
def test_unsupported_op(tmp_path, onnx_builder):
    p = onnx_builder(tmp_path, [helper.make_node("LRN", ["x"], ["y"], name="lrn", size=3)], {}, [3, 4, 4])
    with pytest.raises(DseError, match=r"g\.onnx: node 'lrn' has unsupported op type 'LRN' \(opset 17\); replace it "
                                       r"before export or re-export with supported ops: .*Conv") as e:
        load_onnx(p)
    assert "\n" not in str(e.value)


def test_invalid_and_missing_files(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage\xff" * 10)
    with pytest.raises(DseError, match="bad.onnx: not a valid ONNX model") as e:
        load_onnx(bad)
    assert "\n" not in str(e.value)
    with pytest.raises(DseError, match="model file not found"):
        load_onnx(tmp_path / "missing.onnx")
    with pytest.raises(DseError, match="not a bundled model"):
        resolve_model("lenet9")


def test_reshape_dropping_batch_rejected(tmp_path, onnx_builder):
    p = onnx_builder(tmp_path, [helper.make_node("Reshape", ["x", "s"], ["y"], name="rs")], {"s": np.array([12], np.int64)},
              [3, 4])
    with pytest.raises(DseError, match=r"node 'rs' \(Reshape\) target \[12\] does not fit its input \[1, 3, 4\] \(batch size 1\) at batch size 2"):
        load_onnx(p)


def test_dynamic_weight_rejected(tmp_path):
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3]),
                           helper.make_tensor_value_info("w", TensorProto.FLOAT, [3, 2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    p = tmp_path / "two.onnx"
    onnx.save(onnx.shape_inference.infer_shapes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])),
              str(p))
    with pytest.raises(DseError, match="2 input"):
        load_onnx(p)
